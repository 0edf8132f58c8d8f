"""Standard training: one network, cross-entropy on every sample (the paper's baseline)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .base import Method, MethodOutput
from .registry import register_method


@register_method("standard")
class Standard(Method):
    """One network trained with plain cross-entropy on all (noisy) labels."""

    num_networks = 1
    uses_forget_rate = False

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        loss = F.cross_entropy(logits_a.float(), targets)
        everything = torch.arange(targets.numel(), device=targets.device)
        return MethodOutput(loss=loss, selected_a=everything, selected_b=None)
