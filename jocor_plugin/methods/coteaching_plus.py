"""Co-teaching+ (Yu et al., ICML 2019): co-teaching, then only on the samples the networks disagree on.

Deliberate differences from the authors' code: their loss is the
cross-entropy of *softmax outputs* (a double softmax); a batch without disagreement falls back to
the whole batch for the first 5,000 iterations; and their index bookkeeping (``ind * mask``, then
dropping zeros) silently truncates the disagreement set when it holds dataset index 0. Here the
loss is the cross-entropy of the logits and an empty disagreement set is always a zero loss.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .base import (DataInfo, Method, MethodOutput, cross_small_loss, disagreement_indices, per_sample_ce,
                   require_argument)
from .coteaching import CoTeaching
from .registry import register_method

# init_epoch in the authors' code, per dataset (0 elsewhere)
INIT_EPOCH = {"mnist": 0, "cifar10": 20, "cifar100": 5}


@register_method("coteaching_plus")
class CoTeachingPlus(CoTeaching):
    """Co-teaching before init_epoch; afterwards cross small-loss within the disagreement set."""

    def __init__(self, init_epoch: int = 0):
        self.init_epoch = init_epoch

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        init_epoch = arguments["init_epoch"]
        require_argument(init_epoch is None or init_epoch >= 0, "init_epoch", init_epoch,
                         "use >= 0 (the epoch from which only disagreeing samples train), or null for the "
                         "data set's default")

    @classmethod
    def from_config(cls, cfg: Any, data_info: DataInfo) -> Method:
        """``method.init_epoch=null`` (the default): the authors' value for the dataset."""
        method = super().from_config(cfg, data_info)
        if method.init_epoch is None:
            method.init_epoch = INIT_EPOCH.get(data_info.dataset or "", 0)
        return method

    def __call__(self, logits_a: torch.Tensor, logits_b: torch.Tensor, targets: torch.Tensor, *,
                 forget_rate: float, epoch: int) -> MethodOutput:
        if epoch < self.init_epoch:
            return super().__call__(logits_a, logits_b, targets, forget_rate=forget_rate, epoch=epoch)
        disagree = disagreement_indices(logits_a, logits_b)
        # keeps floor((1 - tau) * #disagree) inside the set; picks map back to batch indices. The
        # set's size differs between processes, so this selection is always per process.
        loss, trained_a, trained_b = cross_small_loss(
            per_sample_ce(logits_a[disagree], targets[disagree]),
            per_sample_ce(logits_b[disagree], targets[disagree]), forget_rate, logits_a, logits_b)
        return MethodOutput(loss=loss, selected_a=disagree[trained_a], selected_b=disagree[trained_b])
