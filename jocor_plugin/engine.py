"""One epoch of training and one evaluation pass. The wiring lives in ``run.py``.

The step never synchronises with the host: losses, selections and the non-finite-loss check
accumulate on the device and are read once per ``log_interval`` steps and at the end of the
epoch. Everything accumulated lives in an ``EpochMeter`` so an epoch interrupted part-way can be
checkpointed and continued exactly.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .errors import UserError
from .label_issues import SampleStats
from .methods import Method
from .metrics import load_metric
from .models import PairNet

__all__ = ["EpochMeter", "train_one_epoch", "evaluate", "stop_requested", "NonFiniteLossError"]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class EpochMeter:
    """What one epoch accumulates, on the device: the loss sum, the first non-finite step, and
    per-sample masks over the training set (seen, clean label, selected by each network)."""

    def __init__(self, num_samples: int, device: torch.device | str):
        self.num_samples, self.device = num_samples, device
        self.reset()

    def reset(self) -> None:
        """Start a new epoch (the buffers are allocated once per epoch, off the step's path)."""
        num_samples, device = self.num_samples, self.device
        self.steps = 0  # host counter: steps finished this epoch
        self.loss_sum = torch.zeros((), device=device)
        self.nonfinite_steps = torch.zeros((), dtype=torch.long, device=device)
        self.first_nonfinite = torch.full((), -1, dtype=torch.long, device=device)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.clean = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.selected = torch.zeros(2, num_samples, dtype=torch.bool, device=device)
        self.has_clean_labels = False

    def update(self, batch: dict[str, torch.Tensor], loss: torch.Tensor, selected_a: torch.Tensor,
               selected_b: Optional[torch.Tensor]) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, 0.0)
        self.nonfinite_steps += (~finite).long()
        self.first_nonfinite = torch.where((self.first_nonfinite < 0) & ~finite,
                                           torch.full_like(self.first_nonfinite, self.steps),
                                           self.first_nonfinite)
        index = batch["index"]
        self.seen[index] = True
        if "is_noisy" in batch:
            self.clean[index] = ~batch["is_noisy"]
            self.has_clean_labels = True
        self.selected[0, index[selected_a]] = True
        if selected_b is not None:
            self.selected[1, index[selected_b]] = True
        self.steps += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"steps": torch.tensor(self.steps), "loss_sum": self.loss_sum,
                "nonfinite_steps": self.nonfinite_steps, "first_nonfinite": self.first_nonfinite,
                "seen": self.seen, "clean": self.clean, "selected": self.selected,
                "has_clean_labels": torch.tensor(self.has_clean_labels)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.steps, self.has_clean_labels = int(state["steps"]), bool(state["has_clean_labels"])
        for name in ("loss_sum", "nonfinite_steps", "first_nonfinite", "seen", "clean", "selected"):
            getattr(self, name).copy_(state[name])

    def summarise(self, accelerator: Accelerator, num_networks: int) -> dict[str, float]:
        """Combine the processes (each sample is seen on exactly one) into the epoch's figures:
        mean loss, label precision and selected fraction per network and for the pair."""
        out = {"train_loss": accelerator.reduce(self.loss_sum, reduction="mean").item() / max(self.steps, 1),
               "nonfinite_steps": int(accelerator.reduce(self.nonfinite_steps, reduction="sum").item())}
        masks = torch.cat([self.seen[None], self.clean[None], self.selected[:num_networks]]).to(torch.uint8)
        masks = accelerator.reduce(masks, reduction="sum").bool().cpu().numpy()
        seen, clean, selected = masks[0], masks[1], masks[2:]
        out["selected_fraction"] = float(selected[:, seen].mean())
        if not self.has_clean_labels:
            return out
        metric = load_metric("label_precision")
        for name, sel in zip("ab", selected):
            out[f"label_precision_{name}"] = metric.compute(predictions=sel[seen], references=clean[seen])[
                "label_precision"]
        out["label_precision"] = metric.compute(
            predictions=selected[:, seen].ravel(), references=clean[None, seen].repeat(num_networks, 0).ravel()
        )["label_precision"]
        return out


def _check_finite(meter: EpochMeter, accelerator: Accelerator, epoch: int, nan_policy: str) -> None:
    """At the logging interval: stop on a non-finite loss, unless the policy is to skip it."""
    bad = accelerator.reduce(meter.nonfinite_steps, reduction="sum").item()
    if bad and nan_policy == "stop":
        step = int(meter.first_nonfinite.item())
        raise NonFiniteLossError(
            f"The training loss became NaN/inf at step {step + 1} of epoch {epoch + 1}. Lower optim.lr, "
            f"check the inputs for NaN/inf, use full precision, or set train.nan_policy=skip.", step)


