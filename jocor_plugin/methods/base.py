"""What every method shares: its life cycle (``from_config`` and the trainer's hooks), its output,
small-loss selection and the empty-selection loss."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate.utils import gather

if TYPE_CHECKING:  # annotations only
    import numpy as np
    from .contract import TrainerContext

__all__ = ["Method", "MethodOutput", "DataInfo", "MethodArgumentError", "require_argument", "fill_unset", "num_to_keep",
           "small_loss_indices", "kept_mean", "mean_or_zero", "per_sample_ce", "disagreement_indices",
           "cross_small_loss", "SELECTION_SCOPES"]

#: "local": each process keeps the floor((1-tau)B) smallest of its own batch (the paper's code);
#: "global": the kept set is chosen over the batch of all processes (one threshold), so N
#: processes with batch B keep exactly what one process with batch N*B keeps.
SELECTION_SCOPES = ("local", "global")


class MethodArgumentError(ValueError):
    """A method's constructor argument outside what the method can train with: ``argument`` names
    it, ``allowed`` says what is allowed (the recipe check turns it into one line naming the key)."""

    def __init__(self, argument: str, value: Any, allowed: str):
        super().__init__(f"{argument}={value!r} is invalid; {allowed}.")
        self.argument, self.value, self.allowed = argument, value, allowed


def fill_unset(method: "Method", **defaults: Any) -> "Method":
    """Each argument left null (None) takes ``defaults``' value: a method's per-data-set defaults
    (``from_config``) without overriding what the recipe gave."""
    for name, value in defaults.items():
        if getattr(method, name) is None:
            setattr(method, name, value)
    return method


def require_argument(ok: bool, argument: str, value: Any, allowed: str) -> None:
    """``MethodArgumentError`` unless ``ok`` (one range rule of ``Method.check_arguments``)."""
    if not ok:
        raise MethodArgumentError(argument, value, allowed)


@dataclass
class MethodOutput:
    """``loss`` drives the joint optimizer; ``selected_*`` are the batch indices each network
    trained on, each position at most once (``selected_b`` is None for single-network methods). ``per_sample_loss`` is the
    method's own per-sample ranking loss (detached, one per batch sample) for the label-issue
    statistics; None means the engine uses the networks' mean cross-entropy instead."""

    loss: torch.Tensor
    selected_a: torch.Tensor
    selected_b: Optional[torch.Tensor]
    per_sample_loss: Optional[torch.Tensor] = None


@dataclass
class DataInfo:
    """What a method is told about its data when it is built (``Method.from_config``).

    ``dataset``: the known dataset the data is (``mnist``, ``cifar10``, ``cifar100``,
    ``fashion_mnist``) or None; ``transition_matrix``: the injected noise's T[clean, noisy]
    (None without injected noise)."""

    name: str
    dataset: Optional[str]
    num_classes: int
    num_train: int
    noise_type: str
    noise_rate: float
    actual_noise_rate: Optional[float] = None
    transition_matrix: Optional["np.ndarray"] = None


