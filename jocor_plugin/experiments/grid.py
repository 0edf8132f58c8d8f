"""A reproduction grid file (see ``recipes/grids/mnist5k.yaml``): a base recipe, the methods
(each with its own overrides), the noise settings (name -> overrides), the seeds, an output root,
overrides for every run, overrides for one method in one setting (``cells``, e.g. a method's
per-setting hyper-parameter as its paper picks it), an optional lambda study and an optional
``summary_table`` (``FILE#MARKER``: a page the report copies its accuracy table into, between
``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->``); ``grid_runs`` lists its training runs."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import load_config
from ..core.cli import read_yaml_mapping
from ..core.errors import UserError
from ..core.results import read_results

__all__ = ["Grid", "GridRun", "GridError", "load_grid", "grid_runs"]


class GridError(UserError):
    """A grid file this runner cannot use; the message says what to change."""


def _overrides(value: Any, where: str) -> list[str]:
    """Overrides written as ``"a.b=1 c.d=2"``, a list of ``key=value`` strings, or a mapping."""
    if value is None:
        return []
    if isinstance(value, str):
        items = shlex.split(value)
    elif isinstance(value, dict):
        items = [f"{k}={'null' if v is None else v}" for k, v in value.items()]
    elif isinstance(value, list):
        items = [str(v) for v in value]
    else:
        raise GridError(f"{where}: give overrides as 'key=value key=value', a list or a mapping.")
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise GridError(f"{where}: override {item!r} must look like section.key=value.")
    return items


@dataclass
class Grid:
    """A parsed grid file."""

    path: Path
    recipe: str
    methods: dict[str, list[str]]
    settings: dict[str, list[str]]
    seeds: list[int]
    output_dir: Path
    report_dir: Path
    overrides: list[str]
    cells: dict[tuple[str, str], list[str]]  # (method, setting) -> overrides applied last
    lambda_values: list[float]
    lambda_method: str
    lambda_settings: list[str]
    lambda_seeds: list[int]
    paper: Optional[str]
    paper_note: str
    title: str
    notes: str
    reference_runs: Optional[Path] = None  # the authors' code's logs, summarised (experiments.reference_logs)
    summary_table: Optional[tuple[Path, str]] = None  # (file, marker): where the report copies its accuracy table


@dataclass
class GridRun:
    """One training run of the grid: where it writes and what it overrides."""

    setting: str
    method: str  # the grid's method label (a lambda-study run: "<method>@lambda=<v>")
    seed: int
    out: Path
    overrides: list[str]
    co_lambda: Optional[float] = None  # set for the runs of the lambda study

    @property
    def finished(self) -> bool:
        return bool(read_results(self.out).get("finished"))


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise GridError(f"Grid file '{path}' does not exist; see recipes/grids/ for an example.")
    raw = read_yaml_mapping(path, GridError, label=str(path), not_mapping=f"{path}: a grid file is a YAML mapping "
                            f"(recipe, methods, settings, seeds, ...).")
    unknown = set(raw) - {"recipe", "methods", "settings", "seeds", "output_dir", "report_dir", "overrides",
                          "lambda_study", "paper", "paper_note", "title", "notes", "cells", "reference_runs",
                          "summary_table"}
    if unknown:
        raise GridError(f"{path}: unknown key(s) {sorted(unknown)}.")
    for key in ("recipe", "methods", "settings"):
        if not raw.get(key):
            raise GridError(f"{path}: '{key}' is required.")
    methods = raw["methods"]
    if isinstance(methods, list):  # plain names without overrides
        methods = {m: None for m in methods}
    settings = raw["settings"]
    if not isinstance(methods, dict) or not isinstance(settings, dict):
        raise GridError(f"{path}: 'methods' and 'settings' map a name to its overrides.")
    seeds = raw.get("seeds", [1])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise GridError(f"{path}: 'seeds' must be a list of integers, e.g. [1, 2, 3].")
    output_dir = Path(raw.get("output_dir") or Path("outputs/reproduce") / path.stem)
    cells = _cells(raw.get("cells"), methods, settings, path)
    study = raw.get("lambda_study") or {}
    lambda_method = study.get("method", "jocor")
    if study and lambda_method not in methods:
        raise GridError(f"{path}: lambda_study.method={lambda_method!r} is not one of the grid's methods.")
    lambda_settings = study.get("settings") or (list(settings) if study else [])
    missing = [s for s in lambda_settings if s not in settings]
    if missing:
        raise GridError(f"{path}: lambda_study.settings {missing} are not among the grid's settings.")
    return Grid(
        path=path, recipe=str(raw["recipe"]),
        methods={m: _overrides(o, f"{path}: methods.{m}") for m, o in methods.items()},
        settings={s: _overrides(o, f"{path}: settings.{s}") for s, o in settings.items()},
        seeds=seeds, output_dir=output_dir, report_dir=Path(raw.get("report_dir") or output_dir / "report"),
        overrides=_overrides(raw.get("overrides"), f"{path}: overrides"), cells=cells,
        lambda_values=[float(v) for v in study.get("values", [])], lambda_method=lambda_method,
        lambda_settings=lambda_settings, lambda_seeds=list(study.get("seeds") or seeds),
        paper=raw.get("paper"), paper_note=str(raw.get("paper_note") or ""),
        title=str(raw.get("title") or path.stem), notes=str(raw.get("notes") or "").strip(),
        reference_runs=_reference_runs(raw.get("reference_runs"), path),
        summary_table=_summary_table(raw.get("summary_table"), path))


def _summary_table(value: Any, path: Path) -> Optional[tuple[Path, str]]:
    """``summary_table: FILE#MARKER``: the report also writes its accuracy table into FILE between
    ``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->`` (e.g. a results page); the markers are
    checked now, a FILE not found from the working directory is skipped with a warning then."""
    if value is None:
        return None
    file, _, marker = str(value).partition("#")
    if not file or not marker:
        raise GridError(f"{path}: summary_table={value!r} must name a file and a marker, e.g. "
                        f"summary_table: docs/results/README.md#fashion-mnist-table.")
    if not Path(file).is_file():  # relative to the working directory: run from elsewhere, the report says so
        return Path(file), marker
    text = Path(file).read_text()
    if f"<!-- {marker}:start -->" not in text or f"<!-- {marker}:end -->" not in text:
        raise GridError(f"{path}: {file} has no '<!-- {marker}:start -->' ... '<!-- {marker}:end -->' block for "
                        f"summary_table to fill; add the two lines where the table belongs.")
    return Path(file), marker


def _reference_runs(value: Any, path: Path) -> Optional[Path]:
    """The ``reference_runs`` JSON (relative to the working directory, as ``report_dir``), checked now."""
    if value is None:
        return None
    if not Path(str(value)).is_file():
        raise GridError(f"{path}: reference_runs={value!r} is not a file; write it with "
                        f"'python -m jocor_plugin.experiments.reference_logs LOG_DIR {value}'.")
    return Path(str(value))


def _cells(raw: Any, methods: dict, settings: dict, path: Path) -> dict[tuple[str, str], list[str]]:
    """``cells: {method: {setting: overrides}}``: names checked against the grid's."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise GridError(f"{path}: 'cells' maps a method to {{setting: overrides}}, e.g. "
                        f"cells: {{dividemix: {{sym-20: method.kwargs={{lambda_u: 0}}}}}}.")
    cells = {}
    for method, by_setting in raw.items():
        if method not in methods:
            raise GridError(f"{path}: cells.{method} is not one of the grid's methods ({', '.join(methods)}).")
        for setting, overrides in by_setting.items():
            if setting not in settings:
                raise GridError(f"{path}: cells.{method}.{setting} is not one of the grid's settings "
                                f"({', '.join(settings)}).")
            cells[method, setting] = _overrides(overrides, f"{path}: cells.{method}.{setting}")
    return cells


