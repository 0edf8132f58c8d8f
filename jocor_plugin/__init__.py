"""jocor_plugin: train timm classifiers on noisy labels with JoCoR and its baselines, on Accelerate.

Importing the package registers the paper's models with timm (``jocor_mlp``, ``jocor_cnn``) and
the built-in methods with the method registry.

Subpackages by concern, lowest layer first. A module imports only from its own layer or lower
ones, never a higher one, and no module imports another in a circle (``tests/test_architecture.py``
checks both, imports inside functions and packages' ``__init__`` included). Each package's
docstring says what it owns.

1. core -- errors, command-line plumbing, results.json, file locks: nothing of recipes or training.
2. models -- the paper's networks registered with timm, ``PairNet``, timm model folders.
3. noise -- noise types, transition matrices and the label-flipping ``datasets.map``.
4. methods -- losses, selection and per-method hooks; they see the trainer only through
   ``methods.contract.TrainerContext``, so a method imports nothing from data or train.
5. config -- the recipe schema, loading and validation (it asks the method registry).
6. data -- sources, checks, noisy splits, loaders and augmented views.
7. train -- the trainer, the epoch engine, meters, schedules, checkpoints, the run folder, tau
   estimation and what a run writes (exported models, label-issue report).
8. experiments -- grids, the job runner, reports and W&B sweep files.
9. entry points -- the command lines ``run``, ``predict``, ``label_issues``, ``reproduce``,
   ``sweep``, and this package's ``__init__``.
"""
from .config import Config, ConfigError, load_config
from .methods import create_method, list_methods, register_method
from .models import PairNet, create_pair  # (importing models registers jocor_mlp / jocor_cnn with timm)

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "create_method", "list_methods",
           "register_method", "PairNet", "create_pair", "__version__"]
