"""Training methods, registered by name. Importing this package registers the built-ins."""
from .base import Method, MethodOutput, mean_or_zero, num_to_keep, small_loss_indices
from .registry import create_method, describe_method, list_methods, method_class, register_method
from . import jocor, standard  # noqa: F401  (registration side effect)

__all__ = [
    "Method", "MethodOutput", "create_method", "describe_method", "list_methods", "method_class",
    "register_method", "mean_or_zero", "num_to_keep", "small_loss_indices",
]
