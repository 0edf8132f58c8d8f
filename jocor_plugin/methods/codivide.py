"""DivideMix's co-divide (Li, Socher, Hoi, ICLR 2020, Section 3.2) on per-sample loss vectors.

Each network's cross-entropy over the whole training set (eval mode) is min-max normalised, a
two-component Gaussian mixture is fitted to it (scikit-learn, the authors' settings) and each
sample's clean probability is the posterior of the component with the smaller mean. Co-divide:
the division made from network A's losses trains network B, and the other way round.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["Division", "normalise_losses", "clean_probability", "co_divide"]


@dataclass
class Division:
    """One network's training data for an epoch, made by its *peer*'s mixture: ``labelled``
    (bool [N]) keeps its labels, the rest is unlabelled; ``prob`` (float [N]) is the clean
    probability, the co-refinement weight of each labelled sample."""

    labelled: torch.Tensor
    prob: torch.Tensor


def normalise_losses(losses: torch.Tensor) -> torch.Tensor:
    """(l - min) / (max - min) as the authors; all equal (nothing to divide) gives zeros, not NaN."""
    losses = losses.detach().float()
    low, span = losses.min(), losses.max() - losses.min()
    return (losses - low) / span if span > 0 else torch.zeros_like(losses)


def clean_probability(losses: torch.Tensor, history: Optional[Sequence[torch.Tensor]] = None, *,
                      seed: int = 0, max_iter: int = 10, tol: float = 1e-2,
                      reg_covar: float = 5e-4) -> torch.Tensor:
    """P(clean) of each sample (float32, CPU) from a 2-component GMM fitted to the normalised
    ``losses`` -- or to the mean of ``history`` (earlier epochs' normalised losses, newest last)
    when given, as the authors do at 90 % noise to steady the fit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    values = torch.stack(list(history)).mean(dim=0) if history else losses
    x = values.detach().double().cpu().numpy().reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    with warnings.catch_warnings():  # 10 iterations often stop short of tol, by design
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    prob = gmm.predict_proba(x)[:, int(np.argmin(gmm.means_.ravel()))]
    return torch.from_numpy(prob).float()


def co_divide(prob_a: torch.Tensor, prob_b: torch.Tensor, p_threshold: float) -> tuple[Division, Division]:
    """(division that trains A, division that trains B): A learns from B's mixture, B from A's;
    labelled = clean probability > ``p_threshold``."""
    return Division(prob_b > p_threshold, prob_b), Division(prob_a > p_threshold, prob_a)
