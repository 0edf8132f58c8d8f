"""One job runner for sweeps and grids: training runs as subprocesses, N at a time
(``concurrent.futures``), each logging to its own file; one rule to resume a run folder and one
to share the cores between parallel runs.

Two runners may work on one grid (two ``reproduce`` processes, or a rerun while the first is still
going): a job with a run folder claims it (``CLAIM_FILE``, a lock of the runners' own beside the
run's) for the job's life, and only then decides -- never earlier -- whether the run is finished
(skipped) and how it continues (``resume_args``). A folder another runner has claimed, or a run
started by hand holds, is skipped and reported so, not as a failure; nothing finished is retrained
or deleted. A job that knows its resolved recipe (``Job.recipe``) counts a folder as its own only
if the run there was made from that recipe (``recipe_difference``): a finished run of another
recipe is never reported as this job's result, and is not overwritten either.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from ..config.changes import Change, format_changes, recipe_changes
from ..core.cli import EXIT_USER_ERROR
from ..core.errors import UserError
from ..core.lock import FolderInUse, OutputLock
from ..core.results import read_results

__all__ = ["Job", "JobOutcome", "run_jobs", "resume_args", "thread_env", "available_cores", "CLAIM_FILE",
           "SKIPPED_FINISHED", "SKIPPED_HELD", "recorded_recipe", "recipe_difference", "foreign_runs"]

logger = logging.getLogger(__name__)

CLAIM_FILE = ".job.lock"  # held by the runner whose job trains the folder (the run itself holds .lock)
SKIPPED_FINISHED = "finished"
SKIPPED_HELD = "held by another process"


@dataclass
class Job:
    """One training run: a name for the log lines, its command line and its log file. With
    ``folder`` (the run's train.output_dir) the job claims the folder when it starts, skips a
    finished run and adds ``resume_args`` to ``argv`` then. With ``recipe`` (the run's resolved
    recipe, as ``config_to_dict`` gives it) a folder holding a run of another recipe fails the job
    with one line naming the difference, instead of passing for its result."""

    name: str
    argv: list[str]
    log: Path
    folder: Optional[Path] = None
    recipe: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: the run's exit ``code``, or ``skipped`` (``SKIPPED_FINISHED`` or
    ``SKIPPED_HELD``) when it was not started."""

    code: Optional[int] = None
    skipped: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.skipped is None and self.code != 0

    def describe(self) -> str:
        if self.skipped:
            return f"skipped ({self.skipped})"
        return "done" if self.code == 0 else f"FAILED (exit {self.code})"


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_env(jobs: int) -> dict[str, str]:
    """N parallel CPU runs share the cores (torch reads OMP_NUM_THREADS for its intra-op
    threads), unless the caller set OMP_NUM_THREADS itself."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, available_cores() // jobs))
    return env


def resume_args(out: Path) -> list[str]:
    """How a run folder continues: from its newest checkpoint, or over again when it saved none
    (nothing for a new folder)."""
    out = Path(out)
    if not (out / "results.json").is_file() and not (out / "config.yaml").is_file():
        return []
    if list((out / "checkpoints").glob("epoch_*")):
        return ["train.resume=auto"]
    return ["train.overwrite=true"]


def recorded_recipe(folder: Path) -> Optional[dict[str, Any]]:
    """The resolved recipe a run folder was made from: results.json's ``config``, else config.yaml
    (written before the first epoch); None for a folder no run has written to."""
    results = read_results(folder)
    if isinstance(results.get("config"), dict):
        return results["config"]
    try:
        recipe = yaml.safe_load((Path(folder) / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return recipe if isinstance(recipe, dict) else None


def recipe_difference(folder: Path, recipe: dict[str, Any]) -> list[Change]:
    """The keys that change results between the run in ``folder`` and ``recipe`` (keys such as
    log.*, train.output_dir or train.resume don't count: ``config.changes.IGNORED_KEYS``); [] for
    an empty folder. A finished run also differs in ``train.epochs``: resuming may extend an
    unfinished run, but a finished one of fewer epochs is not the result asked for."""
    from ..config import Config, config_to_dict  # the schema's defaults: keys added since the run

    old = recorded_recipe(folder)
    if old is None:
        return []
    changes = recipe_changes(old, recipe, defaults=config_to_dict(Config()))
    old_epochs = old.get("train", {}).get("epochs") if isinstance(old.get("train"), dict) else None
    new_epochs = recipe.get("train", {}).get("epochs")
    if read_results(folder).get("finished") and old_epochs != new_epochs and not any(
            c.key == "train.epochs" for c in changes):
        changes.append(Change("train.epochs", old_epochs, new_epochs))
    return changes


def run_jobs(jobs: Sequence[Job], workers: int = 1,
             on_done: Optional[Callable[[Job, JobOutcome, float], None]] = None) -> dict[str, JobOutcome]:
    """Run ``jobs`` in order, ``workers`` at a time; returns each job's outcome by name.
    ``on_done(job, outcome, seconds since the start)`` is called as each one ends."""
    env, start, outcomes = thread_env(workers), time.perf_counter(), {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run, job, env): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            outcomes[job.name] = future.result()
            if on_done is not None:
                on_done(job, outcomes[job.name], time.perf_counter() - start)
    return outcomes


def _run(job: Job, env: dict[str, str]) -> JobOutcome:
    if job.folder is None:
        return JobOutcome(code=_start(job, job.argv, env))
    try:
        claim = OutputLock(job.folder, key="train.output_dir", name=CLAIM_FILE).acquire()
    except FolderInUse:  # another runner's job trains it
        return _skip(job, SKIPPED_HELD)
    except UserError as err:  # e.g. the folder is a file: the run would fail the same way
        _note(job, f"error: {err}")
        return JobOutcome(code=EXIT_USER_ERROR)
    try:
        # decided now, under the claim: another runner may have finished the run since the grid started
        changes = recipe_difference(job.folder, job.recipe) if job.recipe is not None else []
        if changes:  # neither its result nor a folder to overwrite
            _note(job, f"error: {job.folder} holds a run of another recipe ({format_changes(changes)}); "
                       f"choose another output folder, or delete it to retrain.")
            return JobOutcome(code=EXIT_USER_ERROR)
        if read_results(job.folder).get("finished"):
            return _skip(job, SKIPPED_FINISHED)
        if _held_by_a_run(job.folder):  # a run started by hand (python -m jocor_plugin.run) trains it
            return _skip(job, SKIPPED_HELD)
        return JobOutcome(code=_start(job, job.argv + resume_args(job.folder), env))
    finally:
        claim.release()


def _held_by_a_run(folder: Path) -> bool:
    try:
        OutputLock(folder).acquire().release()
    except FolderInUse:
        return True
    return False


def _skip(job: Job, why: str) -> JobOutcome:
    logger.info("skip %s: %s", job.name, why)
    return JobOutcome(skipped=why)


def _note(job: Job, line: str) -> None:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(line + "\n")


def _start(job: Job, argv: list[str], env: dict[str, str]) -> int:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("start %s: %s", job.name, " ".join(argv))
    with open(job.log, "a") as log:
        return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def foreign_runs(recipes: dict[Path, dict[str, Any]]) -> Optional[str]:
    """For run folders mapped to the resolved recipe each should hold: None when every folder is
    empty or holds a run of its recipe, else '<folder> holds a run of another recipe (and N other
    run(s)): <difference>' for the first that doesn't (sweeps and grids refuse to start then)."""
    differing = [(folder, changes) for folder, recipe in recipes.items()
                 for changes in [recipe_difference(folder, recipe)] if changes]
    if not differing:
        return None
    folder, changes = differing[0]
    more = f" (and {len(differing) - 1} other run(s))" if len(differing) > 1 else ""
    return f"{folder} holds a run of another recipe{more}: {format_changes(changes)}"
