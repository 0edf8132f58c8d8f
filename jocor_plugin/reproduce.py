"""Reproduce the paper's tables and figures: ``python -m jocor_plugin.reproduce GRID.yaml [--jobs N]``.

A grid file (see ``recipes/grids/mnist5k.yaml``) names a base recipe, the methods (each with its own
overrides), the noise settings (name -> overrides), the seeds, an output root and overrides for every
run, plus an optional lambda study. Each run is ``python -m jocor_plugin.run RECIPE ...`` in a
subprocess with ``train.output_dir=<root>/<setting>/<method>/seed<k>``:

* a run whose ``results.json`` says ``finished: true`` is skipped, so rerunning the command resumes
  the grid; an unfinished one continues from its checkpoint (``train.resume=auto``) or, without
  one, starts over (``train.overwrite=true``);
* ``--jobs N`` runs N at a time with ``OMP_NUM_THREADS`` = cores / N, so the jobs share the cores;
* at the end (or alone, ``--report-only``) ``jocor_plugin.report`` writes the Table-2-style report
  and the plots into the grid's ``report_dir``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .cli import configure_logging, exit_code_of, make_parser, positive_int
from .config import ConfigError, load_config
from .errors import UserError

__all__ = ["Grid", "GridRun", "load_grid", "grid_runs", "read_results", "run_command", "run_grid", "main"]

logger = logging.getLogger("jocor_plugin.reproduce")


class GridError(UserError):
    """A grid file this runner cannot use; the message says what to change."""


def _overrides(value: Any, where: str) -> list[str]:
    """Overrides written as ``"a.b=1 c.d=2"``, a list of ``key=value`` strings, or a mapping."""
    if value is None:
        return []
    if isinstance(value, str):
        items = shlex.split(value)
    elif isinstance(value, dict):
        items = [f"{k}={'null' if v is None else v}" for k, v in value.items()]
    elif isinstance(value, list):
        items = [str(v) for v in value]
    else:
        raise GridError(f"{where}: give overrides as 'key=value key=value', a list or a mapping.")
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise GridError(f"{where}: override {item!r} must look like section.key=value.")
    return items


@dataclass
class Grid:
    """A parsed grid file."""

    path: Path
    recipe: str
    methods: dict[str, list[str]]
    settings: dict[str, list[str]]
    seeds: list[int]
    output_dir: Path
    report_dir: Path
    overrides: list[str]
    lambda_values: list[float]
    lambda_method: str
    lambda_settings: list[str]
    lambda_seeds: list[int]
    paper: Optional[str]
    paper_note: str
    title: str
    notes: str


@dataclass
class GridRun:
    """One training run of the grid: where it writes and what it overrides."""

    setting: str
    method: str  # the grid's method label (a lambda-study run: "<method>@lambda=<v>")
    seed: int
    out: Path
    overrides: list[str]
    co_lambda: Optional[float] = None  # set for the runs of the lambda study

    @property
    def finished(self) -> bool:
        return bool(read_results(self.out).get("finished"))


def read_results(out: Path) -> dict[str, Any]:
    """A run folder's results.json, or {} when it is missing or half-written."""
    try:
        return json.loads((Path(out) / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise GridError(f"Grid file '{path}' does not exist; see recipes/grids/ for an example.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GridError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise GridError(f"{path}: a grid file is a YAML mapping (recipe, methods, settings, seeds, ...).")
    unknown = set(raw) - {"recipe", "methods", "settings", "seeds", "output_dir", "report_dir", "overrides",
                          "lambda_study", "paper", "paper_note", "title", "notes"}
    if unknown:
        raise GridError(f"{path}: unknown key(s) {sorted(unknown)}.")
    for key in ("recipe", "methods", "settings"):
        if not raw.get(key):
            raise GridError(f"{path}: '{key}' is required.")
    methods = raw["methods"]
    if isinstance(methods, list):  # plain names without overrides
        methods = {m: None for m in methods}
    settings = raw["settings"]
    if not isinstance(methods, dict) or not isinstance(settings, dict):
        raise GridError(f"{path}: 'methods' and 'settings' map a name to its overrides.")
    seeds = raw.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: 'seeds' must be a list of integers, e.g. [1, 2, 3].")
    output_dir = Path(raw.get("output_dir") or Path("outputs/reproduce") / path.stem)
    study = raw.get("lambda_study") or {}
    lambda_method = study.get("method", "jocor")
    if study and lambda_method not in methods:
        raise GridError(f"{path}: lambda_study.method={lambda_method!r} is not one of the grid's methods.")
    lambda_settings = study.get("settings") or (list(settings) if study else [])
    missing = [s for s in lambda_settings if s not in settings]
    if missing:
        raise GridError(f"{path}: lambda_study.settings {missing} are not among the grid's settings.")
    return Grid(
        path=path, recipe=str(raw["recipe"]),
        methods={m: _overrides(o, f"{path}: methods.{m}") for m, o in methods.items()},
        settings={s: _overrides(o, f"{path}: settings.{s}") for s, o in settings.items()},
        seeds=seeds, output_dir=output_dir, report_dir=Path(raw.get("report_dir") or output_dir / "report"),
        overrides=_overrides(raw.get("overrides"), f"{path}: overrides"),
        lambda_values=[float(v) for v in study.get("values", [])], lambda_method=lambda_method,
        lambda_settings=lambda_settings, lambda_seeds=list(study.get("seeds") or seeds),
        paper=raw.get("paper"), paper_note=str(raw.get("paper_note") or ""),
        title=str(raw.get("title") or path.stem), notes=str(raw.get("notes") or "").strip())


def _co_lambda(overrides: Sequence[str]) -> Optional[float]:
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("method.co_lambda=")]
    return float(values[-1]) if values else None


def grid_runs(grid: Grid) -> list[GridRun]:
    """Every run: methods x settings x seeds, then the lambda study's runs (a lambda that equals the
    method's own reuses its runs instead of training them twice)."""
    runs = [GridRun(s, m, seed, grid.output_dir / s / m / f"seed{seed}", [*grid.overrides, *s_o, *m_o])
            for s, s_o in grid.settings.items() for m, m_o in grid.methods.items() for seed in grid.seeds]
    if grid.lambda_values:
        base = grid.methods[grid.lambda_method]
        own = _co_lambda(base)
        if own is None:  # the recipe's value
            own = load_config(grid.recipe, [*grid.overrides, *base]).method.co_lambda
        by_key = {(r.setting, r.method, r.seed): r for r in runs}
        for s in grid.lambda_settings:
            for value in grid.lambda_values:
                for seed in grid.lambda_seeds:
                    main_run = by_key.get((s, grid.lambda_method, seed))
                    if main_run is not None and abs(value - own) < 1e-12:
                        main_run.co_lambda = value
                        continue
                    runs.append(GridRun(
                        s, f"{grid.lambda_method}@lambda={value:g}", seed,
                        grid.output_dir / s / f"{grid.lambda_method}_lambda{value:g}" / f"seed{seed}",
                        [*grid.overrides, *grid.settings[s], *base, f"method.co_lambda={value:g}"], value))
    return runs


def _method_override(run: GridRun) -> list[str]:
    name = run.method.split("@", 1)[0]
    return [] if any(o.startswith("method.name=") for o in run.overrides) else [f"method.name={name}"]


def run_command(grid: Grid, run: GridRun) -> list[str]:
    """The subprocess of one run (without the resume arguments)."""
    return [sys.executable, "-m", "jocor_plugin.run", grid.recipe, *_method_override(run), *run.overrides,
            f"train.seed={run.seed}", f"train.output_dir={run.out}"]


def _resume_args(out: Path) -> list[str]:
    """Continue an interrupted run from its checkpoint, or start over one that saved none."""
    if not (out / "results.json").is_file() and not (out / "config.yaml").is_file():
        return []
    if list((out / "checkpoints").glob("epoch_*")):
        return ["train.resume=auto"]
    return ["train.overwrite=true"]


def validate(grid: Grid, runs: Sequence[GridRun]) -> None:
    """Every run's recipe through the schema before the first one starts."""
    for run in runs:
        try:
            load_config(grid.recipe, run_command(grid, run)[4:])
        except ConfigError as err:
            raise GridError(f"run {run.out}: {err}") from None


def thread_env(jobs: int) -> dict[str, str]:
    """N parallel CPU runs share the cores (torch reads OMP_NUM_THREADS for its intra-op threads)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else os.cpu_count() or 1) // jobs))
    return env


def run_grid(grid: Grid, runs: Sequence[GridRun], jobs: int = 1) -> dict[str, int]:
    """Run the unfinished runs, ``jobs`` at a time; each logs to ``<run>/train.log``."""
    # seed-major order: an interrupted grid already has every cell at one seed
    pending = sorted((r for r in runs if not r.finished), key=lambda r: (r.seed, r.co_lambda is not None
                                                                          and "@" in r.method))
    counts = {"total": len(runs), "skipped": len(runs) - len(pending), "finished": 0, "failed": 0}
    logger.info("Grid %s: %d runs, %d already finished, %d to run (%d at a time).", grid.path, len(runs),
                counts["skipped"], len(pending), jobs)
    env, running, start = thread_env(jobs), [], time.perf_counter()
    while pending or running:
        while pending and len(running) < jobs:
            run = pending.pop(0)
            argv = run_command(grid, run) + _resume_args(run.out)
            run.out.mkdir(parents=True, exist_ok=True)
            log = open(run.out / "train.log", "a")
            logger.info("start %s/%s/seed%d", run.setting, run.method, run.seed)
            running.append((run, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(0.2)
        for item in list(running):
            run, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            ok = proc.returncode == 0
            counts["finished" if ok else "failed"] += 1
            done = counts["finished"] + counts["failed"]
            logger.info("%s %s/%s/seed%d (%d/%d, %.0f s)%s", "done" if ok else "FAILED", run.setting, run.method,
                        run.seed, done, len(runs) - counts["skipped"], time.perf_counter() - start,
                        "" if ok else f": exit {proc.returncode}, see {run.out / 'train.log'}")
    return counts


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser(
        "reproduce", "Run a grid of methods x noise settings x seeds and write the paper-style report.",
        epilog="Example: python -m jocor_plugin.reproduce recipes/grids/mnist5k.yaml --jobs 2")
    parser.add_argument("grid", help="grid YAML (see recipes/grids/)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the command lines, run nothing")
    parser.add_argument("--report-only", action="store_true", help="only (re)write the report from finished runs")
    parser.add_argument("--output-dir", help="override the grid's output_dir (run folders)")
    parser.add_argument("--report-dir", help="override the grid's report_dir")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging(main_process=True)
    return exit_code_of(lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from .report import write_report
    from .report_modes import append_modes_section

    grid = load_grid(args.grid)
    if args.output_dir:
        grid.output_dir = Path(args.output_dir)
        grid.report_dir = Path(args.report_dir or grid.output_dir / "report")
    elif args.report_dir:
        grid.report_dir = Path(args.report_dir)
    runs = grid_runs(grid)
    if args.dry_run:
        validate(grid, runs)
        for run in runs:
            if run.finished:
                print(shlex.join(run_command(grid, run)) + "  # finished, skipped")
            else:
                print(shlex.join(run_command(grid, run) + _resume_args(run.out)))
        return 0
    failed = 0
    if not args.report_only:
        validate(grid, runs)
        failed = run_grid(grid, runs, args.jobs)["failed"]
    report = write_report(grid, runs)
    append_modes_section(report, grid)  # paper vs authors_code, when the grid has such pairs
    print(report.read_text())
    print(f"Report: {report} (plots beside it); runs: {grid.output_dir}")
    if failed:
        print(f"{failed} run(s) failed (see their train.log); rerun the same command to retry them.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
