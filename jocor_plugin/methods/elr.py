"""Early-learning regularization (Liu et al., NeurIPS 2020), the authors' ELR (not ELR+).

One network, every sample. Each training sample i keeps a target t_i, a running average of the
network's own predictions (the authors' ``ELR/model/loss.py``, ``elr_loss``):

    p_i = clip(softmax(z_i), 1e-4, 1 - 1e-4)
    t_i <- beta * t_i + (1 - beta) * p_i / sum_k p_ik          (p detached; t_i = 0 at the start)
    loss = CE(z, y) + lambda * mean_i log(1 - <t_i, p_i>)

so the network is pulled towards what it predicted early in training, before it memorises the
noisy labels. The targets [num_train, C] live with the method: allocated in ``before_training``,
indexed by the batch's ``index`` column (``wants_index``: the engine passes ``index=``), saved in
every checkpoint (``state_dict``) and loaded on resume, so a resumed run continues exactly.

Several processes: each process updates the rows of its own batch, and the updated rows of every
process are all-gathered each step, so every process holds the same table (the one a checkpoint
saves). Accelerate's even batches repeat a few samples in an epoch's last step; those samples get
a second update in that epoch.

``beta`` / ``lam`` default (null) to the authors' configs: CIFAR-10 0.7 / 3 (0.9 / 1 with
asymmetric noise), CIFAR-100 0.9 / 7; CIFAR-10's 0.7 / 3 for every other data set.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from accelerate.utils import gather

from .base import DataInfo, Method, MethodOutput, _world, fill_unset, require_argument
from .contract import TrainerContext
from .registry import register_method

__all__ = ["EarlyLearningRegularization", "ELR_DEFAULTS", "elr_defaults"]

#: (beta, lambda) of the authors' config files per data set (and noise type)
ELR_DEFAULTS = {("cifar10", "symmetric"): (0.7, 3.0), ("cifar10", "asymmetric"): (0.9, 1.0),
                ("cifar100", "symmetric"): (0.9, 7.0), ("cifar100", "asymmetric"): (0.9, 7.0)}
CLIP = 1e-4  # the authors' clip of the softmax


def elr_defaults(dataset: Optional[str], noise_type: str) -> tuple[float, float]:
    """(beta, lambda) for the data: the authors' config, else CIFAR-10's (symmetric noise)."""
    if (dataset, noise_type) in ELR_DEFAULTS:
        return ELR_DEFAULTS[(dataset, noise_type)]
    return ELR_DEFAULTS[("cifar100" if dataset == "cifar100" else "cifar10", "symmetric")]


@register_method("elr")
class EarlyLearningRegularization(Method):
    """One network trained with CE + lambda*mean log(1 - <t_i, p_i>), t_i a running average of sample i's predictions."""

    num_networks = 1
    uses_forget_rate = False
    wants_index = True

    def __init__(self, beta: Optional[float] = None, lam: Optional[float] = None):
        self.beta, self.lam = beta, lam
        self._targets: Optional[torch.Tensor] = None  # [num_train, C], float32, on the device

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        beta, lam = arguments["beta"], arguments["lam"]
        require_argument(beta is None or 0.0 <= beta < 1.0, "beta", beta,
                         "it must be in [0, 1) (the targets' running-average momentum), or null for the data "
                         "set's default")
        require_argument(lam is None or lam >= 0, "lam", lam,
                         "use >= 0 (the regularization's weight lambda), or null for the data set's default")

    @classmethod
    def from_config(cls, cfg: Any, data_info: DataInfo) -> Method:
        """``beta``/``lam`` null (the default): the authors' values for the data set."""
        beta, lam = elr_defaults(data_info.dataset, data_info.noise_type)
        return fill_unset(super().from_config(cfg, data_info), beta=beta, lam=lam)

    # ------------------------------------------------------------------ the per-sample targets

    def allocate(self, num_samples: int, num_classes: int, device: torch.device | str = "cpu") -> None:
        """Zero targets for ``num_samples`` samples (the authors start from zeros)."""
        self._targets = torch.zeros(num_samples, num_classes, dtype=torch.float32, device=device)

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """The per-sample targets t [num_train, C] (None before ``allocate``)."""
        return self._targets

    def before_training(self, trainer: TrainerContext) -> None:
        self.allocate(trainer.data_info.num_train, trainer.data_info.num_classes, trainer.accelerator.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._targets is None else {"targets": self._targets}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        saved = state["targets"]
        if self._targets is None or saved.shape != self._targets.shape:
            expected = None if self._targets is None else tuple(self._targets.shape)
            raise ValueError(f"ELR's saved targets have shape {tuple(saved.shape)}, this run's {expected}.")
        self._targets.copy_(saved)

    # ------------------------------------------------------------------ the loss

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor], targets: torch.Tensor, *,
                 forget_rate: float, epoch: int, index: Optional[torch.Tensor] = None) -> MethodOutput:
        if index is None or self._targets is None:
            raise RuntimeError("ELR needs its targets allocated (before_training / allocate) and the batch's "
                               "sample indices (index=...).")
        default_beta, default_lam = elr_defaults(None, "symmetric")  # built without from_config
        beta = default_beta if self.beta is None else self.beta
        lam = default_lam if self.lam is None else self.lam
        logits = logits_a.float()
        p = F.softmax(logits, dim=1).clamp(CLIP, 1.0 - CLIP)
        with torch.no_grad():
            p_ = p.detach()
            t = beta * self._targets[index] + (1.0 - beta) * p_ / p_.sum(dim=1, keepdim=True)
            self._store(index, t)
        regulariser = torch.log(1.0 - (t * p).sum(dim=1)).mean()
        loss = F.cross_entropy(logits, targets) + lam * regulariser
        everything = torch.arange(targets.numel(), device=targets.device)  # as standard: selects all
        return MethodOutput(loss=loss, selected_a=everything, selected_b=None)

    def _store(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        """Write the updated rows; with several processes every process's rows (all-gathered)."""
        world, _ = _world()
        if world > 1:
            index, rows = gather(index.contiguous()), gather(rows.contiguous())
        self._targets[index] = rows
