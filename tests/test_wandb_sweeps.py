"""W&B's private helpers the sweep runner uses (jocor_plugin/experiments/wandb_sweeps.py): present and behaving
as relied on in the installed W&B, which is the minor version pyproject pins."""
import re
import sys
from pathlib import Path

import wandb
from packaging.specifiers import SpecifierSet

from jocor_plugin.experiments.wandb_sweeps import TESTED_WANDB, agent_argv, load_sweep_config, validate_sweep_config

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_pins_the_tested_wandb_and_it_is_installed():
    pin = re.search(r'"wandb([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert SpecifierSet(pin) == SpecifierSet(TESTED_WANDB)
    assert wandb.__version__ in SpecifierSet(TESTED_WANDB)


def test_load_and_validate_fill_in_a_sweep_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("method: grid\nmetric: {name: test_acc_last10, goal: maximize}\n"
                    "parameters:\n  method.co_lambda: {values: [0.5, 0.9]}\n  train.epochs: {min: 1, max: 3}\n"
                    "command:\n  - python\n  - -m\n  - jocor_plugin.run\n  - ${args_no_hyphens}\n")
    config = validate_sweep_config(load_sweep_config(str(path)))
    assert config["parameters"]["train.epochs"]["distribution"] == "int_uniform"  # filled in by W&B


def test_agent_expands_the_command_as_the_agent_does():
    argv = agent_argv(["${interpreter}", "-m", "jocor_plugin.run", "R.yaml", "${args_no_hyphens}"],
                      {"method.co_lambda": 0.35, "train.epochs": 2})
    assert argv == [sys.executable, "-m", "jocor_plugin.run", "R.yaml", "method.co_lambda=0.35", "train.epochs=2"]
