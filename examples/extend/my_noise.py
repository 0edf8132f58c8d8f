"""A noise type of your own: with probability r a label becomes class 0 (a labeller who defaults
to the first class). ``method.imports=my_noise noise.type=to_first``."""
import numpy as np

from jocor_plugin.noise import register_noise_type


@register_noise_type("to_first", default_forget_rate=lambda rate: rate, label="To-first")
def to_first(rate: float, num_classes: int, *, dataset, grouping, matrix=None) -> np.ndarray:
    T = np.eye(num_classes) * (1.0 - rate)
    T[:, 0] += rate  # row 0 keeps its label: 1 - r + r
    return T
