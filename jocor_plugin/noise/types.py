"""Label-noise types, registered by name: one place defines a type -- its transition matrix
T[clean, noisy], the forget rate tau it implies by default, and its name in the paper's tables.

Add one with ``@register_noise_type("name", default_forget_rate=..., label=...)`` on a function
``(rate, num_classes, *, dataset, grouping, matrix=None) -> T`` (a module named in ``method.imports`` is
imported before the recipe is checked); ``noise.type=name`` then works everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..core.errors import did_you_mean

__all__ = ["NoiseType", "NOISE_TYPES", "register_noise_type", "noise_type", "transition_matrix", "CIFAR100_COARSE"]

MatrixFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class NoiseType:
    """``matrix(rate, num_classes, dataset=, grouping=)``: the row-stochastic T;
    ``default_forget_rate(rate)``: tau when the recipe gives none; ``label``: the paper's
    column word (``Symmetry`` -> ``Symmetry-50%``), None where the paper has no column."""

    name: str
    matrix: MatrixFn
    default_forget_rate: Callable[[float], float]
    label: Optional[str] = None

    def paper_setting(self, rate: float) -> Optional[str]:
        return f"{self.label}-{round(100 * rate)}%" if self.label else None


#: name -> NoiseType, in registration order (iterating gives the names)
NOISE_TYPES: dict[str, NoiseType] = {}


def register_noise_type(name: str, *, default_forget_rate: Callable[[float], float] = lambda rate: rate,
                        label: Optional[str] = None) -> Callable[[MatrixFn], MatrixFn]:
    """Decorator: the function is the type's ``matrix``."""

    def wrap(fn: MatrixFn) -> MatrixFn:
        if name in NOISE_TYPES and NOISE_TYPES[name].matrix is not fn:
            raise ValueError(f"A noise type named {name!r} is already registered.")
        NOISE_TYPES[name] = NoiseType(name, fn, default_forget_rate, label)
        return fn

    return wrap


def noise_type(name: str) -> NoiseType:
    if name not in NOISE_TYPES:
        raise ValueError(f"Unknown noise type {name!r}; allowed: {', '.join(NOISE_TYPES)}."
                         f"{did_you_mean(name, NOISE_TYPES)}")
    return NOISE_TYPES[name]


def transition_matrix(noise_type_name: str, rate: float, num_classes: int, *,
                      dataset: Optional[str] = None, grouping: str = "blocks",
                      matrix: Optional[np.ndarray] = None) -> np.ndarray:
    """Row-stochastic C×C float64 matrix T[clean, noisy] of the requested noise.

    - ``none``: identity (labels are used as they are).
    - ``symmetric``: 1−r on the diagonal, r/(C−1) elsewhere (never redraws the true class).
    - ``symmetric_incl_true``: 1−r+r/C on the diagonal, r/C elsewhere: a share r relabelled uniformly
      over all C classes, the true one included (DivideMix's code); r(C−1)/C of the labels are wrong.
    - ``pairflip``: i → (i+1) mod C with prob r.
    - ``asymmetric``: ``matrix`` (your own T, used as it is; ``rate`` unused) or ``dataset``. MNIST 7→1, 2→7, 5↔6, 3→8; CIFAR-10 9→1, 2→0, 3↔5,
      4→7; Fashion-MNIST T-shirt→Shirt, Pullover↔Coat, Sandal→Sneaker, Sneaker→Ankle boot
      (0→6, 2↔4, 5→7, 7→9) (each with prob r, other classes stay). CIFAR-100: inside each group every class
      flips to the next one circularly. ``grouping="blocks"`` (default, the official code and
      the paper's numbers) uses blocks of 5 consecutive fine labels 0–4, 5–9, …;
      ``grouping="superclass"`` uses the real super-classes, each ordered by fine index.
    """
    kind = noise_type(noise_type_name)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"Noise rate {rate!r} is out of range: it must be in [0, 1).")
    if num_classes < 2:
        raise ValueError(f"num_classes is {num_classes}; label noise needs at least 2 classes.")
    return kind.matrix(float(rate), int(num_classes), dataset=dataset, grouping=grouping, matrix=matrix)


# Class-dependent flips (source -> target) used by the F-correction / Co-teaching / JoCoR code.
_ASYM_MAPS = {"mnist": {7: 1, 2: 7, 5: 6, 6: 5, 3: 8},
              "cifar10": {9: 1, 2: 0, 3: 5, 5: 3, 4: 7},
              # Fashion-MNIST (ours; MNIST's index map means nothing for clothes): half of the classes
              # flip to the class people confuse them with -- T-shirt/top -> Shirt, Pullover <-> Coat,
              # Sandal -> Sneaker, Sneaker -> Ankle boot. Trouser, Dress, Shirt, Bag, Ankle boot stay.
              "fashion_mnist": {0: 6, 2: 4, 4: 2, 5: 7, 7: 9}}
