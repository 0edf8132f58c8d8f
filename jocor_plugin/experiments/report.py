"""The paper-style report of a reproduction grid (``jocor_plugin.reproduce``), from its results.json files.

* ``report.md``: a table laid out like the paper's Table 2 (rows = methods, columns = noise
  settings, mean ± std over seeds of ``summary.test_acc_last10``, best per column in bold, in italics
  the cells the seeds do not separate from it), each method's difference from JoCoR with Welch's
  t-test, the paper's figures beside ours where the grid names the paper's dataset, the final label
  precision, and the lambda study;
* ``curves.png``: test accuracy and label precision vs epoch, one curve per method (mean over
  seeds), one panel per noise setting (the paper's Figures 3-6); ``ablation.png`` the same for the
  ablation methods (Figure 7); ``lambda.png`` the lambda study (appendix Figure 9);
  ``figure.png`` the paper's Figures 3/5 (Standard, Co-teaching, Co-teaching+, JoCoR, and DivideMix
  when the grid has it);
* ``runs/<setting>/<method>/seed<k>/results.json``: each finished run's results without the bulk
  (rounded per-epoch records, summary, config), small enough to commit. The report is always written
  from these copies, so a clone without the run folders regenerates it with ``--report-only``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ..core.results import read_results
from ..noise.types import NOISE_TYPES
from .report_plots import METHOD_LABELS, plot_curves, plot_lambda

if TYPE_CHECKING:
    from .grid import Grid, GridRun

__all__ = ["Cell", "aggregate", "mean_std", "welch_p", "separated", "format_cell", "markdown_table", "separation_table",
           "write_summary_table", "median_epoch_s", "run_minutes", "paper_setting", "PAPER_TABLES", "METHOD_LABELS",
           "write_report", "plot_curves", "plot_lambda"]

logger = logging.getLogger(__name__)

# The paper's Tables 2-4: mean test accuracy of the last 10 epochs, (mean, std) over 5 runs.
_P = ("Symmetry-20%", "Symmetry-50%", "Symmetry-80%", "Asymmetry-40%")
PAPER_TABLES: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "mnist": {  # Table 2
        "standard": dict(zip(_P, [(79.56, 0.44), (52.66, 0.43), (23.43, 0.31), (79.00, 0.28)])),
        "fcorrection": dict(zip(_P, [(95.38, 0.10), (92.74, 0.21), (72.96, 0.90), (89.77, 0.96)])),
        "decoupling": dict(zip(_P, [(93.16, 0.11), (69.79, 0.52), (28.51, 0.65), (81.84, 0.38)])),
        "coteaching": dict(zip(_P, [(95.10, 0.16), (89.82, 0.31), (79.73, 0.35), (90.28, 0.27)])),
        "coteaching_plus": dict(zip(_P, [(97.81, 0.03), (95.80, 0.09), (58.92, 14.73), (93.28, 0.43)])),
        "jocor": dict(zip(_P, [(98.06, 0.04), (96.64, 0.12), (84.89, 4.55), (95.24, 0.10)])),
    },
    "cifar10": {  # Table 3
        "standard": dict(zip(_P, [(69.18, 0.52), (42.71, 0.42), (16.24, 0.39), (69.43, 0.33)])),
        "fcorrection": dict(zip(_P, [(68.74, 0.20), (42.19, 0.60), (15.88, 0.42), (70.60, 0.40)])),
        "decoupling": dict(zip(_P, [(69.32, 0.40), (40.22, 0.30), (15.31, 0.43), (68.72, 0.30)])),
        "coteaching": dict(zip(_P, [(78.23, 0.27), (71.30, 0.13), (26.58, 2.22), (73.78, 0.22)])),
        "coteaching_plus": dict(zip(_P, [(78.71, 0.34), (57.05, 0.54), (24.19, 2.74), (68.84, 0.20)])),
        "jocor": dict(zip(_P, [(85.73, 0.19), (79.41, 0.25), (27.78, 3.06), (76.36, 0.49)])),
    },
    "cifar100": {  # Table 4
        "standard": dict(zip(_P, [(35.14, 0.44), (16.97, 0.40), (4.41, 0.14), (27.29, 0.25)])),
        "fcorrection": dict(zip(_P, [(37.95, 0.10), (24.98, 1.82), (2.10, 2.23), (25.94, 0.44)])),
        "decoupling": dict(zip(_P, [(33.10, 0.12), (15.25, 0.20), (3.89, 0.16), (26.11, 0.39)])),
        "coteaching": dict(zip(_P, [(43.73, 0.16), (34.96, 0.50), (15.15, 0.46), (28.35, 0.25)])),
        "coteaching_plus": dict(zip(_P, [(49.27, 0.03), (40.04, 0.70), (13.44, 0.37), (33.62, 0.39)])),
        "jocor": dict(zip(_P, [(53.01, 0.04), (43.49, 0.46), (15.49, 0.98), (32.70, 0.35)])),
    },
}
PAPER_TABLE_NUMBER = {"mnist": 2, "cifar10": 3, "cifar100": 4}
REFERENCE_METHOD = "jocor"  # the method every other is tested against
ABLATION = ("standard_plus", "coteaching", "joint_only", "jocor")  # the paper's Figure 7
FIGURE = ("standard", "coteaching", "coteaching_plus", "jocor", "dividemix")  # the paper's Figures 3/5
# Two cells count as separated when Welch's two-sided t-test over their seeds gives p below this
# (both need >= 2 seeds; with 3 a side the test is weak: only clear gaps pass).
SEPARATION_ALPHA = 0.05
ARCHIVE_DIGITS = 5  # per-epoch figures kept in the committed copies (accuracy to 1e-5 %)
EPOCH_KEYS = ("epoch", "lr", "forget_rate", "train_loss", "selected_fraction", "label_precision",
              "label_precision_a", "label_precision_b", "test_acc_a", "test_acc_b", "test_acc_ensemble",
              "val_acc_a", "val_acc_b", "epoch_time_s", "train_time_s")


@dataclass
class Cell:
    """One (method, setting) of the table: the finished runs' values over seeds."""

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> Optional[float]:
        return mean_std(self.values)[0]

    @property
    def std(self) -> Optional[float]:
        return mean_std(self.values)[1]


