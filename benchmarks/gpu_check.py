"""What matters on a GPU, in one command (``make gpu-check``), in at most ~10 minutes on one GPU.

No GPU has run this project's code while it was written (docs/performance.md), so this is the list
of things to look at the first time one does:

1. ``cnn``: the paper's 7-layer CNN (``jocor_cnn``) at CIFAR size (3x32x32, batch 128) trains a
   few JoCoR steps on the GPU: losses finite and falling (one fixed batch is memorised); ms/step.
2. ``bf16``: the same pair's forward under bf16 autocast against fp32, on one batch: the JoCoR loss
   and its small-loss selection agree (bf16 keeps ~3 significant digits; the method ranks fp32
   losses, as Accelerate casts the logits back).
3. ``runs``: a short JoCoR run of ``recipes/demo.yaml`` under ``accelerate launch`` with each
   ``accelerate_configs/single_gpu*.yaml`` (fp32 and bf16): it finishes, no non-finite step, the
   trainer says it ran on cuda with the config's precision; then the bf16 run's test accuracy
   against the fp32 run's.
4. ``tests``: the test suite with the trainer on the GPU (the trainer's Accelerator takes cuda
   whenever it is visible; the tensor-level tests stay on the CPU), less the tests that are tied
   to the CPU by design (see ``IGNORED_TESTS``).
5. ``speed``: ``benchmarks/speed.py --device cuda --clock wall`` (step time JoCoR / standard,
   the trainer against a plain loop, JoCoR / Standard, ``train.compile``), shortened.

Writes ``OUT/report.md`` (a markdown table docs/performance.md can take: each check, its result,
its figure; rewritten after every check, so an interrupted run still leaves what it measured)
and prints it. Exit status: 0 when no check failed, 1 when one did, 2 when no GPU is visible
(one line on stderr, nothing else run).

    python benchmarks/gpu_check.py [--out outputs/gpu_check] [--checks cnn bf16 runs tests speed]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["cnn", "bf16", "runs", "tests", "speed"]
DEFAULT_OUT = "outputs/gpu_check"
NO_GPU_EXIT, CHECK_FAILED_EXIT = 2, 1
NO_GPU_MESSAGE = ("gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False); "
                  "run it on a machine with one.")

# The whole check fits a 10-minute GPU loan with room for start-up: every command gets at most
# its own cap and never more than what is left of this budget.
TIME_BUDGET_S = 540
MIN_TIME_TO_START_S = 20  # a command with less time than this left is reported as not run

# 1. the 7-layer CNN at CIFAR size
CNN_BATCH, CNN_STEPS, CNN_WARMUP_STEPS = 128, 20, 3
CIFAR_SHAPE, NUM_CLASSES = (3, 32, 32), 10
FORGET_RATE = 0.2  # a mid-training forget rate, so the selection actually drops samples

# 2. bf16 against fp32 on one batch. This check run on the CPU (its bf16 autocast, .cuda() a no-op):
# loss relative difference 1e-3, selections identical; the bounds leave 10x / five samples of room.
BF16_LOSS_RTOL = 1e-2
BF16_MIN_SELECTION_OVERLAP = 0.95

# 3. short runs under accelerate launch
RUN_RECIPE = "recipes/demo.yaml"
RUN_EPOCHS = 3
RUN_TIMEOUT_S = 120
# bf16 and fp32 runs part after a few steps (different rounding, then different selections), so
# their accuracies differ as two seeds' do: on mnist5k after 3 epochs, a few points. A bf16 fault
# (overflow, NaN, selection on bf16 losses) costs tens of points. (These runs on the CPU, whose
# bf16 autocast Accelerate also applies: 81.2 vs 81.3 %.)
RUN_ACC_TOLERANCE_POINTS = 5.0
ACCELERATE_LINE = re.compile(r"Accelerate: \d+ process\(es\) \((\w+)\) on (\S+), mixed precision (\w+)\.")

# 4. the test suite
TESTS_TIMEOUT_S = 240
IGNORED_TESTS = {  # path: why it does not run here
    "tests/test_pinned_records.py": "records pinned bit for bit on the CPU; a GPU's kernels round differently",
}
MULTI_PROCESS_TESTS = {  # need one device per process: two processes on one GPU are refused by NCCL
    "tests/test_distributed.py": "two processes on two devices",
}
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)", re.M)
PYTEST_SUMMARY = re.compile(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in ([\d.]+)s", re.M)  # "3 failed, 250 passed in 95.1s"

# 5. benchmarks/speed.py, shortened (its defaults take tens of minutes)
SPEED_TIMEOUT_S = 240
SPEED_ARGS = ["--device", "cuda", "--clock", "wall",  # CPU seconds do not see GPU work: wall clock
              "--parts", "steps", "e2e", "compile", "--epochs", "10", "--compile-epochs", "3"]
STEP_RATIO_TARGET_GPU = 1.5  # speed.py's docstring: JoCoR step <= 1.5x standard on a GPU
STEP_ROW = re.compile(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$")
RATIO_ROW = re.compile(r"^\| (.+?) \| (-?[\d.]+|nan|inf) \| (.*?) \| (.*?) \|$")

# what a check's result says
PASS, FAIL, MET, NOT_MET, FIGURE = "pass", "**FAIL**", "met", "**not met**", "—"


@dataclass
class Check:
    """One row of the report."""

    name: str
    result: str  # PASS / FAIL (correctness), MET / NOT_MET (a speed target), FIGURE (no target)
    figure: str


def no_gpu() -> bool:
    """True when torch sees no CUDA device. Imports only torch; its warnings (no driver, ...) are
    muted so that the answer stays one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        return not torch.cuda.is_available()


