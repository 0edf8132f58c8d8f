"""Reproduce the paper's tables and figures: ``python -m jocor_plugin.reproduce GRID.yaml [--jobs N]``.

A grid file (see ``recipes/grids/mnist5k.yaml``) names a base recipe, the methods (each with its own
overrides), the noise settings (name -> overrides), the seeds, an output root and overrides for every
run, plus an optional lambda study. Each run is ``python -m jocor_plugin.run RECIPE ...`` in a
subprocess with ``train.output_dir=<root>/<setting>/<method>/seed<k>``:

* a run whose ``results.json`` says ``finished: true`` is skipped, so rerunning the command resumes
  the grid; an unfinished one continues from its checkpoint (``train.resume=auto``) or, without
  one, starts over (``train.overwrite=true``). Both are decided as the run's job starts, with its
  folder claimed, so two ``reproduce`` processes on one grid share it: a run the other is training
  is skipped (and said so, not counted as failed), and nothing finished is trained again;
* a run folder counts as the run's only if it was made from the run's resolved recipe: a grid whose
  ``output_dir`` holds runs of other overrides or data (the grid file edited since, or another grid
  sharing the folder) is refused before anything starts, naming the first difference;
* ``--methods`` / ``--settings`` / ``--seeds`` train only the runs they all name (e.g. seeds 2 and
  3 of two methods); the report still covers every finished run of the grid;
* ``--jobs N`` runs N at a time with ``OMP_NUM_THREADS`` = cores / N, so the jobs share the cores
  (``jocor_plugin.experiments.jobs``, shared with the sweep runner);
* at the end (or alone, ``--report-only``) ``jocor_plugin.experiments.report`` writes the Table-2-style report
  and the plots into the grid's ``report_dir``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, config_to_dict, expand_path_variables, load_config
from .core.cli import make_parser, positive_int, tool_main
from .core.results import RESULTS_FILE, read_results
from .experiments.grid import Grid, GridError, GridRun, grid_runs, load_grid
from .experiments.jobs import SKIPPED_HELD, Job, JobOutcome, foreign_runs, resume_args, run_jobs

__all__ = ["Grid", "GridRun", "GridError", "load_grid", "grid_runs", "select_runs", "read_results", "run_command",
           "run_grid", "main"]

logger = logging.getLogger("jocor_plugin.reproduce")


def _method_override(run: GridRun) -> list[str]:
    name = run.method.split("@", 1)[0]
    return [] if any(o.startswith("method.name=") for o in run.overrides) else [f"method.name={name}"]


def run_command(grid: Grid, run: GridRun) -> list[str]:
    """The subprocess of one run (without the resume arguments)."""
    # log.group: with a tracker, the grid's runs are one W&B group (the grid's overrides may rename it)
    return [sys.executable, "-m", "jocor_plugin.run", grid.recipe, f"log.group={grid.path.stem}",
            *_method_override(run), *run.overrides, f"train.seed={run.seed}", f"train.output_dir={run.out}"]


def select_runs(grid: Grid, runs: Sequence[GridRun], *, methods: Optional[Sequence[str]] = None,
                settings: Optional[Sequence[str]] = None, seeds: Optional[Sequence[int]] = None) -> list[GridRun]:
    """The runs whose method, setting and seed are each among those given (None: any). A name the
    grid lacks, or a selection no run matches, is a ``GridError`` listing what the grid has."""
    wanted = {"--methods": (methods, lambda r: r.method), "--settings": (settings, lambda r: r.setting),
              "--seeds": (seeds, lambda r: r.seed)}
    for option, (values, key) in wanted.items():
        have = list(dict.fromkeys(key(r) for r in runs))
        unknown = [v for v in values or [] if v not in have]
        if unknown:
            raise GridError(f"{option} {' '.join(map(str, unknown))}: {grid.path} has no such run; its "
                            f"{option[2:]}: {' '.join(map(str, have))}.")
    chosen = [r for r in runs if all(values is None or key(r) in values for values, key in wanted.values())]
    if not chosen:
        given = " ".join(f"{o} {' '.join(map(str, v))}" for o, (v, _) in wanted.items() if v is not None)
        raise GridError(f"{given}: no run of {grid.path} is all of these (a lambda-study run is named "
                        f"<method>@lambda=<value>, in the settings and seeds of lambda_study); --dry-run lists "
                        f"the runs.")
    return chosen


def validate(grid: Grid, runs: Sequence[GridRun]) -> dict[Path, dict]:
    """Every run's recipe through the schema before the first one starts, and every run folder
    checked to hold nothing but that run; returns each run's resolved recipe by folder."""
    recipes = {}
    for run in runs:
        try:
            cfg = load_config(grid.recipe, run_command(grid, run)[4:])
            expand_path_variables(cfg)  # as the run does
        except ConfigError as err:
            raise GridError(f"run {run.out}: {err}") from None
        recipes[run.out] = config_to_dict(cfg)
    foreign = foreign_runs(recipes)
    if foreign:
        raise GridError(f"{foreign}. Give this grid its own folder (output_dir in {grid.path}, or --output-dir), or "
                        f"delete those run folders to rerun them there.")
    return recipes


