"""A data source of your own: 200 8x8 images of two classes (a bright or a dark square), made on
the fly. ``method.imports=my_data data.name=squares``; the test split is held out of it."""
import numpy as np
from datasets import ClassLabel, Dataset, Features, Image

from jocor_plugin.data import register_data_source


@register_data_source("squares")
def squares(cfg) -> Dataset:
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    images = rng.integers(0, 60, size=(200, 8, 8), dtype=np.uint8)
    images[labels == 1, 2:6, 2:6] += 180  # class 1: a bright square in the middle
    features = Features({"image": Image(), "label": ClassLabel(names=["dark", "bright"])})
    return Dataset.from_dict({"image": list(images), "label": labels}, features=features)