# ---------------------------------------------------------------- the report


def report_markdown(checks: Sequence[Check], header: str = "", details: str = "") -> str:
    """The table docs/performance.md takes, with a header line above and details below it."""
    rows = [f"| {c.name} | {c.result} | {c.figure.replace('|', '/')} |" for c in checks]
    table = "\n".join(["| check | result | figure |", "|---|---|---|", *rows])
    failed = sum(c.result == FAIL for c in checks)
    verdict = f"Failed: {failed} of {len(checks)}." if checks else "No check has run."
    return "\n\n".join(part for part in ("# GPU check", header, table, verdict, details) if part) + "\n"


def write_report(path: Path, checks: Sequence[Check], header: str = "", details: str = "") -> str:
    text = report_markdown(checks, header, details)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ---------------------------------------------------------------- running commands


class Clock:
    """The time left of ``TIME_BUDGET_S``."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Finished:
    returncode: Optional[int]  # None: killed at its timeout
    output: str
    seconds: float


def run_command(cmd: Sequence[str], log: Path, timeout_s: float) -> Finished:
    """Run ``cmd`` from the repository root, stdout and stderr into ``log``; at the timeout the
    whole process group goes (pytest-xdist workers, accelerate's child), not just its head."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            returncode: Optional[int] = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
    return Finished(returncode, log.read_text(errors="replace"), time.monotonic() - start)


def ended(finished: Finished) -> str:
    """How a command ended, for a figure."""
    if finished.returncode is None:
        return f"killed at its time limit ({finished.seconds:.0f} s)"
    return f"exit {finished.returncode} in {finished.seconds:.0f} s"


def not_run(name: str, needed_s: float) -> Check:
    return Check(name, FAIL, f"not run: less than {needed_s:.0f} s of the {TIME_BUDGET_S} s budget left")


# ---------------------------------------------------------------- 1. the 7-layer CNN at CIFAR size


def cifar_batch(seed: int):
    """A random CIFAR-shaped batch and labels on the GPU (no data set needed: the check is about
    the model and the step, not about learning CIFAR)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(CNN_BATCH, *CIFAR_SHAPE, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (CNN_BATCH,), generator=generator)
    return x.cuda(), y.cuda()


def jocor_cnn_pair():
    import torch

    import jocor_plugin  # noqa: F401  (registers jocor_cnn with timm)
    from jocor_plugin.methods import create_method
    from jocor_plugin.models import create_pair

    pair = create_pair("jocor_cnn", num_classes=NUM_CLASSES, in_chans=CIFAR_SHAPE[0], seed=0).cuda()
    return pair, torch.optim.Adam(pair.parameters(), lr=1e-3), create_method("jocor")


def check_cnn() -> list[Check]:
    """``CNN_STEPS`` JoCoR steps of jocor_cnn on one fixed CIFAR-sized batch: every loss finite, the
    last below the first (the pair memorises the batch), median ms/step after a warm-up."""
    import torch

    pair, optimizer, method = jocor_cnn_pair()
    x, y = cifar_batch(seed=0)
    losses, step_s = [], []
    torch.cuda.reset_peak_memory_stats()
    for step in range(CNN_STEPS):
        start = time.perf_counter()
        logits_a, logits_b = pair(x)
        out = method(logits_a, logits_b, y, forget_rate=FORGET_RATE, epoch=0)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())  # also waits for the GPU, so the time is the step's
        if step >= CNN_WARMUP_STEPS:
            step_s.append(time.perf_counter() - start)
    ok = all(map(math.isfinite, losses)) and losses[-1] < losses[0]
    figure = (f"{CNN_STEPS} steps, batch {CNN_BATCH}x{'x'.join(map(str, CIFAR_SHAPE))}: loss {losses[0]:.3f} -> "
              f"{losses[-1]:.3f}, {1e3 * statistics.median(step_s):.1f} ms/step, "
              f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return [Check("jocor_cnn at CIFAR size trains (JoCoR, fp32)", PASS if ok else FAIL, figure)]


# ---------------------------------------------------------------- 2. bf16 against fp32, one batch


def check_bf16_forward() -> list[Check]:
    """A few fp32 steps (so the logits are not those of an untrained pair), then one held-out
    batch through the pair in fp32 and under bf16 autocast; the JoCoR loss and the kept samples
    compared. Logits go to the method in fp32, as Accelerate's mixed precision hands them over."""
    import torch

    if not torch.cuda.is_bf16_supported():
        return [Check("bf16 forward agrees with fp32 (jocor_cnn)", FAIL, "this GPU does not support bf16")]
    pair, optimizer, method = jocor_cnn_pair()
    x, y = cifar_batch(seed=0)
    for _ in range(CNN_WARMUP_STEPS * 2):
        logits_a, logits_b = pair(x)
        method(logits_a, logits_b, y, forget_rate=FORGET_RATE, epoch=0).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    x, y = cifar_batch(seed=1)
    with torch.no_grad():
        fp32 = method(*pair(x), y, forget_rate=FORGET_RATE, epoch=0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits_a, logits_b = pair(x)
        bf16 = method(logits_a.float(), logits_b.float(), y, forget_rate=FORGET_RATE, epoch=0)
    rel = abs(bf16.loss.item() - fp32.loss.item()) / abs(fp32.loss.item())
    kept = set(fp32.selected_a.tolist())
    overlap = len(kept & set(bf16.selected_a.tolist())) / len(kept)
    return [Check("bf16 forward: JoCoR loss vs fp32 (jocor_cnn, one batch)",
                  PASS if rel <= BF16_LOSS_RTOL else FAIL,
                  f"relative difference {rel:.1e} (bound {BF16_LOSS_RTOL:g})"),
            Check("bf16 forward: small-loss selection vs fp32",
                  PASS if overlap >= BF16_MIN_SELECTION_OVERLAP else FAIL,
                  f"{overlap:.1%} of the {len(kept)} kept samples the same (bound {BF16_MIN_SELECTION_OVERLAP:.0%})")]


# ---------------------------------------------------------------- 3. short runs under accelerate launch


def run_config(config: Path, out: Path, clock: Clock) -> tuple[Check, Optional[dict]]:
    """A short JoCoR run launched with ``config``; the check and the run's results.json."""
    import yaml

    name = f"JoCoR run, {config.name} ({RUN_EPOCHS} epochs, {RUN_RECIPE})"
    timeout = min(RUN_TIMEOUT_S, clock.left())
    if timeout < MIN_TIME_TO_START_S:
        return not_run(name, MIN_TIME_TO_START_S), None
    run_dir = out / "runs" / config.stem
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config.relative_to(ROOT)),
           "-m", "jocor_plugin.run", RUN_RECIPE, f"train.epochs={RUN_EPOCHS}", f"train.output_dir={run_dir}",
           "train.overwrite=true", "log.progress_bar=false"]
    finished = run_command(cmd, out / "logs" / f"run_{config.stem}.log", timeout)
    results_file = run_dir / "results.json"
    if finished.returncode != 0 or not results_file.is_file():
        return Check(name, FAIL, f"{ended(finished)}; log in {out.name}/logs/run_{config.stem}.log"), None
    results = json.loads(results_file.read_text())
    wanted = str(yaml.safe_load(config.read_text()).get("mixed_precision", "no"))
    line = ACCELERATE_LINE.search(finished.output)
    device, precision = (line.group(2), line.group(3)) if line else ("?", "?")
    nonfinite = sum(r.get("nonfinite_steps", 0) for r in results["epochs"])
    last = results["epochs"][-1]
    ok = results.get("finished") and device.startswith("cuda") and precision == wanted and nonfinite == 0
    figure = (f"on {device}, mixed precision {precision}; test acc a/b {last['test_acc_a']:.1f}/"
              f"{last['test_acc_b']:.1f} %, label precision {last['label_precision']:.3f}, "
              f"{nonfinite} non-finite steps, {results['summary']['mean_epoch_time_s']:.2f} s/epoch")
    return Check(name, PASS if ok else FAIL, figure), results


