"""Where a one-network step's time goes beyond a plain PyTorch loop (docs/performance.md).

One trainer is set up (``method.name=standard``); then the same network and optimizer train through
a ladder of loops, each adding one piece of the trainer's step to the one before: a plain loop over
tensors, the project's DataLoader, Accelerate's prepared loader, ``PairNet`` and the method,
Accelerate's ``accumulate`` / ``backward`` / optimizer, the epoch meter, ``train_one_epoch`` and the
label-issue statistics. Rungs are interleaved over ``--rounds`` so a drift of the machine weighs on
all alike; medians of the per-step time are printed with their ratio to the plain loop.

    OMP_NUM_THREADS=1 python benchmarks/step_ladder.py recipes/fashion_mnist.yaml --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jocor_plugin.config import load_config  # noqa: E402
from jocor_plugin.train.engine import EpochMeter, train_one_epoch, zero_grad  # noqa: E402
from jocor_plugin.train.meters import SampleStats  # noqa: E402
from jocor_plugin.train.trainer import Trainer, setup  # noqa: E402

STATS_WINDOW = 10  # epochs of label-issue statistics, the recipes' default


def ladder(trainer: Trainer) -> dict[str, Callable[[], None]]:
    """Rung name -> one epoch of that loop (same network, optimizer and batch size throughout)."""
    acc, pair, optimizer, method = trainer.accelerator, trainer.pair, trainer.optimizer, trainer.method
    raw_optimizer = optimizer.optimizer
    batch_size = trainer.cfg.train.batch_size
    raw_loader = trainer._loader(trainer.splits.train, train=True, batch_size=batch_size)
    prepared = trainer.train_loader
    num_samples = len(trainer.splits.train)
    everything = raw_loader.dataset.__getitems__(torch.arange(num_samples))
    images, labels = everything["pixel_values"], everything["label"]
    generator = torch.Generator().manual_seed(0)
    meter = EpochMeter(num_samples, acc.device)
    stats = SampleStats.for_dataset(trainer.splits.train, trainer.data_info.num_classes, STATS_WINDOW, acc.device)

    def plain_step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(pair.net_a(x), y)
        raw_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        raw_optimizer.step()

    def tensors() -> None:
        order = torch.randperm(num_samples, generator=generator)
        for i in range(num_samples // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            plain_step(images.index_select(0, idx), labels.index_select(0, idx))

    def loop(loader, *, method_step: bool = False, accelerate: bool = False, metered: bool = False) -> None:
        for batch in loader:
            if not method_step:
                plain_step(batch["pixel_values"], batch["label"])
                continue
            with acc.accumulate(pair) if accelerate else contextlib.nullcontext():
                logits_a, logits_b = pair(batch["pixel_values"])
                out = method(logits_a, logits_b, batch["label"], forget_rate=0.0, epoch=0)
                if accelerate:
                    acc.backward(out.loss)
                    optimizer.step()
                    zero_grad(optimizer, acc)
                else:
                    raw_optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    raw_optimizer.step()
            if metered:
                meter.update(batch, out.loss.detach(), out.selected_a, out.selected_b)
        meter.reset()

    def engine(with_stats: bool) -> None:
        train_one_epoch(pair, method, prepared, optimizer, acc, epoch=0, forget_rate=0.0, meter=meter,
                        progress=False, stats=stats if with_stats else None)
        meter.reset()

    return {
        "plain loop over tensors": tensors,
        "+ the project's DataLoader": lambda: loop(raw_loader),
        "+ prepared by Accelerate": lambda: loop(prepared),
        "+ PairNet and the method": lambda: loop(prepared, method_step=True),
        "+ Accelerate's accumulate, backward, optimizer": lambda: loop(prepared, method_step=True, accelerate=True),
        "+ EpochMeter.update": lambda: loop(prepared, method_step=True, accelerate=True, metered=True),
        "train_one_epoch": lambda: engine(with_stats=False),
        "train_one_epoch + label-issue statistics": lambda: engine(with_stats=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", default="recipes/mnist5k_sym50.yaml")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per rung and round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(args.recipe, ["method.name=standard", f"train.output_dir={out}", "log.tracker=none",
                                        "log.progress_bar=false"])
        trainer = setup(cfg)
        rungs = ladder(trainer)
        steps = len(trainer.splits.train) // cfg.train.batch_size
        times: dict[str, list[float]] = {name: [] for name in rungs}
        for _ in range(args.rounds):
            for name, epoch in rungs.items():
                start = time.perf_counter()
                for _ in range(args.epochs):
                    epoch()
                times[name].append((time.perf_counter() - start) / (args.epochs * steps) * 1e6)
    base = statistics.median(times["plain loop over tensors"])
    print(f"# {args.recipe}: {steps} steps of batch {cfg.train.batch_size} per epoch, {torch.get_num_threads()} "
          f"thread(s), medians of {args.rounds} round(s)\n\n| rung | µs / step | min | max | × plain |\n|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} | {max(values):,.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
