"""Run a W&B sweep file locally, without a W&B server: ``python -m jocor_plugin.sweep sweeps/FILE.yaml``.

The same file drives ``wandb sweep`` + ``wandb agent`` (the documented path with a server). Here:

* ``method: grid`` runs every combination of the parameters' ``values``; ``random`` and ``bayes``
  (which needs the server's model) run ``--max-runs`` points, else the file's ``run_cap``, else
  ``DEFAULT_SAMPLED_RUNS`` = 8, sampled uniformly with ``--seed`` (0).
* Each point's command line is built the way the W&B agent builds it (``${args_no_hyphens}`` ->
  ``key=value``, with wandb's own helper), plus ``train.output_dir=OUT/<run-name>`` and
  ``log.tracker=none`` (``--keep-tracker`` keeps the file's). Every point's recipe is validated by
  the schema before the first run starts.
* Runs go one after another, or ``--jobs N`` at a time; a run whose ``results.json`` is finished is
  skipped, an unfinished one continues from its checkpoint, so rerunning the command resumes. A
  run folder counts as the point's only if its run was made from the point's resolved recipe
  (keys that don't change results, such as log.*, aside): the same sweep with other data or other
  overrides into the same ``--out`` is refused before any run starts, in one line naming the
  difference, so an old result is never reported as the new one.
* ``OUT/summary.csv``, ``OUT/summary.md`` (swept values, the file's metric, ``test_acc_last10``) and
  ``OUT/sweep.png`` (the metric against each swept value) are written at the end.

About 400 lines in one module: it is one command (read the file, expand the points, run them,
summarise) and reads top to bottom; the job runner it shares with grids is ``experiments.jobs``.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .config import ConfigError, config_to_dict, expand_path_variables, load_config
from .config.recipe import RECIPE_ARG, split_recipe
from .core.cli import check_overrides, make_parser, positive_int, tool_main
from .core.errors import UserError
from .core.results import read_results
from .experiments.jobs import Job, JobOutcome, foreign_runs, run_jobs
from .experiments.wandb_sweeps import agent_argv, load_sweep_config, validate_sweep_config

__all__ = ["SweepPoint", "load_sweep", "sweep_points", "point_command", "run_sweep", "summarise_sweep",
           "main", "DEFAULT_SAMPLED_RUNS"]

logger = logging.getLogger("jocor_plugin.sweep")

DEFAULT_SAMPLED_RUNS = 8  # random/bayes points when neither --max-runs nor run_cap is given
ARGS_MACRO = "${args_no_hyphens}"


class SweepError(UserError):
    """A sweep file that this runner (or W&B) cannot use; the message says what to change."""


# ----------------------------------------------------------------------------- the sweep file

def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep file as ``wandb sweep`` does (its loader and client-side check), then check what
    this project needs: a command with ``${args_no_hyphens}``, dotted recipe keys, a metric."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"Sweep file '{path}' does not exist; see sweeps/ for examples.")
    config = load_sweep_config(str(path))  # None (after printing why) if unreadable or empty
    if not isinstance(config, dict):
        raise SweepError(f"Sweep file '{path}' is empty or not a YAML mapping.")
    try:
        config = validate_sweep_config(config)
    except ValueError as err:
        raise SweepError(f"{path}: {err}") from None
    method = config.get("method")
    if method not in ("grid", "random", "bayes"):
        raise SweepError(f"{path}: method={method!r}; use grid, random or bayes.")
    params = config.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{path}: 'parameters' must map recipe keys (e.g. method.co_lambda) to "
                         f"{{values: [...]}} or {{min: .., max: ..}}.")
    for key, spec in params.items():
        if ("." not in key and key != RECIPE_ARG) or not isinstance(spec, dict):
            raise SweepError(f"{path}: parameter {key!r} must be a dotted recipe key such as "
                             f"method.co_lambda, or '{RECIPE_ARG}' (the recipe file), with a mapping of "
                             f"value/values/min/max.")
    metric = config.get("metric")
    if not (isinstance(metric, dict) and metric.get("name") and metric.get("goal") in ("maximize", "minimize")):
        raise SweepError(f"{path}: give 'metric: {{name: ..., goal: maximize|minimize}}' naming a logged "
                         f"metric (e.g. noisy_val_acc_best, test_acc_last10).")
    command = config.get("command")
    if not isinstance(command, list) or ARGS_MACRO not in command or not _runs_the_trainer(command):
        raise SweepError(f"{path}: 'command' must be [python, -m, jocor_plugin.run, ...] or [accelerate, launch, "
                         f"(launch options), -m, jocor_plugin.run, ...] ending with {ARGS_MACRO}, so sweep values "
                         f"arrive as key=value overrides; got {command!r}.")
    return config


def _runs_the_trainer(command: list[Any]) -> bool:
    """``python -m jocor_plugin.run ...`` or ``accelerate launch [options] -m jocor_plugin.run ...``:
    nothing else is started for a sweep point (a command merely mentioning it could run anything)."""
    words = [str(w) for w in command]
    if words[:1] == ["${env}"]:
        words = words[1:]
    if "jocor_plugin.run" not in words:
        return False
    prefix = words[:words.index("jocor_plugin.run")]
    if prefix[-1:] != ["-m"]:
        return False
    launcher = prefix[:-1]
    if launcher in (["python"], ["python3"], ["${interpreter}"]):
        return True
    return launcher[:2] == ["accelerate", "launch"] and all(not w.startswith("${") for w in launcher[2:])


def _point_status(outcome: JobOutcome, folder: Path, log: Path) -> str:
    """'skipped (why)' for a job not started (finished, or trained by another process meanwhile);
    'finished' only when the run exited 0 *and* wrote a finished results.json; else 'failed' with
    the log's last line (what the run said last)."""
    if outcome.skipped:
        return f"skipped ({outcome.skipped})"
    returncode = outcome.code
    if returncode == 0 and read_results(folder).get("finished"):
        return "finished"
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    why = f"exit {returncode}" if returncode else f"exit 0 but no finished {folder / 'results.json'}"
    return f"failed ({why}): {lines[-1][:300] if lines else 'empty log'}"