def check_runs(out: Path, clock: Clock) -> list[Check]:
    """Each single-GPU config's run, then bf16's final test accuracy against fp32's."""
    checks, accuracy = [], {}
    for config in sorted((ROOT / "accelerate_configs").glob("single_gpu*.yaml")):
        check, results = run_config(config, out, clock)
        checks.append(check)
        if results is not None:
            accuracy[config.stem] = results["summary"]["final_test_acc"]
    if {"single_gpu", "single_gpu_bf16"} <= accuracy.keys():
        gap = accuracy["single_gpu_bf16"] - accuracy["single_gpu"]
        checks.append(Check("bf16 run vs fp32 run: final test accuracy",
                            PASS if abs(gap) <= RUN_ACC_TOLERANCE_POINTS else FAIL,
                            f"{accuracy['single_gpu_bf16']:.1f} vs {accuracy['single_gpu']:.1f} % "
                            f"({gap:+.1f} points, bound ±{RUN_ACC_TOLERANCE_POINTS:g})"))
    else:
        checks.append(Check("bf16 run vs fp32 run: final test accuracy", FAIL, "needs both runs to finish"))
    return checks


# ---------------------------------------------------------------- 4. the test suite


def ignored_tests(gpus: int) -> dict[str, str]:
    return {**IGNORED_TESTS, **(MULTI_PROCESS_TESTS if gpus < 2 else {})}


