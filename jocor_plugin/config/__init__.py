"""The recipe: its typed schema (``schema``), loading from YAML plus ``key=value`` overrides and
validation with errors that say what to fix (``recipe``), the ``authors_code`` fidelity presets
(``fidelity``), what changed between a run's recipe and its resume (``changes``) and the generated
reference table (``reference``).

May import ``core``, ``models``, ``noise`` and ``methods`` (a recipe's method arguments are checked
against the method registry).
"""
from .recipe import apply_fidelity, apply_overrides, config_to_dict, expand_path_variables, load_config
from .reference import describe_config, with_reference_table
from .schema import (SECTIONS, Config, ConfigError, DataConfig, LogConfig, MethodConfig, ModelConfig, NoiseConfig,
                     OptimConfig, TrainConfig)

__all__ = ["Config", "ConfigError", "DataConfig", "NoiseConfig", "ModelConfig", "MethodConfig", "OptimConfig",
           "TrainConfig", "LogConfig", "load_config", "apply_overrides", "apply_fidelity", "config_to_dict",
           "describe_config", "with_reference_table", "expand_path_variables", "SECTIONS"]
