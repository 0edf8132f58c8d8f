"""Joint-only (the paper's ablation): JoCoR without co-regularisation (lambda = 0)."""
from __future__ import annotations

from .jocor import JoCoR
from .registry import register_method


@register_method("joint_only")
class JointOnly(JoCoR):
    """JoCoR with lambda = 0: both networks learn from the samples of smallest CE_a + CE_b."""

    def __init__(self) -> None:
        # no co_lambda argument, so the recipe's method.co_lambda can't switch the KL term back on
        super().__init__(co_lambda=0.0)
