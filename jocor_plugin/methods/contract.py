"""What a method may use of the trainer: the typed contract of the hooks' ``trainer`` argument.

A method's hooks (``before_training``, ``before_epoch``, ``train_epoch``, ``after_epoch``) receive
the running trainer. This Protocol is all of it they may use, so a method imports nothing from the
data, engine or trainer modules (the methods sit below them: ``jocor_plugin/__init__.py`` gives the
layers) and a new method is written against this page alone. ``jocor_plugin.train.trainer.Trainer``
implements it; ``tests/test_architecture.py`` checks that it does, attribute by attribute.

Two things the trainer does for a method are declared on the method, not here: ``wants_index``
(the engine passes each batch's training-set positions as ``index=``) and ``state_dict`` /
``load_state_dict`` (the trainer keeps the method's own state in every checkpoint and gives it back
on resume, after ``before_training``); see ``base.Method``.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch

from .base import DataInfo, Method

__all__ = ["TrainerContext", "ViewSource"]


class ViewSource(Protocol):
    """Augmented views of training samples by index (``TrainerContext.view_batches``)."""

    #: the decoded in-memory images, or None when the data is streamed from files
    in_memory: Any

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[dict[str, Any]]:
        """Per batch of training-set positions, ``{"views": [tensor, ...], "label": ..., ...}``."""


class TrainerContext(Protocol):
    """The running trainer, as a method's hooks see it."""

    cfg: Any                                      # the resolved recipe (``config.Config``), read only
    accelerator: Any                              # the ``accelerate.Accelerator`` of the run
    pair: torch.nn.Module                         # both networks, prepared: ``pair(x) -> (logits_a, logits_b)``
    optimizer: torch.optim.Optimizer              # the one joint optimizer, prepared
    splits: Any                                   # ``train``, ``test``, ... ``datasets.Dataset`` s of the run
    train_loader: Any                             # the prepared training loader
    eval_loaders: dict[str, Any]                  # prepared loaders: "test", maybe "validation"
    image_config: dict[str, Any]                  # timm's data config: input size, mean, std, ...
    out: Path                                     # the run's folder
    data_info: DataInfo                           # facts of the data (name, classes, noise type)
    results: dict[str, Any]                       # results.json being written; a method may add a section
    forget_rate: Optional[float]                  # tau, resolved
    meter: Any                                    # the epoch's meter: ``meter.update(batch, loss, sel_a, sel_b)``
    stats: Any                                    # label-issue statistics in an epoch that gathers them, else
    #                                               None: ``stats.update(batch, logits_a, logits_b, out)``
    stop: Callable[[], bool]                      # True once a stop (SIGTERM, Ctrl-C) was asked for

    def make_loader(self, dataset: Any, *, train: bool, batch_size: int, decoded: Any = None) -> Any:
        """A loader over ``dataset``, prepared by Accelerate (sharded over the processes)."""

    def per_sample_outputs(self, dataset: Any = None) -> tuple[torch.Tensor, Optional[torch.Tensor],
                                                                torch.Tensor, torch.Tensor]:
        """(logits_a, logits_b or None, labels, index) of every sample, eval mode, gathered, on the CPU."""

    def scratch(self) -> AbstractContextManager[None]:
        """A throw-away stage: on exit the weights are back and the optimizer's state is cleared."""

    def run_stage(self, method: Method, *, epochs: int, log_prefix: str) -> list[dict[str, Any]]:
        """Plain epochs of ``method`` at tau 0 from the current weights, without checkpoints."""

    def view_batches(self, views: int, *, flip: bool, padding: int) -> ViewSource:
        """``views`` augmented views (crop ``padding`` px, ``flip``) of training samples by index."""

    def training_column(self, name: str) -> np.ndarray:
        """A column of the training set (``label``, ``clean_label``, ``is_noisy``, ``index``)."""

    def guarded_step(self, net: torch.nn.Module) -> AbstractContextManager[None]:
        """Around a method's own ``optimizer.step()`` for ``net``: under ``train.nan_policy=skip`` a
        non-finite step leaves its weights and optimizer state unchanged."""

    def zero_grad(self) -> None:
        """Clear the joint optimizer's gradients (``set_to_none``) for a method's own steps; cheaper
        per call than ``optimizer.zero_grad`` through Accelerate's wrapper."""

    def check_finite(self, epoch: int) -> None:
        """Stop on a NaN/inf loss seen by the meter, unless ``train.nan_policy=skip`` (a host read)."""

    def write_json(self, path: Path, payload: dict[str, Any]) -> None:
        """A JSON file in the run's folder, written once (main process), atomically."""
