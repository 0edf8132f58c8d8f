"""Loaders of the noisy splits (``splits``): small data sets are decoded once into a uint8 tensor
held on the device and batched by indexing (no per-sample Python in the step), with batched flip +
padded-crop augmentation; larger ones stream through a DataLoader with timm's transforms.
"""
from __future__ import annotations

import copy
import logging
import os
import zlib
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Image
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..config import DataConfig
from ..core.errors import DataError
from .checks import (IMAGE_ERRORS, bad_image_error, open_image)
from .clothing1m import paper_train_transform
from .splits import column_array, undecoded

__all__ = ["resolve_image_config", "decode_images", "resize_images", "sample_identity", "InMemoryImages",
           "random_flip_crop", "StreamedImages", "fits_in_memory", "make_loader"]

logger = logging.getLogger(__name__)

MAX_IN_MEMORY_BYTES = 2 * 1024**3  # decoded uint8 pixels kept on the device by default
# unaugmented batches come from a normalised float32 copy (one index_select instead of four
# operations per batch) while that copy is at most this large (Fashion-MNIST's training set: 188 MB)
MAX_NORMALISED_BYTES = 512 * 1024**2


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
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    if padding == 0:  # no crop (the offsets are drawn all the same, so later draws are unchanged)
        return x.clone() if flipped is None else torch.where(flipped.view(b, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (padding,) * 4)
    width = w + 2 * padding
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
