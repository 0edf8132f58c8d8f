"""Data: where images come from (``sources``: folders, CSV, the hub, the built-ins, Clothing1M and
Fashion-MNIST readers), checks of what was found (``checks``), the noisy splits and the loaders,
in memory or streamed (``loaders``), and augmented views by index for methods that want several
(``views``).

May import ``core``, ``models``, ``noise``, ``methods`` and ``config``.
"""
from .loaders import (BUILTIN_DATASETS, InMemoryImages, NoisySplits, StreamedImages, build_noisy_splits, class_names,
                      load_splits, make_loader, permutation_split, resolve_image_config, sample_identity, undecoded)
from .sources import DataSource, data_sources, register_data_source

__all__ = ["BUILTIN_DATASETS", "NoisySplits", "load_splits", "permutation_split", "build_noisy_splits",
           "sample_identity", "class_names", "resolve_image_config", "InMemoryImages", "StreamedImages",
           "make_loader", "undecoded", "DataSource", "data_sources", "register_data_source"]
