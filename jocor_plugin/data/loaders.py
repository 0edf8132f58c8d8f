"""Datasets through Hugging Face ``datasets``: splits and columns, noise, loaders.

Every source (``jocor_plugin.data.sources``: built-ins, the hub, local copies) ends up as a ``DatasetDict`` with an ``image`` (Image) and a ``label`` column.
Small datasets are then decoded once into a uint8 tensor held on the device and batched by
indexing (no per-sample Python in the step); larger ones stream through a DataLoader with
timm's transforms.
"""
from __future__ import annotations

import copy
import logging
import os
import zlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Image
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..config import Config, DataConfig
from ..core.errors import DataError
from ..noise.label_noise import actual_noise_rate, add_label_noise
from ..noise.transition_file import load_transition_matrix
from .checks import (IMAGE_ERRORS, bad_image_error, check_class_folders, check_label_feature, check_label_range,
                     check_rows, drop_bad_images, open_image)
from .clothing1m import paper_train_transform
from .sources import BUILTIN_DATASETS, load_source

__all__ = ["BUILTIN_DATASETS", "NoisySplits", "load_splits", "permutation_split", "build_noisy_splits",
           "sample_identity", "class_names",
           "resolve_image_config", "InMemoryImages", "StreamedImages", "make_loader", "undecoded"]

logger = logging.getLogger(__name__)

MAX_IN_MEMORY_BYTES = 2 * 1024**3  # decoded uint8 pixels kept on the device by default
# unaugmented batches come from a normalised float32 copy (one index_select instead of four
# operations per batch) while that copy is at most this large (Fashion-MNIST's training set: 188 MB)
MAX_NORMALISED_BYTES = 512 * 1024**2


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


# ----------------------------------------------------------------------------- transforms

def resolve_image_config(cfg: DataConfig, model: torch.nn.Module, in_chans: int) -> dict[str, Any]:
    """timm's data config of the backbone, with whatever the recipe fixes taking precedence."""
    from timm.data import resolve_data_config

    args = {k: v for k, v in dict(mean=cfg.mean, std=cfg.std, interpolation=cfg.interpolation,
                                  crop_pct=cfg.crop_pct).items() if v is not None}
    if cfg.input_size is not None:
        args["input_size"] = (in_chans, cfg.input_size, cfg.input_size)
    config = resolve_data_config(args, model=model)
    config["input_size"] = (in_chans, *config["input_size"][1:])
    for key in ("mean", "std"):  # e.g. ImageNet stats for a 1-channel input: average them
        values = tuple(config[key])
        if len(values) != in_chans:
            config[key] = values * in_chans if len(values) == 1 else (float(np.mean(values)),) * in_chans
    logger.info("Image config: %s.", ", ".join(f"{k} {v}" for k, v in config.items()))
    return config


def _pil_mode(in_chans: int) -> str:
    return "L" if in_chans == 1 else "RGB"


def column_array(ds: Dataset, column: str) -> np.ndarray:
    """One column as a numpy array in one batch read (``ds.with_format("numpy")[column]`` formats
    row by row: about a minute for Fashion-MNIST's 70,000 rows)."""
    return np.asarray(ds.with_format("numpy", columns=[column])[:][column])


def undecoded(ds: Dataset) -> Dataset:
    """``ds`` with its images as their files' ``{bytes, path}`` (decoded by us, so that a file that
    doesn't decode is named)."""
    return ds.cast_column("image", Image(decode=False))


def decode_images(ds: Dataset, mode: str, size: Optional[tuple[int, int]] = None,
                  interpolation: Optional[str] = None) -> np.ndarray:
    """Every image of ``ds`` as one uint8 array (N, H, W, C) in PIL ``mode``, decoded straight from
    the Arrow column (``ds["image"]`` goes through the slower per-row formatter; docs/performance.md). Images of
    different sizes are each resized to ``size`` (H, W) when it is given; a file that doesn't
    decode is a DataError naming it."""
    import io

    from PIL import Image as PILImage

    table = undecoded(ds.select_columns(["image"])).with_format("arrow")[:]  # honours select()'s indices
    # an image without a file is named by its row in the user's training data, where known
    places = ([f"at row {i} of the training data" for i in column_array(ds, "source_index").tolist()]
              if "source_index" in ds.column_names else
              [f"at row {i} of the test or validation split" for i in range(len(ds))])
    images = []
    for place, cell in zip(places, table.column("image").to_pylist()):
        source = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else cell["path"]
        try:
            with PILImage.open(source) as im:
                im = im.convert(mode)
                images.append(np.asarray(im, dtype=np.uint8).reshape(im.height, im.width, -1))
        except IMAGE_ERRORS as err:
            raise bad_image_error(cell, place, err) from None
    shapes = {im.shape[:2] for im in images}
    if len(shapes) > 1:
        if size is None:
            raise DataError(f"The images have different sizes ({sorted(shapes)[:3]} ...); give decode_images a size.")
        logger.info("The images have %d different sizes: each resized to %dx%d.", len(shapes), *size)
        images = [im if im.shape[:2] == tuple(size) else _resized(im, size, interpolation) for im in images]
    return np.stack(images) if images else np.zeros((0, 1, 1, 1), dtype=np.uint8)


