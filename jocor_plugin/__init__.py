"""jocor_plugin: train timm classifiers on noisy labels with JoCoR and its baselines, on Accelerate.

Importing the package registers the paper's models with timm (``jocor_mlp``, ``jocor_cnn``) and
the built-in methods with the method registry.
"""
from . import models  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)
from .config import Config, ConfigError, load_config
from .methods import create_method, list_methods, register_method
from .models import PairNet, create_pair

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "create_method", "list_methods",
           "register_method", "PairNet", "create_pair", "__version__"]