def mean_std(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof = 1; None for one value)."""
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def welch_p(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) between two cells' seeds; None when
    either has fewer than 2 values. Two constant cells: 1.0 when equal, 0.0 when not."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread on either side: the t statistic is undefined
        return 1.0 if math.isclose(float(np.mean(a)), float(np.mean(b))) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def separated(a: "Cell", b: "Cell", alpha: float = SEPARATION_ALPHA) -> Optional[bool]:
    """Whether the seeds separate two cells (Welch p < alpha); None when untestable (n < 2)."""
    p = welch_p(a.values, b.values)
    return None if p is None else p < alpha


def aggregate(runs: Sequence["GridRun"], key: str = "test_acc_last10", scale: float = 1.0
              ) -> dict[tuple[str, str], Cell]:
    """(method, setting) -> the finished runs' ``summary[key] * scale`` over seeds."""
    cells: dict[tuple[str, str], Cell] = {}
    for run in runs:
        results = read_results(run.out)
        value = results.get("summary", {}).get(key)
        cell = cells.setdefault((run.method, run.setting), Cell())
        # NaN: e.g. the label precision of an epoch in which the method selected no sample
        if results.get("finished") and value is not None and math.isfinite(value):
            cell.values.append(float(value) * scale)
            cell.seeds.append(run.seed)
    return cells


