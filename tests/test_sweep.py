"""Sweeps (W&B files + the local runner), noisy validation and method.forget_rate=auto."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from jocor_plugin.config import ConfigError, load_config
from jocor_plugin.core.errors import UserError
from jocor_plugin.train.estimate import (MAX_FORGET_RATE, estimate_noise_rate, noise_rate_from_transition,
                                   small_loss_accuracy)
from jocor_plugin.experiments.jobs import resume_args
from jocor_plugin.sweep import (agent_command, load_sweep, main, run_arguments, sweep_points,
                                 validate_points)

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.fixture(autouse=True)
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the sweep files name recipes/... relative to the checkout


# ----------------------------------------------------------------------------- the sweep files

@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_sweep_files_parse_as_wandb_does_and_validate(path, tmp_path):
    config = load_sweep(path)  # wandb's loader and client-side check, then ours
    assert config["metric"]["goal"] == "maximize"
    points = sweep_points(config, max_runs=3)
    assert points and all(set(p.values) == set(config["parameters"]) for p in points)
    argv = agent_command(config, points[0].values)  # the W&B agent's macro expansion
    assert argv[:4] == ["accelerate", "launch", "-m", "jocor_plugin.run"]
    assert "recipe=recipes/mnist5k_sym50.yaml" in argv  # the recipe is a parameter of the sweep
    assert "log.tracker=wandb" in argv
    assert all(f"{k}={v}" in argv for k, v in points[0].values.items())
    recipe, overrides = run_arguments(argv)
    cfg = load_config(recipe, overrides)  # what the agent's run would train
    assert cfg.log.tracker == "wandb" and cfg.data.val_split == 0.1
    validate_points(config, points, tmp_path, ())
    if config["method"] == "grid" and "method.co_lambda" in config["parameters"]:
        grid = config["parameters"]["method.co_lambda"]["values"]
        assert grid == pytest.approx([round(0.05 * i, 2) for i in range(1, 20)])  # the paper's grid


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
# W&B's sweep engine (the `sweeps` package) still declares pydantic v1 config keys
@pytest.mark.filterwarnings("ignore:Valid config keys have changed in V2")
def test_sweep_files_pass_the_wandb_sweeps_schema(path):
    try:  # W&B's sweep engine: `make test` installs it (it pins numpy<2, so not a dependency here)
        from sweeps import SweepConfig, next_run, schema_violations_from_proposed_config
    except ImportError:  # (a bare `import sweeps` would find this repo's sweeps/ folder)
        pytest.skip("wandb[sweeps] (the sweep engine's jsonschema) is not installed")
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    config = load_sweep_config(str(path))
    assert schema_violations_from_proposed_config(config) == []
    assert next_run(SweepConfig(config), [], validate=True) is not None


def write_sweep(path: Path, parameters: dict, method: str = "grid", **extra) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "tiny", "program": "jocor_plugin/run.py", "method": method,
        "metric": {"name": "noisy_val_acc_best", "goal": "maximize"}, "parameters": parameters,
        "command": ["python", "-m", "jocor_plugin.run", "recipes/demo.yaml", "${args_no_hyphens}"], **extra}))
    return path


def test_bad_sweep_values_fail_with_the_schema_error_before_any_run(tmp_path, capsys):
    out = tmp_path / "out"
    bad = write_sweep(tmp_path / "bad.yaml", {"method.co_lambda": {"values": [0.5, 1.5]}})
    assert main([str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "co_lambda-1.5" in err and "method.co_lambda=1.5 is invalid; it must be in [0, 1]" in err
    typo = write_sweep(tmp_path / "typo.yaml", {"method.co_lamda": {"values": [0.5]}})
    assert main([str(typo), "--out", str(out)]) == 2
    assert "Did you mean 'method.co_lambda'?" in capsys.readouterr().err
    assert not out.exists()  # nothing ran


def test_random_points_are_seeded_and_capped():
    config = {"method": "random", "run_cap": 5, "parameters": {
        "method.co_lambda": {"distribution": "uniform", "min": 0.05, "max": 0.95},
        "method.forget_rate": {"values": [0.2, 0.5]}, "data.val_split": {"value": 0.1}}}
    a, b = sweep_points(config, seed=3), sweep_points(config, seed=3)
    assert [p.values for p in a] == [p.values for p in b] and len(a) == 5
    assert all(0.05 <= p.values["method.co_lambda"] <= 0.95 for p in a)
    assert len(sweep_points(config, max_runs=2)) == 2
    assert len(sweep_points({**config, "run_cap": None})) == 8  # the documented default


# ----------------------------------------------------------------------------- a local sweep, end to end

TINY = ["data.name=digits", "train.epochs=2", "train.batch_size=64", "train.max_steps_per_epoch=4",
        "log.progress_bar=false", "train.export_models=false"]


def test_local_sweep_runs_tabulates_plots_and_restarts(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "tiny.yaml", {"method.co_lambda": {"values": [0.5, 0.9]},
                                                  "data.val_split": {"value": 0.2}})
    out = tmp_path / "out"
    args = [str(sweep), "--out", str(out), "--jobs", "2", *TINY, "method.forget_rate=auto",
            "method.estimation_epochs=1"]
    assert main(args) == 0, capsys.readouterr()
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method.co_lambda"] for r in sorted(rows, key=lambda r: r["run"])] == ["0.5", "0.9"]
    assert all(r["status"] == "finished" and 0 <= float(r["noisy_val_acc_best"]) <= 100 for r in rows)
    assert all(0 <= float(r["forget_rate_estimate"]) <= MAX_FORGET_RATE for r in rows)
    assert "| co_lambda-0.5 | 0.5 |" in (out / "summary.md").read_text()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    run_dir = out / "co_lambda-0.9"
    results = json.loads((run_dir / "results.json").read_text())
    log = (out / "logs" / "co_lambda-0.9.log").read_text()
    assert "forget_rate=auto: estimated noise rate" in log and "noisy_val_acc" in log
    estimate = results["forget_rate_estimate"]
    assert results["config"]["method"]["forget_rate"] == "auto" and estimate["estimation_epochs"] == 1
    assert [e["forget_rate"] for e in results["epochs"]] == pytest.approx([0.0, estimate["rate"] / 10])
    assert results["config"]["log"]["tracker"] == "none"
    summary = results["summary"]
    for path in SWEEP_FILES:  # every sweep file optimises a metric that runs really report
        assert yaml.safe_load(path.read_text())["metric"]["name"] in summary
    assert summary["best_epoch"] in (0, 1) and (run_dir / "best" / "model_a").is_dir()
    assert summary["noisy_val_acc_best"] == max(e["noisy_val_acc"] for e in results["epochs"])

    # restart: finished runs are skipped (no process started) ...
    logs = {p.name: p.read_text() for p in (out / "logs").iterdir()}
    assert main(args) == 0
    assert {p.name: p.read_text() for p in (out / "logs").iterdir()} == logs
    assert (out / "summary.md").read_text().count("skipped (finished)") == 2
    # ... and an unfinished one continues from its latest checkpoint
    results["finished"] = False
    (run_dir / "results.json").write_text(json.dumps(results))
    assert resume_args(run_dir) == ["train.resume=auto"]
    assert sweep_points(load_sweep(sweep))[1].name == "co_lambda-0.9"


# ----------------------------------------------------------------------------- noisy validation

def test_val_split_holds_out_a_stratified_deterministic_part():
    from jocor_plugin.data import build_noisy_splits

    def split(*extra):
        return build_noisy_splits(load_config(None, ["data.name=digits", "noise.rate=0.4", *extra]))

    full = split()
    a, b = split("data.val_split=0.1"), split("data.val_split=0.1")
    noisy = np.asarray(full.train["label"])
    expected = sum(int(round(0.1 * np.sum(noisy == c))) for c in np.unique(noisy))
    assert len(a.noisy_validation) == expected and len(a.train) + expected == len(full.train)
    assert a.noisy_validation["index"] == b.noisy_validation["index"]  # deterministic
    assert a.train["index"] == list(range(len(a.train)))  # renumbered for the per-sample buffers
    held = np.asarray(a.noisy_validation["index"])
    assert np.array_equal(np.asarray(a.noisy_validation["label"]), noisy[held])  # noisy labels kept
    other = split("data.val_split=0.1", "data.split_seed=7")
    assert other.noisy_validation["index"] != a.noisy_validation["index"]
    with pytest.raises(ConfigError, match=r"data.val_split=1.0 is invalid"):
        load_config(None, ["data.val_split=1.0"])


def test_small_loss_accuracy_keeps_the_smallest_losses():
    losses = torch.tensor([0.1, 5.0, 0.2, 3.0])
    correct = torch.tensor([[True, False, True, False], [True, True, False, False]])
    assert small_loss_accuracy(losses, correct, 0.5) == pytest.approx(75.0)  # samples 0 and 2
    assert small_loss_accuracy(losses, correct, 0.0) == pytest.approx(50.0)


# ----------------------------------------------------------------------------- forget_rate=auto

def symmetric_T(rate: float, c: int) -> np.ndarray:
    return np.full((c, c), rate / (c - 1)) * (1 - np.eye(c)) + np.eye(c) * (1 - rate)


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_noise_rate_estimate_on_a_synthetic_softmax_table(rate):
    """A network that outputs the noisy posterior T[clean] (blurred) gives back the rate."""
    rng = np.random.default_rng(0)
    c, n = 10, 5000
    T = symmetric_T(rate, c)
    clean = rng.integers(0, c, n)
    noisy = np.array([rng.choice(c, p=T[y]) for y in clean])
    logits = np.log(T[clean]) + rng.normal(0, 0.05, (n, c))
    probs = torch.softmax(torch.as_tensor(logits), 1).float()
    info = estimate_noise_rate(probs, noisy)
    assert info["raw_rate"] == pytest.approx(np.mean(noisy != clean), abs=0.03)
    assert info["rate"] == pytest.approx(min(info["raw_rate"], MAX_FORGET_RATE))


def test_noise_rate_from_transition_weights_classes_by_prior():
    T = np.array([[0.9, 0.1], [0.4, 0.6]])
    assert noise_rate_from_transition(T, [3, 1]) == pytest.approx(1 - (0.75 * 0.9 + 0.25 * 0.6))
    # a network that learnt nothing (uniform softmax over 100 classes): raw 0.99, clipped
    info = estimate_noise_rate(torch.full((300, 100), 0.01), np.arange(300) % 100)
    assert info["raw_rate"] == pytest.approx(0.99) and info["rate"] == MAX_FORGET_RATE


def test_forget_rate_auto_in_the_schema():
    cfg = load_config("recipes/demo.yaml", ["method.forget_rate=auto"])
    assert cfg.method.forget_rate == "auto"
    with pytest.raises(UserError, match="estimated by the run"):  # a run's, not the recipe's
        cfg.forget_rate
    assert not hasattr(cfg, "estimated_forget_rate")  # the recipe holds no runtime state
    assert load_config(None, ["method.forget_rate=0.3"]).forget_rate == 0.3
    with pytest.raises(ConfigError, match=r"method.forget_rate='aut' is invalid; expected float \| 'auto' "
                                          r"\| null. Did you mean 'auto'\?"):
        load_config(None, ["method.forget_rate=aut"])
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\)"):
        load_config(None, ["method.forget_rate=1.5"])
    assert not math.isnan(load_config(None, ["method.forget_rate=null", "noise.rate=0.3"]).forget_rate)


def test_the_recipe_is_a_sweep_parameter_and_the_local_runner_takes_it(tmp_path):
    from jocor_plugin.sweep import point_command

    config = load_sweep(ROOT / "sweeps" / "co_lambda_grid.yaml")
    point = sweep_points(config, max_runs=1)[0]
    argv = point_command(config, point, tmp_path, ["recipe=recipes/demo.yaml"], keep_tracker=True)
    recipe, overrides = run_arguments(argv)
    assert recipe == "recipes/demo.yaml"  # the command line's recipe= wins over the file's
    cfg = load_config(recipe, overrides)
    assert cfg.train.epochs == 30 and cfg.log.group == "jocor-co_lambda-grid"  # one W&B group per sweep
    assert load_config(None, ["recipe=recipes/demo.yaml", "train.epochs=2"]).train.epochs == 2  # as run gets it


@pytest.mark.parametrize("command", [
    ["bash", "-c", "rm -rf ~; jocor_plugin.run", "${args_no_hyphens}"],
    ["python", "evil.py", "jocor_plugin.run", "${args_no_hyphens}"],
    ["accelerate", "launch", "${program}", "-m", "jocor_plugin.run", "${args_no_hyphens}"],
])
def test_a_command_other_than_the_trainer_is_refused_when_the_file_is_read(tmp_path, command):
    path = write_sweep(tmp_path / "s.yaml", {"method.co_lambda": {"values": [0.5]}}, command=command)
    with pytest.raises(UserError, match=r"'command' must be \[python, -m, jocor_plugin.run"):
        load_sweep(path)


def test_a_point_that_wrote_no_results_is_failed_with_its_last_log_line(tmp_path, monkeypatch):
    import sys
    from jocor_plugin import sweep
    config = load_sweep(write_sweep(tmp_path / "s.yaml", {"method.co_lambda": {"values": [0.5]}}))
    monkeypatch.setattr(sweep, "validate_points", lambda *args: None)
    monkeypatch.setattr(sweep, "point_command", lambda *args: [sys.executable, "-c", "print('trained nothing')"])
    points = sweep.run_sweep(config, sweep_points(config), tmp_path / "out")  # exits 0, writes no results
    assert points[0].status.startswith("failed (exit 0 but no finished")
    assert points[0].status.endswith(": trained nothing")
