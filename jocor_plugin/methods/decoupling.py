"""Decoupling (Malach & Shalev-Shwartz, NeurIPS 2017): update only where the two networks disagree."""
from __future__ import annotations

import torch

from .base import Method, MethodOutput, disagreement_indices, mean_or_zero, per_sample_ce
from .registry import register_method


@register_method("decoupling")
class Decoupling(Method):
    """Both networks learn only from the samples on which their predictions disagree."""

    uses_forget_rate = False

    def __call__(self, logits_a: torch.Tensor, logits_b: torch.Tensor, targets: torch.Tensor, *,
                 forget_rate: float, epoch: int) -> MethodOutput:
        disagree = disagreement_indices(logits_a, logits_b)
        # (sum CE_a + sum CE_b) / max(#set, 1); an empty set gives a zero that touches both graphs
        losses = per_sample_ce(logits_a[disagree], targets[disagree]) + per_sample_ce(
            logits_b[disagree], targets[disagree])
        return MethodOutput(loss=mean_or_zero(losses, logits_a, logits_b),
                            selected_a=disagree, selected_b=disagree)
