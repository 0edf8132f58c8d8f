"""``method.forget_rate=auto`` on a user's own image folder with known flips (docs/noise_estimation.md).

Builds image folders from Fashion-MNIST's idx files (Debian's ``dataset-fashion-mnist``, or
``--idx-dir``): ``CLASSES_PER_FOLDER`` classes, ``--per-class`` training images each and a clean
``test/`` folder, with a fraction of the training files moved into a wrong class folder (seeded,
the wrong class uniform among the others). Then trains each model on each folder with
``noise.type=none method.forget_rate=auto train.export_label_issues=true`` (the run knows nothing
of the flips) and prints, per run, the estimated tau against the true fraction of moved files and
the precision / recall of the run's flagged label issues (``label_issues/label_issues.csv``:
``path``, ``is_label_issue``, ``issue_score``) against the moved files; also at the true tau (the
top round(tau N) issue scores), the best the flag rule could do with a perfect estimate.

    python benchmarks/noise_estimation.py --rates 0.1 0.3 0.5 --models mlp cnn --out /tmp/noise_est
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jocor_plugin.data.fashion_mnist import DEBIAN_DIR, FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, read_idx  # noqa: E402

# Four classes, one confusable pair (T-shirt/top vs Pullover), like a small real folder.
CLASSES = (0, 1, 2, 7)  # T-shirt/top, Trouser, Pullover, Sneaker
CLASSES_PER_FOLDER = len(CLASSES)
TEST_PER_CLASS = 250
MODELS = {  # name -> the run's model arguments
    "mlp": ["model.name=jocor_mlp", "data.input_size=28"],  # the paper's MLP
    "cnn": ["model.name=resnet10t", "data.input_size=32"],  # a small timm CNN, minutes on a CPU
}


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"{stem} not found in {folder}; pass --idx-dir.")


def build_folder(out: Path, idx_dir: Path, per_class: int, rate: float, seed: int) -> dict[str, Any]:
    """``out/train/<class>/*.png`` with ``rate`` of the files moved to a wrong class folder and a
    clean ``out/test/``; returns (and writes to ``out.parent/<name>.flips.json``) which files moved."""
    manifest = out.parent / f"{out.name}.flips.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    rng = np.random.default_rng(seed)
    names = [FASHION_MNIST_CLASSES[c].replace("/", "-") for c in CLASSES]
    moved: list[str] = []
    for split, count in (("train", per_class), ("test", TEST_PER_CLASS)):
        images_file, labels_file = FASHION_MNIST_FILES[split]
        images, labels = read_idx(_find_idx(idx_dir, images_file)), read_idx(_find_idx(idx_dir, labels_file))
        picked = [(i, k) for k, c in enumerate(CLASSES) for i in rng.permutation(np.flatnonzero(labels == c))[:count]]
        flips = set(rng.choice(len(picked), int(round(rate * len(picked))), replace=False).tolist()) \
            if split == "train" else set()
        for n, (i, k) in enumerate(picked):
            given = (k + rng.integers(1, CLASSES_PER_FOLDER)) % CLASSES_PER_FOLDER if n in flips else k
            path = out / split / names[given] / f"{split}{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(path)
            if n in flips:
                moved.append(path.name)
    info = {"rate": len(moved) / (per_class * CLASSES_PER_FOLDER), "moved": sorted(moved),
            "num_train": per_class * CLASSES_PER_FOLDER}
    manifest.write_text(json.dumps(info))
    return info


def precision_recall(flagged: set[str], moved: set[str]) -> tuple[float, float]:
    hits = len(flagged & moved)
    return hits / max(len(flagged), 1), hits / max(len(moved), 1)


def evaluate(run_dir: Path, truth: dict[str, Any]) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    estimate = results["forget_rate_estimate"]
    with open(run_dir / "label_issues" / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    moved = set(truth["moved"])
    flagged = {Path(r["path"]).name for r in rows if r["is_label_issue"] == "True"}
    ranked = sorted(rows, key=lambda r: -float(r["issue_score"]))
    at_true = {Path(r["path"]).name for r in ranked[:int(round(truth["rate"] * len(rows)))]}
    precision, recall = precision_recall(flagged, moved)
    precision_true, recall_true = precision_recall(at_true, moved)
    return {"true_rate": truth["rate"], "tau_hat": results["forget_rate"], "error": results["forget_rate"] - truth["rate"],
            "interval": estimate.get("interval"), "anchor_rate": estimate.get("anchor_rate"),
            "stage_epochs": estimate["estimation_epochs"], "best_epoch": estimate.get("best_epoch"),
            "held_out_noisy_acc": estimate.get("held_out_noisy_acc"), "warning": estimate.get("warning"),
            "precision": precision, "recall": recall, "precision_at_true_tau": precision_true,
            "recall_at_true_tau": recall_true, "test_acc_last10": results["summary"].get("test_acc_last10")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--idx-dir", type=Path, default=DEBIAN_DIR)
    parser.add_argument("--out", type=Path, default=Path("outputs/noise_estimation"))
    parser.add_argument("extra", nargs="*", help="more recipe keys for every run (key=value)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    for rate in args.rates:
        folder = args.out / "data" / f"fmnist4_{args.per_class}_flip{int(round(100 * rate))}_s{args.seed}"
        truth = build_folder(folder, args.idx_dir, args.per_class, rate, args.seed)
        for model in args.models:
            run_dir = args.out / "runs" / f"{folder.name}_{model}"
            command = [sys.executable, "-m", "jocor_plugin.run", f"data.path={folder}", "noise.type=none",
                       "method.forget_rate=auto", "train.export_label_issues=true", f"train.epochs={args.epochs}",
                       f"train.seed={args.seed}", f"train.output_dir={run_dir}", "train.overwrite=true",
                       "train.export_models=false", "log.progress_bar=false", "log.tracker=none",
                       *MODELS[model], *args.extra]
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"run failed: {' '.join(command)}")
            row = {"model": model, "flip": rate, **evaluate(run_dir, truth), "seconds": time.perf_counter() - start}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | moved | τ̂ (90 % interval) | abs(τ̂ − τ) | stage epochs (best) | held-out noisy acc | warns "
          "| precision / recall at τ̂ | at true τ | test acc (last 10) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        low, high = r["interval"] or (float("nan"),) * 2
        print(f"| {r['model']} | {r['true_rate']:.3f} | {r['tau_hat']:.3f} ({low:.3f}–{high:.3f}) | {abs(r['error']):.3f} "
              f"| {r['stage_epochs']} ({r['best_epoch']}) | {100 * (r['held_out_noisy_acc'] or float('nan')):.1f} "
              f"| {'yes' if r['warning'] else 'no'} | {r['precision']:.3f} / {r['recall']:.3f} "
              f"| {r['precision_at_true_tau']:.3f} / {r['recall_at_true_tau']:.3f} | {r['test_acc_last10']:.2f} "
              f"| {r['seconds']:.0f} |")
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
