"""Standard+ (the paper's ablation): one network with small-loss selection on its own loss."""
from __future__ import annotations

from typing import Optional

import torch

from .base import Method, MethodOutput, kept_mean, per_sample_ce, small_loss_indices
from .registry import register_method


@register_method("standard_plus")
class StandardPlus(Method):
    """One network trained on the floor((1-tau)B) samples of its own smallest cross-entropy."""

    num_networks = 1

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        losses = per_sample_ce(logits_a, targets)
        keep = small_loss_indices(losses, forget_rate, self.selection)
        loss = kept_mean(losses, keep, forget_rate, self.selection, logits_a)
        return MethodOutput(loss=loss, selected_a=keep, selected_b=None)
