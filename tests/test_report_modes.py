"""The report's paper-vs-authors_code section (jocor_plugin/experiments/report_modes.py)."""
import json
from pathlib import Path

from jocor_plugin.experiments.report_modes import append_modes_section, modes_grid, modes_section
from jocor_plugin.reproduce import grid_runs, load_grid


def _grid(path: Path, methods: dict, tmp_path: Path) -> Path:
    path.write_text(json.dumps({
        "recipe": "recipes/demo.yaml", "output_dir": str(tmp_path / "runs"), "report_dir": str(tmp_path / "rep"),
        "overrides": "train.epochs=2", "methods": methods,
        "settings": {"sym-80": "noise.rate=0.8"}, "seeds": [1, 2]}))
    return path


def _finished(out: Path, acc: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"finished": True, "epochs": [], "summary": {"test_acc_last10": acc}}))


def test_section_pairs_each_method_with_its_authors_code_runs(tmp_path):
    main = _grid(tmp_path / "g.yaml", {"jocor": None}, tmp_path)
    assert modes_grid(load_grid(main)) is None and modes_section(load_grid(main)) == []
    sibling = _grid(tmp_path / "g_authors_code.yaml", {"jocor": None, "jocor_authors": "train.fidelity=authors_code"},
                    tmp_path)
    paired = modes_grid(load_grid(main))
    assert paired is not None and paired.path == sibling
    for run in grid_runs(paired):
        _finished(run.out, (50.0 if run.method == "jocor" else 20.0) + run.seed)
    text = "\n".join(modes_section(load_grid(main)))
    row = next(line for line in text.splitlines() if line.startswith("| JoCoR"))
    assert row == "| JoCoR | 51.50 ± 0.71 | 21.50 ± 0.71 |"
    assert "sym-80 paper | sym-80 authors_code" in text
    # appended to a written report; the run copies beside the sibling's report keep it without run folders
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    append_modes_section(report, load_grid(main))
    assert report.read_text().startswith("# report\n\n## Paper mode vs authors' code")
    assert (tmp_path / "rep" / "runs" / "sym-80" / "jocor_authors" / "seed2" / "results.json").is_file()
