"""Choosing tau and the checkpoint without clean labels (docs/noise_estimation.md).

* ``method.forget_rate=auto``: a standard network is trained on part of the noisy training set
  until its accuracy against the noisy labels of the held-out rest stops rising (at most
  ``method.estimation_epochs`` epochs); ``estimate_noise_rate`` turns its *out-of-sample* softmax
  on the held-out part at its best epoch into a noise rate with cleanlab's confident joint
  (Northcutt et al., 2021: the fraction of samples confidently predicted as another class than
  their label's, per class, calibrated to the label counts). The spread of that estimate (a
  bootstrap over the held-out samples, the two networks' difference) and whether the stage
  converged before its cap are the evidence; when it is weak the run warns once
  (``weak_evidence``).
* ``data.val_split``: ``noisy_validation`` scores the networks on a held-out part of the noisy
  training set by the paper's rule for noisy validation: accuracy against the noisy labels on
  the small-loss part, the floor((1 - tau) n) samples of smallest loss (for two networks the sum
  of both cross-entropies, i.e. their average).

``resolve_forget_rate`` gives a run its tau, once, before training: the recipe's, or (auto) the
estimate of a brief stage; ``run_forget_rate`` reads it back from a run's folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from ..config import Config
from ..core.results import read_results, test_metric
from ..methods import create_method
from ..methods.base import num_to_keep
from ..methods.fcorrection import estimate_transition_matrix

__all__ = ["estimated_flag_rate", "noise_rate_from_transition", "confident_joint", "confident_joint_rate", "anchor_rate",
           "bootstrap_interval", "estimate_spread", "weak_evidence", "split_for_estimation",
           "HeldOutMonitor", "estimate_noise_rate", "small_loss_accuracy", "noisy_validation",
           "resolve_forget_rate", "run_forget_rate", "DEFAULT_ESTIMATION_EPOCHS", "MAX_FORGET_RATE",
           "ESTIMATE_FILE"]

logger = logging.getLogger(__name__)

# The stage's cap: it normally stops earlier, when the held-out noisy accuracy stops rising.
DEFAULT_ESTIMATION_EPOCHS = 30
# Epochs without a new best held-out noisy accuracy before the stage stops: a CNN's held-out
# accuracy wobbles for a few epochs after a first peak (measured: resnet10t, 3 was too few).
PATIENCE = 5
MIN_IMPROVEMENT = 0.002  # a smaller rise of the held-out noisy accuracy is noise, not learning
# The part of the noisy training set held out of the stage: its out-of-sample softmax is what the
# estimate is made of (in-sample probabilities tend to one-hot on memorised noisy labels).
HOLDOUT_FRACTION = 0.25
ANCHOR_PERCENTILE = 97.0  # F-correction's anchor: the sample at this percentile of p(i|x)
BOOTSTRAP_DRAWS = 200
BOOTSTRAP_LEVEL = 0.9  # the central interval reported as the estimate's spread
# The evidence is weak when the estimate's spread exceeds this (tau off by that much costs JoCoR
# little, more costs it and the label-issue precision/recall visibly), or when the stage was still
# improving at its cap: an under-fit network counts its own mistakes as label noise. (The held-out
# noisy accuracy can't tell that by itself: the confident joint counts the same mistakes, so the
# accuracy always looks consistent with its estimate, about 1 - rate.)
MAX_SPREAD = 0.05
MAX_FORGET_RATE = 0.95  # tau is clipped here: a forget rate near 1 would train on nothing
ESTIMATE_FILE = "noise_estimate.json"


def noise_rate_from_transition(T: torch.Tensor | np.ndarray, priors: torch.Tensor | np.ndarray) -> float:
    """1 - sum_i priors[i] * T[i, i]: the expected fraction of labels that differ from the truth."""
    T = np.asarray(T, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    priors = priors / priors.sum()
    return float(1.0 - np.sum(priors * np.diag(T)))


def confident_joint(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cleanlab's confident joint C[given, true]: a sample counts for the class j of highest
    probability among those where p(j|x) reaches class j's threshold (the mean p(j|x) of the
    samples labelled j); a sample confident in no class counts nowhere."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    num_classes = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if np.any(labels == j) else np.inf
                           for j in range(num_classes)])
    above = probs >= thresholds
    guess = np.where(above, probs, -np.inf).argmax(axis=1)
    confident = above.any(axis=1)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (labels[confident], guess[confident]), 1.0)
    return joint


def confident_joint_rate(probs: np.ndarray, labels: np.ndarray) -> float:
    """The noise rate of the confident joint, each row calibrated to its label count (cleanlab's
    ``estimate_joint``): sum_i pi_i (1 - C[i, i] / sum_j C[i, j]), pi the noisy label priors."""
    labels = np.asarray(labels, dtype=np.int64)
    joint = confident_joint(probs, labels)
    counts = np.bincount(labels, minlength=joint.shape[0]).astype(np.float64)
    rows = joint.sum(axis=1)
    keep = np.divide(np.diag(joint), rows, out=np.ones_like(rows), where=rows > 0)
    return float(1.0 - np.sum(counts / counts.sum() * keep))


def anchor_rate(probs: np.ndarray, labels: np.ndarray, percentile: float = ANCHOR_PERCENTILE) -> float:
    """F-correction's anchor-point estimate (``estimate_transition_matrix``): 1 - sum_i pi_i T[i, i]."""
    labels = np.asarray(labels, dtype=np.int64)
    T = estimate_transition_matrix(torch.as_tensor(np.asarray(probs, dtype=np.float32)), percentile)
    return noise_rate_from_transition(T.numpy(), np.bincount(labels, minlength=T.shape[0]))