_ASYM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "fashion_mnist": 10}
# CIFAR-100 fine label -> coarse label (super-class), in the dataset's fine-label order.
CIFAR100_COARSE = (4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7,
                   6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17,
                   18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2,
                   10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6,
                   0, 17, 8, 14, 13)

def _asym_dataset(dataset: Optional[str]) -> Optional[str]:
    """Normalise a dataset name to a known class map ('mnist5k' -> 'mnist'); None if unknown."""
    base = (dataset or "").lower().rsplit("/", 1)[-1].replace("-", "_")
    if base in ("cifar10", "cifar100", "fashion_mnist"):
        return base
    return "mnist" if base.startswith("mnist") else None


def _cifar100_groups(grouping: str) -> list[list[int]]:
    if grouping == "blocks":  # official code: 5 consecutive (alphabetical) fine labels
        return [list(range(s, s + 5)) for s in range(0, 100, 5)]
    if grouping == "superclass":
        return [[f for f in range(100) if CIFAR100_COARSE[f] == c] for c in range(20)]
    raise ValueError(f"Unknown CIFAR-100 grouping {grouping!r}: use 'blocks' or 'superclass'.")


@register_noise_type("none", default_forget_rate=lambda rate: 0.0)
def _identity(rate: float, C: int, *, dataset: Optional[str], grouping: str,
              matrix: Optional[np.ndarray] = None) -> np.ndarray:
    return np.eye(C, dtype=np.float64)


@register_noise_type("symmetric", label="Symmetry")
def _symmetric(rate: float, C: int, *, dataset: Optional[str], grouping: str,
               matrix: Optional[np.ndarray] = None) -> np.ndarray:
    T = np.full((C, C), rate / (C - 1))
    np.fill_diagonal(T, 1.0 - rate)
    return T


@register_noise_type("pairflip")
def _pairflip(rate: float, C: int, *, dataset: Optional[str], grouping: str,
              matrix: Optional[np.ndarray] = None) -> np.ndarray:
    T = np.eye(C, dtype=np.float64) * (1.0 - rate)
    T[np.arange(C), (np.arange(C) + 1) % C] = rate
    return T


@register_noise_type("asymmetric", default_forget_rate=lambda rate: rate / 2, label="Asymmetry")
def _asymmetric(rate: float, C: int, *, dataset: Optional[str], grouping: str,
                matrix: Optional[np.ndarray] = None) -> np.ndarray:
    if matrix is not None:  # noise.transition_matrix: your own T
        T = np.asarray(matrix, dtype=np.float64)
        if T.shape != (C, C):
            raise ValueError(f"noise.transition_matrix is {T.shape[0]}x{T.shape[1]} but the data has {C} classes.")
        return T
    name = _asym_dataset(dataset)
    if name is None:
        raise ValueError(f"Asymmetric noise has no class map for {dataset!r}: set noise.transition_matrix=FILE "
                         f"(your T[clean, noisy]) or noise.dataset to one of mnist, cifar10, cifar100, "
                         f"fashion_mnist.")
    if C != _ASYM_CLASSES[name]:
        raise ValueError(f"Asymmetric noise for {name} needs {_ASYM_CLASSES[name]} classes, "
                         f"got num_classes={C}: fix data.num_classes or noise.dataset.")
    if name == "cifar100":
        flips = {g[k]: g[(k + 1) % len(g)] for g in _cifar100_groups(grouping) for k in range(len(g))}
    else:
        flips = _ASYM_MAPS[name]
    T = np.eye(C, dtype=np.float64)
    for src, dst in flips.items():
        T[src, src], T[src, dst] = 1.0 - rate, rate
    return T


@register_noise_type("symmetric_incl_true")
def _symmetric_incl_true(rate: float, C: int, *, dataset: Optional[str], grouping: str,
                         matrix: Optional[np.ndarray] = None) -> np.ndarray:
    """DivideMix's symmetric noise (its ``dataloader_cifar.py``, ``noise_mode='sym'``): a share r of
    the samples gets a label drawn uniformly from ALL C classes, the true one included, so r/C on
    every entry plus 1 - r on the diagonal, and the labels actually wrong are r(C-1)/C (45 % at
    r = 0.5 on CIFAR-10, 89.1 % at r = 0.9 on CIFAR-100). (Their code picks exactly int(rN) samples;
    drawn per sample from this T, the count of picked samples is binomial around rN.)"""
    T = np.full((C, C), rate / C)
    T[np.diag_indices(C)] += 1.0 - rate
    return T
