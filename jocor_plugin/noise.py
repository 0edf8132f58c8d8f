"""Synthetic label noise: transition matrices and reproducible noisy labels.

A sample's noisy label is a pure function of (seed, row index, clean label), so the
``datasets.map`` that injects it is deterministic, cacheable and identical on every process.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
from datasets import ClassLabel, Dataset, Value

from .errors import did_you_mean

__all__ = ["NOISE_TYPES", "transition_matrix", "noisy_labels", "authors_noisy_labels", "add_label_noise",
           "actual_noise_rate"]

logger = logging.getLogger(__name__)

NOISE_TYPES = ("none", "symmetric", "pairflip", "asymmetric")

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
_MASK64 = (1 << 64) - 1


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


def transition_matrix(noise_type: str, rate: float, num_classes: int, *,
                      dataset: Optional[str] = None, grouping: str = "blocks",
                      matrix: Optional[np.ndarray] = None) -> np.ndarray:
    """Row-stochastic C×C float64 matrix T[clean, noisy] of the requested noise.

    - ``none``: identity (labels are used as they are).
    - ``symmetric``: 1−r on the diagonal, r/(C−1) elsewhere (never redraws the true class).
    - ``pairflip``: i → (i+1) mod C with prob r.
    - ``asymmetric``: ``matrix`` (your own T, used as it is; ``rate`` unused) or ``dataset``. MNIST 7→1, 2→7, 5↔6, 3→8; CIFAR-10 9→1, 2→0, 3↔5,
      4→7; Fashion-MNIST T-shirt→Shirt, Pullover↔Coat, Sandal→Sneaker, Sneaker→Ankle boot
      (0→6, 2↔4, 5→7, 7→9) (each with prob r, other classes stay). CIFAR-100: inside each group every class
      flips to the next one circularly. ``grouping="blocks"`` (default, the official code and
      the paper's numbers) uses blocks of 5 consecutive fine labels 0–4, 5–9, …;
      ``grouping="superclass"`` uses the real super-classes, each ordered by fine index.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"Unknown noise type {noise_type!r}; allowed: {', '.join(NOISE_TYPES)}."
                         f"{did_you_mean(noise_type, NOISE_TYPES)}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"Noise rate {rate!r} is out of range: it must be in [0, 1).")
    if num_classes < 2:
        raise ValueError(f"num_classes is {num_classes}; label noise needs at least 2 classes.")
    C, r = int(num_classes), float(rate)
    T = np.eye(C, dtype=np.float64)
    if noise_type == "symmetric":
        T = np.full((C, C), r / (C - 1))
        np.fill_diagonal(T, 1.0 - r)
    elif noise_type == "pairflip":
        T *= 1.0 - r
        T[np.arange(C), (np.arange(C) + 1) % C] = r
    elif noise_type == "asymmetric" and matrix is not None:
        T = np.asarray(matrix, dtype=np.float64)
        if T.shape != (C, C):
            raise ValueError(f"noise.transition_matrix is {T.shape[0]}x{T.shape[1]} but the data has {C} classes.")
    elif noise_type == "asymmetric":
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
        for src, dst in flips.items():
            T[src, src], T[src, dst] = 1.0 - r, r
    return T


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(seed: int, indices: np.ndarray) -> np.ndarray:
    """Counter-based U[0, 1): splitmix64 of (hashed seed + (index + 1)·golden gamma)."""
    key = _splitmix64(np.array([(int(seed) ^ 0x5DEECE66D) & _MASK64], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        ctr = np.asarray(indices).astype(np.int64).astype(np.uint64) + np.uint64(1)
        z = _splitmix64(key + ctr * np.uint64(0x9E3779B97F4A7C15))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # top 53 bits -> [0, 1)


def noisy_labels(clean: np.ndarray, indices: np.ndarray, T: np.ndarray, seed: int) -> np.ndarray:
    """Noisy int64 labels; each a pure function of (seed, index, clean label) under T."""
    clean = np.asarray(clean, dtype=np.int64)
    u = _uniform(seed, indices)
    cum = np.cumsum(T, axis=1)
    cum = cum / cum[:, -1:]  # last column exactly 1.0, so every u in [0, 1) lands somewhere
    noisy = (cum[clean] <= u[:, None]).sum(axis=1)  # = first j with cum[j] > u
    return np.minimum(noisy, T.shape[1] - 1).astype(np.int64)


def authors_noisy_labels(clean: np.ndarray, T: np.ndarray, random_state: int) -> np.ndarray:
    """The authors' sampling (data/utils.py, multiclass_noisify): one
    ``np.random.RandomState(random_state)``, one ``multinomial(1, T[label])`` draw per sample in
    dataset order; the same labels in the same order give the same noisy labels."""
    flipper = np.random.RandomState(random_state)
    clean = np.asarray(clean, dtype=np.int64)
    return np.array([int(np.argmax(flipper.multinomial(1, T[c], 1)[0])) for c in clean], dtype=np.int64)


def _noisify_batch(labels: list, indices: list, *, T: np.ndarray, seed: int, inject: bool,
                   drawn: Optional[np.ndarray] = None) -> dict:
    """``datasets.map`` body: top level and closure-free so fingerprinting and caching work.
    ``drawn``: noisy labels drawn beforehand for the whole set (sampler 'authors'), by index."""
    clean = np.asarray(labels, dtype=np.int64)
    idx = np.asarray(indices, dtype=np.int64)
    if not inject:
        return {"label": clean, "index": idx}
    noisy = drawn[idx] if drawn is not None else noisy_labels(clean, idx, T, seed)
    return {"label": noisy, "clean_label": clean, "is_noisy": noisy != clean, "index": idx}


def _check_labels(ds: Dataset, column: str, num_classes: int) -> np.ndarray:
    if column not in ds.column_names:
        raise ValueError(f"Label column {column!r} not found; the dataset has columns "
                         f"{ds.column_names}: set data.label_column.")
    labels = np.asarray(ds.with_format("numpy", columns=[column])[:][column])
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"Label column {column!r} must hold integer class ids, got dtype {labels.dtype}.")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(f"Label column {column!r} has {int(bad.sum())} labels outside [0, {num_classes}) "
                         f"(min {labels.min()}, max {labels.max()}): set data.num_classes to the real "
                         "number of classes or fix the data.")
    return labels


def add_label_noise(ds: Dataset, *, noise_type: str, rate: float, num_classes: int, seed: int,
                    dataset: Optional[str] = None, label_column: str = "label",
                    grouping: str = "blocks", num_proc: Optional[int] = None,
                    matrix: Optional[np.ndarray] = None,
                    sampler: str = "hashed") -> Dataset:
    """Return ``ds`` with noisy ``label`` plus ``clean_label``, ``is_noisy`` and ``index`` columns.

    ``label_column`` is replaced by ``label``. For ``noise_type="none"`` only ``index`` is added
    (the labels are already noisy and the clean ones unknown). ClassLabel features are kept.
    ``sampler="authors"`` draws them as the authors' code (``authors_noisy_labels``, ``seed`` its
    random state) instead of per index.
    """
    T = transition_matrix(noise_type, rate, num_classes, dataset=dataset, grouping=grouping, matrix=matrix)
    labels = _check_labels(ds, label_column, num_classes)
    inject = noise_type != "none"
    if inject and "clean_label" in ds.column_names:
        raise ValueError("The dataset already has a 'clean_label' column (noise injected twice?): "
                         "use noise.type=none or drop that column.")
    src = ds.features[label_column]
    keep = isinstance(src, ClassLabel) and src.num_classes == num_classes
    label_feature: Any = src if keep else Value("int64")
    features = ds.features.copy()
    features.pop(label_column)
    features["label"] = label_feature
    if inject:
        features["clean_label"], features["is_noisy"] = label_feature, Value("bool")
    features["index"] = Value("int64")
    out = ds.map(_noisify_batch, batched=True, with_indices=True, input_columns=[label_column],
                 fn_kwargs={"T": T, "seed": int(seed), "inject": inject,
                            "drawn": authors_noisy_labels(labels, T, int(seed))
                            if inject and sampler == "authors" else None}, features=features,
                 remove_columns=[label_column] if label_column != "label" else None,
                 num_proc=num_proc, desc=f"Label noise ({noise_type})")
    if inject:
        expected = float(np.mean(1.0 - np.diag(T)[labels])) if labels.size else 0.0
        requested = "noise.transition_matrix" if matrix is not None else f"requested rate {rate:.3f}"
        logger.info("Label noise %s: %s, expected %.4f, actual %.4f on %d samples.",
                    noise_type, requested, expected, actual_noise_rate(out), len(out))
    return out


def actual_noise_rate(ds: Dataset) -> float:
    """Fraction of rows whose ``label`` differs from ``clean_label`` (0.0 for an empty dataset)."""
    if "clean_label" not in ds.column_names:
        raise ValueError(f"No 'clean_label' column (columns: {ds.column_names}): the actual noise "
                         "rate is only known for injected noise.")
    cols = ds.with_format("numpy", columns=["label", "clean_label"])[:]
    return float(np.mean(cols["label"] != cols["clean_label"])) if len(ds) else 0.0
