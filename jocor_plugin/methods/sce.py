"""Symmetric cross-entropy (Wang et al., ICCV 2019): alpha * CE + beta * RCE.

One network, every sample, as the authors' code (loss.py, ``symmetric_cross_entropy``):

* CE = -log(max(p_y, 1e-7)): the softmax clipped to [1e-7, 1] before the log;
* RCE = -sum_k p_k log(max(y_k, 1e-4)), y the one-hot label clipped to [1e-4, 1], so log 0 becomes
  A = log(1e-4) and, for a one-hot label, RCE = -A * (1 - p_y) = 9.2103 * (1 - p_y). (The paper
  writes A = -4, the base-10 logarithm of their clip; their code takes the natural one.)

``alpha`` and ``beta`` default (null) to the authors' values for the data set: MNIST 0.01 / 1.0,
CIFAR-100 6.0 / 0.1, and CIFAR-10's 0.1 / 1.0 for every other data set.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from .base import DataInfo, Method, MethodOutput, fill_unset, require_argument
from .registry import register_method

__all__ = ["SymmetricCrossEntropy", "sce_loss", "SCE_DEFAULTS"]

#: (alpha, beta) of the authors' train_models.py per data set; others take CIFAR-10's
SCE_DEFAULTS = {"mnist": (0.01, 1.0), "cifar10": (0.1, 1.0), "cifar100": (6.0, 0.1)}
PRED_CLIP, LABEL_CLIP = 1e-7, 1e-4  # the authors' clips of the softmax (CE) and of the label (RCE)


def sce_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Per-sample alpha * CE + beta * RCE of ``logits`` [B, C] (in float32) against class ``targets``."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_p_y = log_p.gather(1, targets[:, None]).squeeze(1)
    ce = -log_p_y.clamp_min(math.log(PRED_CLIP))  # -log(clip(p_y, 1e-7, 1)): no gradient below the clip
    rce = -math.log(LABEL_CLIP) * (1.0 - log_p_y.exp())  # -sum_k p_k log(clip(onehot_k, 1e-4, 1))
    return alpha * ce + beta * rce


@register_method("sce")
class SymmetricCrossEntropy(Method):
    """One network trained with alpha*CE + beta*reverse CE (log 0 clipped to log 1e-4) on every sample."""

    num_networks = 1
    uses_forget_rate = False

    def __init__(self, alpha: Optional[float] = None, beta: Optional[float] = None):
        self.alpha, self.beta = alpha, beta

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        for name in ("alpha", "beta"):
            value = arguments[name]
            require_argument(value is None or value >= 0, name, value,
                             f"use >= 0 (the weight of the {'cross-entropy' if name == 'alpha' else 'reverse CE'}"
                             f" term), or null for the data set's default")
        if arguments["alpha"] is not None and arguments["beta"] is not None:
            require_argument(arguments["alpha"] + arguments["beta"] > 0, "alpha", arguments["alpha"],
                             "alpha and beta can't both be 0 (no loss)")

    @classmethod
    def from_config(cls, cfg: Any, data_info: DataInfo) -> Method:
        """``alpha``/``beta`` null (the default): the authors' value for the data set."""
        alpha, beta = SCE_DEFAULTS.get(data_info.dataset or "", SCE_DEFAULTS["cifar10"])
        return fill_unset(super().from_config(cfg, data_info), alpha=alpha, beta=beta)

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        default_alpha, default_beta = SCE_DEFAULTS["cifar10"]  # built without from_config (create_method)
        alpha = default_alpha if self.alpha is None else self.alpha
        beta = default_beta if self.beta is None else self.beta
        loss = sce_loss(logits_a, targets, alpha, beta).mean()
        everything = torch.arange(targets.numel(), device=targets.device)  # as standard: selects all
        return MethodOutput(loss=loss, selected_a=everything, selected_b=None)
