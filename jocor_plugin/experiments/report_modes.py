"""The report's side-by-side of the two ``train.fidelity`` modes (docs/fidelity.md).

A grid's report gains a section "Paper mode vs authors' code" when the grid, or a sibling grid file
``<grid>_authors_code.yaml`` beside it, labels its methods in pairs ``<method>`` (paper mode) and
``<method>_authors`` (``train.fidelity=authors_code``). The section is appended to ``report.md`` by
``python -m jocor_plugin.reproduce`` after the main report, from the sibling grid's committed run
copies (``<its report_dir>/runs``), so it needs no run folders either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .grid import Grid, grid_runs, load_grid
from .report import METHOD_LABELS, aggregate, archived_runs, markdown_table

__all__ = ["AUTHORS_SUFFIX", "modes_grid", "modes_section", "append_modes_section"]

AUTHORS_SUFFIX = "_authors"


def modes_grid(grid: Grid) -> Optional[Grid]:
    """The grid holding the paired runs: ``grid`` itself, its ``*_authors_code.yaml`` sibling, or None."""
    if any(m.endswith(AUTHORS_SUFFIX) for m in grid.methods):
        return grid
    sibling = grid.path.with_name(f"{grid.path.stem}_authors_code{grid.path.suffix}")
    return load_grid(sibling) if sibling.is_file() else None


def modes_section(grid: Grid) -> list[str]:
    """Markdown lines: test_acc_last10 per method (rows) and noise setting x mode (columns)."""
    paired = modes_grid(grid)
    if paired is None:
        return []
    methods = [m for m in paired.methods if f"{m}{AUTHORS_SUFFIX}" in paired.methods]
    if not methods:
        return []
    runs = archived_runs(paired.report_dir, grid_runs(paired))
    acc = aggregate([r for r in runs if "@" not in r.method])
    modes = (("paper", ""), ("authors_code", AUTHORS_SUFFIX))
    columns = [f"{s} {mode}" for s in paired.settings for mode, _ in modes]
    cells = {(m, f"{s} {mode}"): acc[(f"{m}{suffix}", s)]
             for m in methods for s in paired.settings for mode, suffix in modes if (f"{m}{suffix}", s) in acc}
    n = len(paired.seeds)
    return ["## Paper mode vs authors' code", "",
            f"Mean test accuracy (%) of the last 10 epochs, mean ± std over {n} seed(s), with "
            f"`train.fidelity=paper` and `train.fidelity=authors_code` (docs/fidelity.md), from "
            f"`{paired.path}` ({', '.join(paired.overrides[:2])}; its full report is "
            f"`{paired.report_dir}/report.md`).", "",
            markdown_table(cells, methods, columns, n, bold_best=False,
                           labels={m: METHOD_LABELS.get(m, m) for m in methods}), ""]


def append_modes_section(report: Path, grid: Grid) -> None:
    """Add the section to an already written ``report.md`` (nothing when the grid has no pairs)."""
    lines = modes_section(grid)
    if lines:
        report.write_text(report.read_text().rstrip() + "\n\n" + "\n".join(lines).rstrip() + "\n")
