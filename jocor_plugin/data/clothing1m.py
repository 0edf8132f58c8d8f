"""Clothing1M (Xiao et al., 2015) from its usual folder layout, and the paper's image transforms.

The dataset comes from its authors on request (https://github.com/Cysu/noisy_label says how) as
``images/0.tar`` ... ``images/9.tar`` plus the list files; extract the tars in place
(``cd ROOT/images && for t in *.tar; do tar -xf "$t"; done``) to get the layout read here::

    ROOT/images/0/00/xxx.jpg ...          the images (extracted from images/*.tar)
    ROOT/noisy_label_kv.txt               "<image path> <label>" per line (web labels)
    ROOT/clean_label_kv.txt               "<image path> <label>" per line (human labels)
    ROOT/noisy_train_key_list.txt         one image path per line: the 1M noisy training images
    ROOT/clean_val_key_list.txt           the 14k clean validation images
    ROOT/clean_test_key_list.txt          the 10k clean test images

Image paths are relative to ROOT. ``load_clothing1m`` turns this into a ``DatasetDict``
(train = noisy, validation = clean val, test = clean test) whose ``image`` column holds file
paths under a ``datasets.Image()`` feature, so images are decoded lazily, batch by batch.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from ..core.errors import DataError

__all__ = ["CLOTHING1M_CLASSES", "CLOTHING1M_FILES", "is_clothing1m_folder", "load_clothing1m",
           "paper_train_transform"]

logger = logging.getLogger(__name__)

# category_names_eng.txt of the dataset, in label order
CLOTHING1M_CLASSES = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                      "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]
# split -> (key list, label file)
SPLIT_FILES = {"train": ("noisy_train_key_list.txt", "noisy_label_kv.txt"),
               "validation": ("clean_val_key_list.txt", "clean_label_kv.txt"),
               "test": ("clean_test_key_list.txt", "clean_label_kv.txt")}
CLOTHING1M_FILES = sorted({f for pair in SPLIT_FILES.values() for f in pair})
LAYOUT = ("ROOT/images/..., ROOT/noisy_label_kv.txt and ROOT/clean_label_kv.txt ('<image path> <label>' "
          "per line), ROOT/noisy_train_key_list.txt, ROOT/clean_val_key_list.txt and "
          "ROOT/clean_test_key_list.txt (one image path per line, relative to ROOT)")


def is_clothing1m_folder(path: str | os.PathLike | None) -> bool:
    """A folder holding any of the Clothing1M list files (so a partial copy gets a clear error)."""
    return path is not None and Path(path).expanduser().is_dir() and any(
        (Path(path).expanduser() / f).is_file() for f in CLOTHING1M_FILES)


def _read_lines(file: Path) -> list[str]:
    return [line.strip() for line in file.read_text().splitlines() if line.strip()]


def _read_labels(file: Path) -> dict[str, int]:
    labels = {}
    for number, line in enumerate(_read_lines(file), 1):
        key, value = line.rsplit(None, 1) if len(line.split()) > 1 else ("", "")
        try:
            label = int(value)
        except ValueError:
            label = -1
        if not 0 <= label < len(CLOTHING1M_CLASSES):
            raise DataError(f"{file}:{number}: expected '<image path> <label in 0..13>', got {line!r}.")
        labels[key] = label
    return labels


def _missing_images(root: Path, keys: list[str]) -> list[str]:
    """Keys whose file does not exist; one directory listing per folder instead of 1M stat calls."""
    listings: dict[str, set[str]] = {}
    missing = []
    for key in keys:
        folder, _, name = key.rpartition("/")
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(root / folder))
            except (FileNotFoundError, NotADirectoryError):
                listings[folder] = set()
        if name not in listings[folder]:
            missing.append(key)
    return missing


def _absent_folders(root: Path, missing: list[str]) -> list[str]:
    """The top image folders (``images/0`` ... ``images/9``: one per tar) of ``missing`` keys that do
    not exist at all, sorted."""
    tops = {"/".join(key.split("/")[:2]) for key in missing if key.count("/") >= 2}
    return sorted(top for top in tops if not (root / top).is_dir())


def load_clothing1m(root: str | os.PathLike | None, *, skip_missing: bool = False) -> DatasetDict:
    """Read a Clothing1M folder into ``DatasetDict(train, validation, test)`` of lazily decoded images.

    Missing list files raise a DataError naming them; images listed but not on disk raise one
    with their count unless ``skip_missing`` (``data.skip_missing=true``), which drops them.
    """
    if root is None:
        raise DataError(f"data.name=clothing1m reads a local folder: set data.path=ROOT, laid out as {LAYOUT}.")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"data.path={str(root)!r} is not a folder; point data.path at a Clothing1M "
                        f"folder holding {LAYOUT}.")
    absent = [f for f in CLOTHING1M_FILES if not (root / f).is_file()]
    if absent:
        raise DataError(f"The Clothing1M folder {str(root)!r} lacks {', '.join(absent)}; expected {LAYOUT}.")
    label_files = {name: _read_labels(root / name) for name in {kv for _, kv in SPLIT_FILES.values()}}
    # paths as strings, then an arrow cast to Image(): faster than encoding 1M rows one by one
    features = Features({"image": Value("string"), "label": ClassLabel(names=CLOTHING1M_CLASSES)})
    splits = {}
    for split, (key_file, kv_file) in SPLIT_FILES.items():
        keys = _read_lines(root / key_file)
        labels = label_files[kv_file]
        unlabeled = [k for k in keys if k not in labels]
        if unlabeled:
            raise DataError(f"{len(unlabeled)} of {len(keys)} images listed in {key_file} have no label in "
                            f"{kv_file} (first: {unlabeled[0]}).")
        missing = _missing_images(root, keys)
        if missing and not skip_missing:
            unextracted = _absent_folders(root, missing)
            if unextracted:  # whole tar folders: skipping them would silently drop most of the data
                tars = [f"{f}.tar" for f in unextracted if (root / f"{f}.tar").is_file()]
                how = (f"{', '.join(tars)} not extracted: cd {root / 'images'} && for t in *.tar; do "
                       f"tar -xf \"$t\"; done" if tars else "copy them, or extract them from images/*.tar")
                raise DataError(f"{len(missing)} of {len(keys)} images listed in {key_file} are missing: the "
                                f"folders {', '.join(unextracted)} do not exist in {str(root)!r} ({how}).")
            raise DataError(f"{len(missing)} of {len(keys)} images listed in {key_file} are missing (first: "
                            f"{root / missing[0]}); set data.skip_missing=true to go on without them.")
        if missing:
            logger.warning("Clothing1M: skipping %d of %d images listed in %s that are missing "
                           "(data.skip_missing=true).", len(missing), len(keys), key_file)
            gone = set(missing)
            keys = [k for k in keys if k not in gone]
        if not keys:
            raise DataError(f"No images of {key_file} are left in {str(root)!r}.")
        splits[split] = Dataset.from_dict({"image": [str(root / k) for k in keys],
                                           "label": [labels[k] for k in keys]},
                                          features=features).cast_column("image", Image())
    logger.info("Clothing1M from %s: %d noisy train, %d clean validation, %d clean test images.", root,
                len(splits["train"]), len(splits["validation"]), len(splits["test"]))
    return DatasetDict(splits)


def paper_train_transform(image_config: dict[str, Any]) -> Any:
    """The paper's Clothing1M training transform at the resolved size: Resize(input / crop_pct) ->
    RandomCrop(input) -> RandomHorizontalFlip -> ToTensor -> Normalize (224 / 0.875 = 256, the
    same resize as timm's eval transform, which then centre-crops)."""
    from timm.data.transforms import MaybeToTensor, str_to_interp_mode
    from torchvision import transforms

    _, height, width = image_config["input_size"]
    crop_pct = image_config.get("crop_pct") or 0.875
    size: Any = math.floor(height / crop_pct) if height == width else (
        math.floor(height / crop_pct), math.floor(width / crop_pct))  # int: the shorter side, as timm
    interpolation: Optional[str] = image_config.get("interpolation") or "bilinear"
    return transforms.Compose([
        transforms.Resize(size, interpolation=str_to_interp_mode(interpolation)),
        transforms.RandomCrop((height, width)),
        transforms.RandomHorizontalFlip(),
        MaybeToTensor(),
        transforms.Normalize(mean=image_config["mean"], std=image_config["std"]),
    ])
