"""Sparse over-parameterization (Liu, Zhu, Qu, You, ICML 2022), the authors' plain SOP (not SOP+).

One network, every sample. Each training sample i models its label noise as s_i = U_i - V_i with
two per-sample variables, u_i (one number) and v_i (one per class), both started near zero
(N(0, 1e-8^2)): label noise is sparse, and gradient descent on the squares u^2, v^2 from a tiny
start stays sparse (an implicit L1 penalty), so s_i grows only where the network cannot fit the
label. With y_i the one-hot noisy label, p_i the softmax and B the batch (the authors'
``model/loss.py`` at 9a3fd24, ``overparametrization_loss.forward``):

    U_i = clamp(u_i^2 * y_i, 0, 1)            V_i = clamp(v_i^2 * (1 - y_i), 0, 1)     (:70-74)
    q_i = clamp(p_i + U_i - sg(V_i), 1e-4);  q_i <- clamp(q_i / max(sum_k q_ik, 1e-4), 1e-4, 1)  (:81-87)
    CE  = mean_i -log q_{i, y_i}                                                          (:95)
    MSE = (1/B) sum_i || onehot(argmax z_i) + U_i - V_i - y_i ||^2                        (:89, :92)
    loss = CE + MSE                                                                       (:99)

sg is stop-gradient. The network gets CE's gradient only (the one-hot of its argmax has none);
u gets CE's and MSE's, v only MSE's (V enters q detached). u and v are not the network's
parameters: they take their own plain SGD step on the same loss at the same step, u at ``lr_u``
and v at ``lr_v``, constant, no momentum, no weight decay (``train.py`` at b5acc11:83-89,
``config_cifar100.json`` at 10ae21e:62-72); the step is on the batch mean, so one sample's
update is lr/B times its own gradient, as theirs with B = 128.

u [num_train, 1] and v [num_train, C] live with the method, as ELR's targets: allocated in
``before_training`` (from their own generator seeded by ``train.seed``, so the rest of the run's
randomness is untouched), indexed by the batch's ``index`` column (``wants_index``), saved in
every checkpoint and loaded on resume, so a resumed run continues exactly.

Several processes: each process steps the rows of its own batch with the gradient of its batch
mean divided by the number of processes -- the gradient of the mean over all processes' batches,
as one process with the whole batch -- and the updated rows of every process are all-gathered
each step, so every process holds the same u and v (the ones a checkpoint saves).

``lr_u`` / ``lr_v`` default (null) to the authors' Table A.1: CIFAR-10 10 / 10 (asymmetric noise
10 / 100), CIFAR-100 1 / 10 (asymmetric 0.1 / 100, the repository README's value after the camera
ready; the table's 1 / 100); CIFAR-10's symmetric 10 / 10 for every other data set.

Left out: SOP+ (the consistency term between two augmented views and the class-balance term,
``model/loss.py`` :102-116), which needs two views per sample from the data pipeline.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from accelerate.utils import gather

from .base import DataInfo, Method, MethodOutput, _world, fill_unset, require_argument
from .contract import TrainerContext
from .registry import register_method

__all__ = ["SparseOverParameterization", "SOP_DEFAULTS", "sop_defaults", "sop_loss"]

#: (lr_u, lr_v) of the authors per data set and noise type (paper Table A.1; CIFAR-100 asymmetric
#: as their README runs it)
SOP_DEFAULTS = {("cifar10", "symmetric"): (10.0, 10.0), ("cifar10", "asymmetric"): (10.0, 100.0),
                ("cifar100", "symmetric"): (1.0, 10.0), ("cifar100", "asymmetric"): (0.1, 100.0)}
EPS = 1e-4  # the authors' clamp of the prediction and of its normaliser (model/loss.py:68)
INIT_MEAN = 0.0  # the authors' Gaussian initialisation of u and v (config_cifar100.json:27-28)
INIT_STD = 1e-8
SQUARE_MAX = 1.0  # u^2 y and v^2 (1 - y) are clamped to [0, 1] (model/loss.py:73-74)


def sop_defaults(dataset: Optional[str], noise_type: str) -> tuple[float, float]:
    """(lr_u, lr_v) for the data: the authors', else CIFAR-10's with symmetric noise."""
    if (dataset, noise_type) in SOP_DEFAULTS:
        return SOP_DEFAULTS[(dataset, noise_type)]
    return SOP_DEFAULTS[("cifar100" if dataset == "cifar100" else "cifar10", "symmetric")]


def sop_loss(logits: torch.Tensor, targets: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """CE + MSE of the module docstring for ``logits`` [B, C] (in float32), class ``targets`` [B]
    and the batch's rows ``u`` [B, 1], ``v`` [B, C]."""
    logits = logits.float()
    y = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    big_u = (u.square() * y).clamp(0.0, SQUARE_MAX)
    big_v = (v.square() * (1.0 - y)).clamp(0.0, SQUARE_MAX)
    q = (F.softmax(logits, dim=1) + big_u - big_v.detach()).clamp_min(EPS)
    q = (q / q.sum(dim=1, keepdim=True).clamp_min(EPS)).clamp(EPS, 1.0)  # L1 normalise (q > 0)
    ce = -(y * torch.log(q)).sum(dim=1).mean()
    predicted = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).to(logits.dtype)
    mse = (predicted + big_u - big_v - y).square().sum() / targets.numel()
    return ce + mse


