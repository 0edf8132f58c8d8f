"""Label noise: the noise types and their transition matrices (``types``) and the ``datasets.map``
that flips labels reproducibly (``label_noise``),
and transition matrices read from files (``transition_file``).

May import ``core``. Sits below ``methods`` (F-correction reads a transition matrix) and ``config``
(a recipe's noise type is checked against the registry).
"""
from .label_noise import actual_noise_rate, add_label_noise, authors_noisy_labels, noisy_labels
from .transition_file import as_transition_matrix, load_transition_matrix
from .types import NOISE_TYPES, NoiseType, noise_type, register_noise_type, transition_matrix

__all__ = ["add_label_noise", "actual_noise_rate", "noisy_labels", "authors_noisy_labels", "NOISE_TYPES",
           "NoiseType", "noise_type", "register_noise_type", "transition_matrix", "load_transition_matrix",
           "as_transition_matrix"]
