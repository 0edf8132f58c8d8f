"""Choosing tau and the checkpoint without clean labels (docs/noise_estimation.md).

* ``method.forget_rate=auto``: ``estimate_noise_rate`` turns the softmax of a briefly trained
  standard network on the noisy training set into a noise-rate estimate, via F-correction's
  anchor-point transition matrix (Patrini et al., 2017): T[i, i] is the probability that a
  sample of class i keeps its label, so the noise rate is 1 - sum_i pi_i T[i, i], with pi the
  class priors (taken from the noisy labels: the clean ones are unknown).
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

__all__ = ["noise_rate_from_transition", "estimate_noise_rate", "small_loss_accuracy",
           "noisy_validation", "resolve_forget_rate", "run_forget_rate", "DEFAULT_ESTIMATION_EPOCHS",
           "MAX_FORGET_RATE", "ESTIMATE_FILE"]

logger = logging.getLogger(__name__)

# A few epochs: long enough to learn the clean pattern, too short to memorise the noisy labels
# (a memorising network is confident on its noisy labels, T -> identity, the rate -> 0).
DEFAULT_ESTIMATION_EPOCHS = 5
MAX_FORGET_RATE = 0.95  # tau is clipped here: a forget rate near 1 would train on nothing
ESTIMATE_FILE = "noise_estimate.json"


def noise_rate_from_transition(T: torch.Tensor | np.ndarray, priors: torch.Tensor | np.ndarray) -> float:
    """1 - sum_i priors[i] * T[i, i]: the expected fraction of labels that differ from the truth."""
    T = np.asarray(T, dtype=np.float64)
    priors = np.asarray(priors, dtype=np.float64)
    priors = priors / priors.sum()
    return float(1.0 - np.sum(priors * np.diag(T)))


def estimate_noise_rate(probs: torch.Tensor, noisy_labels: torch.Tensor | np.ndarray,
                        percentile: float = 97.0) -> dict[str, Any]:
    """Noise rate from a noisy-trained network's softmax ``probs`` [N, C] on the training set.

    Returns ``rate`` (clipped to [0, MAX_FORGET_RATE]), the raw estimate, the per-class keep
    probabilities diag(T) and the priors used.
    """
    T = estimate_transition_matrix(probs, percentile)
    labels = torch.as_tensor(np.asarray(noisy_labels), dtype=torch.long)
    priors = torch.bincount(labels, minlength=probs.shape[1]).double()
    raw = noise_rate_from_transition(T.numpy(), priors.numpy())
    return {"rate": float(min(max(raw, 0.0), MAX_FORGET_RATE)), "raw_rate": raw,
            "keep_probability": torch.diagonal(T).tolist(),
            "priors": (priors / priors.sum()).tolist(), "percentile": percentile}


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
    the noise rate estimated from a briefly trained network (plain cross-entropy: 'standard' for
    one network, co-teaching at tau 0 -- no selection -- for two), kept in noise_estimate.json so
    a resumed run reuses it. tau goes to results.json (``forget_rate``) and config.yaml."""
    cfg = trainer.cfg
    if cfg.method.forget_rate == "auto":
        saved = trainer.out / ESTIMATE_FILE
        if saved.is_file():
            info = json.loads(saved.read_text())
        else:
            epochs = cfg.method.estimation_epochs or DEFAULT_ESTIMATION_EPOCHS
            logger.info("forget_rate=auto: %d epochs of standard training to estimate the noise rate.", epochs)
            stage = create_method("standard" if trainer.method.num_networks == 1 else "coteaching")
            with trainer.scratch():
                records = trainer.run_stage(stage, epochs=epochs, log_prefix="[estimate tau] ")
                logits = trainer.per_sample_outputs()[0]
            info = estimate_noise_rate(logits.float().softmax(1), trainer.splits.train["label"])
            info.update(estimation_epochs=epochs, actual_rate=trainer.splits.actual_noise_rate,
                        estimation_test_acc=records[-1][f"{test_metric(records[-1])}_a"])
            trainer.write_json(saved, info)
        trainer.forget_rate = info["rate"]
        trainer.results["forget_rate_estimate"] = info
        actual = info.get("actual_rate")
        logger.info("forget_rate=auto: estimated noise rate %.3f%s -> tau = %.3f.", info["raw_rate"],
                    f" (actual {actual:.3f})" if actual is not None else "", info["rate"])
        if trainer.accelerator.is_main_process and trainer.checkpoints:
            with open(trainer.out / "config.yaml", "a") as f:  # the recipe stays 'auto': a rerun re-estimates
                f.write(f"# method.forget_rate=auto resolved to tau = {trainer.forget_rate!r} ({ESTIMATE_FILE})\n")
    trainer.results["forget_rate"] = trainer.forget_rate
    return trainer.forget_rate


def run_forget_rate(out: Path, cfg: Optional[Config] = None) -> Optional[float]:
    """The tau a run in ``out`` trained with: results.json's, else its noise estimate's, else the
    recipe's (None when none of them says)."""
    tau = read_results(out).get("forget_rate")
    if tau is None and (Path(out) / ESTIMATE_FILE).is_file():
        tau = json.loads((Path(out) / ESTIMATE_FILE).read_text())["rate"]
    if tau is None and cfg is not None and cfg.method.forget_rate != "auto":
        tau = cfg.forget_rate
    return tau
