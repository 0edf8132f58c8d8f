"""The recipe: its typed schema, loading from YAML plus ``key=value`` overrides, validation with
errors that say what to fix, the ``authors_code`` fidelity presets (``fidelity``), what changed
between a run's recipe and its resume (``changes``) and the generated reference table.

May import ``core``, ``models``, ``noise`` and ``methods`` (a recipe's method arguments are checked
against the method registry).
"""
from .recipe import (SECTIONS, Config, ConfigError, DataConfig, LogConfig, MethodConfig, ModelConfig, NoiseConfig,
                     OptimConfig, TrainConfig, apply_fidelity, apply_overrides, config_to_dict, describe_config,
                     expand_path_variables, load_config, with_reference_table)

__all__ = ["Config", "ConfigError", "DataConfig", "NoiseConfig", "ModelConfig", "MethodConfig", "OptimConfig",
           "TrainConfig", "LogConfig", "load_config", "apply_overrides", "apply_fidelity", "config_to_dict",
           "describe_config", "with_reference_table", "expand_path_variables", "SECTIONS"]