def _resized(image: np.ndarray, size: tuple[int, int], interpolation: Optional[str]) -> np.ndarray:
    """One (H, W, C) image resized as ``InMemoryImages`` resizes a batch of same-size ones."""
    return resize_images(torch.tensor(image).permute(2, 0, 1)[None], size, interpolation)[0].permute(1, 2, 0).numpy()


def resize_images(images: torch.Tensor, size: tuple[int, int], interpolation: Optional[str]) -> torch.Tensor:
    """uint8 (N, C, H, W) images resized to ``size`` (antialiased; bicubic or else bilinear)."""
    mode = "bicubic" if interpolation == "bicubic" else "bilinear"
    return F.interpolate(images.float(), size=tuple(size), mode=mode,
                         antialias=True).round().clamp(0, 255).to(torch.uint8)


def sample_identity(ds: Dataset) -> dict[str, np.ndarray]:
    """What lets a user find each row of ``ds`` in their own data: ``source_index`` (its row in the
    source's training split) and, where the images are files (image folders, Clothing1M), ``path``."""
    out = {}
    if "source_index" in ds.column_names:
        out["source_index"] = column_array(ds, "source_index")
    if "image" in ds.column_names:
        table = ds.select_columns(["image"]).cast_column("image", Image(decode=False)).with_format("arrow")[:]
        paths = [cell.get("path") if cell else None for cell in table.column("image").to_pylist()]
        if any(p is not None for p in paths) and all(p is None or os.path.isabs(p) for p in paths):
            out["path"] = np.asarray(["" if p is None else p for p in paths], dtype=object)
    return out


class InMemoryImages(torch.utils.data.Dataset):
    """Decoded images as one uint8 tensor on ``device``; a batch is one indexing operation.

    Defines ``__getitems__`` so the DataLoader hands over whole index lists (no per-sample work).
    """

    def __init__(self, ds: Dataset, image_config: dict[str, Any], device: torch.device | str = "cpu",
                 augment: bool = False, augment_seed: int = 0):
        in_chans, height, width = image_config["input_size"]
        mode = _pil_mode(in_chans)
        interpolation = image_config.get("interpolation")
        pixels = decode_images(ds, mode, (height, width), interpolation)  # once, at start-up
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        if images.shape[-2:] != (height, width):
            images = resize_images(images, (height, width), interpolation)
        self.images = images.to(device)
        self.columns = {c: torch.as_tensor(column_array(ds, c)).to(device)
                        for c in ("label", "clean_label", "is_noisy", "index") if c in ds.column_names}
        shape = (1, in_chans, 1, 1)
        self.mean = torch.tensor(image_config["mean"], device=device).view(shape) * 255
        self.std = torch.tensor(image_config["std"], device=device).view(shape) * 255
        self.augment = augment
        self.augment_seed = augment_seed
        self.normalised = None if augment else self._normalised_copy()

    def _normalised_copy(self) -> Optional[torch.Tensor]:
        """Every image as the batch would normalise it, computed once: elementwise the same
        operations, so the same values bit for bit; None where the copy would be too large."""
        if self.images.numel() * 4 > MAX_NORMALISED_BYTES:
            return None
        return (self.images.float() - self.mean) / self.std

    def __len__(self) -> int:
        return self.images.shape[0]

    def with_augment(self, augment: bool) -> "InMemoryImages":
        """The same decoded images (shared, not copied) with augmentation on or off."""
        other = copy.copy(self)
        other.augment = augment
        return other

    def __getitems__(self, indices: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, device=self.images.device)
        if self.normalised is not None and not self.augment:
            batch = {"pixel_values": self.normalised.index_select(0, idx)}
        else:
            x = self.images.index_select(0, idx).float()  # same values as images[idx], much faster on the CPU
            if self.augment:
                x = random_flip_crop(x, generator=self._batch_generator(indices))
            batch = {"pixel_values": (x - self.mean) / self.std}
        batch.update({name: col.index_select(0, idx) for name, col in self.columns.items()})
        return batch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def _batch_generator(self, indices: list[int] | torch.Tensor) -> torch.Generator:
        """The augmentation's random draws, a function of the seed and the batch's sample indices.
        Not the global generator: the DataLoader fetches a batch ahead of the step, so a checkpoint's
        global random state would already include the next batch's draws, and a run resumed inside
        an epoch would augment that batch anew with other ones."""
        order = torch.as_tensor(indices, dtype=torch.int64).cpu().numpy()  # from the sampler: on the CPU
        key = zlib.crc32(order.tobytes(), zlib.crc32(self.augment_seed.to_bytes(8, "little", signed=True)))
        return torch.Generator(device=self.images.device).manual_seed(key)


