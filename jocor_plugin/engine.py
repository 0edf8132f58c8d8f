"""One epoch of training and one evaluation pass. The wiring lives in ``run.py``.

The step never synchronises with the host: losses and selections accumulate on the device and
are read once per ``log_interval`` steps and at the end of the epoch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .errors import UserError
from .methods import Method
from .metrics import load_metric
from .models import PairNet

__all__ = ["SelectionTracker", "train_one_epoch", "evaluate", "NonFiniteLossError"]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class SelectionTracker:
    """Per-sample masks over the training set, on the device: which samples each network
    trained on this epoch, and which of them have a clean label (when that is known)."""

    def __init__(self, num_samples: int, device: torch.device):
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.clean = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.selected = torch.zeros(2, num_samples, dtype=torch.bool, device=device)
        self.has_clean_labels = False

    def update(self, batch: dict[str, torch.Tensor], selected_a: torch.Tensor,
               selected_b: Optional[torch.Tensor]) -> None:
        index = batch["index"]
        self.seen[index] = True
        if "is_noisy" in batch:
            self.clean[index] = ~batch["is_noisy"]
            self.has_clean_labels = True
        self.selected[0, index[selected_a]] = True
        if selected_b is not None:
            self.selected[1, index[selected_b]] = True

    def summarise(self, accelerator: Accelerator, num_networks: int) -> dict[str, float]:
        """Combine the processes' masks (each sample is seen on exactly one) and compute label
        precision and the selected fraction per network and for the pair."""
        masks = torch.cat([self.seen[None], self.clean[None], self.selected[:num_networks]]).to(torch.uint8)
        masks = accelerator.reduce(masks, reduction="sum").bool().cpu().numpy()
        seen, clean, selected = masks[0], masks[1], masks[2:]
        out = {"selected_fraction": float(selected[:, seen].mean())}
        if not self.has_clean_labels:
            return out
        metric = load_metric("label_precision")
        names = ["a", "b"][:num_networks]
        for name, sel in zip(names, selected):
            out[f"label_precision_{name}"] = metric.compute(predictions=sel[seen], references=clean[seen])[
                "label_precision"]
        both = metric.compute(predictions=selected[:, seen].ravel(),
                              references=clean[None, seen].repeat(num_networks, 0).ravel())
        out["label_precision"] = both["label_precision"]
        return out


def train_one_epoch(pair: PairNet, method: Method, loader, optimizer: torch.optim.Optimizer,
                    accelerator: Accelerator, *, epoch: int, forget_rate: float, num_samples: int,
                    log_interval: int = 50, max_steps: Optional[int] = None,
                    progress: bool = True) -> dict[str, float]:
    """Train both networks for one epoch with ``method``; return the epoch's statistics."""
    pair.train()
    tracker = SelectionTracker(num_samples, accelerator.device)
    loss_sum = torch.zeros((), device=accelerator.device)
    steps = len(loader) if max_steps is None else min(max_steps, len(loader))
    bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False,
               disable=not (progress and accelerator.is_local_main_process))
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        logits_a, logits_b = pair(batch["pixel_values"])
        out = method(logits_a, logits_b, batch["label"], forget_rate=forget_rate, epoch=epoch)
        accelerator.backward(out.loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        loss_sum += out.loss.detach()
        tracker.update(batch, out.selected_a, out.selected_b)
        bar.update()
        if (step + 1) % log_interval == 0 or step + 1 == steps:  # the only host reads
            running = loss_sum.item() / (step + 1)
            if not math.isfinite(running):
                raise NonFiniteLossError(
                    f"The training loss became {running} in epoch {epoch} (by step {step + 1}). "
                    f"Lower optim.lr, check the inputs for NaN/inf, or use full precision.")
            bar.set_postfix(loss=f"{running:.4f}")
    bar.close()
    stats = {"train_loss": accelerator.reduce(loss_sum, reduction="mean").item() / max(steps, 1),
             "forget_rate": forget_rate}
    stats.update(tracker.summarise(accelerator, method.num_networks))
    return stats


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
