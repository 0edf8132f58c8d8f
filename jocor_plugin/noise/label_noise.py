"""Synthetic label noise: transition matrices and reproducible noisy labels.

A sample's noisy label is a pure function of (seed, row index, clean label), so the
``datasets.map`` that injects it is deterministic, cacheable and identical on every process.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
from datasets import ClassLabel, Dataset, Value

from .types import CIFAR100_COARSE, NOISE_TYPES, transition_matrix  # noqa: F401  (re-exported)

__all__ = ["NOISE_TYPES", "transition_matrix", "noisy_labels", "authors_noisy_labels", "add_label_noise",
           "actual_noise_rate"]

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


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