def bootstrap_interval(probs: np.ndarray, labels: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP_DRAWS,
                       level: float = BOOTSTRAP_LEVEL) -> tuple[float, float]:
    """The central ``level`` interval of the confident-joint rate over ``draws`` resamplings of the
    samples (with replacement): how much the estimate owes to which samples were held out."""
    rng = np.random.default_rng(seed)
    probs, labels = np.asarray(probs), np.asarray(labels)
    rates = [confident_joint_rate(probs[i], labels[i])
             for i in (rng.integers(0, len(labels), len(labels)) for _ in range(draws))]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(rates, [tail, 100.0 - tail])
    return float(low), float(high)


def estimate_spread(info: dict[str, Any]) -> float:
    """How far the estimate in ``info`` may be off: half its bootstrap interval, or the distance to
    the second network's estimate if larger. (The anchor-point estimate is recorded, not counted:
    measured, it is biased by the network's calibration, so it disagrees even when the confident
    joint is right.)"""
    low, high = info["interval"]
    spread = (high - low) / 2.0
    if info.get("rate_b") is not None:  # the estimate is the networks' mean
        spread = max(spread, abs(info["rate_b"] - info["rate_a"]) / 2.0)
    return float(spread)


def weak_evidence(info: dict[str, Any]) -> Optional[str]:
    """The run's one warning line when the estimate in ``info`` can't be trusted, else None."""
    low, high = info["interval"]
    spread = estimate_spread(info)
    reasons = []
    if spread > MAX_SPREAD:
        reasons.append(f"it is uncertain by +-{spread:.2f} (bootstrap {BOOTSTRAP_LEVEL:.0%} interval "
                       f"{low:.3f}-{high:.3f}" + (f"; the networks' {info['rate_a']:.3f} and {info['rate_b']:.3f}"
                                                 if info.get("rate_b") is not None else "") + ")")
    if not info.get("converged", True):
        reasons.append("its stage was still improving when method.estimation_epochs ended (under-fit: its "
                       "mistakes count as noise)")
    if not reasons:
        return None
    return (f"forget_rate=auto: the estimated noise rate {info['raw_rate']:.3f} is unreliable: "
            f"{'; '.join(reasons)}. Give tau with method.forget_rate=RATE, or sweep it scored on noisy "
            f"validation (data.val_split=0.1, sweeps/forget_rate_grid.yaml)"
            + ("; or raise method.estimation_epochs." if not info.get("converged", True) else "."))


