"""Throughput with 1 and 2 processes, and the memory peak per process, measured side by side.

Each setting is a real ``accelerate launch ... -m jocor_plugin.run``-equivalent training run (this
script re-launches itself as the worker): same recipe, per-process batch and epochs, global
small-loss selection. On a machine without a GPU the processes use gloo on the CPU and split the
cores between them (threads per process = cores / processes), so the comparison is fair.

    python benchmarks/scaling.py [--processes 1 2] [--epochs 2] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

RECIPE = "recipes/mnist5k_sym50.yaml"
DEFAULTS = ["model.name=jocor_cnn", "method.selection=global", "train.max_steps_per_epoch=12",
            "train.export_models=false",
            "train.keep_checkpoints=0", "log.progress_bar=false"]


def worker(result_path: str, overrides: list[str]) -> None:
    """One process of the launched run: train, then report throughput and every rank's memory peak."""
    import torch
    from accelerate import PartialState

    from jocor_plugin.config import load_config
    from jocor_plugin.run import configure_logging, train

    configure_logging()
    cfg = load_config(RECIPE, overrides)
    state = PartialState()
    results = train(cfg)  # ends the process group: each rank reports its memory peak in a file
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if torch.cuda.is_available():
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    Path(f"{result_path}.rank{state.process_index}").write_text(str(peak_mib))
    if state.is_main_process:
        global_batch = cfg.train.batch_size * state.num_processes
        steps = results["num_train"] // global_batch
        if cfg.train.max_steps_per_epoch:
            steps = min(steps, cfg.train.max_steps_per_epoch)
        # the first epoch warms up (allocator, thread pools): time the rest
        timed = results["epochs"][1:] or results["epochs"]
        train_time = sum(r["train_time_s"] for r in timed)
        Path(result_path).write_text(json.dumps({"samples_per_s": steps * global_batch * len(timed) / train_time}))


def launch(processes: int, threads: int, overrides: list[str], out: Path) -> dict:
    result = out / f"scaling_{processes}.json"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", str(threads), "--main_process_port", "0"]
    if processes > 1:
        cmd.append("--multi_gpu")
    cmd += [__file__, "--worker", str(result), *overrides, f"train.output_dir={out / str(processes)}"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    peaks = [float(Path(f"{result}.rank{rank}").read_text()) for rank in range(processes)]
    return {**json.loads(result.read_text()), "peak_mib": peaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="the first is a warm-up and not timed")
    parser.add_argument("--worker", metavar="RESULT_JSON", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.overrides)

    import torch

    overrides = [*DEFAULTS, f"train.epochs={args.epochs}", *args.overrides]
    cores = os.cpu_count() or 1
    where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}" if torch.cuda.is_available()
             else f"CPU ({platform.machine()}, {cores} cores), gloo")
    print(f"# benchmarks/scaling.py on {where}, torch {torch.__version__}\n\n{RECIPE} "
          f"{' '.join(overrides)}\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.processes:
            rows.append((n, launch(n, max(cores // n, 1), overrides, Path(tmp))))
    base = rows[0][1]["samples_per_s"]
    print(f"\n| processes | train samples/s | speed-up vs {rows[0][0]} | peak memory per process (MiB) |\n"
          f"|---|---|---|---|")
    for n, r in rows:
        peaks = ", ".join(f"{p:,.0f}" for p in r["peak_mib"])
        print(f"| {n} | {r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f}x | {peaks} |")


if __name__ == "__main__":
    main()