@dataclass
class SweepPoint:
    """One run of the sweep: its name and the swept values (recipe key -> value)."""

    name: str
    values: dict[str, Any]
    status: str = "pending"
    results: dict[str, Any] = field(default_factory=dict)


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _run_name(values: dict[str, Any], swept: Sequence[str]) -> str:
    """e.g. ``co_lambda-0.35__forget_rate-0.5`` from the swept (non-constant) keys."""
    short = [k.rsplit(".", 1)[-1] for k in swept]
    keys = short if len(set(short)) == len(short) else list(swept)
    name = "__".join(f"{k}-{_format(values[full])}" for k, full in zip(keys, swept)) or "run"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _sample(spec: dict[str, Any], key: str, rng: np.random.Generator) -> Any:
    """One draw from a W&B parameter spec (the distributions a local run can reproduce)."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][int(rng.integers(len(spec["values"])))]
    dist = spec.get("distribution")
    lo, hi = spec.get("min"), spec.get("max")
    if dist == "uniform":
        return float(rng.uniform(lo, hi))
    if dist == "int_uniform":
        return int(rng.integers(lo, hi + 1))
    if dist == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if dist == "q_uniform":
        q = spec.get("q", 1.0)
        return float(round(rng.uniform(lo, hi) / q) * q)
    raise SweepError(f"Parameter {key!r}: distribution {dist!r} is not supported by the local runner; use "
                     f"values, uniform, int_uniform, log_uniform_values or q_uniform.")


def sweep_points(config: dict[str, Any], max_runs: Optional[int] = None, seed: int = 0) -> list[SweepPoint]:
    """The runs of a sweep file: the full grid, or seeded samples for random/bayes."""
    params: dict[str, dict[str, Any]] = config["parameters"]
    swept = [k for k, s in params.items() if "value" not in s]
    if config["method"] == "grid":
        for key, spec in params.items():
            if "value" not in spec and "values" not in spec:
                raise SweepError(f"Grid parameter {key!r} needs 'values' (a list), not a distribution.")
        axes = [spec["values"] if "values" in spec else [spec["value"]] for spec in params.values()]
        combos = [dict(zip(params, combo)) for combo in itertools.product(*axes)]
        combos = combos[:max_runs] if max_runs else combos
    else:
        n = max_runs or config.get("run_cap") or DEFAULT_SAMPLED_RUNS
        rng = np.random.default_rng(seed)
        combos = [{k: _sample(spec, k, rng) for k, spec in params.items()} for _ in range(n)]
    points, seen = [], set()
    for values in combos:
        name = _run_name(values, swept)
        while name in seen:  # sampled duplicates
            name += "+"
        seen.add(name)
        points.append(SweepPoint(name, values))
    return points


# ----------------------------------------------------------------------------- command lines

def agent_command(config: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command line a W&B agent would run for ``values`` (its macro expansion, its formatting)."""
    return agent_argv(config["command"], values, str(config.get("program", "")))