def time_left(grid: Grid, runs: Sequence[GridRun], recipes: dict[Path, dict], jobs: int,
              pace_from: Sequence[GridRun] = ()) -> str:
    """``--dry-run``'s last line: how many of ``runs`` are left and roughly how long they will train,
    at the pace of their methods' finished runs (among ``runs`` and ``pace_from``)."""
    from .experiments.report import minutes_left

    pending = [run for run in runs if not run.finished]
    started = sum(1 for run in pending if read_results(run.out).get("epochs"))
    line = f"{len(pending)} of {len(runs)} run(s) to train ({started} part-trained)"
    if not pending:
        return line + "."
    epochs = {out: recipe["train"]["epochs"] for out, recipe in recipes.items()}
    minutes, unknown = minutes_left(runs, epochs, grid.report_dir, pace_from)
    if unknown < len(pending):
        line += (f": about {minutes / 60:.1f} h one after another, at the pace of each method's finished runs"
                 + (f" (--jobs {jobs}: about {minutes / 60 / jobs:.1f} h)" if jobs > 1 else ""))
    if unknown:
        line += f"; {unknown} of them of a method with no finished run yet, not estimated"
    return line + "."


def check_report_inputs(grid: Grid, runs: Sequence[GridRun]) -> None:
    """``--report-only``: the report reads each run's results.json (its folder's, else the copy kept
    beside the report); a file cut short names itself instead of being a silent '–', and a grid with
    no finished run has no report to write."""
    from .experiments.report import archive_path

    finished = 0
    for run in runs:
        for folder, fix in ((run.out, "rerun the grid without --report-only to continue that run from its "
                                      "checkpoint"),
                            (archive_path(grid.report_dir, run), "delete it (the report copies it again from the "
                                                                 "run's folder) or restore it from git")):
            path = folder / RESULTS_FILE
            if not path.is_file():
                continue
            try:
                results = json.loads(path.read_text())
                if not isinstance(results, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as err:
                raise GridError(f"{path} is not valid JSON ({str(err).splitlines()[0][:80]}): the run was cut off "
                                f"while writing it, or it was edited; {fix}.") from None
            if results.get("finished"):
                finished += 1
                break  # the run folder's copy is the one the report reads
    if not finished:
        raise GridError(f"No run of {grid.path} has finished (looked in {grid.output_dir} and "
                        f"{grid.report_dir / 'runs'}): nothing to report. Run the grid first: "
                        f"python -m jocor_plugin.reproduce {grid.path}.")


def run_grid(grid: Grid, runs: Sequence[GridRun], jobs: int = 1) -> dict[str, int]:
    """Run the unfinished runs, ``jobs`` at a time; each logs to ``<run>/train.log``. Whether a run
    is finished, and how it continues, is decided as its job starts (``jobs.run_jobs``): another
    ``reproduce`` of the same grid may have finished it, or be training it (then it is skipped, not
    failed)."""
    # seed-major order: an interrupted grid already has every cell at one seed
    pending = sorted((r for r in runs if not r.finished), key=lambda r: (r.seed, r.co_lambda is not None
                                                                          and "@" in r.method))
    counts = {"total": len(runs), "skipped": len(runs) - len(pending), "finished": 0, "failed": 0, "held": 0}
    logger.info("Grid %s: %d runs, %d already finished, %d to run (%d at a time).", grid.path, len(runs),
                counts["skipped"], len(pending), jobs)

    ended = 0

    def done(job: Job, outcome: JobOutcome, seconds: float) -> None:
        nonlocal ended
        ended += 1
        kind = ("held" if outcome.skipped == SKIPPED_HELD else "skipped" if outcome.skipped
                else "failed" if outcome.failed else "finished")
        counts[kind] += 1
        logger.info("%s %s (%d/%d, %.0f s)%s", outcome.describe(), job.name, ended, len(pending), seconds,
                    f", see {job.log}" if outcome.failed else "")

    recipes = validate(grid, runs)
    run_jobs([Job(f"{r.setting}/{r.method}/seed{r.seed}", run_command(grid, r), r.out / "train.log", folder=r.out,
                  recipe=recipes[r.out]) for r in pending], jobs, done)
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
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="train only these methods' runs (the "
                        "grid's names; a lambda-study run: METHOD@lambda=VALUE)")
    parser.add_argument("--settings", nargs="+", metavar="SETTING", help="train only the runs of these noise settings")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="train only the runs of these seeds")
    parser.add_argument("--output-dir", help="override the grid's output_dir (run folders)")
    parser.add_argument("--report-dir", help="override the grid's report_dir")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return tool_main(parse_args, _main, argv)


