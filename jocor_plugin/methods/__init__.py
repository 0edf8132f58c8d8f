"""Training methods, registered by name. Importing this package registers the built-ins."""
from . import (coteaching, coteaching_plus, decoupling, dividemix, elr, fcorrection, gce, jocor,  # noqa: F401
               joint_only, sce, sop, standard, standard_plus)  # (registration side effect)
from .base import (SELECTION_SCOPES, DataInfo, Method, MethodArgumentError, MethodOutput, cross_small_loss,
                   disagreement_indices, fill_unset, kept_mean, mean_or_zero, num_to_keep, per_sample_ce,
                   require_argument, small_loss_indices)
from .contract import TrainerContext, ViewSource
from .fcorrection import estimate_transition_matrix, load_transition_matrix, transition_matrix_error
from .registry import ENTRY_POINT_GROUP, create_method, describe_method, list_methods, method_class, register_method

__all__ = [
    "Method", "MethodOutput", "DataInfo", "TrainerContext", "ViewSource", "MethodArgumentError", "require_argument",
    "fill_unset", "ENTRY_POINT_GROUP", "create_method", "describe_method", "list_methods", "method_class",
    "register_method", "SELECTION_SCOPES", "kept_mean", "mean_or_zero", "num_to_keep", "small_loss_indices",
    "per_sample_ce", "disagreement_indices", "cross_small_loss", "estimate_transition_matrix",
    "load_transition_matrix", "transition_matrix_error",
]