def _zero_nonfinite_grads(model: torch.nn.Module) -> None:
    """nan_policy=skip: a non-finite gradient contributes nothing (no host sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads:
        torch._foreach_mul_(grads, [torch.isfinite(g).all().to(g.dtype) for g in grads])
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)


def train_one_epoch(pair: PairNet, method: Method, loader, optimizer: torch.optim.Optimizer,
                    accelerator: Accelerator, *, epoch: int, forget_rate: float, meter: EpochMeter,
                    log_interval: int = 50, max_steps: Optional[int] = None, nan_policy: str = "stop",
                    should_stop: Callable[[], bool] = lambda: False, progress: bool | str = "auto",
                    stats: Optional["SampleStats"] = None, clip_grad: Optional[float] = None,
                    clip_mode: str = "norm") -> bool:
    """Train both networks with ``method`` from step ``meter.steps`` to the end of the epoch.

    Returns False if ``should_stop()`` (e.g. SIGTERM) asked to stop early; the meter then holds
    the partial epoch. ``should_stop`` is consulted at logging intervals, agreed by all processes.
    Each step runs under ``accelerator.accumulate`` (the Accelerator's gradient_accumulation_steps
    batches per update); ``clip_grad`` clips the norm (or each value) before an update.
    ``progress``: a progress bar, 'auto' only when stderr is a terminal (not in a log file).
    """
    pair.train()
    steps = len(loader) if max_steps is None else min(max_steps, len(loader))
    if meter.steps:  # resuming inside the epoch: the sampler order is a function of (seed, epoch)
        loader = accelerator.skip_first_batches(loader, meter.steps)
    show = sys.stderr.isatty() if progress == "auto" else bool(progress)
    bar = tqdm(total=steps, initial=meter.steps, desc=f"epoch {epoch + 1}", leave=False,
               disable=not (show and accelerator.is_local_main_process))
    for batch in loader:
        if meter.steps >= steps:
            break
        with accelerator.accumulate(pair):  # the prepared optimizer steps only on the last batch of N
            logits_a, logits_b = pair(batch["pixel_values"])
            out = method(logits_a, logits_b, batch["label"], forget_rate=forget_rate, epoch=epoch)
            accelerator.backward(out.loss)
            if nan_policy == "skip":
                _zero_nonfinite_grads(pair)
            if clip_grad is not None and accelerator.sync_gradients:
                if clip_mode == "value":
                    accelerator.clip_grad_value_(pair.parameters(), clip_grad)
                else:
                    accelerator.clip_grad_norm_(pair.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        meter.update(batch, out.loss.detach(), out.selected_a, out.selected_b)
        if stats is not None:  # per-sample label-issue statistics (loss falls back to mean CE there)
            stats.update(batch, logits_a, logits_b, out)
        bar.update()

        if meter.steps % log_interval == 0 or meter.steps == steps:  # the only host reads
            _check_finite(meter, accelerator, epoch, nan_policy)
            bar.set_postfix(loss=f"{meter.loss_sum.item() / meter.steps:.4f}")
            if meter.steps < steps and stop_requested(should_stop, accelerator):
                bar.close()
                return False
    bar.close()
    return True


def stop_requested(should_stop: Callable[[], bool], accelerator: Accelerator) -> bool:
    """Whether any process was asked to stop (so all stop together); one host read."""
    stop = torch.tensor(float(should_stop()), device=accelerator.device)
    return accelerator.reduce(stop, reduction="sum").item() > 0


@torch.no_grad()
def evaluate(pair: PairNet, loader, accelerator: Accelerator) -> dict[str, float]:
    """Test accuracy (%) of each network over the whole test set, gathered from all processes."""
    pair.eval()
    predictions: list[list[torch.Tensor]] = [[], []]
    references: list[torch.Tensor] = []
    for batch in loader:
        logits = [z for z in pair(batch["pixel_values"]) if z is not None]
        gathered = accelerator.gather_for_metrics((*[z.argmax(dim=1) for z in logits], batch["label"]))
        for i, pred in enumerate(gathered[:-1]):
            predictions[i].append(pred)
        references.append(gathered[-1])
    refs = torch.cat(references).cpu().numpy()
    accuracy = load_metric("accuracy")
    return {f"test_acc_{name}": 100.0 * accuracy.compute(predictions=torch.cat(preds).cpu().numpy(),
                                                         references=refs)["accuracy"]
            for name, preds in zip("ab", predictions) if preds}