def format_cell(cell: Optional[Cell], bold: bool = False, n_expected: Optional[int] = None,
                italic: bool = False) -> str:
    """``96.64 ± 0.12``; ``**...**`` when bold, ``*...*`` when italic; ``(n=2)`` when seeds are
    missing; ``–`` when empty."""
    if cell is None or cell.mean is None:
        return "–"
    text = f"{cell.mean:.2f} ± {cell.std:.2f}" if cell.std is not None else f"{cell.mean:.2f}"
    if bold:
        text = f"**{text}**"
    elif italic:
        text = f"*{text}*"
    if n_expected is not None and len(cell.values) != n_expected:
        text += f" (n={len(cell.values)})"
    return text


def _header(corner: str, settings: Sequence[str]) -> list[str]:
    return ["| " + " | ".join([corner, *settings]) + " |", "|" + "---|" * (len(settings) + 1)]


def _best_cells(column: Sequence[Cell]) -> list[Cell]:
    """The cells of a column with the highest mean (ties: all); none when no cell has a value."""
    means = [c.mean for c in column if c.mean is not None]
    if not means:
        return []
    return [c for c in column if c.mean is not None and math.isclose(c.mean, max(means), abs_tol=1e-9)]


def markdown_table(cells: dict[tuple[str, str], Cell], methods: Sequence[str], settings: Sequence[str],
                   n_expected: Optional[int] = None, bold_best: bool = True,
                   extra_rows: Sequence[tuple[str, Sequence[str]]] = (), corner: str = "Method",
                   labels: Optional[dict[str, str]] = None, italic_ties: bool = False) -> str:
    """Rows = methods, columns = settings; the best mean of each column in bold (ties: all). With
    ``italic_ties``, in italics the cells Welch's t-test does not separate from a bold one."""
    best_cells = {s: _best_cells([cells[(m, s)] for m in methods if (m, s) in cells]) for s in settings}
    lines = _header(corner, settings)
    for m in methods:
        row = [(labels or METHOD_LABELS).get(m, METHOD_LABELS.get(m, m))]
        for s in settings:
            cell = cells.get((m, s))
            is_best = bold_best and any(cell is b for b in best_cells[s])
            tie = italic_ties and cell is not None and cell.mean is not None and not is_best and any(
                separated(cell, b) is False for b in best_cells[s])
            row.append(format_cell(cell, is_best, n_expected, italic=tie))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["| " + " | ".join([label, *values]) + " |" for label, values in extra_rows]
    return "\n".join(lines)