def estimate_noise_rate(probs: torch.Tensor | np.ndarray, noisy_labels: torch.Tensor | np.ndarray,
                        probs_b: torch.Tensor | np.ndarray | None = None, seed: int = 0,
                        converged: bool = True) -> dict[str, Any]:
    """Noise rate from a network's *out-of-sample* softmax ``probs`` [N, C] on samples it did not
    train on, against their noisy labels: the confident joint's rate (``raw_rate``; with a second
    network's ``probs_b``, the mean of the two; ``rate`` clipped to [0, MAX_FORGET_RATE]) and the
    evidence -- the bootstrap ``interval`` (of the first network's), the anchor-point estimate
    (recorded, not used), the accuracy against the noisy labels; ``converged``: whether
    the stage stopped because the held-out accuracy stopped rising. ``warning``:
    ``weak_evidence``'s line or None."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(noisy_labels, dtype=np.int64)
    rate_a = confident_joint_rate(probs, labels)
    rate_b = None if probs_b is None else confident_joint_rate(np.asarray(probs_b, dtype=np.float64), labels)
    raw = rate_a if rate_b is None else (rate_a + rate_b) / 2.0
    low, high = bootstrap_interval(probs, labels, seed)
    shift = raw - rate_a  # the interval around the estimate actually used
    priors = np.bincount(labels, minlength=probs.shape[1]) / len(labels)
    noisy_acc = float(np.mean(probs.argmax(axis=1) == labels))
    info: dict[str, Any] = {
        "rate": float(min(max(raw, 0.0), MAX_FORGET_RATE)), "raw_rate": raw, "estimator": "confident_joint",
        "rate_a": rate_a, "interval": [low + shift, high + shift], "anchor_rate": anchor_rate(probs, labels),
        "priors": priors.tolist(), "held_out_noisy_acc": noisy_acc, "num_held_out": int(len(labels)), "converged": converged}
    if rate_b is not None:
        info["rate_b"] = rate_b
    info["warning"] = weak_evidence(info)
    return info


def split_for_estimation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held_out) positions, the held-out part a ``fraction`` of every noisy class (at
    least one sample of a class with two or more), seeded."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) >= 2:
            held.append(members[:max(1, int(round(fraction * len(members))))])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


class HeldOutMonitor:
    """The estimation stage's ``until``: after each epoch, the networks' softmax on the held-out
    part (one host read per epoch, outside the steps); keeps, per network, the epoch of highest
    accuracy against the noisy labels and its softmax, and says stop once no network has risen
    for ``PATIENCE`` epochs (``stopped``: it did, before the cap)."""

    def __init__(self, trainer: Any, held_out: Any, patience: int = PATIENCE):
        self.trainer, self.patience = trainer, patience
        self.loader = trainer.make_loader(held_out, train=False, batch_size=trainer.cfg.train.eval_batch_size)
        self.epoch, self.stopped = -1, False
        self.best_acc: list[float] = []
        self.best_epoch: list[int] = []
        self.best_probs: list[np.ndarray] = []
        self.labels: Optional[np.ndarray] = None
        self.accuracies: list[list[float]] = []  # per epoch, per network

    @torch.no_grad()
    def outputs(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Softmax of each network and the noisy labels of the held-out part, gathered, on the CPU."""
        pair, accelerator = self.trainer.pair, self.trainer.accelerator
        pair.eval()
        parts: list[list[torch.Tensor]] = []
        for batch in self.loader:
            probs = [z.float().softmax(1) for z in pair(batch["pixel_values"]) if z is not None]
            parts.append(list(accelerator.gather_for_metrics((*probs, batch["label"]))))
        columns = [torch.cat(c).cpu().numpy() for c in zip(*parts)]
        return columns[:-1], columns[-1]

    def __call__(self, record: dict[str, Any]) -> bool:
        self.epoch += 1
        probs, self.labels = self.outputs()
        accs = [float(np.mean(p.argmax(axis=1) == self.labels)) for p in probs]
        if not self.best_acc:
            self.best_acc, self.best_epoch, self.best_probs = [-1.0] * len(probs), [-1] * len(probs), [None] * len(probs)
        for k, (acc, p) in enumerate(zip(accs, probs)):
            if acc > self.best_acc[k] + MIN_IMPROVEMENT:
                self.best_acc[k], self.best_epoch[k], self.best_probs[k] = acc, self.epoch, p
        self.accuracies.append(accs)
        record["held_out_noisy_acc"] = accs[0]
        self.stopped = self.epoch - max(self.best_epoch) >= self.patience
        return self.stopped


def small_loss_accuracy(losses: torch.Tensor, correct: torch.Tensor, forget_rate: float) -> float:
    """Accuracy (%) over the floor((1 - tau) n) samples of smallest ``losses``; ``correct`` is a
    [networks, n] bool tensor (prediction == noisy label), averaged over the networks."""
    keep = torch.topk(losses, num_to_keep(losses.numel(), forget_rate), largest=False).indices
    if keep.numel() == 0:
        return 0.0
    return 100.0 * correct[:, keep].float().mean().item()


@torch.no_grad()
def noisy_validation(pair: torch.nn.Module, loader, accelerator: Accelerator,
                     forget_rate: float) -> dict[str, float]:
    """``noisy_val_acc``: small-loss accuracy against the noisy labels (the selection score);
    ``noisy_val_acc_all``: plain accuracy against them (independent of tau, so comparable across
    forget rates)."""
    pair.eval()
    losses, correct = [], []
    for batch in loader:
        logits = [z.float() for z in pair(batch["pixel_values"]) if z is not None]
        y = batch["label"]
        loss = sum(F.cross_entropy(z, y, reduction="none") for z in logits)
        hits = torch.stack([z.argmax(dim=1) == y for z in logits])
        loss, hits = accelerator.gather_for_metrics((loss, hits.T.contiguous()))
        losses.append(loss)
        correct.append(hits.T)
    loss, hit = torch.cat(losses), torch.cat(correct, dim=1)
    return {"noisy_val_acc": small_loss_accuracy(loss, hit, forget_rate),
            "noisy_val_acc_all": 100.0 * hit.float().mean().item()}