def random_flip_crop(x: torch.Tensor, padding: int = 4, flip: bool = True,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Batched horizontal flip + random crop with zero padding (the usual CIFAR augmentation);
    ``flip=False`` for data a mirror changes the meaning of (digits).

    One ``gather`` from the padded batch, the flip folded into the column index (a flipped image's
    column j is the padded column ``width - 1 - j``): the same pixels and random draws as flipping,
    padding and cropping in turn, faster on the CPU than indexing with broadcast index tensors
    (docs/performance.md)."""
    b, c, h, w = x.shape
    device = x.device
    flipped = torch.rand(b, device=device, generator=generator) < 0.5 if flip else None
    padded = F.pad(x, (padding,) * 4)
    width = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    rows = dy + torch.arange(h, device=device)
    cols = dx + torch.arange(w, device=device)
    if flipped is not None:
        cols = torch.where(flipped.view(b, 1), width - 1 - cols, cols)
    pixels = (rows.view(b, h, 1) * width + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, pixels).view(b, c, h, w)


class StreamedImages:
    """``datasets`` transform: timm's per-image transform, for data too large to hold decoded."""

    def __init__(self, image_config: dict[str, Any], is_training: bool, train_transform: str = "timm"):
        from timm.data import create_transform

        self.mode = _pil_mode(image_config["input_size"][0])
        self.transform = (paper_train_transform(image_config) if is_training and train_transform == "paper"
                          else create_transform(**image_config, is_training=is_training))

    def images(self, batch: dict[str, list]) -> list[Any]:
        """The batch's images in the backbone's mode; undecoded cells (``{bytes, path}``) decoded
        here, so that a file that doesn't decode is named."""
        return [(open_image(im) if isinstance(im, dict) else im).convert(self.mode) for im in batch["image"]]

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k != "image"}
        out["pixel_values"] = [self.transform(im) for im in self.images(batch)]
        return out


class _IndexTensorBatches(BatchSampler):
    """``BatchSampler``'s batches as slices of one index tensor: the sampler (Accelerate swaps in
    its seedable one) is drawn in one go per epoch, so the step does no per-sample Python."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        # np.fromiter: the same order without a Python list of ints (torch.tensor(list(...)) builds
        # one per epoch); drawn to the end, so the seedable sampler advances its epoch as before
        order = torch.from_numpy(np.fromiter(self.sampler, dtype=np.int64))
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]


def _collate_whole_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch  # InMemoryImages.__getitems__ already returns the collated batch


def fits_in_memory(ds: Dataset, image_config: dict[str, Any]) -> bool:
    c, h, w = image_config["input_size"]
    return len(ds) * c * h * w <= MAX_IN_MEMORY_BYTES


def make_loader(ds: Dataset, cfg: DataConfig, image_config: dict[str, Any], *, batch_size: int,
                train: bool, device: torch.device | str, seed: int,
                decoded: Optional[InMemoryImages] = None, drop_last: Optional[bool] = None) -> DataLoader:
    """A DataLoader over the in-memory tensor (small data) or over streamed, transformed images.
    ``decoded``: ``ds`` already decoded (e.g. another loader's dataset), reused, not decoded again.
    ``drop_last`` defaults to ``train`` (the authors' test loader drops its last batch too)."""
    drop_last = train if drop_last is None else drop_last
    in_memory = decoded is not None or (cfg.in_memory if cfg.in_memory is not None else (
        cfg.train_transform != "paper" and fits_in_memory(ds, image_config)))  # paper: crops from files
    generator = torch.Generator().manual_seed(seed)
    if in_memory:
        dataset = decoded.with_augment(train and cfg.augment) if decoded is not None else \
            InMemoryImages(ds, image_config, device=device, augment=train and cfg.augment, augment_seed=seed)
        if drop_last:  # index tensors (without drop_last Accelerate pads an uneven last batch as a list)
            sampler = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
            return DataLoader(dataset, batch_sampler=_IndexTensorBatches(sampler, batch_size, drop_last=True),
                              collate_fn=_collate_whole_batch, generator=generator)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, collate_fn=_collate_whole_batch,
                          generator=generator)
    columns = [c for c in ("image", "label", "clean_label", "is_noisy", "index") if c in ds.column_names]
    transform = StreamedImages(image_config, train and cfg.augment, cfg.train_transform)
    streamed = undecoded(ds.select_columns(columns)).with_transform(transform)
    workers = min(cfg.num_workers, os.cpu_count() or 1)
    return DataLoader(streamed, batch_size=batch_size, shuffle=train, drop_last=drop_last,
                      num_workers=workers, persistent_workers=workers > 0, generator=generator,
                      pin_memory=torch.cuda.is_available())