def check_tests(out: Path, clock: Clock, gpus: int) -> tuple[list[Check], str]:
    """The suite on all cores (as ``make test``), the trainer on the GPU; the failures listed."""
    name = "test suite, trainer on cuda"
    timeout = min(TESTS_TIMEOUT_S, clock.left())
    if timeout < MIN_TIME_TO_START_S:
        return [not_run(name, MIN_TIME_TO_START_S)], ""
    ignored = ignored_tests(gpus)
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadscope", "tests",
           *(f"--ignore={path}" for path in ignored)]
    finished = run_command(cmd, out / "logs" / "tests.log", timeout)
    summary = PYTEST_SUMMARY.findall(finished.output)
    counts = summary[-1][0] if summary else "no pytest summary"
    failures = [f"{kind} {test}" for kind, test in FAILED_LINE.findall(finished.output)]
    details = "Left out of the test suite:\n\n" + "\n".join(f"- `{p}`: {why}" for p, why in ignored.items())
    if failures:
        details += "\n\nFailed tests (log in logs/tests.log):\n\n" + "\n".join(f"- `{f}`" for f in failures)
    figure = f"{counts}; {ended(finished)}; not run: {', '.join(Path(p).name for p in ignored)}"
    return [Check(name, PASS if finished.returncode == 0 else FAIL, figure)], details


# ---------------------------------------------------------------- 5. benchmarks/speed.py


def section(output: str, heading: str) -> list[str]:
    """The lines of the ``## heading...`` section of speed.py's markdown output."""
    lines, inside = [], False
    for line in output.splitlines():
        if line.startswith("## "):
            inside = line.startswith(f"## {heading}")
        elif inside:
            lines.append(line)
    return lines