def run_arguments(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """(recipe, overrides) that ``jocor_plugin.run`` receives in a command line: a leading recipe
    file or, as a sweep passes it, ``recipe=PATH`` (the last one wins)."""
    rest = list(argv[list(argv).index("jocor_plugin.run") + 1:])
    recipe = None
    if rest and "=" not in rest[0] and rest[0].endswith((".yaml", ".yml")):
        recipe, rest = rest[0], rest[1:]
    named, overrides = split_recipe(rest)
    return named or recipe, overrides


def point_command(config: dict[str, Any], point: SweepPoint, out: Path, extra: Sequence[str] = (),
                  launcher: str = "command", keep_tracker: bool = False) -> list[str]:
    """The subprocess of one point: the file's command (``accelerate launch`` as
    ``python -m accelerate.commands.launch``, so the venv's own is used) or, with
    ``launcher="python"``, ``python -m jocor_plugin.run`` with the same arguments; a leading
    ``python`` is this interpreter."""
    argv = agent_command(config, point.values)
    argv += [*extra, f"train.output_dir={out / point.name}"]
    if not keep_tracker:
        argv.append("log.tracker=none")
    elif not any(e.startswith("log.group=") for e in extra):  # the sweep's runs as one W&B group
        argv.append(f"log.group={config.get('name') or out.name}")
    if launcher == "python":
        recipe, overrides = run_arguments(argv)
        return [sys.executable, "-m", "jocor_plugin.run", *([recipe] if recipe else []), *overrides]
    if argv[:2] == ["accelerate", "launch"]:
        argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:]]
    elif argv and argv[0] in ("python", "python3"):  # this interpreter (and its venv), not PATH's
        argv = [sys.executable, *argv[1:]]
    return argv


