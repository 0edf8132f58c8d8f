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
from typing import Iterator, Sequence  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside: a run's arithmetic doesn't depend on the core count, and a busy
    machine's cores aren't fought over (two threads on two shared cores ran 5-20x slower here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_in_process(argv: Sequence[str]) -> subprocess.CompletedProcess:
    """``python -m jocor_plugin.run ARGV`` in this process, output captured as a subprocess's would be.
    Saves the ~5-10 s of importing torch/timm/datasets per run; tests that need a process of their
    own (signals, ``accelerate launch``, mixed precision, ``method.imports`` from a new path) start one."""
    from jocor_plugin.run import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


DIGITS_DEMO = ["recipes/demo.yaml", "data.name=digits", "train.batch_size=64", "log.progress_bar=false"]


def run_digits_demo(*overrides: str) -> subprocess.CompletedProcess:
    """``recipes/demo.yaml`` on the digits set with OVERRIDES, in this process; asserts it succeeds."""
    proc = run_in_process([*DIGITS_DEMO, *overrides])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def label_issue_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch digits run with ``train.export_label_issues=true``: its output folder (read only)."""
    out = tmp_path_factory.mktemp("label_issues") / "run"
    run_digits_demo("train.epochs=2", f"train.output_dir={out}", "train.export_label_issues=true")
    return out


def method_argument_refusal(method: str, kwargs: str, tmp_path: Path) -> str:
    """Run ``recipes/demo.yaml`` with ``method.name=METHOD method.kwargs=KWARGS``; assert it is refused
    before any work with a one-line error (no traceback, no output folder) and return that line."""
    out = tmp_path / "run"
    proc = run_in_process(["recipes/demo.yaml", "data.name=digits", f"method.name={method}",
                           f"method.kwargs={kwargs}", f"train.output_dir={out}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not out.exists(), proc.stderr
    assert f"for method '{method}'" in lines[0], lines[0]
    return lines[0]


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


HALF_BATCHES = """
import sys

import torch
from accelerate import Accelerator

from jocor_plugin.methods import create_method

accelerator = Accelerator(cpu=True)
rank, world = accelerator.process_index, accelerator.num_processes
g = torch.Generator().manual_seed(0)
logits, targets = torch.randn({batch}, {classes}, generator=g), torch.randint(0, {classes}, ({batch},), generator=g)
index = torch.randperm({num_train}, generator=g)[:{batch}]
method = {make_method}
share = slice(rank * {batch} // world, (rank + 1) * {batch} // world)
method(logits[share], None, targets[share], forget_rate=0.0, epoch=0, index=index[share])
tables = accelerator.gather(({state})[None])  # every process's copy
if accelerator.is_main_process:
    torch.save(tables, sys.argv[1])
"""


def global_batch(num_train: int, classes: int, batch: int) -> tuple:
    """(logits, targets, index) of the seeded global batch ``half_batches_on_two_processes`` splits."""
    import torch

    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(batch, classes, generator=g), torch.randint(0, classes, (batch,), generator=g)
    return logits, targets, torch.randperm(num_train, generator=g)[:batch]


def half_batches_on_two_processes(make_method: str, state: str, tmp_path: Path, *, num_train: int = 20,
                                  classes: int = 3, batch: int = 8):
    """Two processes each step the method built by ``make_method`` (an expression) on their half of
    ``global_batch``; returns every process's ``state`` (an expression of ``method``), stacked."""
    import torch

    out = tmp_path / "state.pt"
    launch_two_processes(HALF_BATCHES.format(make_method=make_method, state=state, num_train=num_train,
                                             classes=classes, batch=batch), tmp_path, str(out))
    return torch.load(out)

