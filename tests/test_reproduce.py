"""The reproduction runner (python -m jocor_plugin.reproduce) and its paper-style report."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jocor_plugin.reproduce import grid_runs, load_grid, main, validate
from jocor_plugin.experiments.grid import GridError
from jocor_plugin.experiments.report import (Cell, aggregate, archive_path, format_cell, markdown_table, mean_std,
                                             median_epoch_s, minutes_left, run_minutes, separated, separation_table,
                                             welch_p, write_report)

ROOT = Path(__file__).resolve().parents[1]


def write_grid(tmp_path: Path, **extra) -> Path:
    grid = {
        "recipe": "recipes/demo.yaml",
        "output_dir": str(tmp_path / "runs"),
        "report_dir": str(tmp_path / "report"),
        "overrides": "data.name=digits train.epochs=2 train.batch_size=64 train.max_steps_per_epoch=4 "
                     "log.progress_bar=false "
                     "train.export_models=false train.label_issue_epochs=0",
        "methods": {"standard": None, "jocor": "method.co_lambda=0.9"},
        "settings": {"sym-20": "noise.type=symmetric noise.rate=0.2",
                     "asym-40": {"noise.type": "asymmetric", "noise.rate": 0.4}},
        "seeds": [1, 2],
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid))  # JSON is YAML
    return path


def fake_results(out: Path, acc: float, precision: float, noise=("symmetric", 0.2), epochs: int = 12,
                 finished: bool = True, selected: float = 0.8, epoch_time_s: float = 0.1) -> None:
    """A results.json as jocor_plugin.run writes it, with constant per-epoch figures."""
    out.mkdir(parents=True, exist_ok=True)
    records = [{"epoch": i, "test_acc_a": acc - 1, "test_acc_b": acc + 1, "label_precision": precision,
                "selected_fraction": selected, "epoch_time_s": epoch_time_s} for i in range(epochs)]
    (out / "config.yaml").write_text("{}")
    (out / "results.json").write_text(json.dumps({
        "finished": finished, "noise": {"type": noise[0], "rate": noise[1]}, "epochs": records,
        "summary": {"test_acc_last10": acc, "final_label_precision": precision, "mean_epoch_time_s": 0.1}}))


def test_mean_std_and_cells():
    mean, std = mean_std([90.0, 92.0, 94.0])
    assert mean == pytest.approx(92.0) and std == pytest.approx(2.0)  # sample std (ddof=1)
    assert mean_std([5.0]) == (5.0, None) and mean_std([]) == (None, None)


def test_welch_separation_of_cells():
    # Fashion-MNIST Asymmetry-40 %, JoCoR vs Co-teaching+ over 3 seeds (docs/results/fashion_mnist):
    # t = 1.22, two-sided p = 0.34 (scipy), not separated
    jocor, plus = [81.14, 81.16, 82.615], [82.079, 82.3985, 82.256]
    assert welch_p(jocor, plus) == pytest.approx(0.3400, abs=5e-4)
    assert separated(Cell(jocor), Cell(plus)) is False
    assert separated(Cell([80.0, 80.5, 79.8]), Cell([85.0, 85.2, 84.9])) is True
    assert welch_p([80.0], [85.0, 85.2]) is None and separated(Cell([80.0]), Cell([85.0, 86.0])) is None
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0 and welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0

    cells = {("jocor", "a"): Cell([90.0, 90.5, 89.8]), ("coteaching", "a"): Cell([90.2, 89.0, 90.6]),
             ("standard", "a"): Cell([70.0, 71.0, 70.5]), ("decoupling", "a"): Cell([89.0])}
    table = markdown_table(cells, ["standard", "decoupling", "coteaching", "jocor"], ["a"], 3, italic_ties=True)
    row = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines()[2:]}
    assert row["JoCoR"] == "**90.10 ± 0.36**" and row["Co-teaching"] == "*89.93 ± 0.83*"  # tied with the best
    assert row["Standard"] == "70.50 ± 0.50" and row["Decoupling"] == "89.00 (n=1)"  # separated; untestable
    sep = separation_table(cells, "jocor", ["standard", "decoupling", "coteaching", "jocor"], ["a"])
    row = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in sep.splitlines()[2:]}
    assert set(row) == {"Standard", "Decoupling", "Co-teaching"}
    assert row["Standard"] == "**-19.60** (p < 0.001)" and row["Decoupling"] == "-1.10 (n < 2)"
    assert row["Co-teaching"].startswith("-0.17 (p = 0.")


def test_aggregation_of_hand_written_results(tmp_path):
    grid = load_grid(write_grid(tmp_path, lambda_study={"method": "jocor", "values": [0.3, 0.9],
                                                        "settings": ["sym-20"], "seeds": [1, 2]}))
    runs = grid_runs(grid)
    # 2 methods x 2 settings x 2 seeds, plus lambda 0.3 x 2 seeds (0.9 is jocor's own runs)
    assert len(runs) == 10
    assert {r.co_lambda for r in runs if r.method == "jocor" and r.setting == "sym-20"} == {0.9}
    figures = {("standard", "sym-20"): [80.0, 84.0], ("jocor", "sym-20"): [95.0, 97.0],
               ("standard", "asym-40"): [88.0, 90.0], ("jocor", "asym-40"): [86.0, 87.0],
               ("jocor@lambda=0.3", "sym-20"): [91.0, 93.0]}
    for run in runs:
        acc = figures[(run.method, run.setting)][run.seed - 1]
        noise = ("asymmetric", 0.4) if run.setting == "asym-40" else ("symmetric", 0.2)
        fake_results(run.out, acc, precision=acc / 100, noise=noise,
                     selected=1.0 if run.method == "standard" else 0.8)
    cells = aggregate(runs)
    assert cells[("jocor", "sym-20")].mean == pytest.approx(96.0)
    assert cells[("jocor", "sym-20")].std == pytest.approx(2 ** 0.5)
    assert cells[("standard", "asym-40")].mean == pytest.approx(89.0)

    report = write_report(grid, runs).read_text()
    # best of each column in bold: JoCoR on sym-20, Standard on asym-40 (a baseline wins)
    accuracy = report.split("## Do the seeds separate")[0]
    row = {line.split("|")[1].strip(): line for line in accuracy.splitlines() if line.startswith("| ")}
    assert "**96.00 ± 1.41**" in row["JoCoR"] and "**89.00 ± 1.41**" in row["Standard"]
    assert "82.00 ± 2.83" in row["Standard"] and "**" not in row["JoCoR"].split("|")[3]
    # 86.50 ± 0.71 against Standard's 89.00 ± 1.41 (2 seeds each): not separated, so in italics
    assert "*86.50 ± 0.71*" in row["JoCoR"]
    separation = report.split("## Do the seeds separate each method from JoCoR?")[1].split("##")[0]
    assert "| Standard | -14.00 (p = 0.049) | +2.50 (p = 0.199) |" in separation.replace("**", "")
    # label precision table: ° marks a method that trains on every sample
    assert "Standard °" in report and "96.00 ± 1.41" in report.split("## Label precision")[1]
    # lambda study: 0.3 -> 92 ± 1.41, 0.9 (jocor's own runs) -> 96 ± 1.41 (bold); 2 seeds each do
    # not separate them (Welch p = 0.11), so 0.3 is in italics
    lam = report.split("## λ sensitivity")[1]
    assert "| λ = 0.3 | *92.00 ± 1.41* |" in lam and "| λ = 0.9 | **96.00 ± 1.41** |" in lam
    # the noise settings are named as the paper's columns
    assert "sym-20 (Symmetry-20%)" in report and "asym-40 (Asymmetry-40%)" in report
    for png in ("curves.png", "lambda.png"):
        assert (grid.report_dir / png).stat().st_size > 5000
        assert f"]({png})" in report  # embedded, relative to report.md
    assert not (grid.report_dir / "ablation.png").exists()  # needs two of the ablation's methods


def test_summary_table_is_written_between_markers(tmp_path, caplog):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nintro\n<!-- grid-table:start -->\nold table\n<!-- grid-table:end -->\nafter\n")
    grid = load_grid(write_grid(tmp_path, summary_table=f"{page}#grid-table"))
    runs = grid_runs(grid)
    for run in runs:
        fake_results(run.out, 90.0 + run.seed + (run.method == "jocor"), 0.9,
                     noise=("asymmetric", 0.4) if run.setting == "asym-40" else ("symmetric", 0.2))
    write_report(grid, runs)
    text = page.read_text()
    assert text.startswith("# Results\n\nintro\n<!-- grid-table:start -->\n| Method | Symmetry-20% | Asymmetry-40% |")
    assert "old table" not in text and text.endswith("<!-- grid-table:end -->\nafter\n")
    assert "| JoCoR | **92.50 ± 0.71** | **92.50 ± 0.71** |" in text  # Standard's 91.50 ± 0.71 not separated
    assert "| Standard | *91.50 ± 0.71* | *91.50 ± 0.71* |" in text and "8 of 8 runs finished" in text
    write_report(grid, runs)
    assert page.read_text() == text  # rewritten in place, nothing added

    page.write_text("no markers\n")
    with pytest.raises(GridError, match="grid-table:start"):
        load_grid(write_grid(tmp_path, summary_table=f"{page}#grid-table"))
    with pytest.raises(GridError, match="must name a file and a marker"):
        load_grid(write_grid(tmp_path, summary_table=str(page)))
    elsewhere = load_grid(write_grid(tmp_path, summary_table="no/such/page.md#grid-table"))  # run from elsewhere
    with caplog.at_level(logging.WARNING, logger="jocor_plugin"):
        write_report(elsewhere, runs)
    assert "no/such/page.md is not found" in caplog.text


def test_unfinished_runs_and_missing_seeds_are_flagged(tmp_path):
    grid = load_grid(write_grid(tmp_path))
    runs = [r for r in grid_runs(grid) if r.setting == "sym-20"]
    for run in runs:
        fake_results(run.out, 90.0 + run.seed, 0.9, finished=not (run.method == "jocor" and run.seed == 2))
    cells = aggregate(runs)
    assert cells[("jocor", "sym-20")].values == [91.0]
    fake_results(runs[0].out, 90.0, float("nan"))  # no sample selected in the last epoch
    assert len(aggregate(runs, "final_label_precision")[(runs[0].method, "sym-20")].values) == 1
    table = markdown_table(cells, ["standard", "jocor"], ["sym-20"], n_expected=2)
    assert "| JoCoR | 91.00 (n=1) |" in table and "| Standard | **91.50 ± 0.71** |" in table
    assert format_cell(None) == "–"


def test_paper_figures_beside_ours(tmp_path):
    grid = load_grid(write_grid(tmp_path, paper="mnist", paper_note="Full-MNIST figures, for reference."))
    runs = grid_runs(grid)
    for run in runs:
        fake_results(run.out, 90.0, 0.9, noise=("asymmetric", 0.4) if run.setting == "asym-40" else ("symmetric", 0.2))
    report = write_report(grid, runs).read_text()
    assert "| *JoCoR, paper Table 2* | *98.06 ± 0.04* | *95.24 ± 0.10* |" in report
    assert "Full-MNIST figures, for reference." in report


def test_bad_grid_files_fail_clearly(tmp_path, capsys):
    path = write_grid(tmp_path, settings={"sym": "noise.rate"})
    assert main([str(path), "--dry-run"]) == 2
    assert "section.key=value" in capsys.readouterr().err
    path = write_grid(tmp_path, lambda_study={"method": "coteaching", "values": [0.1]})
    assert main([str(path), "--dry-run"]) == 2
    assert "lambda_study.method" in capsys.readouterr().err


def test_methods_settings_and_seeds_select_the_runs_to_train(tmp_path, capsys):
    path = write_grid(tmp_path, lambda_study={"method": "jocor", "values": [0.5], "settings": ["sym-20"]})
    assert main([str(path), "--dry-run", "--methods", "jocor", "jocor@lambda=0.5", "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3  # jocor in both settings, the lambda run in its one setting; seed 2 only
    assert all("method.name=jocor" in line and "train.seed=2" in line for line in lines)
    assert sum("method.co_lambda=0.5" in line for line in lines) == 1
    for argv, named in ((["--methods", "coteaching"], "--methods coteaching: "),
                        (["--seeds", "3"], "its seeds: 1 2"),
                        (["--methods", "jocor@lambda=0.5", "--settings", "asym-40"], "no run of"),
                        (["--report-only", "--seeds", "1"], "--report-only")):
        assert main([str(path), "--dry-run", *argv] if "--report-only" not in argv else [str(path), *argv]) == 2
        err = capsys.readouterr().err
        assert named in err and err.count("\n") == 1, err
    assert "its methods: standard jocor jocor@lambda=0.5" in (main([str(path), "--methods", "x"]) == 2
                                                             and capsys.readouterr().err)


def test_tiny_grid_end_to_end_and_restart(tmp_path):
    """2 methods x 1 setting x 2 seeds on digits, 2 epochs: report, plots, then a rerun skips all
    (the tables' layout over several settings is tested on written results above)."""
    path = write_grid(tmp_path, settings={"sym-20": "noise.type=symmetric noise.rate=0.2"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "jocor_plugin.reproduce", str(path), "--jobs", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = sorted((tmp_path / "runs").glob("*/*/seed*/results.json"))
    assert len(results) == 4 and all(json.loads(p.read_text())["finished"] for p in results)
    report = (tmp_path / "report" / "report.md").read_text()
    accuracy, rest = report.split("## Time per run")[0].split("## Do the seeds separate")
    tables = accuracy + rest.split("## Label precision")[1]  # accuracy and label precision, not the tests
    assert "| Standard | **+" in rest.split("## Label precision")[0]  # Standard vs JoCoR, with its p
    rows = [line for line in tables.splitlines() if line.startswith("| JoCoR") or line.startswith("| Standard")]
    assert len(rows) == 4 and all(line.count("±") == 1 for line in rows)  # test acc + label precision tables
    timing = [line for line in report.split("## Time per run")[1].splitlines() if line.startswith("| JoCoR")]
    assert len(timing) == 1 and timing[0].count("(n=2)") == 1  # minutes per run, n seeds
    accuracy_rows = [line for line in accuracy.splitlines() if line.startswith("| ")]
    assert sum(line.count("**") for line in accuracy_rows) == 2  # one bold best in the column
    assert (tmp_path / "report" / "curves.png").stat().st_size > 5000

    mtimes = [p.stat().st_mtime for p in results]
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 already finished, 0 to run" in again.stdout
    assert [p.stat().st_mtime for p in results] == mtimes

    # the same grid file over other data: its finished runs are not this grid's, and are kept
    grid = json.loads(path.read_text())
    path.write_text(json.dumps({**grid, "overrides": grid["overrides"] + " data.val_split=0.1"}))
    other = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "holds a run of another recipe (and 3 other run(s)): data.val_split" in other.stderr
    assert "--output-dir" in other.stderr and [p.stat().st_mtime for p in results] == mtimes


def test_report_is_regenerated_from_its_committed_copies(tmp_path):
    """The report keeps a slim copy of every finished run beside it, so a clone without the
    (git-ignored) run folders regenerates the same table; the copies are small and rounded."""
    import shutil

    grid = load_grid(write_grid(tmp_path))
    runs = grid_runs(grid)
    for run in runs:
        fake_results(run.out, 90.0 + run.seed + (5 if run.method == "jocor" else 0), precision=0.9,
                     noise=("asymmetric", 0.4) if run.setting == "asym-40" else ("symmetric", 0.2))
    first = write_report(grid, runs).read_text()
    copy = grid.report_dir / "runs" / "sym-20" / "jocor" / "seed2" / "results.json"
    assert json.loads(copy.read_text())["summary"]["test_acc_last10"] == pytest.approx(97.0)
    assert "## Time per run" in first and "| JoCoR | 0.0 (n=2) |" in first  # 12 epochs x 0.1 s
    assert "](figure.png)" in first  # Standard and JoCoR: the paper's Figures 3/5 analogue
    shutil.rmtree(grid.output_dir)
    again = write_report(grid, grid_runs(grid)).read_text()
    table = lambda text: text.split("## Label precision")[0]  # noqa: E731
    assert table(again) == table(first) and "96.50 ± 0.71" in table(again)


def test_cells_override_one_method_in_one_setting(tmp_path, capsys):
    grid = load_grid(write_grid(tmp_path, cells={"jocor": {"asym-40": "method.co_lambda=0.5"}}))
    runs = {(r.method, r.setting, r.seed): r for r in grid_runs(grid)}
    assert runs["jocor", "asym-40", 1].overrides[-1] == "method.co_lambda=0.5"  # applied last: it wins
    assert "method.co_lambda=0.5" not in runs["jocor", "sym-20", 1].overrides
    assert "method.co_lambda=0.5" not in runs["standard", "asym-40", 1].overrides
    for cells, named in (({"dividemix": {"sym-20": "x.y=1"}}, "cells.dividemix"),
                         ({"jocor": {"sym-90": "x.y=1"}}, "cells.jocor.sym-90")):
        assert main([str(write_grid(tmp_path, cells=cells)), "--dry-run"]) == 2
        assert named in capsys.readouterr().err


def test_report_of_a_grid_led_by_a_method_the_recipe_does_not_name(tmp_path):
    """The report reads each setting's noise from the recipe + the setting, not from a run's method
    arguments: DivideMix's cell arguments would not fit the recipe's own method (JoCoR)."""
    grid = load_grid(write_grid(tmp_path, methods={"dividemix": None, "jocor": None},
                                cells={"dividemix": {"sym-20": {"method.kwargs": "{lambda_u: 0}"}}}))
    runs = grid_runs(grid)
    for run in runs:
        fake_results(run.out, 91.0 if run.method == "dividemix" else 90.0, 0.9,
                     noise=("asymmetric", 0.4) if run.setting == "asym-40" else ("symmetric", 0.2))
    report = write_report(grid, runs).read_text()
    assert "| DivideMix | **91.00 ± 0.00** | **91.00 ± 0.00** |" in report


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "recipes" / "grids").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_grids_resolve_every_run(path, capsys):
    assert main([str(path), "--dry-run"]) == 0, capsys.readouterr().err


def test_run_minutes_ignore_an_epoch_stretched_by_a_pause():
    epochs = [{"epoch_time_s": 3.0} for _ in range(200)]
    epochs[57]["epoch_time_s"] = 600.0  # the process was suspended for ten minutes
    assert run_minutes({"finished": True, "epochs": epochs}) == pytest.approx(10.0)  # 200 x 3 s
    assert median_epoch_s({"finished": True, "epochs": epochs}) == pytest.approx(3.0)
    estimated = {"finished": True, "epochs": epochs, "transition_matrix": {"estimation_time_s": 60.0}}
    assert run_minutes(estimated) == pytest.approx(11.0)  # F-correction's first stage counts
    assert run_minutes({"finished": False, "epochs": epochs}) is None  # a run still going has no cost yet
    assert run_minutes({"finished": True, "epochs": []}) is None


def test_slimming_a_slim_copy_keeps_it():
    """The report slims a run's results.json for docs/results/; a run folder holding such a copy
    (restored from git to continue a grid) slims to the same, F-correction's stage time included."""
    from jocor_plugin.experiments.report import slim_results

    full = {"finished": True, "summary": {"test_acc_last10": 80.0},
            "epochs": [{"epoch": 0, "test_acc_a": 70.123456, "epoch_time_s": 1.5}],
            "transition_matrix": {"error": 0.1, "estimation_epochs": [{"epoch_time_s": 2.0}, {"epoch_time_s": 3.0}]}}
    slim = slim_results(full)
    assert slim["transition_matrix"] == {"error": 0.1, "estimation_time_s": 5.0}
    assert slim_results(slim) == slim


def test_dry_run_says_how_many_runs_are_left_and_roughly_how_long(tmp_path, capsys):
    path = write_grid(tmp_path)  # standard and jocor x sym-20, asym-40 x seeds 1, 2; 2 epochs a run
    grid = load_grid(path)
    runs = grid_runs(grid)
    recipes = validate(grid, runs)  # each run's resolved recipe, which its folder's config.yaml must be
    run = {(r.method, r.setting, r.seed): r for r in runs}
    fake_results(run["standard", "sym-20", 1].out, 90.0, 0.9, epochs=2, epoch_time_s=60.0)
    # finished elsewhere: only the copy beside the report (as in a fresh clone) gives its pace
    fake_results(archive_path(grid.report_dir, run["standard", "asym-40", 1]), 90.0, 0.9, epochs=2,
                 epoch_time_s=120.0)
    fake_results(run["standard", "sym-20", 2].out, 90.0, 0.9, epochs=1, finished=False)  # 1 of 2 epochs done
    for key in (("standard", "sym-20", 1), ("standard", "sym-20", 2)):
        (run[key].out / "config.yaml").write_text(yaml.safe_dump(recipes[run[key].out]))
    # standard: 1 + 2 + 2 epochs left at the mean of its runs' median epochs, 90 s; jocor: no pace yet
    epochs = {out: recipe["train"]["epochs"] for out, recipe in recipes.items()}
    assert minutes_left(runs, epochs, grid.report_dir) == (pytest.approx(7.5), 4)
    seed_2 = [r for r in runs if r.seed == 2]  # --seeds 2: the pace still comes from seed 1's runs
    assert minutes_left(seed_2, epochs, grid.report_dir, pace_from=runs) == (pytest.approx(4.5), 2)
    assert minutes_left(seed_2, epochs, grid.report_dir) == (0.0, 4)

    assert main([str(path), "--dry-run", "--jobs", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.count("# finished, skipped") == 1 and len(out.splitlines()) == 8
    assert err.strip().splitlines()[-1] == (
        "7 of 8 run(s) to train (1 part-trained): about 0.1 h one after another, at the pace of each method's "
        "finished runs (--jobs 2: about 0.1 h); 4 of them of a method with no finished run yet, not estimated.")
    assert main([str(path), "--dry-run", "--seeds", "2"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "4 of 4 run(s) to train (1 part-trained): about 0.1 h one after another")
