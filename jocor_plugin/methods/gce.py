"""Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): L_q = (1 - p_y^q) / q, and its
truncated variant L_trunc.

One network, every sample. q -> 0 is cross-entropy, q = 1 the mean absolute error (robust to noise
but slow to fit); the paper's q = 0.7 sits between. p_y^q is computed as exp(q * log_softmax_y), so
a p_y that underflows to 0 gives a finite gradient (0^(q-1) would be inf times 0: NaN).

``truncated=True``: the paper's truncated loss, which stops fitting samples the network finds
unlikely (p_y <= k, threshold k = 0.5):

    L_trunc(p_y) = L_q(k)    if p_y <= k         L_q(k) = (1 - k^q) / q
                   L_q(p_y)  otherwise

optimised, as the paper does, through per-sample weights w_i in [0, 1]:

    min_{theta, w}  sum_i w_i L_q(p_{y_i}(x_i; theta)) - L_q(k) sum_i w_i

alternately: theta by SGD with w fixed (the batch mean of w_i (L_q_i - L_q(k))), and w with theta
fixed, whose minimiser is w_i = 1 if L_q_i <= L_q(k) (i.e. p_y >= k) else 0 -- the "pruning" of
the samples the network cannot fit. w starts at 1 (plain L_q, shifted by -L_q(k)); from epoch
``prune_start`` (0-based; the paper's 40 on CIFAR) and then every ``prune_every`` epochs (its 10) w
is recomputed before the epoch by one eval-mode pass of the current network over the training set.
w and the epoch of its last pruning are the method's checkpoint state, so a run resumed inside a
pruning epoch does not prune again with later weights. The paper has no official code; the
formulas and the schedule (k = 0.5, pruning from epoch 40 every 10 epochs) are its text's.

Selection: plain GCE and truncated GCE before its first pruning report every sample; after it, the
samples with w_i = 1, which is the one data-dependent size of the step (``nonzero`` waits for the
device once, as Co-teaching+'s disagreement).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F

from .base import Method, MethodOutput, require_argument
from .contract import TrainerContext
from .registry import register_method

__all__ = ["GeneralizedCrossEntropy", "gce_loss", "truncation_constant", "pruning_weights"]

NOT_PRUNED = -1  # the pruning epoch before any pruning


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float) -> torch.Tensor:
    """Per-sample (1 - p_y^q) / q of ``logits`` [B, C] (in float32) against class ``targets`` [B]."""
    log_p_y = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    return (1.0 - torch.exp(q * log_p_y)) / q


def truncation_constant(q: float, k: float) -> float:
    """L_q(k) = (1 - k^q) / q: the loss of a sample at p_y = k, where L_trunc is cut."""
    return (1.0 - k ** q) / q


def pruning_weights(logits: torch.Tensor, targets: torch.Tensor, q: float, k: float) -> torch.Tensor:
    """w_i = 1 where L_q_i <= L_q(k) (p_y >= k), else 0: the minimiser over w in [0, 1]^n."""
    return (gce_loss(logits, targets, q) <= truncation_constant(q, k)).float()


@register_method("gce")
class GeneralizedCrossEntropy(Method):
    """One network trained with the generalized cross-entropy (1 - p_y^q)/q (q = 0.7), or its truncation at p_y = k."""

    num_networks = 1
    uses_forget_rate = False

    def __init__(self, q: float = 0.7, truncated: bool = False, k: float = 0.5, prune_start: int = 40,
                 prune_every: int = 10):
        self.q, self.truncated, self.k = q, truncated, k
        self.prune_start, self.prune_every = prune_start, prune_every
        self._weights: Optional[torch.Tensor] = None  # [num_train], float32 0/1, on the device
        self._pruned_epoch = NOT_PRUNED  # host copy of the state's epoch of the last pruning

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        q, k = arguments["q"], arguments["k"]
        require_argument(0.0 < q <= 1.0, "q", q, "it must be in (0, 1] (0.7 in the paper; 1 is the MAE, "
                                                 "the limit q -> 0 cross-entropy: use method.name=standard)")
        require_argument(isinstance(arguments["truncated"], bool), "truncated", arguments["truncated"],
                         "use true (the truncated loss L_trunc) or false")
        require_argument(0.0 < k < 1.0, "k", k, "it must be in (0, 1) (the truncation threshold on p_y; "
                                                 "0.5 in the paper)")
        start, every = arguments["prune_start"], arguments["prune_every"]
        require_argument(isinstance(start, int) and start >= 0, "prune_start", start,
                         "use an epoch >= 0 (0-based; 40 in the paper)")
        require_argument(isinstance(every, int) and every >= 1, "prune_every", every,
                         "use a number of epochs >= 1 (10 in the paper)")

    @property
    def wants_index(self) -> bool:  # type: ignore[override]
        """Truncated: the batch's training-set positions, for the per-sample weights."""
        return self.truncated

    # ------------------------------------------------------------------ the truncated loss' weights

    def allocate(self, num_samples: int, device: torch.device | str = "cpu") -> None:
        """Weights 1 for ``num_samples`` samples: no sample pruned yet."""
        self._weights = torch.ones(num_samples, dtype=torch.float32, device=device)
        self._pruned_epoch = NOT_PRUNED

    @property
    def weights(self) -> Optional[torch.Tensor]:
        """The per-sample weights w [num_train] (None unless truncated and allocated)."""
        return self._weights

    def prune(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor, epoch: int) -> None:
        """Set w from the network's ``logits`` on the training samples at positions ``index``."""
        weights = pruning_weights(logits, targets, self.q, self.k)
        self._weights[index.to(self._weights.device)] = weights.to(self._weights.device)
        self._pruned_epoch = epoch

    def is_pruning_epoch(self, epoch: int) -> bool:
        return (self.truncated and epoch >= self.prune_start
                and (epoch - self.prune_start) % self.prune_every == 0)

    def before_training(self, trainer: TrainerContext) -> None:
        if self.truncated:
            self.allocate(trainer.data_info.num_train, trainer.accelerator.device)

    def before_epoch(self, trainer: TrainerContext, epoch: int) -> None:
        # a run resumed inside this epoch pruned at its start already (the checkpoint says so)
        if self.is_pruning_epoch(epoch) and self._pruned_epoch != epoch:
            logits, _, labels, index = trainer.per_sample_outputs()  # eval mode, gathered: all processes agree
            self.prune(logits, labels, index, epoch)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            return {}
        return {"weights": self._weights, "pruned_epoch": torch.tensor([self._pruned_epoch])}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        saved = state["weights"]
        if self._weights is None or saved.shape != self._weights.shape:
            expected = None if self._weights is None else tuple(self._weights.shape)
            raise ValueError(f"Truncated GCE's saved weights have shape {tuple(saved.shape)}, this run's {expected}.")
        self._weights.copy_(saved)
        self._pruned_epoch = int(state["pruned_epoch"][0])  # a host read on resume, not in the step

    # ------------------------------------------------------------------ the loss

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor], targets: torch.Tensor, *,
                 forget_rate: float, epoch: int, index: Optional[torch.Tensor] = None) -> MethodOutput:
        losses = gce_loss(logits_a, targets, self.q)
        everything = torch.arange(targets.numel(), device=targets.device)  # as standard: selects all
        if not self.truncated:
            return MethodOutput(loss=losses.mean(), selected_a=everything, selected_b=None)
        if index is None or self._weights is None:
            raise RuntimeError("Truncated GCE needs its weights allocated (before_training / allocate) and the "
                               "batch's sample indices (index=...).")
        w = self._weights[index]
        loss = (w * (losses - truncation_constant(self.q, self.k))).mean()
        kept = everything if self._pruned_epoch == NOT_PRUNED else torch.nonzero(w).squeeze(1)
        return MethodOutput(loss=loss, selected_a=kept, selected_b=None)
