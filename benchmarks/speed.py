"""Speed of JoCoR, measured side by side in one run (docs/performance.md holds the figures).

1. Step time of JoCoR / step time of standard training (same backbone, batch and device) for the
   paper's MLP, its 7-layer CNN and timm's resnet18. Target: <= 2.1x on CPU, <= 1.5x on a GPU (the
   second network should be the only real extra cost).
2. Optional batched pair: both networks as one ``torch.func`` vmapped computation against two
   sequential forwards (kept in the trainer only where it is faster).
3. End to end (``e2e`` on mnist5k, ``fashion`` on Fashion-MNIST when installed): per-epoch
   training, evaluation and whole-epoch seconds of JoCoR and Standard through the trainer
   (``jocor_plugin.run.train``, the recipe's defaults) against a plain in-memory PyTorch loop with
   the same arithmetic (model, Eq. (1), top-k selection, Adam and its lr/beta1 plan, a test pass per
   epoch) and, on mnist5k, a loop written the way the authors' code trains (per-sample ``ToTensor``,
   numpy argsort on the host, accuracy read every step, one test pass per network). Targets: JoCoR
   and Standard epoch <= 1.15x the plain loop (``--methods`` to time one); evaluation <= 10 % of
   the epoch; >= 6x the authors'-style loop; JoCoR / Standard <= 2x. A run gathers label-issue
   statistics in its last ``train.label_issue_epochs`` only, so where the timed epochs are fewer
   than the recipe's (``fashion``), the epochs before that window are timed too (checkpoints, no
   statistics) and the whole recipe's ratio weighs the two by their share of its epochs.
4. ``alternated``: the training step alone, the trainer's (``engine.train_step`` + the epoch meter)
   and the plain loop's on the same batches, timed one after the other step by step (Fashion-MNIST
   when installed, else mnist5k): the ratio this machine can resolve; target <= 1.15x.
5. ``compile``: the trainer's JoCoR epochs with ``train.compile=true`` against eager.
6. ``loader``: images/s of the streamed training loader of an image folder (decode + timm's
   training transform at 224) against torchvision's ImageFolder + DataLoader. Target >= 0.95x.
7. ``augment``: the in-memory batched flip + padded crop (``random_flip_crop``: DivideMix's views,
   ``data.augment`` on decoded data) against torchvision's v2 ``RandomHorizontalFlip`` +
   ``RandomCrop(padding)`` applied image by image, as a per-sample Dataset would.

Timings use this process's CPU seconds (1 thread) unless ``--clock wall``: on a shared machine the
wall clock mostly measures the neighbours.

    python benchmarks/speed.py [--parts ...] [--device cuda] [--clock wall] [--epochs 60]
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import platform
import re
import statistics
import tempfile
import time
from dataclasses import astuple, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

import jocor_plugin  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)
from jocor_plugin.config import load_config
from jocor_plugin.data.loaders import decode_images
from jocor_plugin.data.splits import build_noisy_splits, column_array
from jocor_plugin.data.fashion_mnist import DEBIAN_DIR, is_fashion_mnist_folder
from jocor_plugin.methods import create_method
from jocor_plugin.models import create_pair
from jocor_plugin.run import train
from jocor_plugin.train.engine import train_step
from jocor_plugin.train.trainer import setup
from jocor_plugin.train.schedule import apply_optim_schedule, forget_rate_at, lr_beta1_at

BACKBONES = {  # name: (in_chans, image size)
    "jocor_mlp": (1, 28),
    "jocor_cnn": (3, 32),
    "resnet18": (3, 32),
}
NUM_CLASSES = 10
PARTS = ["steps", "vmap", "e2e", "fashion", "alternated", "compile", "loader", "augment"]
MNIST5K, FASHION = "recipes/mnist5k_sym50.yaml", "recipes/fashion_mnist.yaml"
WALL_CLOCK = time.perf_counter  # kept before --clock process swaps perf_counter
EPOCH_LINE = re.compile(r"epoch +\d+/\d+ ")  # the trainer's per-epoch log line
LAST_EPOCHS = 10  # accuracy is averaged over these (the paper's test_acc_last10)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call over ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(name: str, method_name: str, batch_size: int, device: torch.device) -> Callable[[], None]:
    """One step exactly as ``engine.train_one_epoch`` takes it: pair forward, method, backward, Adam."""
    method = create_method(method_name)
    in_chans, size = BACKBONES[name]
    pair = create_pair(name, num_classes=NUM_CLASSES, in_chans=in_chans, num_networks=method.num_networks,
                       seed=0).to(device)
    optimizer = torch.optim.Adam(pair.parameters(), lr=1e-3)
    x = torch.randn(batch_size, in_chans, size, size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def step() -> None:
        logits_a, logits_b = pair(x)
        out = method(logits_a, logits_b, y, forget_rate=0.5, epoch=20)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def batched_pair_forward(name: str, batch_size: int, device: torch.device) -> tuple[Callable, Callable]:
    """(two sequential forward+backward passes, one vmapped forward+backward over stacked weights)."""
    in_chans, size = BACKBONES[name]
    pair = create_pair(name, num_classes=NUM_CLASSES, in_chans=in_chans, seed=0).to(device)
    x = torch.randn(batch_size, in_chans, size, size, device=device)
    params, buffers = stack_module_state([pair.net_a, pair.net_b])
    base = copy.deepcopy(pair.net_a).to("meta")

    def sequential() -> None:
        (pair.net_a(x).sum() + pair.net_b(x).sum()).backward()

    def vmapped() -> None:
        logits = torch.vmap(lambda p, b: functional_call(base, (p, b), (x,)), randomness="different")(params, buffers)
        logits.sum().backward()

    return sequential, vmapped


@dataclass
class Epochs:
    """Per-epoch seconds of one loop (medians over the epochs after the first, which warms up),
    the test accuracy of net a averaged over the last epochs, and the fastest whole epoch: a
    busy machine only ever adds time, so the fastest is the steadier measure of the loop's own
    cost (``timeit``'s reasoning); over several rounds, the fastest of all of them."""

    train: float
    eval: float
    epoch: float
    acc: float
    fastest: float


def _median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def _fastest(values: list[float]) -> float:
    return min(values[1:] if len(values) > 1 else values)


def loop_epochs(train_s: list[float], eval_s: list[float], accuracies: list[float]) -> Epochs:
    """A hand-written loop's epochs from its per-epoch training and evaluation seconds."""
    whole = [t + e for t, e in zip(train_s, eval_s)]
    return Epochs(_median(train_s), _median(eval_s), _median(whole), statistics.mean(accuracies[-LAST_EPOCHS:]),
                  _fastest(whole))


@dataclass
class Tensors:
    """A split as device tensors for the plain loop: normalised float images and labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor  # the noisy labels, as the trainer sees them
    x_test: torch.Tensor
    y_test: torch.Tensor


def as_tensors(splits, device: torch.device) -> Tensors:
    """Decoded once, untimed (the trainer also decodes once, at start-up). jocor_mlp's data config
    is mean 0, std 1 (raw [0, 1] pixels, as the authors)."""
    def images(ds) -> torch.Tensor:
        return torch.from_numpy(decode_images(ds, "L")).permute(0, 3, 1, 2).float().div(255).to(device)

    def labels(ds) -> torch.Tensor:
        return torch.as_tensor(column_array(ds, "label")).to(device)

    return Tensors(images(splits.train), labels(splits.train), images(splits.test), labels(splits.test))


def plain_step(nets, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lam: float,
               keep: int) -> None:
    """One step of the plain loop: Standard with one network, JoCoR with two."""
    if len(nets) == 2:  # Eq. (1) as jocor_plugin's jocor computes it: two CEs and the symmetric KL
        z_a, z_b = nets[0](x), nets[1](x)
        ce = F.cross_entropy(z_a, y, reduction="none") + F.cross_entropy(z_b, y, reduction="none")
        log_pa, log_pb = F.log_softmax(z_a, 1), F.log_softmax(z_b, 1)
        kl = ((log_pa.exp() - log_pb.exp()) * (log_pa - log_pb)).sum(1)
        losses = (1 - lam) * ce + lam * kl
        loss = losses[torch.topk(losses.detach(), keep, largest=False).indices].mean()
    else:
        loss = F.cross_entropy(nets[0](x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def plain_epochs(data: Tensors, cfg, method: str, epochs: int, device: torch.device) -> Epochs:
    """The same arithmetic as the trainer's ``jocor`` / ``standard`` in a plain PyTorch loop: the
    pair from ``create_pair``, Eq. (1)'s joint loss, top-k small-loss selection, Adam with the
    paper's lr/beta1 plan, and a test pass of every network after every epoch."""
    two = method == "jocor"
    pair = create_pair(cfg.model.name, num_classes=NUM_CLASSES, in_chans=1, num_networks=2 if two else 1,
                       seed=cfg.train.seed).to(device)
    nets = pair.networks
    optimizer = torch.optim.Adam(pair.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    n, batch, lam = len(data.y_train), cfg.train.batch_size, cfg.method.co_lambda
    train_s, eval_s, accuracies = [], [], []
    for epoch in range(epochs):
        lr, beta1 = lr_beta1_at(epoch, epochs, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"], group["betas"] = lr, (beta1, group["betas"][1])
        keep = math.floor((1.0 - forget_rate_at(epoch, cfg.forget_rate, cfg.method)) * batch + 1e-9)
        start = time.perf_counter()
        pair.train()
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(n // batch):
            idx = order[i * batch:(i + 1) * batch]
            plain_step(nets, optimizer, data.x_train.index_select(0, idx), data.y_train.index_select(0, idx), lam, keep)
        synchronize(device)
        middle = time.perf_counter()
        pair.eval()
        with torch.no_grad():
            correct = torch.zeros(len(nets), dtype=torch.long, device=device)
            for i in range(0, len(data.y_test), cfg.train.eval_batch_size):
                x, y = data.x_test[i:i + cfg.train.eval_batch_size], data.y_test[i:i + cfg.train.eval_batch_size]
                correct += torch.stack([(net(x).argmax(1) == y).sum() for net in nets])
            accuracies.append(100.0 * correct[0].item() / len(data.y_test))
        eval_s.append(time.perf_counter() - middle)
        train_s.append(middle - start)
    return loop_epochs(train_s, eval_s, accuracies)


class _EpochClock(logging.Handler):
    """Stamps each of the trainer's per-epoch log lines: the time between two is the whole epoch
    as a user waits for it (training, evaluation, results.json, checkpoint)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stamps: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if EPOCH_LINE.match(record.getMessage()):
            self.stamps.append(time.perf_counter())


def trainer_epochs(recipe: str, overrides: list[str], epochs: int) -> Epochs:
    """Epochs of the real trainer (``jocor_plugin.run.train``) from its records and log lines."""
    clock, package_logger = _EpochClock(), logging.getLogger("jocor_plugin")
    package_logger.addHandler(clock)
    level, package_logger.level = package_logger.level, logging.INFO
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(recipe, [*overrides, f"train.epochs={epochs}", f"train.output_dir={out}",
                                       "train.export_models=false", "log.progress_bar=false"])
            records = train(cfg)["epochs"]
    finally:
        package_logger.removeHandler(clock)
        package_logger.setLevel(level)
    walls = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    return Epochs(_median([r["train_time_s"] for r in records]),
                  _median([r["epoch_time_s"] - r["train_time_s"] for r in records]),
                  statistics.median(walls) if walls else records[-1]["epoch_time_s"],
                  statistics.mean(r["test_acc_a"] for r in records[-LAST_EPOCHS:]),
                  min(walls) if walls else records[-1]["epoch_time_s"])


def authors_epochs(splits, cfg, epochs: int, device: torch.device) -> Epochs:
    """The authors' way: PIL -> ToTensor per sample, default DataLoader, numpy argsort on the host,
    per-step accuracy of both networks read on the host, and a test pass per network through a
    per-sample DataLoader; their lr/beta1 and forget-rate plans."""
    from PIL import Image as PILImage
    from torchvision import transforms

    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    class NoisyMNIST(torch.utils.data.Dataset):  # as the authors' data/mnist.py
        def __init__(self, ds) -> None:
            self.images = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in ds["image"]])
            self.labels = np.asarray(ds["label"])

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i):
            return to_tensor(PILImage.fromarray(self.images[i], mode="L")), int(self.labels[i]), i

    noisy = np.asarray(splits.train["is_noisy"])
    loader = torch.utils.data.DataLoader(NoisyMNIST(splits.train), batch_size=cfg.train.batch_size, shuffle=True,
                                         drop_last=True)
    test_loader = torch.utils.data.DataLoader(NoisyMNIST(splits.test), batch_size=cfg.train.batch_size)
    pair = create_pair(cfg.model.name, num_classes=NUM_CLASSES, in_chans=1, seed=cfg.train.seed).to(device)
    optimizer = torch.optim.Adam(pair.parameters(), lr=cfg.optim.lr)
    co_lambda, train_s, eval_s, accuracies = cfg.method.co_lambda, [], [], []
    for epoch in range(epochs):
        forget_rate = forget_rate_at(epoch, cfg.forget_rate, cfg.method)
        apply_optim_schedule(optimizer, epoch, epochs, cfg.optim)
        pair.train()
        start = time.perf_counter()
        for x, y, ind in loader:
            x, y = x.to(device), y.to(device)
            logits_1, logits_2 = pair(x)
            for logits in (logits_1, logits_2):  # the authors' per-step accuracy()
                _ = (logits.argmax(1) == y).float().mean().item()
            kl = (F.kl_div(F.log_softmax(logits_1, 1), F.softmax(logits_2, 1), reduction="none").sum(1)
                  + F.kl_div(F.log_softmax(logits_2, 1), F.softmax(logits_1, 1), reduction="none").sum(1))
            loss_pick = ((1 - co_lambda) * (F.cross_entropy(logits_1, y, reduction="none")
                                            + F.cross_entropy(logits_2, y, reduction="none"))
                         + co_lambda * kl).cpu()
            ind_sorted = np.argsort(loss_pick.data.numpy())
            num_remember = int((1 - forget_rate) * len(ind_sorted))
            _ = np.sum(~noisy[ind.numpy()[ind_sorted[:num_remember]]]) / float(num_remember)  # pure ratio
            loss = torch.mean(loss_pick[ind_sorted[:num_remember]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        synchronize(device)
        middle = time.perf_counter()
        accuracies.append(authors_accuracy(pair, test_loader, device)[0])
        eval_s.append(time.perf_counter() - middle)
        train_s.append(middle - start)
    return loop_epochs(train_s, eval_s, accuracies)


@torch.no_grad()
def authors_accuracy(pair, test_loader, device) -> list[float]:
    """As the authors' ``evaluate``: one pass over the test loader per network, counts on the host."""
    pair.eval()
    accuracies = []
    for net in pair.networks:
        correct = total = 0
        for x, y, _ in test_loader:
            pred = net(x.to(device)).softmax(1).argmax(1)
            total += y.size(0)
            correct += int((pred.cpu() == y).sum())
        accuracies.append(100.0 * correct / total)
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the mnist5k comparisons "
                        "(60: the whole mnist5k_sym50 recipe)")
    parser.add_argument("--fashion-epochs", type=int, default=10, help="epochs of the Fashion-MNIST comparison "
                        "(10: as many as the label-issue window, so every timed default epoch gathers statistics; "
                        "fewer epochs per round leave the fastest epoch too few to find)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the end-to-end comparisons, alternately "
                        "forward and reversed (A B C C B A ...); the median round is reported (more: steadier on a "
                        "busy machine)")
    parser.add_argument("--alternated-steps", type=int, default=200, help="batches of the alternated step "
                        "comparison (each timed once per round for each loop)")
    parser.add_argument("--compile-epochs", type=int, default=5, help="epochs of the torch.compile comparison")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streamed-loader comparison")
    parser.add_argument("--images", type=int, default=2000, help="JPEGs written for the streamed-loader comparison")
    parser.add_argument("--methods", nargs="+", choices=LOOP_METHODS, default=list(LOOP_METHODS),
                        help="the methods of the end-to-end comparisons (e2e, fashion)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="which comparisons to run")
    parser.add_argument("--clock", choices=["process", "wall"], default="process",
                        help="'process': CPU seconds of this process with 1 thread (what a shared machine "
                             "cannot inflate; the streamed loader, whose workers are other processes, is "
                             "always timed on the wall clock); 'wall': elapsed seconds")
    args = parser.parse_args()
    if args.clock == "process":  # every timer here and in the trainer's records reads perf_counter
        torch.set_num_threads(1)
        time.perf_counter = time.process_time
    datasets.disable_progress_bars()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# benchmarks/speed.py on {where}, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.clock} clock\n")

    if "steps" in args.parts:
        step_times(args.batch_size, args.iters, device)
    if "vmap" in args.parts:
        pair_forward_times(args.batch_size, args.iters, device)
    targets: list[Target] = []
    if "e2e" in args.parts:
        targets += compare_loops(MNIST5K, [f"train.batch_size={args.batch_size}"], args.epochs, device, "mnist5k",
                                 authors=True, methods=tuple(args.methods), rounds=args.rounds)
    if "fashion" in args.parts:
        if is_fashion_mnist_folder(DEBIAN_DIR):
            targets += compare_loops(FASHION, [f"train.batch_size={args.batch_size}"], args.fashion_epochs, device,
                                     "Fashion-MNIST", authors=False, methods=tuple(args.methods), rounds=args.rounds)
        else:
            print(f"\n(Fashion-MNIST skipped: {DEBIAN_DIR} does not hold it; `make fashion-mnist` installs it.)")
    if "alternated" in args.parts:
        recipe, data = (FASHION, "Fashion-MNIST") if is_fashion_mnist_folder(DEBIAN_DIR) else (MNIST5K, "mnist5k")
        targets += alternated_steps(recipe, [f"train.batch_size={args.batch_size}"], tuple(args.methods),
                                    args.alternated_steps, args.rounds, data)
    if "compile" in args.parts:
        targets += compiled(args.batch_size, args.compile_epochs)
    if "loader" in args.parts:
        targets += streamed_loader(args.batch_size, args.workers, args.images, rounds=2)
    if "augment" in args.parts:
        targets += augmentation(args.iters, device)
    if targets:
        print_targets(targets)


def step_times(batch_size: int, iters: int, device: torch.device) -> None:
    print("## Step time, JoCoR / standard\n\n| backbone | standard (ms) | jocor (ms) | ratio |\n|---|---|---|---|")
    for name in BACKBONES:
        t = {m: time_per_call(training_step(name, m, batch_size, device), device, 5, iters)
             for m in ("standard", "jocor")}
        print(f"| {name} | {1e3 * t['standard']:.2f} | {1e3 * t['jocor']:.2f} | {t['jocor'] / t['standard']:.2f}x |")


def pair_forward_times(batch_size: int, iters: int, device: torch.device) -> None:
    print("\n## Pair forward+backward: two sequential passes vs one vmapped pass\n\n"
          "| backbone | sequential (ms) | vmapped (ms) | vmapped / sequential |\n|---|---|---|---|")
    for name in ("jocor_mlp", "jocor_cnn"):
        sequential, vmapped = batched_pair_forward(name, batch_size, device)
        ts, tv = (time_per_call(f, device, 3, iters) for f in (sequential, vmapped))
        print(f"| {name} | {1e3 * ts:.2f} | {1e3 * tv:.2f} | {tv / ts:.2f}x |")


def write_jpegs(folder: Path, count: int, classes: int = 4) -> None:
    """``count`` JPEGs in ``classes`` sub-folders: smooth colour fields with noise, of varied sizes
    around 320x240 (photo-like to decode, as a shop's product photos)."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = int(rng.integers(280, 400)), int(rng.integers(200, 300))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / rng.uniform(10, 60) + c) * np.cos(yy / rng.uniform(10, 60)) for c in range(3)], -1)
        pixels = np.clip(127 + 90 * base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        (folder / f"class_{i % classes}").mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(pixels).save(folder / f"class_{i % classes}" / f"{i:05d}.jpg", quality=90)


def images_per_second(loader) -> float:
    """One pass; the clock starts at the first batch (worker start-up is not the steady state)."""
    batches = iter(loader)
    next(batches)
    start, seen = WALL_CLOCK(), 0
    for batch in batches:
        seen += len(batch["label"] if isinstance(batch, dict) else batch[1])
    return seen / (WALL_CLOCK() - start)


def streamed_loader(batch_size: int, workers: int, count: int, rounds: int) -> list[Target]:
    """Images/s of the training loader of an image folder (decode + timm's training transform at
    224, ``workers`` workers) against torchvision's ImageFolder + DataLoader with the same
    transform, batch, shuffling and workers, alternated ``rounds`` times."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    from jocor_plugin.data import make_loader, resolve_image_config

    with tempfile.TemporaryDirectory(prefix="jocor_bench_jpegs_") as root:
        folder = Path(root) / "shop_photos"
        write_jpegs(folder, count)
        cfg = load_config(None, [f"data.path={folder}", "model.name=resnet18", "data.augment=true",
                                 "data.in_memory=false", f"data.num_workers={workers}", "noise.rate=0.2",
                                 "data.test_fraction=0.05"])
        splits = build_noisy_splits(cfg)
        image_config = resolve_image_config(cfg.data, create_pair("resnet18", num_classes=4, in_chans=3,
                                                                  num_networks=1).net_a, 3)
        ours = make_loader(splits.train, cfg.data, image_config, batch_size=batch_size, train=True,
                           device="cpu", seed=0)
        reference = torch.utils.data.DataLoader(
            ImageFolder(str(folder), transform=create_transform(**image_config, is_training=True)),
            batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
        speeds: dict[str, list[float]] = {"jocor_plugin": [], "torchvision": []}
        for _ in range(rounds):
            speeds["torchvision"].append(images_per_second(reference))
            speeds["jocor_plugin"].append(images_per_second(ours))
        n_ours, n_ref = len(splits.train), len(reference.dataset)
    mean = {k: statistics.mean(v) for k, v in speeds.items()}
    print(f"\n## Streamed training loader: {count} JPEGs (~320x240) -> timm's training transform at 224, "
          f"batch {batch_size}, {workers} workers, {rounds} alternated passes\n\n"
          f"| loader | images | images/s (mean) | each pass |\n|---|---|---|---|\n"
          f"| torchvision ImageFolder + DataLoader | {n_ref:,} | {mean['torchvision']:.1f} | "
          f"{', '.join(f'{v:.1f}' for v in speeds['torchvision'])} |\n"
          f"| jocor_plugin (datasets imagefolder + make_loader) | {n_ours:,} | {mean['jocor_plugin']:.1f} | "
          f"{', '.join(f'{v:.1f}' for v in speeds['jocor_plugin'])} |")
    return [Target("streamed loader images/s, jocor_plugin / torchvision", mean["jocor_plugin"] / mean["torchvision"],
                   ">=", 0.95)]


def augmentation(iters: int, device: torch.device) -> list[Target]:
    """Microseconds per batch of the batched flip + padded crop against torchvision's v2 transforms
    image by image, for a DivideMix view of Fashion-MNIST (64 x 1 x 28 x 28) and a CIFAR batch."""
    from torchvision.transforms import v2

    from jocor_plugin.data.loaders import random_flip_crop

    print("\n## In-memory augmentation: batched flip + padded crop vs torchvision v2 per image\n\n"
          "| batch | torchvision v2, per image (us) | random_flip_crop (us) | ratio |\n|---|---|---|---|")
    targets = []
    for shape in ((64, 1, 28, 28), (128, 3, 32, 32)):
        x = torch.rand(shape, device=device)
        per_image = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomCrop(shape[-1], padding=4)])
        t_ref = time_per_call(partial(each_image, per_image, x), device, 3, iters)
        t_ours = time_per_call(partial(random_flip_crop, x, 4), device, 3, iters)
        label = "x".join(map(str, shape))
        print(f"| {label} | {1e6 * t_ref:.0f} | {1e6 * t_ours:.0f} | {t_ours / t_ref:.2f}x |")
        targets.append(Target(f"augmentation {label}, batched / torchvision per image", t_ours / t_ref))
    return targets


def each_image(transform: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    return torch.stack([transform(image) for image in batch])


def compiled(batch_size: int, epochs: int) -> list[Target]:
    """JoCoR epochs through the trainer with and without ``train.compile`` (inductor) on mnist5k;
    the first epoch (which compiles) is left out of the medians."""
    overrides = [f"train.batch_size={batch_size}"]
    rows = {"eager": trainer_epochs(MNIST5K, overrides, epochs),
            "train.compile=true": trainer_epochs(MNIST5K, [*overrides, "train.compile=true"], epochs)}
    print(f"\n## torch.compile: {epochs} JoCoR epochs on mnist5k through the trainer\n\n{epochs_table(rows, epochs)}")
    eager, fast = rows["eager"], rows["train.compile=true"]
    return [Target("mnist5k: JoCoR training, compiled / eager", fast.train / eager.train),
            Target("mnist5k: JoCoR epoch, compiled / eager", fast.epoch / eager.epoch)]


def alternated_steps(recipe: str, overrides: list[str], methods: tuple[str, ...], steps: int, rounds: int,
                    data: str) -> list[Target]:
    """The trainer's step (``engine.train_step`` and the epoch meter's update, as ``train_one_epoch``
    runs them) against the plain loop's step on the same batches, one after the other, the order
    reversed every other step, so that the machine's drift weighs on both alike: the step is ~95 %
    of an epoch, and this ratio is steady to 1-2 % where an epoch's moves by 10 % or more."""
    targets = []
    print(f"\n## {data}: the training step, trainer and plain loop alternated ({steps} batches x {rounds} "
          f"rounds, median per step)\n\n| method | plain loop (us) | jocor_plugin (us) | ratio |\n|---|---|---|---|")
    for method in methods:
        with tempfile.TemporaryDirectory() as out:
            cfg = load_config(recipe, [*overrides, f"method.name={method}", f"train.output_dir={out}",
                                       "log.progress_bar=false", "train.label_issue_epochs=0"])
            trainer = setup(cfg)
        batches = [b for _, b in zip(range(steps), trainer.train_loader)]
        device = trainer.accelerator.device
        pair = create_pair(cfg.model.name, num_classes=NUM_CLASSES, in_chans=1,
                           num_networks=trainer.method.num_networks, seed=cfg.train.seed).to(device)
        optimizer = torch.optim.Adam(pair.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
        tau = trainer.forget_rate or 0.0  # the selection at its full rate, as after the first epochs
        keep = math.floor((1.0 - tau) * cfg.train.batch_size + 1e-9)
        trainer.pair.train()
        pair.train()

        def ours(batch: dict[str, torch.Tensor]) -> None:
            out, _, _ = train_step(trainer.pair, trainer.method, batch, trainer.optimizer, trainer.accelerator,
                                   epoch=0, forget_rate=tau, wants_index=trainer.method.wants_index)
            trainer.meter.update(batch, out.loss.detach(), out.selected_a, out.selected_b)

        def plain(batch: dict[str, torch.Tensor]) -> None:
            plain_step(pair.networks, optimizer, batch["pixel_values"], batch["label"], cfg.method.co_lambda, keep)

        timed: dict[str, list[float]] = {"plain": [], "ours": []}
        for r in range(rounds):
            trainer.meter.reset()  # the meter holds one epoch's steps
            for i, batch in enumerate(batches):
                for name, step in ((("plain", plain), ("ours", ours)) if (i + r) % 2 == 0 else
                                   (("ours", ours), ("plain", plain))):
                    start = time.perf_counter()
                    step(batch)
                    synchronize(device)
                    timed[name].append(time.perf_counter() - start)
        plain_s, ours_s = statistics.median(timed["plain"]), statistics.median(timed["ours"])
        print(f"| {method} | {1e6 * plain_s:.0f} | {1e6 * ours_s:.0f} | {ours_s / plain_s:.3f} |")
        targets.append(Target(f"{data}: {method} step (alternated), jocor_plugin / plain", ours_s / plain_s, "<=", 1.15))
    return targets


def epochs_table(rows: dict[str, Epochs], epochs: int) -> str:
    lines = [f"| loop | training (s) | evaluation (s) | epoch (s) | fastest epoch (s) | test acc of net a, last "
             f"{min(LAST_EPOCHS, epochs)} |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {e.train:.3f} | {e.eval:.3f} | {e.epoch:.3f} | {e.fastest:.3f} | {e.acc:.2f} % |"
              for name, e in rows.items()]
    return "\n".join(lines)


def whole_recipe(inside: float, before: float, share: float) -> float:
    """A whole run's mean epoch: ``share`` of its epochs gather label-issue statistics (``inside``
    their window), the others only checkpoint (``before``)."""
    return share * inside + (1 - share) * before


def versus_plain(rows: dict[str, Epochs], data: str, share: float) -> list[Target]:
    """trainer / plain for JoCoR and Standard, those measured (training, evaluation; the epoch <= 1.15x
    for both, issue 32, by the median and by the fastest epoch), also over the whole recipe where its
    epochs before the statistics' window were timed apart (``share``: the window's part of the
    recipe's epochs) and without the extras; the evaluation share of the trainer's JoCoR epoch;
    JoCoR / Standard through the trainer."""
    out = []
    for method in [m for m in LOOP_METHODS if f"plain loop {m}" in rows]:
        ours, plain = rows[f"jocor_plugin {method}"], rows[f"plain loop {method}"]
        out += [Target(f"{data}: {method} training, jocor_plugin / plain", ours.train / plain.train),
                Target(f"{data}: {method} evaluation, jocor_plugin / plain", ours.eval / plain.eval)]
        before, lean = rows.get(f"jocor_plugin {method}, {BEFORE_WINDOW}"), rows.get(f"jocor_plugin {method}, {NO_EXTRAS}")
        for measure in ("epoch", "fastest"):
            def ratio(row: Epochs) -> float:
                return getattr(row, measure) / getattr(plain, measure)

            label = "median epoch" if measure == "epoch" else "fastest epoch"
            out.append(Target(f"{data}: {method} {label}, jocor_plugin / plain", ratio(ours), "<=", 1.15))
            if before is not None:
                out.append(Target(f"{data}: {method} {label} over the whole recipe ({share:.0%} of it gathering "
                                  f"statistics), jocor_plugin defaults / plain",
                                  whole_recipe(ratio(ours), ratio(before), share), "<=", 1.15))
            if lean is not None:
                out.append(Target(f"{data}: {method} {label}, jocor_plugin ({NO_EXTRAS}) / plain", ratio(lean),
                                  "<=", 1.15))
    jocor, standard = rows.get("jocor_plugin jocor"), rows.get("jocor_plugin standard")
    if jocor is None:
        return out
    out.append(Target(f"{data}: evaluation share of the jocor_plugin JoCoR epoch", jocor.eval / jocor.epoch, "<=", 0.10))
    if standard is not None:
        out.append(Target(f"{data}: JoCoR / Standard epoch (jocor_plugin)", jocor.epoch / standard.epoch, "<=", 2.0))
    return out


LOOP_METHODS = ("jocor", "standard")  # the methods the plain loop implements
# the trainer's optional per-run extras a plain loop lacks (both on by default in the recipes)
NO_EXTRAS = "no label-issue statistics or checkpoints"
NO_EXTRAS_OVERRIDES = ("train.label_issue_epochs=0", "train.keep_checkpoints=0")
# a default run's epochs before the label-issue statistics' window: checkpoints only
BEFORE_WINDOW = "checkpoints, no label-issue statistics (a default run before their window)"


def compare_loops(recipe: str, overrides: list[str], epochs: int, device: torch.device, data: str,
                  authors: bool, methods: tuple[str, ...] = LOOP_METHODS, rounds: int = 2) -> list[Target]:
    """JoCoR and Standard through the trainer and through the plain loop (and, for mnist5k, the
    authors'-style loop), same recipe, noisy labels, batch and epochs."""
    cfg = load_config(recipe, overrides)
    # the part of the recipe's epochs that gathers label-issue statistics; 1 when all timed epochs
    # are the recipe's (the timed run then places the window as the recipe does)
    share = 1.0 if epochs >= cfg.train.epochs else min(cfg.train.label_issue_epochs, cfg.train.epochs) / cfg.train.epochs
    if share < 1 and epochs > cfg.train.label_issue_epochs:
        raise SystemExit(f"{data}: time at most train.label_issue_epochs={cfg.train.label_issue_epochs} epochs (or "
                         f"all {cfg.train.epochs} of the recipe), so that every timed default epoch gathers statistics.")
    splits = build_noisy_splits(cfg)
    tensors = as_tensors(splits, device)
    rows: dict[str, Epochs] = {}
    spread: list[str] = []
    if authors:
        rows["authors'-style JoCoR"] = authors_epochs(splits, cfg, epochs, device)
    for method in methods:
        loops = {f"plain loop {method}": partial(plain_epochs, tensors, cfg, method, epochs, device),
                 f"jocor_plugin {method}": partial(trainer_epochs, recipe, [*overrides, f"method.name={method}"], epochs)}
        # what the plain loop does too: no per-sample statistics, no checkpoints (as the grids run)
        loops[f"jocor_plugin {method}, {NO_EXTRAS}"] = partial(
            trainer_epochs, recipe, [*overrides, f"method.name={method}", *NO_EXTRAS_OVERRIDES], epochs)
        if share < 1:  # fewer epochs timed than the recipe has: each one gathers statistics
            loops[f"jocor_plugin {method}, {BEFORE_WINDOW}"] = partial(
                trainer_epochs, recipe, [*overrides, f"method.name={method}", "train.label_issue_epochs=0"], epochs)
        # each loop once per round, every other round in reverse order (A B C C B A ...), so that a
        # drift of the machine's speed during the run weighs on every loop alike; the median round
        # (the mean of the middle two for an even count) stands for each loop
        order = [name for r in range(rounds) for name in (loops if r % 2 == 0 else reversed(loops))]
        timed: dict[str, list[Epochs]] = {name: [] for name in loops}
        for name in order:
            timed[name].append(loops[name]())
        rows.update({name: Epochs(*(statistics.median(v) for v in zip(*(astuple(e)[:-1] for e in runs))),
                                  min(e.fastest for e in runs)) for name, runs in timed.items()})
        plain = timed[f"plain loop {method}"]
        per_round = {f"{name} / plain loop": [a.epoch / b.epoch for a, b in zip(runs, plain)]
                     for name, runs in timed.items() if runs is not plain}
        if share < 1:
            inside, before = timed[f"jocor_plugin {method}"], timed[f"jocor_plugin {method}, {BEFORE_WINDOW}"]
            per_round[f"jocor_plugin {method}, defaults over the whole recipe / plain loop"] = [
                whole_recipe(a.epoch, b.epoch, share) / p.epoch for a, b, p in zip(inside, before, plain)]
        for name, ratios in per_round.items():  # the spread between rounds: how far one round's ratio can be trusted
            spread.append(f"{name}, epoch, per round: {', '.join(f'{r:.2f}' for r in ratios)} "
                          f"(median {statistics.median(ratios):.2f})")
    print(f"\n## {data}: {epochs} epochs, per-epoch medians and the fastest epoch (sym 50 %, jocor_mlp, batch {cfg.train.batch_size})\n\n"
          f"{epochs_table(rows, epochs)}\n\n" + "\n".join(f"- {line}" for line in spread))
    targets = versus_plain(rows, data, share)
    if authors and "jocor" in methods:
        targets.append(Target(f"{data}: JoCoR epoch, authors'-style / jocor_plugin",
                              rows["authors'-style JoCoR"].epoch / rows["jocor_plugin jocor"].epoch, ">=", 6.0))
    return targets


@dataclass
class Target:
    """One printed ratio, with its target when it has one."""

    name: str
    value: float
    op: str = ""
    bound: Optional[float] = None

    @property
    def met(self) -> str:
        if self.bound is None:
            return ""
        return "yes" if (self.value <= self.bound if self.op == "<=" else self.value >= self.bound) else "**no**"

    def row(self) -> str:
        target = f"{self.op} {self.bound:g}" if self.bound is not None else ""
        return f"| {self.name} | {self.value:.2f} | {target} | {self.met} |"


def print_targets(targets: list[Target]) -> None:
    print("\n## Ratios\n\n| ratio | measured | target | met |\n|---|---|---|---|")
    for target in targets:
        print(target.row())


if __name__ == "__main__":
    main()
