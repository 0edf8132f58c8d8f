import os

# Tests never touch the network or a W&B account.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One thread per test process: pytest-xdist runs one worker per core, and two OpenMP threads per
# worker on a shared core spin against each other (in-process runs 5-10x slower); the processes the
# tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import contextlib  # noqa: E402
import io  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_in_process(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """``python -m jocor_plugin.run ARGV`` in this process, output captured as a subprocess's would be.
    Saves the ~5-10 s of importing torch/timm/datasets per run; tests that need a process of their
    own (signals, ``accelerate launch``, mixed precision, ``method.imports`` from a new path) start one."""
    from jocor_plugin.run import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def launch_two_processes(script: str, tmp_path: Path, *args: str) -> None:
    """Run ``script`` (Python source) as 2 CPU processes with ``accelerate launch`` against this
    checkout; fails the test with the processes' output if they fail."""
    import os
    import sys

    path = tmp_path / "two_processes.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", str(path), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})  # this checkout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
