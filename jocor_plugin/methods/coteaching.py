"""Co-teaching (Han et al., NeurIPS 2018): each network trains on its peer's small-loss samples."""
from __future__ import annotations

import torch

from .base import Method, MethodOutput, cross_small_loss, per_sample_ce
from .registry import register_method


@register_method("coteaching")
class CoTeaching(Method):
    """Each network picks its floor((1-tau)B) smallest-loss samples and its peer trains on them."""

    def __call__(self, logits_a: torch.Tensor, logits_b: torch.Tensor, targets: torch.Tensor, *,
                 forget_rate: float, epoch: int) -> MethodOutput:
        loss, trained_a, trained_b = cross_small_loss(
            per_sample_ce(logits_a, targets), per_sample_ce(logits_b, targets), forget_rate,
            logits_a, logits_b, scope=self.selection)
        return MethodOutput(loss=loss, selected_a=trained_a, selected_b=trained_b)
