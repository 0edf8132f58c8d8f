"""The run's data as Hugging Face ``datasets``: every source (``sources``: built-ins, the Hub,
local copies) standardised to ``image`` / ``label`` columns, split into train / test (/ validation)
with seeded, stratified splits, and the label noise injected by ``noise``'s ``datasets.map``
(``build_noisy_splits``), the same on every process and run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Image

from ..config import Config, DataConfig
from ..core.errors import DataError
from ..noise.label_noise import actual_noise_rate, add_label_noise
from ..noise.transition_file import load_transition_matrix
from .checks import (check_class_folders, check_label_feature, check_label_range,
                     check_rows, drop_bad_images, open_image)
from .sources import BUILTIN_DATASETS, load_source

__all__ = ["BUILTIN_DATASETS", "NoisySplits", "load_splits", "stratified_split", "permutation_split",
           "build_noisy_splits", "class_names", "paper_dataset", "noise_matrix", "hold_out_noisy_validation",
           "column_array", "undecoded"]

logger = logging.getLogger(__name__)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class permutation; needed because e.g. mnist5k is stored sorted by class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def permutation_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One seeded permutation of 0..n-1: the first part trains, the rest tests, both kept in
    permuted order (the plain split the authors'-code comparison used on mnist5k)."""
    order = np.random.RandomState(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return order[:n - n_test], order[n - n_test:]


def _find_column(ds: Dataset, requested: Optional[str], kind: str, candidates: tuple[str, ...],
                 feature_type: type) -> str:
    if requested is not None:
        if requested not in ds.column_names:
            raise DataError(f"data.{kind}_column={requested!r} is not a column; columns are "
                            f"{', '.join(ds.column_names)}.")
        return requested
    for name in candidates:
        if name in ds.column_names:
            return name
    for name, feature in ds.features.items():
        if isinstance(feature, feature_type):
            return name
    raise DataError(f"The dataset has no {kind} column (columns: {', '.join(ds.column_names)}); "
                    f"set data.{kind}_column.")


def _standardise(ds: Dataset, cfg: DataConfig, split: str) -> Dataset:
    """Rename to ``image`` / ``label`` and drop everything else; labels must be class indices."""
    check_rows(ds, cfg, split)
    image_col = _find_column(ds, cfg.image_column, "image", ("image", "img"), Image)
    if cfg.label_column is None and ds.column_names == [image_col]:
        check_class_folders(ds, image_col, cfg)  # e.g. one class folder: datasets gives it no label
    label_col = _find_column(ds, cfg.label_column, "label", ("label", "fine_label"), ClassLabel)
    check_label_feature(ds, label_col, cfg)
    ds = ds.select_columns([image_col, label_col])
    ds = ds.rename_columns({c: n for c, n in ((image_col, "image"), (label_col, "label")) if c != n})
    if not isinstance(ds.features["image"], Image):
        ds = ds.cast_column("image", Image())
    return ds


def _split(source: DatasetDict, name: str, cfg: DataConfig, number_rows: bool = False) -> Dataset:
    """One split of the source, standardised; ``number_rows``: with ``source_index``, the row a user
    finds each sample at in their own data (numbered before bad images are left out, so it stays true)."""
    ds = _standardise(source[name], cfg, name)
    if number_rows:
        ds = ds.add_column("source_index", np.arange(len(ds), dtype=np.int64))
    return drop_bad_images(ds, cfg, name) if cfg.skip_bad_images else ds


def load_splits(cfg: DataConfig) -> DatasetDict:
    """Load the configured data as ``DatasetDict(train=..., test=...)`` with ``image``/``label``
    (and ``source_index``: each training row's row number in the source's training split)."""
    return _load_splits(cfg)[0]


def _load_splits(cfg: DataConfig) -> tuple[DatasetDict, bool]:
    """``load_splits`` and whether the test split was held out of the training split."""
    source = load_source(cfg)
    if isinstance(source, Dataset):
        source = DatasetDict({cfg.train_split: source})
    if cfg.train_split not in source:
        raise DataError(f"data.train_split={cfg.train_split!r} is not a split; splits are "
                        f"{', '.join(source)}.")
    train = _split(source, cfg.train_split, cfg, number_rows=True)  # source_index kept through the splits below
    carved = cfg.test_split not in source
    if not carved:
        test = _split(source, cfg.test_split, cfg)
    else:
        logger.info("No '%s' split: holding out %.0f%% of '%s' (%s, split_seed=%d).",
                    cfg.test_split, 100 * cfg.test_fraction, cfg.train_split, cfg.split, cfg.split_seed)
        if cfg.split == "permutation":
            train_idx, test_idx = permutation_split(len(train), cfg.test_fraction, cfg.split_seed)
        else:
            train_idx, test_idx = stratified_split(np.asarray(train["label"]), cfg.test_fraction, cfg.split_seed)
        train, test = train.select(train_idx), train.select(test_idx).remove_columns("source_index")
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"Empty split: train has {len(train)} rows, test has {len(test)}.")
    splits = DatasetDict(train=train, test=test)
    if cfg.validation_split in source and cfg.validation_split not in (cfg.train_split, cfg.test_split):
        splits["validation"] = _split(source, cfg.validation_split, cfg)
    return splits, carved


# ----------------------------------------------------------------------------- noise