def _main(args: argparse.Namespace) -> int:
    from .experiments.report import write_report
    from .experiments.report_modes import append_modes_section

    grid = load_grid(args.grid)
    if args.output_dir:
        grid.output_dir = Path(args.output_dir)
        grid.report_dir = Path(args.report_dir or grid.output_dir / "report")
    elif args.report_dir:
        grid.report_dir = Path(args.report_dir)
    runs = grid_runs(grid)
    selecting = any(v is not None for v in (args.methods, args.settings, args.seeds))
    if selecting and args.report_only:
        raise GridError("--methods, --settings and --seeds choose runs to train; --report-only trains none and "
                        "reports every finished run: drop one or the other.")
    chosen = select_runs(grid, runs, methods=args.methods, settings=args.settings, seeds=args.seeds)
    if args.dry_run:
        recipes = validate(grid, chosen)
        for run in chosen:
            if run.finished:
                print(shlex.join(run_command(grid, run)) + "  # finished, skipped")
            else:
                print(shlex.join(run_command(grid, run) + resume_args(run.out)))
        print(time_left(grid, chosen, recipes, args.jobs, pace_from=runs), file=sys.stderr)
        return 0
    if selecting:
        logger.info("Selected %d of the grid's %d runs.", len(chosen), len(runs))
    counts = {"failed": 0, "held": 0}
    if args.report_only:
        check_report_inputs(grid, runs)
    else:
        counts = run_grid(grid, chosen, args.jobs)  # validates every run's recipe and folder first
    report = write_report(grid, runs)  # every finished run, chosen or not
    append_modes_section(report, grid)  # paper vs authors_code, when the grid has such pairs
    print(report.read_text())
    print(f"Report: {report} (plots beside it); runs: {grid.output_dir}")
    if counts["held"]:
        print(f"{counts['held']} run(s) were being trained by another process and were skipped; the report "
              f"counts them once they finish (rerun with --report-only then).", file=sys.stderr)
    if counts["failed"]:
        print(f"{counts['failed']} run(s) failed (see their train.log); rerun the same command to retry them.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