@register_method("sop")
class SparseOverParameterization(Method):
    """One network trained with CE on softmax + u_i^2 y_i - v_i^2 (1 - y_i); per-sample u, v learn the label noise."""

    num_networks = 1
    uses_forget_rate = False
    wants_index = True

    def __init__(self, lr_u: Optional[float] = None, lr_v: Optional[float] = None, init_std: float = INIT_STD):
        self.lr_u, self.lr_v, self.init_std = lr_u, lr_v, init_std
        self._u: Optional[torch.Tensor] = None  # [num_train, 1], float32, on the device
        self._v: Optional[torch.Tensor] = None  # [num_train, C]

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        for name in ("lr_u", "lr_v"):
            lr = arguments[name]
            require_argument(lr is None or 0 < lr < float("inf"), name, lr,
                             f"use > 0 (the SGD step of {name[-1]}), or null for the data set's default")
        std = arguments["init_std"]
        require_argument(0 < std < float("inf"), "init_std", std,
                         "use > 0 (1e-8 as the authors): u = v = 0 never moves, the gradient of u^2 being 2u")

    @classmethod
    def from_config(cls, cfg: Any, data_info: DataInfo) -> Method:
        """``lr_u``/``lr_v`` null (the default): the authors' values for the data set."""
        lr_u, lr_v = sop_defaults(data_info.dataset, data_info.noise_type)
        return fill_unset(super().from_config(cfg, data_info), lr_u=lr_u, lr_v=lr_v)

    # ------------------------------------------------------------------ the per-sample u and v

    def allocate(self, num_samples: int, num_classes: int, device: torch.device | str = "cpu", seed: int = 0) -> None:
        """u, v ~ N(0, init_std^2), drawn on the CPU from a generator of their own (the same
        values on every device and process)."""
        generator = torch.Generator().manual_seed(seed)
        u = torch.randn(num_samples, 1, generator=generator) * self.init_std + INIT_MEAN
        v = torch.randn(num_samples, num_classes, generator=generator) * self.init_std + INIT_MEAN
        self._u, self._v = u.to(device), v.to(device)

    @property
    def u(self) -> Optional[torch.Tensor]:
        """The per-sample u [num_train, 1] (None before ``allocate``)."""
        return self._u

    @property
    def v(self) -> Optional[torch.Tensor]:
        """The per-sample v [num_train, C] (None before ``allocate``)."""
        return self._v

    def before_training(self, trainer: TrainerContext) -> None:
        info = trainer.data_info
        self.allocate(info.num_train, info.num_classes, trainer.accelerator.device, seed=trainer.cfg.train.seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self._u is None else {"u": self._u, "v": self._v}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for name, mine in (("u", self._u), ("v", self._v)):
            saved = state[name]
            if mine is None or saved.shape != mine.shape:
                expected = None if mine is None else tuple(mine.shape)
                raise ValueError(f"SOP's saved {name} has shape {tuple(saved.shape)}, this run's {expected}.")
        self._u.copy_(state["u"])
        self._v.copy_(state["v"])

    # ------------------------------------------------------------------ the loss and the u, v step

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor], targets: torch.Tensor, *,
                 forget_rate: float, epoch: int, index: Optional[torch.Tensor] = None) -> MethodOutput:
        if index is None or self._u is None:
            raise RuntimeError("SOP needs its u and v allocated (before_training / allocate) and the batch's "
                               "sample indices (index=...).")
        default_u, default_v = sop_defaults(None, "symmetric")  # built without from_config
        lr_u = default_u if self.lr_u is None else self.lr_u
        lr_v = default_v if self.lr_v is None else self.lr_v
        u = self._u[index].requires_grad_(True)  # leaves of their own: the table is not in the graph
        v = self._v[index].requires_grad_(True)
        loss = sop_loss(logits_a, targets, u, v)
        # u, v's gradient now, before the engine's backward: the step is simultaneous with the
        # network's (both from this step's u, v), as the authors' two optimizers after one backward
        grad_u, grad_v = torch.autograd.grad(loss, (u, v), retain_graph=True)
        world, _ = _world()  # the gradient of the mean over every process's batch
        with torch.no_grad():
            new_u, new_v = u - (lr_u / world) * grad_u, v - (lr_v / world) * grad_v
            # a step with a non-finite loss (NaN logits) leaves the rows as they were, as
            # train.nan_policy=skip leaves the network; decided on the device
            finite = torch.isfinite(loss)
            new_u = torch.where(finite & torch.isfinite(new_u), new_u, u)
            new_v = torch.where(finite & torch.isfinite(new_v), new_v, v)
            self._store(index, new_u, new_v)
        everything = torch.arange(targets.numel(), device=targets.device)  # as standard: selects all
        return MethodOutput(loss=loss, selected_a=everything, selected_b=None)

    def _store(self, index: torch.Tensor, u_rows: torch.Tensor, v_rows: torch.Tensor) -> None:
        """Write the updated rows; with several processes every process's rows (all-gathered)."""
        rows = torch.cat([u_rows, v_rows], dim=1)  # one gather for both
        world, _ = _world()
        if world > 1:
            index, rows = gather(index.contiguous()), gather(rows.contiguous())
        self._u[index] = rows[:, :1]
        self._v[index] = rows[:, 1:]
