"""The report's paper-vs-authors_code section (jocor_plugin/experiments/report_modes.py)."""
import json
from pathlib import Path

import pytest

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


def _authors_log(path: Path, accuracies: list[tuple[float, float, float]]) -> None:
    """A log as the authors' main.py prints it: epoch 1 untrained (no Pure Ratio), then one line per epoch."""
    lines = ["loading dataset...", "Epoch [1/9] Test Accuracy on the 1000 test images: Model1 9.0 % Model2 11.0 "]
    for k, (a, b, pure) in enumerate(accuracies, start=2):
        lines += [f"Epoch [{k}/9], Iter [10/31] Training Accuracy1: 50.0, Training Accuracy2: 50.0, Loss1: 1.0",
                  f"Epoch [{k}/9] Test Accuracy on the 1000 test images: Model1 {a} % Model2 {b} %, "
                  f"Pure Ratio 1 {pure} %, Pure Ratio 2 {pure} %"]
    path.write_text("\n".join(lines) + "\n")


def test_reference_logs_sit_beside_both_modes(tmp_path):
    from jocor_plugin.core.errors import UserError
    from jocor_plugin.experiments.reference_logs import main as write_reference, read_reference_dir

    logs = tmp_path / "logs"
    logs.mkdir()
    # seed 1: the last 10 printed epochs average (40+42)/2 = 41; seed 2: 43; the 11th-last line is left out
    _authors_log(logs / "jocor_symmetric_0.8_s1.log", [(0.0, 0.0, 1.0)] + [(40.0, 42.0, 30.0)] * 10)
    _authors_log(logs / "jocor_symmetric_0.8_s2.log", [(42.0, 44.0, 36.0)] * 10)
    summary = read_reference_dir(logs)["jocor"]["sym-80"]
    assert summary["1"] == {"test_acc_last10": 41.0, "final_label_precision": 0.30}
    reference = tmp_path / "reference.json"
    write_reference([str(logs), str(reference)])

    grid = _grid(tmp_path / "g.yaml", {"jocor": None, "jocor_authors": "train.fidelity=authors_code"}, tmp_path)
    raw = json.loads(grid.read_text())
    grid.write_text(json.dumps({**raw, "reference_runs": str(reference)}))
    for run in grid_runs(load_grid(grid)):
        _finished(run.out, (50.0 if run.method == "jocor" else 20.0) + run.seed)
    text = "\n".join(modes_section(load_grid(grid)))
    assert "sym-80 paper | sym-80 authors_code | sym-80 their code" in text
    assert "| JoCoR | 51.50 ± 0.71 | 21.50 ± 0.71 | 42.00 ± 1.41 |" in text
    assert "| JoCoR | – | – | 33.00 ± 4.24 |" in text  # Pure Ratio beside label precision (none in the stubs)

    (logs / "notes.log").write_text("x")
    with pytest.raises(UserError, match="name it <method>_<symmetric"):
        read_reference_dir(logs)
    grid.write_text(json.dumps({**raw, "reference_runs": str(tmp_path / "missing.json")}))
    with pytest.raises(UserError, match="reference_runs=.*is not a file"):
        load_grid(grid)
