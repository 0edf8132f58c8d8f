"""Data: where images come from (``sources``: folders, CSV, the hub, the built-ins, Clothing1M and
Fashion-MNIST readers), checks of what was found (``checks``), the noisy splits (``splits``) and the
loaders, in memory or streamed (``loaders``), and augmented views by index for methods that want several
(``views``).

May import ``core``, ``models``, ``noise``, ``methods`` and ``config``.
"""
from .loaders import InMemoryImages, StreamedImages, make_loader, resolve_image_config, sample_identity
from .sources import DataSource, data_sources, register_data_source
from .splits import (BUILTIN_DATASETS, NoisySplits, build_noisy_splits, class_names, load_splits, permutation_split,
                     undecoded)

__all__ = ["BUILTIN_DATASETS", "NoisySplits", "load_splits", "permutation_split", "build_noisy_splits",
           "sample_identity", "class_names", "resolve_image_config", "InMemoryImages", "StreamedImages",
           "make_loader", "undecoded", "DataSource", "data_sources", "register_data_source"]
