"""The report's side-by-side of the two ``train.fidelity`` modes (docs/fidelity.md).

A grid's report gains a section "Paper mode vs authors' code" when the grid, or a sibling grid file
``<grid>_authors_code.yaml`` beside it, labels its methods in pairs ``<method>`` (paper mode) and
``<method>_authors`` (``train.fidelity=authors_code``). The section is appended to ``report.md`` by
``python -m jocor_plugin.reproduce`` after the main report, from the sibling grid's committed run
copies (``<its report_dir>/runs``), so it needs no run folders either. When that grid names
``reference_runs`` (the authors' own code's logs, summarised by ``reference_logs``), each setting gains
a third column with their figures, and a second table sets label precision beside their Pure Ratio.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .grid import Grid, grid_runs, load_grid
from .report import METHOD_LABELS, Cell, aggregate, archived_runs, markdown_table

__all__ = ["AUTHORS_SUFFIX", "modes_grid", "modes_section", "append_modes_section", "reference_cells"]

AUTHORS_SUFFIX = "_authors"


def modes_grid(grid: Grid) -> Optional[Grid]:
    """The grid holding the paired runs: ``grid`` itself, its ``*_authors_code.yaml`` sibling, or None."""
    if any(m.endswith(AUTHORS_SUFFIX) for m in grid.methods):
        return grid
    sibling = grid.path.with_name(f"{grid.path.stem}_authors_code{grid.path.suffix}")
    return load_grid(sibling) if sibling.is_file() else None


def reference_cells(paired: Grid, key: str, scale: float = 1.0) -> dict[tuple[str, str], Cell]:
    """(method, setting) -> the authors' code's ``summary[key] * scale`` over their seeds, or {}."""
    if paired.reference_runs is None:
        return {}
    runs = json.loads(paired.reference_runs.read_text())["runs"]
    cells = {}
    for method, by_setting in runs.items():
        for setting, by_seed in by_setting.items():
            values = [(int(seed), s[key] * scale) for seed, s in sorted(by_seed.items()) if s.get(key) is not None]
            cells[(method, setting)] = Cell(values=[v for _, v in values], seeds=[seed for seed, _ in values])
    return cells


def _mode_table(paired: Grid, runs: list, methods: list[str], key: str, scale: float) -> str:
    """Rows = methods; columns = each setting in paper mode, authors_code and (given) the authors' code."""
    measured = aggregate(runs, key=key, scale=scale)
    theirs = reference_cells(paired, key, scale)
    modes = [("paper", ""), ("authors_code", AUTHORS_SUFFIX)]
    cells = {(m, f"{s} {mode}"): measured[(f"{m}{suffix}", s)]
             for m in methods for s in paired.settings for mode, suffix in modes if (f"{m}{suffix}", s) in measured}
    if theirs:
        modes.append(("their code", None))
        cells.update({(m, f"{s} their code"): theirs[(m, s)] for m in methods for s in paired.settings
                      if (m, s) in theirs})
    columns = [f"{s} {mode}" for s in paired.settings for mode, _ in modes]
    return markdown_table(cells, methods, columns, bold_best=False, labels={m: METHOD_LABELS.get(m, m) for m in methods},
                          n_expected=len(paired.seeds))


def modes_section(grid: Grid) -> list[str]:
    """Markdown lines: test_acc_last10 per method (rows) and noise setting x mode (columns)."""
    paired = modes_grid(grid)
    if paired is None:
        return []
    methods = [m for m in paired.methods if f"{m}{AUTHORS_SUFFIX}" in paired.methods]
    if not methods:
        return []
    runs = [r for r in archived_runs(paired.report_dir, grid_runs(paired)) if "@" not in r.method]
    n = len(paired.seeds)
    lines = ["## Paper mode vs authors' code", "",
             f"Mean test accuracy (%) of the last 10 epochs, mean ± std over {n} seed(s), with "
             f"`train.fidelity=paper` and `train.fidelity=authors_code` (docs/fidelity.md), from "
             f"`{paired.path}` ({', '.join(paired.overrides[:3])}; its full report is "
             f"`{paired.report_dir}/report.md`)."]
    if paired.reference_runs is not None:
        lines[-1] += (f" *their code*: what the authors' own code printed (`{paired.reference_runs}`, from "
                      f"its logs by `jocor_plugin.experiments.reference_logs`), the mean of both networks "
                      f"likewise; a cell over fewer seeds than the grid's says (n=...).")
    lines += ["", _mode_table(paired, runs, methods, "test_acc_last10", 1.0), ""]
    if paired.reference_runs is not None:
        lines += ["Label precision (%) at the last epoch beside the authors' code's last \"Pure Ratio 1\" (the "
                  "clean fraction of what their network 1 kept; Standard keeps every sample, so it is the "
                  "clean fraction of the noisy training set).", "",
                  _mode_table(paired, runs, methods, "final_label_precision", 100.0), ""]
    return lines


def append_modes_section(report: Path, grid: Grid) -> None:
    """Add the section to an already written ``report.md`` (nothing when the grid has no pairs)."""
    lines = modes_section(grid)
    if lines:
        report.write_text(report.read_text().rstrip() + "\n\n" + "\n".join(lines).rstrip() + "\n")
