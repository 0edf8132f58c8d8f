"""Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): L_q = (1 - p_y^q) / q.

One network, every sample. q -> 0 is cross-entropy, q = 1 the mean absolute error (robust to noise
but slow to fit); the paper's q = 0.7 sits between. p_y^q is computed as exp(q * log_softmax_y), so
a p_y that underflows to 0 gives a finite gradient (0^(q-1) would be inf times 0: NaN).

Left out: the paper's *truncated* variant L_trunc (a per-sample weight, k = 0.5, the weights pruned
every 10 epochs from epoch 40 by an extra pass over the training set); docs/fidelity.md says why.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from .base import Method, MethodOutput, require_argument
from .registry import register_method

__all__ = ["GeneralizedCrossEntropy", "gce_loss"]


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample (1 - p_y^q) / q of ``logits`` [B, C] (in float32) against class ``targets`` [B]."""
    log_p_y = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    return (1.0 - torch.exp(q * log_p_y)) / q


@register_method("gce")
class GeneralizedCrossEntropy(Method):
    """One network trained with the generalized cross-entropy (1 - p_y^q)/q on every sample (q = 0.7)."""

    num_networks = 1
    uses_forget_rate = False

    def __init__(self, q: float = 0.7):
        self.q = q

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        q = arguments["q"]
        require_argument(0.0 < q <= 1.0, "q", q, "it must be in (0, 1] (0.7 in the paper; 1 is the MAE, "
                                                 "the limit q -> 0 cross-entropy: use method.name=standard)")

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        loss = gce_loss(logits_a, targets, self.q).mean()
        everything = torch.arange(targets.numel(), device=targets.device)  # as standard: selects all
        return MethodOutput(loss=loss, selected_a=everything, selected_b=None)