def resolve_forget_rate(trainer: Any) -> float:
    """Set ``trainer.forget_rate`` (tau) once: the recipe's, or for ``method.forget_rate=auto``
    the noise rate estimated by a stage (plain cross-entropy: 'standard' for one network,
    co-teaching at tau 0 -- no selection -- for two) trained on part of the noisy training set until
    its held-out accuracy stops rising, kept in noise_estimate.json so a resumed run reuses it
    (and repeats its warning, if any). tau goes to results.json (``forget_rate``) and config.yaml."""
    cfg = trainer.cfg
    if cfg.method.forget_rate == "auto":
        saved = trainer.out / ESTIMATE_FILE
        if saved.is_file():
            info = json.loads(saved.read_text())
        else:
            info = _estimate(trainer)
            trainer.write_json(saved, info)
        trainer.forget_rate = info["rate"]
        trainer.results["forget_rate_estimate"] = info
        actual = info.get("actual_rate")
        low, high = info.get("interval", (info["raw_rate"], info["raw_rate"]))
        logger.info("forget_rate=auto: estimated noise rate %.3f (%.0f%% interval %.3f-%.3f)%s -> tau = %.3f.",
                    info["raw_rate"], 100 * BOOTSTRAP_LEVEL, low, high,
                    f" (actual {actual:.3f})" if actual is not None else "", info["rate"])
        if info.get("warning"):
            logger.warning(info["warning"])
        if trainer.accelerator.is_main_process and trainer.checkpoints:
            with open(trainer.out / "config.yaml", "a") as f:  # the recipe stays 'auto': a rerun re-estimates
                f.write(f"# method.forget_rate=auto resolved to tau = {trainer.forget_rate!r} ({ESTIMATE_FILE})\n")
    trainer.results["forget_rate"] = trainer.forget_rate
    return trainer.forget_rate


def _estimate(trainer: Any) -> dict[str, Any]:
    """The estimation stage (from the run's initial weights, undone by ``scratch``) and its estimate."""
    cfg = trainer.cfg
    cap = cfg.method.estimation_epochs or DEFAULT_ESTIMATION_EPOCHS
    train = trainer.splits.train
    fit_part, held_out = split_for_estimation(trainer.training_column("label"), HOLDOUT_FRACTION, cfg.train.seed)
    logger.info("forget_rate=auto: standard training on %d samples until the accuracy against the noisy labels "
                "of %d held-out ones stops rising (at most %d epochs) to estimate the noise rate.",
                len(fit_part), len(held_out), cap)
    stage = create_method("standard" if trainer.method.num_networks == 1 else "coteaching")
    with trainer.scratch():
        monitor = HeldOutMonitor(trainer, train.select(held_out))
        records = trainer.run_stage(stage, epochs=cap, log_prefix="[estimate tau] ", dataset=train.select(fit_part),
                                    until=monitor)
    probs = monitor.best_probs
    info = estimate_noise_rate(probs[0], monitor.labels, probs[1] if len(probs) > 1 else None, seed=cfg.train.seed,
                               converged=monitor.stopped)
    best = records[monitor.best_epoch[0]]
    info.update(estimation_epochs=len(records), best_epoch=[e + 1 for e in monitor.best_epoch],
                max_estimation_epochs=cap, held_out_noisy_acc_per_epoch=monitor.accuracies,
                actual_rate=trainer.splits.actual_noise_rate, estimation_test_acc=best[f"{test_metric(best)}_a"])
    return info


def estimated_flag_rate(out: Path) -> Optional[float]:
    """How many label issues a run with ``forget_rate=auto`` flags, as a fraction: the lower end of
    its estimate's 90 % interval (never above the estimate), the noise the held-out evidence is sure
    of; None when the run's tau was not estimated. Flagging round(tau_hat N) would spend the
    estimate's uncertainty on false flags: on the 2,400-image folders of docs/noise_estimation.md
    that bought 3-4 points of precision for 4-9 of recall."""
    path = Path(out) / ESTIMATE_FILE
    if not path.is_file():
        return None
    estimate = json.loads(path.read_text())
    interval = estimate.get("interval")
    if not interval:
        return estimate["rate"]
    return max(0.0, min(float(interval[0]), float(estimate["rate"])))


def run_forget_rate(out: Path, cfg: Optional[Config] = None) -> Optional[float]:
    """The tau a run in ``out`` trained with: results.json's, else its noise estimate's, else the
    recipe's (None when none of them says)."""
    tau = read_results(out).get("forget_rate")
    if tau is None and (Path(out) / ESTIMATE_FILE).is_file():
        tau = json.loads((Path(out) / ESTIMATE_FILE).read_text())["rate"]
    if tau is None and cfg is not None and cfg.method.forget_rate != "auto":
        tau = cfg.forget_rate
    return tau