class Method:
    """A training method: both networks' logits and the noisy targets in, one loss out.

    Subclasses implement ``__call__(logits_a, logits_b, targets, *, forget_rate, epoch)``
    (plus ``index=``, the batch's positions in the training set, when ``wants_index`` is True).
    Methods never see clean labels, and keep their selection on the device.

    Life cycle (the trainer calls these; every hook is a no-op here, override what you need):

    * ``from_config(cfg, data_info)`` (classmethod) builds the method from the recipe
      (``method.*`` keys its constructor accepts, then ``method.kwargs``: ``constructor_arguments``)
      and the data's facts (``DataInfo``), e.g. a per-dataset default.
    * ``check_arguments(arguments)`` (classmethod) refuses constructor arguments out of range
      (``MethodArgumentError``); the recipe check calls it when the recipe is loaded, so a bad
      value stops a run -- or a whole grid -- before any work.
    * ``before_training(trainer)``: once, after tau is resolved and before the first epoch (and
      before a checkpoint is loaded): e.g. a first stage that estimates something.
    * ``before_epoch(trainer, epoch)`` / ``after_epoch(trainer, epoch, record)``: around every
      epoch (also the epochs of a stage the method trains in); ``record`` is the epoch's metrics
      dict, to which a method may add keys (numbers: they are logged and tracked). A run resumed
      inside an epoch calls ``before_epoch`` again for that epoch.
    * ``train_epoch(trainer, epoch, forget_rate)``: return None (here) to let the trainer run its
      standard step loop over ``trainer.train_loader`` (this method's ``__call__`` per batch), or
      own the epoch -- e.g. two passes over loaders of one's own -- and return True when it
      completed, False when it stopped early on ``trainer.stop()`` (feed ``trainer.meter``:
      ``trainer.meter.update(batch, loss, selected_a, selected_b)`` per step gives the record's
      loss and selection figures).
    * ``state_dict()`` / ``load_state_dict(state)``: the method's own training state (tensors by
      name, e.g. per-sample targets) that a checkpoint must hold to continue a run exactly. The
      trainer saves ``state_dict()`` with every checkpoint (``method_state.safetensors``, the main
      process's copy: keep every process's copy the same) and, on resume, calls
      ``load_state_dict`` after ``before_training``. Default: no state.

    The hooks' ``trainer`` is typed by ``contract.TrainerContext``: all a method may use. It offers: ``cfg``, ``accelerator``,
    ``pair`` (the prepared networks: ``pair(x) -> (logits_a, logits_b)``), ``optimizer``,
    ``splits`` (``train``, ``test``, ... datasets), ``train_loader``, ``image_config``, ``out``
    (the run's folder), ``data_info``, ``results`` (results.json, a method may add a section),
    ``forget_rate`` (tau, resolved), ``meter``, ``stop``, and the methods
    ``make_loader(dataset, *, train, batch_size)`` (an Accelerate-prepared loader),
    ``per_sample_outputs(dataset=None) -> (logits_a, logits_b | None, labels, index)`` (one
    eval-mode pass over the training set, gathered from all processes, on the CPU),
    ``scratch()`` (a context whose end restores the networks' weights and clears the optimizer)
    and ``run_stage(method, epochs=, log_prefix=)`` (plain epochs from the current weights at
    tau 0, without checkpoints or tracking; returns their records).
    """

    #: 1 for methods that train a single network (the trainer then builds only ``net_a``).
    num_networks: int = 2
    #: where small-loss selection looks ("local" or "global", see ``SELECTION_SCOPES``); the
    #: trainer sets it from ``method.selection``.
    selection: str = "local"
    #: whether the method drops a forget rate tau of each batch (False: tau is not used, so
    #: noise.type=none needs no tau for it)
    uses_forget_rate: bool = True
    #: whether ``__call__`` takes ``index=``: the batch's positions in the training set (its
    #: ``index`` column, 0 .. num_train - 1), e.g. to keep per-sample state
    wants_index: bool = False
    #: what ``train.fidelity=authors_code`` sets for this method: recipe key -> the value of its
    #: authors' code, or a function of the config that returns it (None: keep the recipe's value,
    #: e.g. for data the authors' code doesn't train on). ``method.kwargs.<name>`` and
    #: ``optim.kwargs.<name>`` set one entry of those dicts. Empty (here): the JoCoR authors'
    #: table, ``config.fidelity.AUTHORS_CODE_DEFAULTS``, which the paper's methods share.
    authors_code_defaults: dict[str, Any] = {}

    @classmethod
    def constructor_arguments(cls, method_cfg: Any) -> dict[str, Any]:
        """The constructor's arguments from the recipe's ``method`` section (a
        ``config.MethodConfig``): its keys the constructor accepts, then ``method.kwargs`` (which
        win). (Methods import neither the schema nor the trainer.)"""
        accepted = inspect.signature(cls.__init__).parameters
        named = {k: v for k, v in vars(method_cfg).items() if k in accepted and k != "kwargs"}
        return {**named, **method_cfg.kwargs}

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """Raise ``MethodArgumentError`` (``require_argument``) for an argument out of range.
        ``arguments`` are the constructor's, the defaults filled in (``with_defaults``). Nothing
        to check here; methods with ranges override it."""

    @classmethod
    def with_defaults(cls, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``arguments`` plus the constructor's defaults for the ones not given."""
        defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return {**defaults, **arguments}

    @classmethod
    def from_config(cls, cfg: Any, data_info: DataInfo) -> "Method":
        """The recipe's (``cfg``, a ``config.Config``) method, built from ``constructor_arguments``."""
        method = cls(**cls.constructor_arguments(cfg.method))
        method.selection = cfg.method.selection
        return method

    def before_training(self, trainer: TrainerContext) -> None:
        """Once before the first epoch (see the class docstring)."""

    def before_epoch(self, trainer: TrainerContext, epoch: int) -> None:
        """Before each epoch's training."""

    def train_epoch(self, trainer: TrainerContext, epoch: int, forget_rate: float) -> Optional[bool]:
        """None: the trainer's standard step loop; else this method ran the epoch (completed?)."""
        return None

    def after_epoch(self, trainer: TrainerContext, epoch: int, record: dict) -> None:
        """After each epoch's evaluation; may add keys to ``record``."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The training state a checkpoint keeps (tensors by name); none here."""
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore ``state_dict()``'s tensors from a checkpoint (after ``before_training``)."""

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()  # constructor arguments
                         if not k.startswith("_") and k != "selection")
        return f"{type(self).__name__}({args})"