def speed_checks(output: str) -> list[Check]:
    """speed.py's step-time rows (against the GPU target of its docstring) and its ratios table."""
    checks = []
    for row in filter(None, map(STEP_ROW.match, section(output, "Step time"))):
        backbone, standard_ms, jocor_ms, ratio = row.groups()
        met = float(ratio) <= STEP_RATIO_TARGET_GPU
        checks.append(Check(f"speed: step time JoCoR / standard, {backbone}", MET if met else NOT_MET,
                            f"{float(ratio):.2f}x ({standard_ms} vs {jocor_ms} ms; "
                            f"target <= {STEP_RATIO_TARGET_GPU:g})"))
    for row in filter(None, map(RATIO_ROW.match, section(output, "Ratios"))):
        ratio_name, value, target, met = row.groups()
        result = FIGURE if not target else (MET if met == "yes" else NOT_MET)
        checks.append(Check(f"speed: {ratio_name}", result,
                            f"{float(value):.2f}" + (f" (target {target})" if target else "")))
    return checks


def check_speed(out: Path, clock: Clock) -> tuple[list[Check], str]:
    name = f"benchmarks/speed.py {' '.join(SPEED_ARGS)}"
    timeout = min(SPEED_TIMEOUT_S, clock.left())
    if timeout < MIN_TIME_TO_START_S:
        return [not_run(name, MIN_TIME_TO_START_S)], ""
    cmd = [sys.executable, "benchmarks/speed.py", *SPEED_ARGS]
    finished = run_command(cmd, out / "logs" / "speed.log", timeout)
    ran = Check(name, PASS if finished.returncode == 0 else FAIL, ended(finished))
    details = f"benchmarks/speed.py's output:\n\n```\n{finished.output.strip()}\n```" if finished.output.strip() else ""
    return [ran, *speed_checks(finished.output)], details


# ---------------------------------------------------------------- main


def in_process(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    """An in-process check; an exception is its failure (one line), not the end of the others."""
    try:
        return check()
    except Exception as error:  # noqa: BLE001  (any error is this check's result)
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        return [Check(name, FAIL, f"{type(error).__name__}: {first_line}")]


def release_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def environment() -> tuple[str, int]:
    """The header line of the report and the number of GPUs."""
    import platform

    import torch

    gpus = torch.cuda.device_count()
    header = (f"{torch.cuda.get_device_name(0)} ({gpus} visible), torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}, Python {platform.python_version()}, "
              f"{time.strftime('%Y-%m-%d %H:%M %Z')}. `make gpu-check` (benchmarks/gpu_check.py).")
    return header, gpus


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / DEFAULT_OUT, help="report.md, logs and runs go here")
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=CHECKS, help="which checks to run")
    args = parser.parse_args(argv)
    if no_gpu():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return NO_GPU_EXIT
    out, clock = args.out.resolve(), Clock(TIME_BUDGET_S)
    header, gpus = environment()
    checks: list[Check] = []
    details: list[str] = []

    def record(new: list[Check], detail: str = "") -> None:
        checks.extend(new)
        details.extend([detail] if detail else [])
        write_report(out / "report.md", checks, header, "\n\n".join(details))
        for check in new:
            print(f"gpu-check: {check.name}: {check.result}, {check.figure}", flush=True)

    if "cnn" in args.checks:
        record(in_process("jocor_cnn at CIFAR size trains (JoCoR, fp32)", check_cnn))
    if "bf16" in args.checks:
        record(in_process("bf16 forward agrees with fp32 (jocor_cnn)", check_bf16_forward))
    release_gpu_memory()  # the commands below are processes of their own: leave them the GPU
    if "runs" in args.checks:
        record(check_runs(out, clock))
    if "tests" in args.checks:
        record(*check_tests(out, clock, gpus))
    if "speed" in args.checks:
        record(*check_speed(out, clock))
    print("\n" + write_report(out / "report.md", checks, header, "\n\n".join(details)))
    print(f"gpu-check: report in {out / 'report.md'}")
    return CHECK_FAILED_EXIT if any(c.result == FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
