"""The W&B internals the local sweep runner relies on, in one place: how ``wandb sweep`` reads and
checks a sweep file, and how ``wandb agent`` expands its command. They are private to W&B, so
pyproject pins the W&B minor version they were tested with (tests/test_wandb_sweeps.py)."""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["load_sweep_config", "validate_sweep_config", "agent_argv", "TESTED_WANDB"]

TESTED_WANDB = ">=0.31,<0.32"  # keep equal to the pin in pyproject.toml (a test checks both)


def load_sweep_config(path: str) -> Optional[dict[str, Any]]:
    """The file as ``wandb sweep`` loads it (None, after W&B printed why, if unreadable)."""
    from wandb.sdk.launch.sweeps.utils import load_sweep_config as load

    return load(path)


def validate_sweep_config(config: dict[str, Any]) -> dict[str, Any]:
    """W&B's client-side check, which also fills in distributions (ValueError if invalid)."""
    from wandb.apis.public.sweeps import _validate_config_and_fill_distribution

    return _validate_config_and_fill_distribution(config)


def agent_argv(command: list[Any], values: dict[str, Any], program: str = "") -> list[str]:
    """The command line a W&B agent runs for ``values``: its macros (``${args_no_hyphens}``,
    ``${program}``, ...) expanded with its own helpers; ``${interpreter}`` is this Python."""
    import sys

    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    variables = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    variables.update(env=[], interpreter=[sys.executable], program=[program])
    argv = []
    for chunk in create_sweep_command(list(command)):
        chunk = str(chunk)
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += [str(v) for v in variables.get(chunk[2:-1]) or []]
        else:
            argv.append(chunk)
    return argv
