"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from its original idx files, offline.

60,000 training / 10,000 test 28x28 grey images of ten clothing classes: the drop-in replacement for
MNIST at the paper's scale. Where the four files come from, in order:

1. ``data.path`` (a folder holding them, gzipped or not);
2. Debian's ``dataset-fashion-mnist`` package, which installs them in ``DEBIAN_DIR``
   (``apt-get install dataset-fashion-mnist``);
3. the Hugging Face Hub dataset ``HUB_ID`` (same images, same split).

The idx format (LeCun's MNIST format): a big-endian header -- magic number ``0x0000080N`` with N the
number of dimensions, then N uint32 sizes -- followed by the uint8 data in C order.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from ..core.errors import DataError

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "DEBIAN_DIR", "HUB_ID", "read_idx",
           "load_fashion_mnist", "is_fashion_mnist_folder"]

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
# split -> (images, labels), as the files are named by the dataset's authors (and Debian)
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_ID = "zalando-datasets/fashion_mnist"
IDX_UBYTE = 0x08  # the only element type these files use


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (``.gz`` or plain) as a uint8 array of the shape its header gives."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises BadGzipFile (an OSError) or EOFError if cut short
        raise DataError(f"Could not read the idx file {path}: {err}. Reinstall or re-download it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE:
        raise DataError(f"{path} is not an idx file of unsigned bytes (bad magic number "
                        f"{raw[:4].hex() or 'empty'}; expected 000008NN).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = int(np.prod(shape)) if shape else 0
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or padded: its header says shape {shape} ({expected:,} "
                        f"bytes) but it holds {len(raw) - header:,}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def is_fashion_mnist_folder(folder: str | Path | None) -> bool:
    """Whether ``folder`` holds the four idx files (gzipped or not)."""
    if folder is None or not Path(folder).expanduser().is_dir():
        return False
    return all(_find(Path(folder).expanduser(), stem) for pair in FASHION_MNIST_FILES.values() for stem in pair)


def _split(folder: Path, split: str) -> Dataset:
    images_file, labels_file = (_find(folder, stem) for stem in FASHION_MNIST_FILES[split])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: the {split} files disagree (images {images.shape}, labels "
                        f"{labels.shape}); expected N x 28 x 28 images and N labels.")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{labels_file} has label {labels.max()}; Fashion-MNIST has 10 classes (0-9).")
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    # PNG-encoded here (faster than datasets' per-row encoder), as the hub copy stores them;
    # uncompressed, which writes and reads back faster (the pixels are the same)
    return Dataset.from_dict({"image": [{"bytes": _png(im), "path": None} for im in images],
                              "label": labels.astype(np.int64)}, features=features)


def _png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


GET_FILES = ("Either install them (root: apt-get install dataset-fashion-mnist, or make fashion-mnist), or, "
             "without root, download the four files from the dataset's GitHub page (zalandoresearch/fashion-mnist, "
             "data/fashion) into a folder and set data.path=FOLDER.")


def missing_data_message(path: Optional[str]) -> str:
    """Why there is no Fashion-MNIST: with ``data.path``, the files missing there (the hub is not
    tried for a folder the user named); without it, Debian's folder and the hub both failed."""
    if path:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            return f"Fashion-MNIST: data.path={path!r} is not a folder. {GET_FILES}"
        missing = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair if _find(folder, stem) is None]
        return (f"Fashion-MNIST: data.path={path!r} does not hold {', '.join(missing)} (each as .gz or "
                f"uncompressed; the hub is not tried for a folder you name). {GET_FILES}")
    every = ", ".join(s + ".gz" for pair in FASHION_MNIST_FILES.values() for s in pair)
    return (f"Fashion-MNIST: {DEBIAN_DIR} does not hold the four idx files ({every}) and the hub dataset "
            f"{HUB_ID} could not be loaded. {GET_FILES}")


def load_fashion_mnist(path: Optional[str] = None, load_hub=None) -> DatasetDict:
    """Fashion-MNIST as ``DatasetDict(train=60,000, test=10,000)`` with ``image`` and a ``label``
    ClassLabel of the ten class names. ``path`` (a folder of idx files) wins over Debian's folder;
    the hub is the last resort (``load_hub``: a callable returning the DatasetDict, for tests)."""
    folder = Path(path).expanduser() if path else DEBIAN_DIR
    if is_fashion_mnist_folder(folder):
        logger.info("Fashion-MNIST: reading the idx files in %s.", folder)
        return DatasetDict({split: _split(folder, split) for split in FASHION_MNIST_FILES})
    if path:  # the user named a folder: don't silently fall back to something else
        raise DataError(missing_data_message(path))
    try:
        if load_hub is None:
            from datasets import load_dataset

            return load_dataset(HUB_ID)
        return load_hub()
    except Exception as err:  # offline, or no such dataset: one line that names both ways
        logger.debug("Fashion-MNIST from the hub failed: %s", err)
        raise DataError(missing_data_message(None)) from None
