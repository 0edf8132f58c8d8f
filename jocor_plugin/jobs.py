"""One job runner for sweeps and grids: training runs as subprocesses, N at a time
(``concurrent.futures``), each logging to its own file; one rule to resume a run folder and one
to share the cores between parallel runs."""
from __future__ import annotations

import logging
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["Job", "run_jobs", "resume_args", "thread_env", "available_cores"]

logger = logging.getLogger("jocor_plugin.jobs")


@dataclass
class Job:
    """One training run: a name for the log lines, its command line and its log file."""

    name: str
    argv: list[str]
    log: Path


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


def run_jobs(jobs: Sequence[Job], workers: int = 1,
             on_done: Optional[Callable[[Job, int, float], None]] = None) -> dict[str, int]:
    """Run ``jobs`` in order, ``workers`` at a time; returns each job's exit code by name.
    ``on_done(job, exit_code, seconds since the start)`` is called as each one ends."""
    env, start, codes = thread_env(workers), time.perf_counter(), {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run, job, env): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            codes[job.name] = future.result()
            if on_done is not None:
                on_done(job, codes[job.name], time.perf_counter() - start)
    return codes


def _run(job: Job, env: dict[str, str]) -> int:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("start %s: %s", job.name, " ".join(job.argv))
    with open(job.log, "a") as log:
        return subprocess.run(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
