"""The pictures a run writes: ``curves.png`` (every run, from its per-epoch records) and the
label-issue gallery (``label_issues/gallery.png``, with the label-issue export).

Owns only drawing: the records come from the trainer (results.json's ``epochs``), the ranked
samples and their images from ``label_report``. matplotlib with the Agg backend (no display);
the grids' comparison plots are ``experiments.report``'s.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..core.results import test_metric

__all__ = ["CURVES_FILE", "GALLERY_FILE", "GALLERY_SIZE", "plot_run_curves", "write_run_curves", "gallery_rows",
           "plot_gallery"]

logger = logging.getLogger(__name__)

CURVES_FILE = "curves.png"  # in the run's folder
GALLERY_FILE = "gallery.png"  # in the run's label_issues/ folder
GALLERY_SIZE = 36  # tiles in the gallery: the highest issue scores
GALLERY_COLUMNS = 6
_TILE_PIXELS = 96  # images are shrunk to this (a Clothing1M photo needs no more in a 1.5-inch tile)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------- curves.png

def plot_run_curves(records: Sequence[dict[str, Any]], path: Path, title: str = "") -> Optional[Path]:
    """Test accuracy (each network, and the pair's ensemble where the method has one; the
    ``noisy_test_acc`` when the test labels are noisy), label precision and the selected fraction
    per epoch. Keys a run lacks (label precision without clean labels) leave their panel with a
    note; methods that train on every sample show a selected fraction of 1. None without records."""
    if not records:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = np.array([r.get("epoch", i) for i, r in enumerate(records)]) + 1

    def series(key: str) -> Optional[np.ndarray]:
        if not any(key in r for r in records):
            return None
        return np.array([r.get(key, np.nan) for r in records], dtype=float)

    acc = test_metric(records[-1])
    precision = ["label_precision"]
    a, b = series("label_precision_a"), series("label_precision_b")
    if a is not None and b is not None and not np.allclose(a, b, equal_nan=True):
        precision = ["label_precision_a", "label_precision_b", "label_precision"]  # the networks chose differently
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    names = {f"{acc}_a": "network a", f"{acc}_b": "network b", "test_acc_ensemble": "both (ensemble)",
             "label_precision_a": "network a", "label_precision_b": "network b", "label_precision": "selected",
             "selected_fraction": "selected"}
    panels = ((axes[0], f"{acc.replace('_', ' ')} (%)", [f"{acc}_a", f"{acc}_b", "test_acc_ensemble"], 1.0),
              (axes[1], "label precision (%)", precision, 100.0),
              (axes[2], "selected fraction", ["selected_fraction"], 1.0))
    for ax, ylabel, keys, scale in panels:
        drawn = 0
        for key in keys:
            y = series(key)
            if y is None:
                continue
            ax.plot(epochs, y * scale, marker="." if len(epochs) < 20 else None, lw=1.4, label=names[key])
            drawn += 1
        selected = series("selected_fraction")
        if ax is axes[2] and selected is not None and np.nanmin(selected, initial=1.0) < 1.0 \
                and any(r.get("forget_rate", 0) for r in records):  # a method that drops a share of each batch
            tau = np.array([r.get("forget_rate", 0.0) for r in records], dtype=float)
            ax.plot(epochs, 1.0 - tau, color="grey", ls="--", lw=1, label="1 − forget rate")
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "not recorded\n(no clean labels)" if scale == 100.0 else "not recorded",
                    ha="center", va="center", transform=ax.transAxes, color="grey")
        elif drawn > 1:
            ax.legend(fontsize=8)
        if ax is axes[2]:
            ax.set_ylim(-0.02, 1.05)
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.15, top=0.88, wspace=0.22)  # fixed: tight_layout draws twice
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_run_curves(records: Sequence[dict[str, Any]], output_dir: Path, title: str = "") -> Optional[Path]:
    """The end of a run (main process): ``OUTPUT_DIR/curves.png``. A picture that can't be drawn
    is a warning: the run's results are already written."""
    try:
        return plot_run_curves(records, Path(output_dir) / CURVES_FILE, title)
    except Exception as err:  # noqa: BLE001 -- a missing plot must not fail a finished run
        logger.warning("%s not written: %s", Path(output_dir) / CURVES_FILE, " ".join(str(err).split())[:200])
        return None


# ----------------------------------------------------------------------------- gallery.png

def gallery_rows(table: Any, n: int = GALLERY_SIZE) -> np.ndarray:
    """Rows (positions) of the label-issue table to show: the ``n`` highest ``issue_score`` (ties
    in table order), most suspect first; all rows when there are fewer."""
    scores = np.asarray(table["issue_score"], dtype=float)
    return np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:max(int(n), 0)]


def _thumbnail(image: Any) -> tuple[np.ndarray, Optional[str]]:
    """A PIL image (or array) as a small array for ``imshow``, with its colormap."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    image = image.copy()
    image.thumbnail((_TILE_PIXELS, _TILE_PIXELS))
    if image.mode in ("L", "1", "I", "I;16", "F"):
        return np.asarray(image.convert("L")), "gray"
    return np.asarray(image.convert("RGB")), None


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def plot_gallery(images: Sequence[Any], given: Sequence[str], predicted: Sequence[str], scores: Sequence[float],
                 flagged: Sequence[bool], path: Path, title: str = "", note: str = "") -> Path:
    """A grid of tiles, most suspect first: each the image, ``given → predicted`` and the issue
    score; a red frame marks the samples the rule flagged (``is_label_issue``)."""
    plt = _pyplot()
    count = len(images)
    cols = max(1, min(GALLERY_COLUMNS, count))
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= count:
            ax.axis("off")
            continue
        pixels, cmap = _thumbnail(images[i])
        ax.imshow(pixels, cmap=cmap, vmin=0 if cmap else None, vmax=255 if cmap else None)
        ax.set_title(f"{_short(given[i])} → {_short(predicted[i])}\n{scores[i]:.3f}", fontsize=7)
        for spine in ax.spines.values():
            spine.set_edgecolor("red" if flagged[i] else "lightgrey")
            spine.set_linewidth(2 if flagged[i] else 1)
    if not count:
        axes.flat[0].text(0.5, 0.5, "no samples", ha="center", va="center", transform=axes.flat[0].transAxes)
    heading = "\n".join(part for part in (title, note) if part)
    if heading:
        fig.suptitle(heading, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
