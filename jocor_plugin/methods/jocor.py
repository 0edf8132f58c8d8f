"""JoCoR (Wei et al., CVPR 2020): joint loss with co-regularisation, one small-loss selection."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .base import Method, MethodOutput, kept_mean, require_argument, small_loss_indices
from .registry import register_method


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_a||p_b) + KL(p_b||p_a), gradients into both networks (as the authors)."""
    log_pa, log_pb = F.log_softmax(logits_a, dim=1), F.log_softmax(logits_b, dim=1)
    return ((log_pa.exp() - log_pb.exp()) * (log_pa - log_pb)).sum(dim=1)


def joint_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, targets: torch.Tensor,
               co_lambda: float) -> torch.Tensor:
    """Eq. (1): (1 - lambda) * (CE_a + CE_b) + lambda * (KL(p_a||p_b) + KL(p_b||p_a)), per sample."""
    logits_a, logits_b = logits_a.float(), logits_b.float()
    supervised = (F.cross_entropy(logits_a, targets, reduction="none")
                  + F.cross_entropy(logits_b, targets, reduction="none"))
    return (1.0 - co_lambda) * supervised + co_lambda * symmetric_kl(logits_a, logits_b)


@register_method("jocor")
class JoCoR(Method):
    """Both networks learn from the floor((1-tau)B) samples of smallest joint loss (Eq. 1, 4, 5)."""

    def __init__(self, co_lambda: float = 0.9):
        self.co_lambda = co_lambda

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """lambda weighs the two terms of Eq. (1); the recipe's method.co_lambda is checked as a key, this
        catches it given as method.kwargs."""
        if "co_lambda" in arguments:  # joint_only has no co_lambda argument
            require_argument(0.0 <= arguments["co_lambda"] <= 1.0, "co_lambda", arguments["co_lambda"],
                             "it must be in [0, 1]")

    def __call__(self, logits_a, logits_b, targets, *, forget_rate, epoch) -> MethodOutput:
        losses = joint_loss(logits_a, logits_b, targets, self.co_lambda)
        keep = small_loss_indices(losses, forget_rate, self.selection)
        return MethodOutput(loss=kept_mean(losses, keep, forget_rate, self.selection, logits_a, logits_b),
                            selected_a=keep, selected_b=keep, per_sample_loss=losses.detach())