def num_to_keep(batch_size: int, forget_rate: float) -> int:
    """floor((1 - tau) * B); the epsilon keeps e.g. (1 - 0.9) * 10 from flooring to 0."""
    return max(0, math.floor((1.0 - forget_rate) * batch_size + 1e-9))


def _world() -> tuple[int, int]:
    """(number of processes, this process's rank); (1, 0) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def small_loss_indices(losses: torch.Tensor, forget_rate: float, scope: str = "local") -> torch.Tensor:
    """Indices of the floor((1 - tau) * B) smallest per-sample losses, on the losses' device.

    ``scope="global"`` (under torch.distributed): the losses of every process are all-gathered
    (equal batch sizes, as Accelerate's even batches give), the floor((1 - tau) * N * B) smallest
    are chosen once, and each process gets the indices of its own share. The share's size varies,
    so ``nonzero`` waits for the device once; nothing is copied to the host.
    """
    world, rank = _world()
    if scope == "local" or world == 1:
        k = num_to_keep(losses.numel(), forget_rate)
        return torch.topk(losses.detach(), k, largest=False, sorted=True).indices
    everyone = gather(losses.detach().contiguous())  # rank-major: the single-process batch order
    k = num_to_keep(everyone.numel(), forget_rate)
    kept = torch.zeros(everyone.numel(), dtype=torch.bool, device=losses.device)
    kept[torch.topk(everyone, k, largest=False, sorted=True).indices] = True
    n = losses.numel()
    return torch.nonzero(kept[rank * n:(rank + 1) * n]).squeeze(1)


def kept_mean(losses: torch.Tensor, keep: torch.Tensor, forget_rate: float, scope: str,
              *logits: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``losses[keep]`` over the kept set. Global scope: this process's sum divided by
    its share of the global count, so DDP's gradient average is exactly one process's mean over
    the whole kept set. An empty selection is a zero that reaches every network (``mean_or_zero``).
    """
    world, _ = _world()
    if scope == "local" or world == 1:
        return mean_or_zero(losses[keep], *logits)
    share = num_to_keep(losses.numel() * world, forget_rate) / world
    return losses[keep].sum() / max(share, 1.0)  # a sum over nothing still reaches the logits


def mean_or_zero(losses: torch.Tensor, *logits: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``losses``; for an empty selection a zero that still touches every network's
    graph, so DDP sees a gradient for every parameter and never hangs (and no NaN)."""
    if losses.numel() > 0:
        return losses.mean()
    return sum(z.sum() * 0.0 for z in logits if z is not None)


def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample, in float32 whatever the autocast dtype of the logits."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def disagreement_indices(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Indices of the samples whose predicted classes differ between the two networks.

    The count is data-dependent, so ``nonzero`` waits for the device once; the indices stay there.
    """
    return torch.nonzero(logits_a.argmax(dim=1) != logits_b.argmax(dim=1)).squeeze(1)


def cross_small_loss(ce_a: torch.Tensor, ce_b: torch.Tensor, forget_rate: float,
                     *logits: Optional[torch.Tensor], scope: str = "local"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-teaching's cross update: each network keeps its floor((1 - tau) n) smallest losses and
    its *peer* trains on them. Returns (loss, trained_a, trained_b), indices into ``ce_*``;
    ``logits`` are touched by the zero loss of an empty selection."""
    picked_by_a = small_loss_indices(ce_a, forget_rate, scope)
    picked_by_b = small_loss_indices(ce_b, forget_rate, scope)
    loss = (kept_mean(ce_a, picked_by_b, forget_rate, scope, *logits)
            + kept_mean(ce_b, picked_by_a, forget_rate, scope, *logits))
    return loss, picked_by_b, picked_by_a
