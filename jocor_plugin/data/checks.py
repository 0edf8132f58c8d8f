"""Checks on loaded data that end a run before training with one line: empty data,
labels that are not class indices or don't fit the classifier, a single-class image folder, and
image files that don't decode (named; left out with ``data.skip_bad_images=true``)."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from datasets import ClassLabel, Dataset, Image

from ..config import DataConfig
from ..core.errors import DataError

__all__ = ["where", "check_rows", "check_parquet_rows", "check_saved_rows", "check_label_feature",
           "check_class_folders", "check_label_range", "open_image", "bad_image_error", "drop_bad_images",
           "IMAGE_ERRORS"]

logger = logging.getLogger(__name__)

# what PIL raises for a truncated or non-image file (UnidentifiedImageError is an OSError)
IMAGE_ERRORS = (OSError, SyntaxError, ValueError)


def where(cfg: DataConfig) -> str:
    """The recipe key a user reads the data from."""
    return f"data.path={cfg.path!r}" if cfg.path else f"data.name={cfg.name!r}"


def check_rows(ds: Dataset, cfg: DataConfig, split: str) -> None:
    if len(ds) == 0:
        raise DataError(f"The '{split}' split of {where(cfg)} holds no rows; point data.path at data with "
                        f"images in it.")


def check_parquet_rows(path: Path, cfg: DataConfig) -> None:
    """An empty parquet file (``datasets`` fails on it with a generic 'error generating the dataset')."""
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(str(path)).metadata.num_rows
    except Exception as err:  # pyarrow's errors for a file that isn't parquet vary by version
        raise DataError(f"{where(cfg)} is not a readable parquet file ({str(err).splitlines()[0][:120]}).") from None
    if rows == 0:
        raise DataError(f"{where(cfg)} holds no rows; point data.path at a parquet file with images in it.")


def check_saved_rows(path: Path, cfg: DataConfig) -> None:
    """A save_to_disk copy of an empty dataset (``load_from_disk`` fails on it with an IndexError):
    its state.json lists no data files."""
    import json

    states = [path / "state.json"] if (path / "state.json").is_file() else sorted(path.glob("*/state.json"))
    for state in states:
        try:
            empty = json.loads(state.read_text()).get("_data_files") == []
        except (ValueError, OSError):
            continue  # load_from_disk reports it
        if empty:
            what = where(cfg) if state.parent == path else f"The '{state.parent.name}' split of {where(cfg)}"
            raise DataError(f"{what} holds no rows; point data.path at data with images in it.")


def check_label_feature(ds: Dataset, column: str, cfg: DataConfig) -> None:
    """Labels must be class indices: a ClassLabel or integers (strings and floats are refused, with the fix)."""
    feature = ds.features[column]
    dtype = str(getattr(feature, "dtype", type(feature).__name__))
    if isinstance(feature, ClassLabel) or dtype.startswith(("int", "uint")):
        return
    examples = ", ".join(repr(v) for v in dict.fromkeys(ds.select(range(min(len(ds), 50)))[column]))
    fix = (f"dataset.class_encode_column('{column}')" if dtype in ("string", "large_string")
           else f"dataset.cast_column('{column}', datasets.Value('int64'))")
    raise DataError(f"The label column '{column}' of {where(cfg)} holds {dtype} values ({examples[:80]}), not "
                    f"class indices 0..C-1; convert it before saving the data, e.g. {fix}, or set "
                    f"data.label_column to the column of class indices.")


def check_class_folders(ds: Dataset, image_column: str, cfg: DataConfig) -> None:
    """An image folder without a label column: ``datasets`` labels only two or more class
    sub-folders, so say which layout it found (one class folder, or none)."""
    if not cfg.path or not Path(cfg.path).expanduser().is_dir():
        return
    cells = ds.select_columns([image_column]).cast_column(image_column, Image(decode=False))
    folders = {Path(c["path"]).parent for c in cells.with_format("arrow")[:][image_column].to_pylist()
               if c and c.get("path")}
    if len(folders) != 1:
        return
    folder = folders.pop()
    if folder.resolve() == Path(cfg.path).expanduser().resolve():
        raise DataError(f"{where(cfg)} holds images but no class sub-folders; put each class's images in a "
                        f"sub-folder named after it (cat/, dog/, ...).")
    raise DataError(f"{where(cfg)} holds one class folder only ({folder.name}/); a classifier needs two or "
                    f"more: one sub-folder of images per class.")


def check_label_range(labels: dict[str, np.ndarray], num_classes: int, cfg_num_classes: Optional[int],
                      model_num_classes: Optional[int]) -> None:
    """Labels must index the classifier's outputs (else an index error mid-training, or a wrong
    accuracy). ``labels``: each split's labels by split name."""
    top_split, top = max(((name, int(y.max())) for name, y in labels.items() if len(y)), key=lambda t: t[1])
    if cfg_num_classes is not None and top >= num_classes:
        raise DataError(f"The labels of the '{top_split}' split go up to {top} but data.num_classes={num_classes}; "
                        f"set data.num_classes to at least {top + 1} (or leave it unset).")
    classes = max(top + 1, num_classes)
    if model_num_classes is not None and model_num_classes < classes:
        raise DataError(f"model.num_classes={model_num_classes} is below the {classes} classes of the data "
                        f"(labels up to {top}); set model.num_classes to at least {classes} (or leave it unset).")


def _name(cell: dict[str, Any], place: str) -> str:
    """The file of an image, else ``place`` (where it is in the data: images stored as bytes)."""
    return cell.get("path") or place


def open_image(cell: dict[str, Any], place: str = "without a file name") -> Any:
    """The PIL image of an undecoded ``Image`` cell, decoded as ``datasets`` does; a file that
    doesn't decode is a DataError naming it."""
    try:
        return Image().decode_example(cell)
    except IMAGE_ERRORS as err:
        raise bad_image_error(cell, place, err) from None


def bad_image_error(cell: dict[str, Any], place: str, err: Exception) -> DataError:
    return DataError(f"The image {_name(cell, place)} can't be decoded ({str(err).splitlines()[0][:100]}); remove "
                     f"or replace it, or set data.skip_bad_images=true to leave such files out.")


def _decodes(cell: dict[str, Any]) -> bool:
    """Whether the image decodes: a JPEG at 1/8 scale (draft: faster, truncation still found;
    verify() misses a truncated JPEG), anything else in full."""
    from PIL import Image as PILImage

    try:
        source = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else cell["path"]
        with PILImage.open(source) as im:
            im.draft(im.mode, (1, 1))
            im.load()
        return True
    except IMAGE_ERRORS:
        return False


def drop_bad_images(ds: Dataset, cfg: DataConfig, split: str) -> Dataset:
    """``data.skip_bad_images``: ``ds`` without the rows whose image doesn't decode (a warning says
    how many)."""
    cells = ds.select_columns(["image"]).cast_column("image", Image(decode=False)).with_format("arrow")[:]
    cells = cells.column("image").to_pylist()
    bad = [row for row, cell in enumerate(cells) if not _decodes(cell)]
    if not bad:
        return ds
    logger.warning("Left out %d of %d images of the '%s' split that can't be decoded (data.skip_bad_images=true), "
                   "e.g. %s.", len(bad), len(ds), split, _name(cells[bad[0]], f"at row {bad[0]}"))
    keep = np.setdiff1d(np.arange(len(ds)), bad)
    if len(keep) == 0:
        raise DataError(f"None of the {len(ds)} images of the '{split}' split of {where(cfg)} can be decoded; "
                        f"are they image files?")
    return ds.select(keep)
