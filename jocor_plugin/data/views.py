"""Several augmented views of chosen training samples, batch by batch.

For methods that choose their own samples every epoch and need two augmentations of each (DivideMix's
MixMatch). Both data paths: the in-memory tensor (batched crop + optional flip on the device, no
decoding) and streamed images (the training transform applied once per view, in DataLoader workers).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from ..config import DataConfig
from .loaders import InMemoryImages, StreamedImages, random_flip_crop
from .splits import undecoded

__all__ = ["ViewBatches"]

_COLUMNS = ("label", "clean_label", "is_noisy", "index")


class _StreamedViews(StreamedImages):
    """``datasets`` transform: ``views`` independent draws of the training transform per image."""

    def __init__(self, image_config: dict[str, Any], views: int, train_transform: str):
        super().__init__(image_config, is_training=True, train_transform=train_transform)
        self.views = views

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k != "image"}
        images = self.images(batch)
        out["views"] = [[self.transform(im) for _ in range(self.views)] for im in images]
        return out


class ViewBatches:
    """``batches(index_batches)`` yields, per batch of training-set indices, a dict with ``views``
    (a list of ``views`` normalised image tensors) and the label columns, on ``device``.

    ``in_memory``: the decoded training set already on the device (the trainer's own loader's
    dataset); its images are cropped with ``padding`` (and flipped when ``flip``) per view.
    Without it the images stream through the training transform (timm's, or the paper's).
    """

    def __init__(self, train: Dataset, data_cfg: DataConfig, image_config: dict[str, Any], *,
                 device: torch.device | str, views: int = 2, in_memory: Optional[InMemoryImages] = None,
                 flip: bool = True, padding: int = 4):
        self.device, self.views, self.flip, self.padding = device, views, flip, padding
        self.in_memory = in_memory
        self.streamed: Optional[Dataset] = None
        self.num_workers = min(data_cfg.num_workers, os.cpu_count() or 1)
        if in_memory is None:
            columns = [c for c in ("image", *_COLUMNS) if c in train.column_names]
            self.streamed = undecoded(train.select_columns(columns)).with_transform(
                _StreamedViews(image_config, views, data_cfg.train_transform))

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[dict[str, Any]]:
        if self.in_memory is not None:
            for idx in index_batches:
                yield self._in_memory_batch(idx.to(self.in_memory.images.device))
            return
        loader = DataLoader(self.streamed, batch_sampler=[idx.tolist() for idx in index_batches],
                            num_workers=self.num_workers, pin_memory=torch.cuda.is_available())
        for batch in loader:
            views = [v.to(self.device, non_blocking=True) for v in batch.pop("views")]
            yield {"views": views, **{k: v.to(self.device, non_blocking=True) for k, v in batch.items()}}

    def _in_memory_batch(self, idx: torch.Tensor) -> dict[str, Any]:
        source = self.in_memory
        x = source.images.index_select(0, idx).float()  # as InMemoryImages: faster than [idx]
        views = [(random_flip_crop(x, self.padding, self.flip) - source.mean) / source.std
                 for _ in range(self.views)]
        return {"views": views, **{name: col[idx] for name, col in source.columns.items()}}
