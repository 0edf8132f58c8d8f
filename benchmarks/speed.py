"""Speed of JoCoR, measured side by side in one run.

1. Step time of JoCoR / step time of standard training (same backbone, batch and device) for the
   paper's MLP, its 7-layer CNN and timm's resnet18. Target: <= 2.1x on CPU, <= 1.5x on a GPU (the
   second network should be the only real extra cost).
2. Optional batched pair: both networks as one ``torch.func`` vmapped computation against two
   sequential forwards (kept in the trainer only where it is faster).
3. End to end: samples/s of JoCoR epochs on mnist5k through ``jocor_plugin.run`` against a loop
   written the way the authors' code trains (per-sample ``ToTensor`` dataset, default DataLoader,
   losses argsorted with numpy on the host, accuracy read every step), same model, batch, noisy
   labels and schedule. Target: >= 3x faster at the same accuracy.

    python benchmarks/speed.py [--device cuda] [--batch-size 128] [--epochs 10]
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from typing import Callable

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

import jocor_plugin  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)
from jocor_plugin.config import load_config
from jocor_plugin.data import build_noisy_splits
from jocor_plugin.methods import create_method
from jocor_plugin.models import create_pair
from jocor_plugin.run import train
from jocor_plugin.schedule import apply_optim_schedule, forget_rate_at

BACKBONES = {  # name: (in_chans, image size)
    "jocor_mlp": (1, 28),
    "jocor_cnn": (3, 32),
    "resnet18": (3, 32),
}
NUM_CLASSES = 10
PARTS = ["steps", "vmap", "e2e"]
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


def reference_epochs(splits, cfg, epochs: int, device: torch.device) -> tuple[float, float]:
    """The authors' way: PIL -> ToTensor per sample, default DataLoader, numpy argsort on the host,
    per-step accuracy on the host; their lr/beta1 and forget-rate plans. Returns (samples/s of
    training, test accuracy of net a averaged over the last epochs)."""
    from torchvision import transforms

    images = np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in splits.train["image"]])
    labels = np.asarray(splits.train["label"])
    noisy = np.asarray(splits.train["is_noisy"])
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    class NoisyMNIST(torch.utils.data.Dataset):  # as the authors' data/mnist.py
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i):
            from PIL import Image

            return to_tensor(Image.fromarray(images[i], mode="L")), int(labels[i]), i

    loader = torch.utils.data.DataLoader(NoisyMNIST(), batch_size=cfg.train.batch_size, shuffle=True,
                                         drop_last=True)
    pair = create_pair(cfg.model.name, num_classes=NUM_CLASSES, in_chans=1, seed=cfg.train.seed).to(device)
    optimizer = torch.optim.Adam(pair.parameters(), lr=cfg.optim.lr)
    co_lambda, train_time, seen, accuracies = cfg.method.co_lambda, 0.0, 0, []
    for epoch in range(epochs):
        forget_rate = forget_rate_at(epoch, cfg.forget_rate, cfg.method)
        apply_optim_schedule(optimizer, epoch, epochs, cfg.optim)
        pair.train()
        start = time.perf_counter()
        for x, y, ind in loader:
            x, y = x.to(device), y.to(device)
            logits_1, logits_2 = pair(x)
            _ = (logits_1.argmax(1) == y).float().mean().item()  # the authors' per-step accuracy()
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
            seen += len(y)
        synchronize(device)
        train_time += time.perf_counter() - start
        accuracies.append(reference_accuracy(pair.net_a, splits.test, to_tensor, device))
    return seen / train_time, statistics.mean(accuracies[-LAST_EPOCHS:])


@torch.no_grad()
def reference_accuracy(net, test, to_tensor, device) -> float:
    net.eval()
    x = torch.stack([to_tensor(im.convert("L")) for im in test["image"]]).to(device)
    return 100.0 * float((net(x).argmax(1).cpu() == torch.as_tensor(test["label"])).float().mean())


def ours_epochs(overrides: list[str], epochs: int) -> tuple[float, float]:
    """(samples/s of training, test accuracy of net a over the last epochs) through the real trainer."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config("recipes/mnist5k_sym50.yaml", [*overrides, f"train.epochs={epochs}",
                                                          f"train.output_dir={out}", "train.export_models=false",
                                                          "train.keep_checkpoints=0", "log.progress_bar=false"])
        results = train(cfg)
    train_time = sum(r["train_time_s"] for r in results["epochs"])
    samples = results["num_train"] // cfg.train.batch_size * cfg.train.batch_size * epochs
    return samples / train_time, statistics.mean(r["test_acc_a"] for r in results["epochs"][-LAST_EPOCHS:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the end-to-end comparison "
                        "(60: the whole mnist5k_sym50 recipe)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS, help="which comparisons to run")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# benchmarks/speed.py on {where}, torch {torch.__version__}, batch {args.batch_size}\n")

    if "steps" in args.parts:
        step_times(args.batch_size, args.iters, device)
    if "vmap" in args.parts:
        pair_forward_times(args.batch_size, args.iters, device)
    if "e2e" in args.parts:
        end_to_end(args.batch_size, args.epochs, device)


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


def end_to_end(batch_size: int, epochs: int, device: torch.device) -> None:
    overrides = [f"train.batch_size={batch_size}"]
    cfg = load_config("recipes/mnist5k_sym50.yaml", overrides)
    ref_speed, ref_acc = reference_epochs(build_noisy_splits(cfg), cfg, epochs, device)
    our_speed, our_acc = ours_epochs(overrides, epochs)
    print(f"\n## End to end: {epochs} JoCoR epochs on mnist5k (sym 50 %, jocor_mlp)\n\n"
          f"| loop | train samples/s | test acc of net a, mean of the last {LAST_EPOCHS} epochs |\n|---|---|---|\n"
          f"| authors'-style reference | {ref_speed:,.0f} | {ref_acc:.2f} % |\n"
          f"| jocor_plugin | {our_speed:,.0f} | {our_acc:.2f} % |\n\n"
          f"jocor_plugin / reference: {our_speed / ref_speed:.1f}x samples/s")


if __name__ == "__main__":
    main()