def _co_lambda(overrides: Sequence[str]) -> Optional[float]:
    values = [o.split("=", 1)[1] for o in overrides if o.startswith("method.co_lambda=")]
    return float(values[-1]) if values else None


def grid_runs(grid: Grid) -> list[GridRun]:
    """Every run: methods x settings x seeds, then the lambda study's runs (a lambda that equals the
    method's own reuses its runs instead of training them twice)."""
    runs = [GridRun(s, m, seed, grid.output_dir / s / m / f"seed{seed}",
                    [*grid.overrides, *s_o, *m_o, *grid.cells.get((m, s), [])])
            for s, s_o in grid.settings.items() for m, m_o in grid.methods.items() for seed in grid.seeds]
    if grid.lambda_values:
        base = grid.methods[grid.lambda_method]
        own = _co_lambda(base)
        if own is None:  # the recipe's value
            own = load_config(grid.recipe, [*grid.overrides, *base]).method.co_lambda
        by_key = {(r.setting, r.method, r.seed): r for r in runs}
        for s in grid.lambda_settings:
            for value in grid.lambda_values:
                for seed in grid.lambda_seeds:
                    main_run = by_key.get((s, grid.lambda_method, seed))
                    if main_run is not None and abs(value - own) < 1e-12:
                        main_run.co_lambda = value
                        continue
                    runs.append(GridRun(
                        s, f"{grid.lambda_method}@lambda={value:g}", seed,
                        grid.output_dir / s / f"{grid.lambda_method}_lambda{value:g}" / f"seed{seed}",
                        [*grid.overrides, *grid.settings[s], *base, f"method.co_lambda={value:g}"], value))
    return runs
