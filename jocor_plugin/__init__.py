"""jocor_plugin: train timm classifiers on noisy labels with JoCoR and its baselines, on Accelerate.

Importing the package registers the paper's models with timm (``jocor_mlp``, ``jocor_cnn``) and
the built-in methods with the method registry.

Layers, lowest first. A module imports only from its own layer or lower ones, never a higher one,
and no module imports another in a circle (``tests/test_architecture.py`` checks both, imports
inside functions included):

1. foundation -- errors, cli, results, recipe_changes, lock, fidelity, noise_types, models,
   timm_folder, metrics (``evaluate`` metric scripts): helpers with no knowledge of recipes or
   training.
2. methods -- ``methods/``: losses, selection and per-method hooks; they see the trainer only
   through ``methods.contract.TrainerContext``.
3. config -- config: the recipe schema, loading and validation (it asks the method registry).
4. data -- noise, data_checks, sources, clothing1m, fashion_mnist, data, views: data sets, label
   noise and loaders.
5. train -- meters, engine, checkpoint, run_folder, schedule, estimate, export, label_report,
   trainer: one epoch, the run's wiring, its folder and what it writes.
6. entry points -- run, predict, label_issues, grid, jobs, report, report_modes, reproduce, sweep,
   wandb_sweeps, and this package's ``__init__``.
"""
from . import models  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)
from .config import Config, ConfigError, load_config
from .methods import create_method, list_methods, register_method
from .models import PairNet, create_pair

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "create_method", "list_methods",
           "register_method", "PairNet", "create_pair", "__version__"]
