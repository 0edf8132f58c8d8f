"""The grid report's figures: mean curves over seeds per method and noise setting (the paper's
Figures 3-7) and the lambda study (appendix Figure 9), drawn with matplotlib's Agg backend."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ..core.results import read_results

if TYPE_CHECKING:
    from .grid import GridRun

__all__ = ["mean_curves", "plot_curves", "plot_lambda", "METHOD_LABELS"]

METHOD_LABELS = {"standard": "Standard", "standard_plus": "Standard+", "decoupling": "Decoupling",
                 "coteaching": "Co-teaching", "coteaching_plus": "Co-teaching+", "jocor": "JoCoR",
                 "joint_only": "Joint-only", "fcorrection": "F-correction", "dividemix": "DivideMix",
                 "dividemix_nocrop": "DivideMix, no crop", "elr": "ELR", "sop": "SOP", "gce": "GCE", "sce": "SCE"}


def _epoch_series(results: dict[str, Any], key: str) -> Optional[np.ndarray]:
    epochs = results.get("epochs") or []
    if key == "test_acc":  # both networks' mean, as test_acc_last10
        rows = [[e[k] for k in ("test_acc_a", "test_acc_b") if k in e] for e in epochs]
        return np.array([np.mean(r) for r in rows]) if rows and all(rows) else None
    values = [e.get(key) for e in epochs]
    return np.array(values, dtype=float) if values and None not in values else None


def mean_curves(runs: Sequence["GridRun"], key: str) -> dict[tuple[str, str], np.ndarray]:
    """(method, setting) -> per-epoch mean over the finished seeds of ``key`` ("test_acc" or
    "label_precision" in %)."""
    series: dict[tuple[str, str], list[np.ndarray]] = {}
    for run in runs:
        results = read_results(run.out)
        if not results.get("finished"):
            continue
        values = _epoch_series(results, key)
        if values is not None:
            series.setdefault((run.method, run.setting), []).append(values * (100 if key == "label_precision" else 1))
    out = {}
    for k, items in series.items():
        n = min(len(v) for v in items)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an epoch that is NaN in every seed
            out[k] = np.nanmean([v[:n] for v in items], axis=0)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: Sequence["GridRun"], methods: Sequence[str], settings: Sequence[str], path: Path,
                titles: Optional[dict[str, str]] = None) -> Optional[Path]:
    """Top row test accuracy, bottom row label precision vs epoch; one panel per setting."""
    plt = _pyplot()
    acc, precision = mean_curves(runs, "test_acc"), mean_curves(runs, "label_precision")
    if not any((m, s) in acc for m in methods for s in settings):
        return None
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 6.6), squeeze=False, sharex="col")
    colors = plt.get_cmap("tab10")
    for j, s in enumerate(settings):
        for row, (data, ylabel) in enumerate(((acc, "test accuracy (%)"), (precision, "label precision (%)"))):
            ax = axes[row][j]
            for i, m in enumerate(methods):
                if (m, s) in data:
                    y = data[(m, s)]
                    ax.plot(np.arange(1, len(y) + 1), y, color=colors(i % 10), lw=2.2 if m == "jocor" else 1.3,
                            label=METHOD_LABELS.get(m, m))
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title((titles or {}).get(s) or s)
            else:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(ylabel)
    legend: dict[str, Any] = {}  # from every panel: the first setting may have no finished run yet
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=max(1, min(len(legend), 8)),
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_lambda(lambda_runs: dict[float, list["GridRun"]], settings: Sequence[str], path: Path,
                points: dict[str, list[tuple[float, float, float]]],
                titles: Optional[dict[str, str]] = None) -> Optional[Path]:
    """Left: test_acc_last10 vs lambda, one line per setting (``points``: setting -> (lambda, mean,
    std over seeds)); then test accuracy and label precision vs epoch, one curve per lambda (first
    setting), as Figure 9."""
    plt = _pyplot()
    values = sorted(lambda_runs)
    if not values:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for s in settings:
        pts = points.get(s, [])
        if pts:
            x, y, e = zip(*pts)
            axes[0].errorbar(x, y, yerr=e, marker="o", capsize=3, label=(titles or {}).get(s) or s)
    axes[0].set(xlabel="λ", ylabel="test_acc_last10 (%)", title="JoCoR: λ sensitivity", xticks=values)
    axes[0].grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[1]:
        axes[0].legend(fontsize=8)
    first = settings[0]
    for ax, key, ylabel in ((axes[1], "test_acc", "test accuracy (%)"),
                            (axes[2], "label_precision", "label precision (%)")):
        for v in values:
            curves = mean_curves([r for r in lambda_runs[v] if r.setting == first], key)
            for y in curves.values():
                ax.plot(np.arange(1, len(y) + 1), y, label=f"λ = {v:g}")
        ax.set(xlabel="epoch", ylabel=ylabel, title=(titles or {}).get(first) or first)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
