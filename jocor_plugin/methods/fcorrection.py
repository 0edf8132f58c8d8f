"""F-correction (Patrini et al., CVPR 2017): forward loss correction with an estimated transition matrix.

Two stages in one run (``ForwardCorrection.before_training``):

1. Only while ``needs_estimation``: train the network with this method as it is -- without a
   matrix its loss is plain cross-entropy -- for ``method.estimation_epochs`` (default
   ``train.epochs``), in the trainer's ``scratch()`` so the network and optimizer start stage 2
   fresh (new weights, no optimizer state, the schedule from epoch 0).
2. Softmax of that network on every training sample -> ``estimate_transition_matrix(probs,
   percentile)`` -> ``set_transition_matrix(T)``; ``T`` and ``transition_matrix_error(T, true_T)``
   go to results.json and ``transition_matrix.json`` (a resumed run reads it and skips stage 1).
3. The trainer's epochs: the forward loss. A matrix given up front (``transition_matrix=PATH``)
   skips stages 1-2.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..noise.transition_file import MatrixLike, as_transition_matrix, load_transition_matrix
from .base import Method, MethodArgumentError, MethodOutput, mean_or_zero, per_sample_ce, require_argument
from .contract import TrainerContext
from .registry import register_method

__all__ = ["ForwardCorrection", "estimate_transition_matrix", "transition_matrix_error",
           "load_transition_matrix"]

logger = logging.getLogger(__name__)
ESTIMATE_FILE = "transition_matrix.json"


def estimate_transition_matrix(probs: torch.Tensor, percentile: float = 97.0) -> torch.Tensor:
    """T[i, j] ~ p(noisy j | clean i) from a noisy-trained network's softmax ``probs`` [N, C].

    Row i is the softmax vector of class i's anchor: the sample whose p(i|x) is the
    ``percentile``-th percentile of column i (numpy's ``interpolation="higher"``, so it is a real
    sample; 100 gives the argmax, the official setting for CIFAR-100). The official code with its
    outlier filter takes the largest value strictly *below* that percentile, one rank lower.
    Rows are renormalised to sum to 1, as the official code does.
    """
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty [N, C] softmax table, got shape {tuple(probs.shape)}.")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
    probs = probs.detach().float()
    n = probs.shape[0]
    # the epsilon keeps e.g. 0.97 * 100 = 97.00000000000001 from ceiling to 98
    rank = min(n - 1, math.ceil(percentile / 100.0 * (n - 1) - 1e-9))
    anchors = probs.argsort(dim=0, stable=True)[rank]  # per class, its anchor sample
    T = probs[anchors]
    return T / T.sum(dim=1, keepdim=True)


def transition_matrix_error(estimated: MatrixLike, true: MatrixLike) -> float:
    """Relative L1 error sum|T_est - T| / sum|T| (as in T-Revision / Dual-T); 0 is exact."""
    est = torch.as_tensor(np.asarray(estimated, dtype=np.float64))
    ref = torch.as_tensor(np.asarray(true, dtype=np.float64))
    if est.shape != ref.shape:
        raise ValueError(f"Estimated T has shape {tuple(est.shape)}, the true one {tuple(ref.shape)}.")
    return float((est - ref).abs().sum() / ref.abs().sum())


@register_method("fcorrection")
class ForwardCorrection(Method):
    """One network with the forward loss -log((softmax(z) T)_y), T estimated by a standard first stage."""

    num_networks = 1
    uses_forget_rate = False

    def __init__(self, transition_matrix: Optional[str] = None, percentile: float = 97.0):
        self.transition_matrix = transition_matrix  # a file: use it and skip the estimation
        self.percentile = percentile
        self._T: Optional[torch.Tensor] = None
        self._log_T: Optional[torch.Tensor] = None
        if transition_matrix is not None:
            self.set_transition_matrix(load_transition_matrix(transition_matrix))

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """The percentile and the matrix file, before the estimation stage trains for nothing."""
        percentile = arguments["percentile"]
        require_argument(0.0 <= percentile <= 100.0, "percentile", percentile,
                         "it must be in [0, 100] (the anchor's percentile of each class column)")
        path = arguments["transition_matrix"]
        if path is not None and "$" not in path:  # a $VAR in the path is expanded when the run starts
            try:
                load_transition_matrix(path)
            except UserError as err:
                raise MethodArgumentError("transition_matrix", path, str(err).rstrip(".")) from None

    @property
    def T(self) -> Optional[torch.Tensor]:
        """The matrix in use (CPU, float32); None means identity, i.e. plain cross-entropy."""
        return self._T

    @property
    def needs_estimation(self) -> bool:
        return self._T is None

    def before_training(self, trainer: TrainerContext) -> None:
        """Stages 1-2 of the module docstring, unless T is given or an earlier run saved it."""
        if not self.needs_estimation:
            return
        saved = trainer.out / ESTIMATE_FILE
        if saved.is_file():  # resumed: T of the first stage
            info = json.loads(saved.read_text())
            self.set_transition_matrix(info["estimated"])
            trainer.results["transition_matrix"] = info
            return
        epochs = trainer.cfg.method.estimation_epochs or trainer.cfg.train.epochs
        logger.info("F-correction stage 1: %d epochs of standard training to estimate T.", epochs)
        with trainer.scratch():
            records = trainer.run_stage(self, epochs=epochs, log_prefix="[estimate T] ")
            logits = trainer.per_sample_outputs()[0]
        estimated = estimate_transition_matrix(logits.float().softmax(1), self.percentile)
        self.set_transition_matrix(estimated)
        info: dict[str, Any] = {"estimated": estimated.tolist(), "estimation_epochs": records}
        true = trainer.data_info.transition_matrix
        if true is not None:
            info.update(true=true.tolist(), error=transition_matrix_error(estimated, true))
            logger.info("Estimated T: relative L1 error %.4f against the true T.", info["error"])
        trainer.results["transition_matrix"] = info
        trainer.write_json(saved, info)

    def set_transition_matrix(self, T: MatrixLike) -> None:
        """Use ``T`` (T[clean, noisy], rows sum to 1) from now on."""
        self._T = as_transition_matrix(T.detach().cpu() if isinstance(T, torch.Tensor) else T)
        # log T once; zeros become -inf, which logsumexp weighs 0 (every column has a positive entry)
        self._log_T = self._T.log()

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
                 targets: torch.Tensor, *, forget_rate: float, epoch: int) -> MethodOutput:
        everything = torch.arange(targets.numel(), device=targets.device)
        if self._log_T is None:
            return MethodOutput(loss=mean_or_zero(per_sample_ce(logits_a, targets), logits_a),
                                selected_a=everything, selected_b=None)
        if self._log_T.device != logits_a.device:  # moved once, then cached on the device
            self._log_T = self._log_T.to(logits_a.device)
        if self._log_T.shape[0] != logits_a.shape[1]:
            raise UserError(f"The transition matrix is {self._log_T.shape[0]} x {self._log_T.shape[0]} "
                            f"but the network has {logits_a.shape[1]} outputs.")
        # log (softmax(z) T)_y = logsumexp_j(log p_j + log T[j, y]): no underflow of p_y to 0
        log_noisy = torch.logsumexp(F.log_softmax(logits_a.float(), dim=1) + self._log_T.t()[targets], dim=1)
        return MethodOutput(loss=mean_or_zero(-log_noisy, logits_a), selected_a=everything, selected_b=None)