def separation_table(cells: dict[tuple[str, str], Cell], reference: str, methods: Sequence[str],
                     settings: Sequence[str], labels: Optional[dict[str, str]] = None) -> str:
    """Rows = the other methods, columns = settings: each method's mean minus ``reference``'s, in
    points, and Welch's p; in bold where the seeds separate them (p < SEPARATION_ALPHA); ``n < 2``
    where a side has one seed, so nothing can be said."""
    lines = _header(f"vs {(labels or METHOD_LABELS).get(reference, reference)}", settings)
    for m in methods:
        if m == reference:
            continue
        row = [(labels or METHOD_LABELS).get(m, m)]
        for s in settings:
            cell, ref = cells.get((m, s)), cells.get((reference, s))
            if cell is None or ref is None or cell.mean is None or ref.mean is None:
                row.append("–")
                continue
            p = welch_p(cell.values, ref.values)
            text = f"{cell.mean - ref.mean:+.2f}"
            if p is None:
                row.append(f"{text} (n < 2)")
            else:
                p_text = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
                row.append(f"**{text}** ({p_text})" if p < SEPARATION_ALPHA else f"{text} ({p_text})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paper_setting(results: dict[str, Any]) -> Optional[str]:
    """The paper's column name for a run's noise (``Symmetry-50%``), or None (e.g. pairflip)."""
    noise = results.get("noise", {})
    kind = NOISE_TYPES.get(noise.get("type"))  # the type's own label (noise_types registry)
    return kind.paper_setting(noise["rate"]) if kind else None


def _setting_columns(grid: "Grid", runs: Sequence["GridRun"]) -> dict[str, Optional[str]]:
    """Grid setting -> the paper's column, from the noise the recipe + the setting resolve to (not a
    run's own overrides: a method's arguments need its name, which the runner adds)."""
    from ..config import load_config

    columns: dict[str, Optional[str]] = {}
    for setting in dict.fromkeys(run.setting for run in runs):  # each once, in the runs' order
        noise = load_config(grid.recipe, [*grid.overrides, *grid.settings[setting]]).noise
        columns[setting] = paper_setting({"noise": {"type": noise.type, "rate": noise.rate}})
    return columns


# ----------------------------------------------------------------------------- committed copies

def _rounded(value: Any) -> Any:
    return round(value, ARCHIVE_DIGITS) if isinstance(value, float) and math.isfinite(value) else value


def slim_results(results: dict[str, Any]) -> dict[str, Any]:
    """A finished run's results.json without what the report doesn't read (checkpoints, exported
    paths, label-issue tables), its per-epoch figures rounded: ~20 KB for 200 epochs."""
    keep = {k: results[k] for k in ("config", "noise", "num_train", "num_test", "num_processes", "finished",
                                    "forget_rate", "summary") if k in results}
    keep["epochs"] = [{k: _rounded(e[k]) for k in EPOCH_KEYS if k in e} for e in results.get("epochs", [])]
    matrix = results.get("transition_matrix") or {}
    if matrix:  # F-correction: the estimate's quality and its first stage's cost
        seconds = (sum(e.get("epoch_time_s", 0.0) for e in matrix["estimation_epochs"])
                   if "estimation_epochs" in matrix else matrix.get("estimation_time_s"))  # already slim: as is
        keep["transition_matrix"] = {"error": matrix.get("error"), "estimation_time_s": seconds}
    return keep


def archive_path(report_dir: Path, run: "GridRun") -> Path:
    return report_dir / "runs" / run.setting / run.method.replace("@lambda=", "_lambda") / f"seed{run.seed}"


def archived_runs(report_dir: Path, runs: Sequence["GridRun"]) -> list["GridRun"]:
    """``runs`` as seen through their committed copies: each finished run folder is copied (slim)
    into ``report_dir/runs``; runs whose folder is gone (a fresh clone) keep their earlier copy."""
    views = []
    for run in runs:
        archive = archive_path(report_dir, run)
        results = read_results(run.out)
        if results.get("finished"):
            archive.mkdir(parents=True, exist_ok=True)
            (archive / "results.json").write_text(json.dumps(slim_results(results), indent=0) + "\n")
        views.append(dataclasses.replace(run, out=archive))
    return views


def median_epoch_s(results: dict[str, Any]) -> Optional[float]:
    """A finished run's median epoch in seconds (evaluation included), or None. The median, so that
    an epoch stretched by a pause (a suspended process, a neighbour's burst) does not count."""
    epochs = results.get("epochs") or []
    if not results.get("finished") or not epochs or "epoch_time_s" not in epochs[0]:
        return None
    return statistics.median(e["epoch_time_s"] for e in epochs)


def run_minutes(results: dict[str, Any]) -> Optional[float]:
    """Training time of a finished run in minutes: its median epoch times its number of epochs, plus
    F-correction's first stage; set-up (data loading) is not counted."""
    median = median_epoch_s(results)
    if median is None:
        return None
    extra = (results.get("transition_matrix") or {}).get("estimation_time_s") or 0.0
    return (median * len(results["epochs"]) + extra) / 60.0


def minutes_left(runs: Sequence["GridRun"], epochs: dict[Path, int], report_dir: Path,
                 pace_from: Sequence["GridRun"] = ()) -> tuple[float, int]:
    """Training still to go for ``runs``, in minutes one run after another: each unfinished run's
    remaining epochs (of ``epochs[run.out]``) times the median epoch of its method's finished runs
    among ``runs`` and ``pace_from`` (their folders', else the copies beside the report), at the
    pace they ran. Returns the minutes and how many unfinished runs have no finished run of their
    method to go by (not counted)."""
    own = {run.out: read_results(run.out) for run in [*runs, *pace_from]}  # a run given twice is read once
    seconds: dict[str, dict[Path, float]] = {}
    for run in [*runs, *pace_from]:
        results = own[run.out] if own[run.out].get("finished") else read_results(archive_path(report_dir, run))
        median = median_epoch_s(results)
        if median is not None:
            seconds.setdefault(run.method, {})[run.out] = median
    total, unknown = 0.0, 0
    for run in runs:
        results = own[run.out]
        if results.get("finished"):
            continue
        if run.method not in seconds:
            unknown += 1
            continue
        done = len(results.get("epochs") or [])
        total += max(epochs[run.out] - done, 0) * statistics.mean(seconds[run.method].values()) / 60.0
    return total, unknown


def time_table(runs: Sequence["GridRun"], methods: Sequence[str], settings: Sequence[str],
               titles: dict[str, str]) -> str:
    """Mean training minutes per run, rows = methods, columns = settings, with the seed count."""
    cells: dict[tuple[str, str], Cell] = {}
    for run in runs:
        results = read_results(run.out)
        minutes = run_minutes(results)
        if minutes is not None:
            cell = cells.setdefault((run.method, titles[run.setting]), Cell())
            cell.values.append(minutes)
            cell.seeds.append(run.seed)
    lines = _header("Method", [titles[s] for s in settings])
    for m in methods:
        row = []
        for s in settings:
            cell = cells.get((m, titles[s]))
            row.append("–" if cell is None else f"{np.mean(cell.values):.1f} (n={len(cell.values)})")
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the report

def write_report(grid: "Grid", runs: Sequence["GridRun"]) -> Path:
    """Write ``report.md`` and the PNGs into ``grid.report_dir``; return the report's path."""
    out = grid.report_dir
    out.mkdir(parents=True, exist_ok=True)
    runs = archived_runs(out, runs)
    main_runs = [r for r in runs if "@" not in r.method]
    methods, settings = list(grid.methods), list(grid.settings)
    columns = _setting_columns(grid, main_runs)
    titles = {s: f"{s} ({columns[s]})" if columns.get(s) else s for s in settings}
    n = len(grid.seeds)
    acc = aggregate(main_runs)
    finished = sum(1 for r in runs if read_results(r.out).get("finished"))
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731  (links that work from report.md's folder)

    lines = [f"# {grid.title}", ""]
    lines += [f"Generated by `python -m jocor_plugin.reproduce {grid.path}` from {finished} of {len(runs)} "
              f"finished runs (base recipe `{grid.recipe}`; seeds {', '.join(map(str, grid.seeds))}); each "
              f"run's results are in `{rel(out / 'runs')}/`.", ""]
    epoch_times = [median_epoch_s(read_results(r.out)) for r in runs]
    epoch_times = [t for t in epoch_times if t is not None]
    if epoch_times:
        host = f"{platform.machine()}, {os.cpu_count()} CPU core(s)"
        lines += [f"Measured on {host}; median epoch time over the finished runs "
                  f"{statistics.median(epoch_times):.2f} s (each run's median epoch, training and evaluation; "
                  "per method below).", ""]
    if grid.notes:
        lines += [grid.notes, ""]

    lines += ["## Test accuracy", "",
              "Mean test accuracy (%) over the last 10 epochs (both networks' mean for two-network "
              f"methods), mean ± std (sample std) over {n} seed(s); best per column in **bold**, in *italics* "
              "the cells Welch's t-test over the seeds does not separate from it "
              f"(p ≥ {SEPARATION_ALPHA:g}; both cells need n ≥ 2, so a cell with one seed is never italic).", ""]
    header = [titles[s] for s in settings]
    extra = []
    paper = PAPER_TABLES.get(grid.paper or "")
    if paper:
        number = PAPER_TABLE_NUMBER[grid.paper]
        extra.append((f"*JoCoR, paper Table {number}*",
                      [f"*{paper['jocor'][columns[s]][0]:.2f} ± {paper['jocor'][columns[s]][1]:.2f}*"
                       if columns.get(s) in paper["jocor"] else "–" for s in settings]))
    titled = {(m, titles[s]): c for (m, s), c in acc.items()}
    table = markdown_table(titled, methods, header, n, extra_rows=extra, italic_ties=True)
    lines += [table, ""]
    if grid.summary_table is not None:
        plain_titles = {s: columns.get(s) or s for s in settings}
        summary = markdown_table({(m, plain_titles[s]): c for (m, s), c in acc.items()}, methods,
                                 [plain_titles[s] for s in settings], n, extra_rows=extra, italic_ties=True)
        write_summary_table(*grid.summary_table, summary + f"\n\n*{finished} of {len(runs)} runs finished; written "
                            f"by `python -m jocor_plugin.reproduce {grid.path}`.*")
    if REFERENCE_METHOD in methods:
        lines += [f"## Do the seeds separate each method from {METHOD_LABELS[REFERENCE_METHOD]}?", "",
                  f"Each method's test_acc_last10 minus {METHOD_LABELS[REFERENCE_METHOD]}'s (points; negative: "
                  f"below it) and the two-sided p of Welch's t-test over their seeds; in **bold** where "
                  f"p < {SEPARATION_ALPHA:g}, i.e. the seeds separate the two. With 3 seeds a side the test only "
                  "passes clear gaps: a difference that is not bold is not shown to be real, nor shown to be "
                  "absent.", "",
                  separation_table(titled, REFERENCE_METHOD, methods, header), ""]
    if paper:
        lines += [f"*JoCoR, paper Table {PAPER_TABLE_NUMBER[grid.paper]}*: {grid.paper_note}".strip(), ""]

    precision = aggregate(main_runs, "final_label_precision", 100.0)
    selects = {}
    for r in main_runs:
        last = (read_results(r.out).get("epochs") or [{}])[-1]
        if "selected_fraction" in last:
            selects[r.method] = selects.get(r.method, False) or last["selected_fraction"] < 0.999
    lines += ["## Label precision", "",
              "Label precision (%) at the last epoch: the fraction of clean labels among the samples the "
              "method trained on (mean ± std over seeds; best per column in **bold**). Methods marked ° "
              "train on every sample, so theirs is just the clean fraction of the noisy training set. "
              "Decoupling and Co-teaching+ train on the samples their networks disagree on, which can be "
              "a handful (or none: that seed is left out, n < seeds) by the last epoch.", ""]
    marked = {m: METHOD_LABELS.get(m, m) + ("" if selects.get(m, True) else " °") for m in methods}
    lines += [markdown_table({(m, titles[s]): c for (m, s), c in precision.items()}, methods, header, n,
                             labels=marked), ""]

    if paper:
        lines += [f"## The paper's Table {PAPER_TABLE_NUMBER[grid.paper]}", "", grid.paper_note, ""]
        paper_cols = [c for c in (columns.get(s) for s in settings) if c]
        lines += _header("Method", paper_cols)
        for m, row in paper.items():
            lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(
                f"{row[c][0]:.2f} ± {row[c][1]:.2f}" if c in row else "–" for c in paper_cols) + " |")
        lines.append("")

    images = []
    figure = [m for m in FIGURE if m in methods]
    if len(figure) >= 2:
        path = plot_curves(main_runs, figure, settings, out / "figure.png", titles)
        if path:
            images.append((f"{', '.join(METHOD_LABELS.get(m, m) for m in figure)}: test accuracy (top) and "
                           "label precision (bottom) vs epoch, mean over seeds (the paper's Figures 3 and 5)", path))
    curves = plot_curves(main_runs, methods, settings, out / "curves.png", titles)
    if curves:
        images.append(("Test accuracy (top) and label precision (bottom) vs epoch, mean over seeds "
                       "(the paper's Figures 3-6)", curves))
    ablation = [m for m in ABLATION if m in methods]
    if len(ablation) >= 2:
        abl_settings = [s for s in settings if columns.get(s) == "Symmetry-50%"] or settings[:1]
        path = plot_curves(main_runs, ablation, abl_settings, out / "ablation.png", titles)
        if path:
            images.append(("Ablation: Standard+, Co-teaching, Joint-only and JoCoR (the paper's Figure 7)", path))

    lambda_runs = _lambda_runs(grid, runs)
    if lambda_runs:
        lam_settings = grid.lambda_settings
        cells = {}
        for v, rs in lambda_runs.items():
            for (m, s), c in aggregate(rs).items():
                cells[(f"λ = {v:g}", titles[s])] = c
        lines += ["## λ sensitivity", "",
                  f"JoCoR's test_acc_last10 (%) for λ ∈ {{{', '.join(f'{v:g}' for v in sorted(lambda_runs))}}} "
                  f"(mean ± std over {len(grid.lambda_seeds)} seed(s); best in **bold**, in *italics* the values the "
                  "seeds do not separate from it), as the paper's "
                  "appendix (Figure 9).", ""]
        lines += [markdown_table(cells, [f"λ = {v:g}" for v in sorted(lambda_runs)],
                                 [titles[s] for s in lam_settings], len(grid.lambda_seeds), corner="λ",
                                 italic_ties=True), ""]
        path = plot_lambda(lambda_runs, lam_settings, out / "lambda.png", _lambda_points(lambda_runs, lam_settings),
                           titles)
        if path:
            images.append(("λ sensitivity (the paper's appendix Figure 9)", path))

    lines += ["## Time per run", "",
              "Training minutes per run (the median epoch, evaluation included, times the number of "
              "epochs, plus F-correction's first stage; data set-up not counted), mean over the finished "
              "seeds (n); with `--jobs N` the runs shared the machine's cores N ways.", "",
              time_table(main_runs, methods, settings, titles), ""]

    if images:
        lines += ["## Plots", ""]
        for caption, path in images:
            lines += [f"![{caption}]({rel(path)})", "", f"*{caption}.*", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def write_summary_table(path: Path, marker: str, table: str) -> None:
    """Replace what stands between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``path``."""
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    if not path.is_file():
        logger.warning("summary_table: %s is not found from %s; the table is only in the report.", path, Path.cwd())
        return
    text = path.read_text()
    head, rest = text.split(start, 1)
    path.write_text(head + start + table + "\n" + end + rest.split(end, 1)[1])


def _lambda_runs(grid: "Grid", runs: Sequence["GridRun"]) -> dict[float, list["GridRun"]]:
    """lambda -> its runs (the study's own, and the method's runs whose lambda is in the study)."""
    out: dict[float, list["GridRun"]] = {}
    for run in runs:
        if run.co_lambda is not None and run.setting in grid.lambda_settings and run.seed in grid.lambda_seeds:
            out.setdefault(run.co_lambda, []).append(run)
    return out


def _lambda_points(lambda_runs: dict[float, list["GridRun"]], settings: Sequence[str]
                   ) -> dict[str, list[tuple[float, float, float]]]:
    """setting -> (lambda, mean, std) of test_acc_last10 over the finished seeds, for the plot."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for s in settings:
        for v in sorted(lambda_runs):
            cells = list(aggregate([r for r in lambda_runs[v] if r.setting == s]).values())
            if cells and cells[0].mean is not None:
                points.setdefault(s, []).append((v, cells[0].mean, cells[0].std or 0.0))
    return points