def paper_dataset(data_name: str) -> Optional[str]:
    """Which known dataset a name refers to (mnist5k -> mnist, uoft-cs/cifar10 -> cifar10,
    zalando-datasets/fashion_mnist -> fashion_mnist): it picks the asymmetric class map and
    per-dataset method defaults."""
    base = data_name.lower().rsplit("/", 1)[-1].replace("-", "_")
    for known in ("cifar100", "cifar10", "fashion_mnist", "mnist"):
        if base.startswith(known):
            return known
    return None


@dataclass
class NoisySplits:
    train: Dataset            # image, label (noisy), clean_label, is_noisy, index
    test: Dataset             # image, label (clean)
    num_classes: int
    in_chans: int
    actual_noise_rate: Optional[float]
    validation: Optional[Dataset] = None  # e.g. Clothing1M's clean validation set
    noisy_validation: Optional[Dataset] = None  # data.val_split: held out of the noisy training set
    noisy_test: bool = False  # the test split was held out of data whose labels are noisy (noise.type=none)

    @property
    def label_names(self) -> list[str]:
        """The class names (the ClassLabel's, e.g. an image folder's sub-folders), else '0', '1', ..."""
        return class_names(self.train.features["label"], self.num_classes)


def class_names(feature: Any, num_classes: int) -> list[str]:
    """A label feature's class names when it is a ClassLabel of ``num_classes``, else the indices."""
    if isinstance(feature, ClassLabel) and feature.num_classes == num_classes:
        return list(feature.names)
    return [str(i) for i in range(num_classes)]


def _num_classes(ds: Dataset, cfg: DataConfig) -> int:
    if cfg.num_classes is not None:
        return cfg.num_classes
    feature = ds.features["label"]
    if isinstance(feature, ClassLabel):
        return feature.num_classes
    inferred = int(np.max(column_array(ds, "label"))) + 1
    logger.warning("Labels are not a ClassLabel: assuming %d classes (max label + 1); set "
                   "data.num_classes if some classes never occur.", inferred)
    return inferred


def build_noisy_splits(cfg: Config) -> NoisySplits:
    """Load the data and inject label noise into the training split (test labels stay clean, unless
    the labels were noisy to begin with and the test split is held out of them: ``noisy_test``)."""
    splits, carved = _load_splits(cfg.data)
    num_classes = _num_classes(splits["train"], cfg.data)
    check_label_range({name: column_array(ds, "label") for name, ds in splits.items()}, num_classes,
                      cfg.data.num_classes, cfg.model.num_classes)
    class_map = cfg.noise.dataset or paper_dataset(cfg.data.name)
    try:
        train = add_label_noise(splits["train"], noise_type=cfg.noise.type, rate=cfg.noise.rate,
                                num_classes=num_classes, seed=_noise_seed(cfg), dataset=class_map or cfg.data.name,
                                grouping=cfg.noise.grouping, matrix=noise_matrix(cfg),
                                sampler=cfg.noise.sampler)
    except ValueError as err:
        raise DataError(str(err)) from err
    first = undecoded(splits["train"].select([0]).select_columns(["image", "source_index"]))[0]
    mode = open_image(first["image"], f"at row {first['source_index']} of the training data").mode
    in_chans = 1 if mode in ("L", "I", "I;16", "F", "1") else 3
    train, noisy_val = hold_out_noisy_validation(train, cfg.data.val_split, cfg.data.split_seed)
    rate = actual_noise_rate(train) if "clean_label" in train.column_names else None
    noisy_test = carved and cfg.noise.type == "none"
    if noisy_test:
        logger.warning("The test split is held out of data whose labels are noisy (noise.type=none): its "
                       "accuracy is agreement with noisy labels, reported as noisy_test_acc. For a true test "
                       "accuracy give a clean test split (data.test_split).")
    return NoisySplits(train, splits["test"], num_classes, in_chans, rate, splits.get("validation"),
                       noisy_val, noisy_test)


def noise_matrix(cfg: Config) -> Optional[np.ndarray]:
    """noise.transition_matrix as an array (None when the recipe has none)."""
    if cfg.noise.transition_matrix is None:
        return None
    return load_transition_matrix(cfg.noise.transition_matrix).numpy()


def hold_out_noisy_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Optional[Dataset]]:
    """``data.val_split``: a seeded split of the *noisy* training set, stratified by noisy label
    (all a user without clean labels has). The training part's ``index`` is renumbered 0..n-1,
    as the per-sample training buffers expect."""
    if fraction <= 0:
        return train, None
    keep, held = stratified_split(np.asarray(train["label"]), fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise DataError(f"data.val_split={fraction} leaves {len(keep)} training and {len(held)} noisy "
                        f"validation samples out of {len(train)}; choose a fraction in between.")
    rest = train.select(keep).remove_columns("index")
    rest = rest.add_column("index", np.arange(len(rest), dtype=np.int64))
    logger.info("Noisy validation: %d of %d noisy training samples held out (data.val_split=%g).",
                len(held), len(train), fraction)
    return rest, train.select(held)


def _noise_seed(cfg: Config) -> int:
    return cfg.noise.seed if cfg.noise.seed is not None else cfg.train.seed


def column_array(ds: Dataset, column: str) -> np.ndarray:
    """One column as a numpy array in one batch read (``ds.with_format("numpy")[column]`` formats
    row by row: about a minute for Fashion-MNIST's 70,000 rows)."""
    return np.asarray(ds.with_format("numpy", columns=[column])[:][column])


def undecoded(ds: Dataset) -> Dataset:
    """``ds`` with its images as their files' ``{bytes, path}`` (decoded by us, so that a file that
    doesn't decode is named)."""
    return ds.cast_column("image", Image(decode=False))
