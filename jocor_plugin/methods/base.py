"""What every method shares: its output, small-loss selection and the empty-selection loss."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["Method", "MethodOutput", "num_to_keep", "small_loss_indices", "mean_or_zero",
           "per_sample_ce", "disagreement_indices", "cross_small_loss"]


@dataclass
class MethodOutput:
    """``loss`` drives the joint optimizer; ``selected_*`` are the batch indices each network
    trained on (``selected_b`` is None for single-network methods)."""

    loss: torch.Tensor
    selected_a: torch.Tensor
    selected_b: Optional[torch.Tensor]


class Method:
    """A training method: both networks' logits and the noisy targets in, one loss out.

    Subclasses implement ``__call__(logits_a, logits_b, targets, *, forget_rate, epoch)``.
    Methods never see clean labels, and keep their selection on the device.
    """

    #: 1 for methods that train a single network (the trainer then builds only ``net_a``).
    num_networks: int = 2

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def num_to_keep(batch_size: int, forget_rate: float) -> int:
    """floor((1 - tau) * B); the epsilon keeps e.g. (1 - 0.9) * 10 from flooring to 0."""
    return max(0, math.floor((1.0 - forget_rate) * batch_size + 1e-9))


def small_loss_indices(losses: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Indices of the floor((1 - tau) * B) smallest per-sample losses, on the losses' device."""
    k = num_to_keep(losses.numel(), forget_rate)
    return torch.topk(losses.detach(), k, largest=False, sorted=True).indices


def mean_or_zero(losses: torch.Tensor, *logits: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``losses``; for an empty selection a zero that still touches every network's
    graph, so DDP sees a gradient for every parameter and never hangs (and no NaN)."""
    if losses.numel() > 0:
        return losses.mean()
    return sum(z.sum() * 0.0 for z in logits if z is not None)


def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample, in float32 whatever the autocast dtype of the logits."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def disagreement_indices(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Indices of the samples whose predicted classes differ between the two networks.

    The count is data-dependent, so ``nonzero`` waits for the device once; the indices stay there.
    """
    return torch.nonzero(logits_a.argmax(dim=1) != logits_b.argmax(dim=1)).squeeze(1)


def cross_small_loss(ce_a: torch.Tensor, ce_b: torch.Tensor, forget_rate: float,
                     *logits: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-teaching's cross update: each network keeps its floor((1 - tau) n) smallest losses and
    its *peer* trains on them. Returns (loss, trained_a, trained_b), indices into ``ce_*``;
    ``logits`` are touched by the zero loss of an empty selection."""
    picked_by_a = small_loss_indices(ce_a, forget_rate)
    picked_by_b = small_loss_indices(ce_b, forget_rate)
    loss = mean_or_zero(ce_a[picked_by_b], *logits) + mean_or_zero(ce_b[picked_by_a], *logits)
    return loss, picked_by_b, picked_by_a
