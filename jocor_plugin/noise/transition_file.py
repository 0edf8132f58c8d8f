"""Transition matrices T[clean, noisy] given as files: read (``.npy``, ``.pt``, ``.json`` -- also an
earlier run's results.json --, ``.csv`` / text) and checked to be square and row-stochastic.

Used by a recipe's ``noise.transition_matrix`` (config, data) and F-correction's
``method.transition_matrix``; here, below both, so neither imports the other.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ..core.errors import UserError

__all__ = ["MatrixLike", "as_transition_matrix", "load_transition_matrix"]

MatrixLike = Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]


def as_transition_matrix(value: MatrixLike) -> torch.Tensor:
    """A float32 CPU tensor, checked to be a square row-stochastic matrix."""
    try:
        T = torch.as_tensor(np.asarray(value, dtype=np.float32))
    except (ValueError, TypeError):  # numpy's "setting an array element with a sequence" for ragged rows
        rows = value if isinstance(value, (list, tuple)) else []
        lengths = [len(row) if isinstance(row, (list, tuple)) else 1 for row in rows]
        why = f"its rows have {lengths} entries" if len(set(lengths)) > 1 else "not every entry is a number"
        raise UserError(f"A transition matrix must be a C x C table of numbers; {why}.") from None
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < 2:
        raise UserError(f"A transition matrix must be square C x C (C >= 2), got shape {tuple(T.shape)}.")
    if not torch.isfinite(T).all() or (T < 0).any():
        raise UserError("A transition matrix must have finite, non-negative entries.")
    if not (T > 0).any(dim=0).all():
        raise UserError("A transition matrix needs a positive entry in every column: otherwise a noisy "
                        "label of that class has probability 0 and an infinite loss.")
    if not torch.allclose(T.sum(dim=1), torch.ones(T.shape[0]), atol=1e-3):
        raise UserError(f"Each row of a transition matrix (T[clean, noisy]) must sum to 1; row sums: "
                        f"{[round(v, 4) for v in T.sum(dim=1).tolist()]}.")
    return T


def load_transition_matrix(path: Union[str, Path]) -> torch.Tensor:
    """T[clean, noisy] from .npy, .pt/.pth, .json (nested lists, or a results.json whose
    ``transition_matrix.estimated`` holds one) or text (.csv, whitespace-separated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Transition matrix file {str(path)!r} not found.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value = np.load(path)
        elif suffix in (".pt", ".pth"):
            value = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".json":
            value = json.loads(path.read_text())
            if isinstance(value, dict):  # an earlier run's results.json
                value = value["transition_matrix"]["estimated"]
        else:
            value = np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=2)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as err:
        raise UserError(f"Cannot read a transition matrix from {str(path)!r} ({err}).") from None
    return as_transition_matrix(value.cpu() if isinstance(value, torch.Tensor) else value)