def validate_points(config: dict[str, Any], points: Sequence[SweepPoint], out: Path,
                    extra: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every point's recipe through the schema, before any run starts; returns each point's
    resolved recipe (as the run records it in config.yaml) by name."""
    resolved = {}
    for point in points:
        recipe, overrides = run_arguments(point_command(config, point, out, extra, launcher="python"))
        try:
            cfg = load_config(recipe, overrides)
            expand_path_variables(cfg)  # as the run does: $VAR in data.path is the folder it names
        except ConfigError as err:
            raise SweepError(f"sweep run {point.name}: {err}") from None
        resolved[point.name] = config_to_dict(cfg)
    return resolved


def check_run_identity(points: Sequence[SweepPoint], out: Path, recipes: dict[str, dict[str, Any]]) -> None:
    """Refuse, before any run starts, an ``out`` whose run folders were made from other recipes
    (e.g. the same sweep file run before on other data): their results are not this sweep's."""
    foreign = foreign_runs({out / p.name: recipes[p.name] for p in points if p.name in recipes})
    if foreign:
        raise SweepError(f"{foreign}. Give this sweep its own folder with --out (e.g. --out {out}-2), or delete "
                         f"{out} to rerun it there.")


# ----------------------------------------------------------------------------- running

def run_sweep(config: dict[str, Any], points: list[SweepPoint], out: Path, *, jobs: int = 1,
              extra: Sequence[str] = (), launcher: str = "command", keep_tracker: bool = False) -> list[SweepPoint]:
    """Run the points (skipping finished ones), ``jobs`` at a time; logs go to ``out/logs/``. A
    folder holding a run of another recipe is refused first (``check_run_identity``)."""
    recipes = validate_points(config, points, out, extra) or {}
    check_run_identity(points, out, recipes)
    pending = []
    for point in points:
        if read_results(out / point.name).get("finished"):
            point.status = "skipped (finished)"
        else:
            pending.append(point)
    logger.info("Sweep: %d runs, %d already finished, %d to run (%d at a time).", len(points),
                len(points) - len(pending), len(pending), jobs)
    by_name = {p.name: p for p in pending}

    def done(job: Job, outcome: JobOutcome, seconds: float) -> None:
        by_name[job.name].status = _point_status(outcome, out / job.name, job.log)
        logger.info("%s %s", by_name[job.name].status, job.name)

    # finished or not, and how each run continues, is decided as its job starts (jobs.run_jobs)
    run_jobs([Job(p.name, point_command(config, p, out, extra, launcher, keep_tracker), out / "logs" / f"{p.name}.log",
                  folder=out / p.name, recipe=recipes.get(p.name)) for p in pending], jobs, done)
    for point in points:
        point.results = read_results(out / point.name)
    return points


# ----------------------------------------------------------------------------- reporting

def metric_value(results: dict[str, Any], name: str) -> Optional[float]:
    """A run's value of ``name`` as W&B's summary has it: the summary's, else the last epoch's."""
    if name in results.get("summary", {}):
        return results["summary"][name]
    epochs = results.get("epochs") or [{}]
    return epochs[-1].get(name)


def summarise_sweep(config: dict[str, Any], points: Sequence[SweepPoint], out: Path) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md and sweep.png; return the rows, best first."""
    metric, goal = config["metric"]["name"], config["metric"]["goal"]
    swept = [k for k, s in config["parameters"].items() if "value" not in s]
    rows = []
    for p in points:
        summary = p.results.get("summary", {})
        rows.append({"run": p.name, **{k: p.values[k] for k in swept}, metric: metric_value(p.results, metric),
                     "test_acc_last10": summary.get("test_acc_last10"),
                     "forget_rate_estimate": p.results.get("forget_rate_estimate", {}).get("rate"),
                     "status": p.status})
    if not any(r["forget_rate_estimate"] is not None for r in rows):
        for r in rows:
            del r["forget_rate_estimate"]
    sign = -1 if goal == "maximize" else 1
    rows.sort(key=lambda r: (r[metric] is None, sign * (r[metric] or 0)))
    columns = list(rows[0]) if rows else ["run"]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    cell = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"Sweep `{config.get('name', '')}` ({config['method']}, {len(rows)} runs): `{metric}` "
             f"({goal}), best first.", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    plot_sweep(rows, swept, metric, out / "sweep.png")
    return rows


def plot_sweep(rows: Sequence[dict[str, Any]], swept: Sequence[str], metric: str, path: Path) -> None:
    """The metric against each swept value, one panel per key; test_acc_last10 (where known, on
    its own axis on the right) shows how well a noisy metric tracks clean test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(swept), 1), figsize=(5 * max(len(swept), 1), 3.5), squeeze=False)
    style = "-" if len(swept) == 1 else "none"
    for ax, key in zip(axes[0], swept):
        series = [(ax, metric, "o", "C0")]
        if metric != "test_acc_last10":
            series.append((ax.twinx(), "test_acc_last10", "x", "C1"))
        for axis, name, marker, color in series:
            pts = sorted((r[key], r[name]) for r in rows if r[name] is not None
                         and isinstance(r[key], (int, float)) and not isinstance(r[key], bool))
            if pts:
                axis.plot(*zip(*pts), marker=marker, linestyle=style, color=color)
            axis.set_ylabel(name, color=color)
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser(
        "sweep", "Run a W&B sweep file's runs locally (no W&B server), then tabulate and plot them.",
        epilog="Example: python -m jocor_plugin.sweep sweeps/co_lambda_grid.yaml --jobs 2 train.epochs=20")
    parser.add_argument("sweep", help="W&B sweep YAML (see sweeps/)")
    parser.add_argument("extra", nargs="*", help="key=value overrides added to every run (after the sweep's)")
    parser.add_argument("--out", help="output folder (default: outputs/sweeps/<file name>)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--max-runs", type=int, help="at most this many runs (grid: the first N; random/bayes: "
                                                     f"N samples, default run_cap or {DEFAULT_SAMPLED_RUNS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random/bayes samples")
    parser.add_argument("--launcher", choices=("command", "python"), default="command",
                        help="'command': the file's command (accelerate launch); 'python': python -m jocor_plugin.run")
    parser.add_argument("--keep-tracker", action="store_true", help="keep the file's log.tracker (default: none)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the command lines, run nothing")
    return parser.parse_intermixed_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return tool_main(parse_args, _main, argv)


def _main(args: argparse.Namespace) -> int:
    check_overrides([e for e in args.extra if not e.startswith(f"{RECIPE_ARG}=")], "Extra argument")
    config = load_sweep(args.sweep)
    out = Path(args.out or Path("outputs/sweeps") / Path(args.sweep).stem)
    points = sweep_points(config, args.max_runs, args.seed)
    if args.dry_run:
        validate_points(config, points, out, args.extra)
        for p in points:
            print(" ".join(point_command(config, p, out, args.extra, args.launcher, args.keep_tracker)))
        return 0
    points = run_sweep(config, points, out, jobs=args.jobs, extra=args.extra, launcher=args.launcher,
                       keep_tracker=args.keep_tracker)
    rows = summarise_sweep(config, points, out)
    print((out / "summary.md").read_text())
    print(f"Table: {out / 'summary.csv'}, {out / 'summary.md'}; plot: {out / 'sweep.png'}; logs: {out / 'logs'}")
    failed = [r["run"] for r in rows if r["status"].startswith("failed")]
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (see {out / 'logs'}); rerun the same "
              f"command to retry them.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
