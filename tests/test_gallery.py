"""The pictures a run writes: curves.png after every run, and the label-issue gallery
(label_issues/gallery.png) with the label-issue export."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from jocor_plugin.label_issues import main as label_issues_main
from jocor_plugin.train.plots import (CURVES_FILE, GALLERY_FILE, GALLERY_SIZE, gallery_rows, plot_gallery,
                                      plot_run_curves)
from conftest import run_digits_demo



def assert_png(path: Path, min_width: int = 300, min_height: int = 150) -> tuple[int, int]:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()  # a whole, readable PNG
    with Image.open(path) as image:
        width, height = image.size
    assert min_width <= width <= 4000 and min_height <= height <= 4000, (path, image.size)
    return width, height


def test_a_run_with_the_export_writes_curves_and_the_gallery(label_issue_export):
    assert_png(label_issue_export / CURVES_FILE, 600, 200)
    width, height = assert_png(label_issue_export / "label_issues" / GALLERY_FILE, 400, 400)
    assert height > width * 0.8  # 6 x 6 tiles
    report = json.loads((label_issue_export / "label_issue_report.json").read_text())
    assert report["gallery"] == f"label_issues/{GALLERY_FILE}"
    assert Path(report["files"]["gallery"]) == label_issue_export / "label_issues" / GALLERY_FILE
    markdown = (label_issue_export / "label_issue_report.md").read_text()
    assert f"[label_issues/{GALLERY_FILE}](label_issues/{GALLERY_FILE})" in markdown


def test_the_cli_writes_the_gallery_too(label_issue_export, tmp_path):
    for name in ("config.yaml", "label_issue_stats.safetensors"):  # all the CLI needs of a run
        shutil.copy(label_issue_export / name, tmp_path / name)
    assert label_issues_main([str(tmp_path), "--cleanlab", "none"]) == 0
    assert_png(tmp_path / "label_issues" / GALLERY_FILE, 400, 400)
    assert "label_issues/gallery.png" in (tmp_path / "label_issue_report.md").read_text()


def test_the_gallery_shows_the_highest_scores_most_suspect_first():
    rng = np.random.default_rng(0)
    scores = rng.permutation(100) / 100.0
    table = pd.DataFrame({"index": np.arange(100), "issue_score": scores})
    rows = gallery_rows(table)
    assert len(rows) == GALLERY_SIZE
    assert table["issue_score"].to_numpy()[rows].tolist() == sorted(scores, reverse=True)[:GALLERY_SIZE]
    # the export's table is sorted already: then its first rows, ties in table order
    ties = pd.DataFrame({"issue_score": [0.9, 0.9, 0.5, 0.9, np.nan, 0.1]})
    assert gallery_rows(ties, 4).tolist() == [0, 1, 3, 2]
    assert gallery_rows(ties).tolist() == [0, 1, 3, 2, 5, 4]  # fewer than GALLERY_SIZE: all, NaN last


def test_the_exported_gallery_holds_the_top_scored_samples(label_issue_export):
    table = pd.read_parquet(label_issue_export / "label_issues" / "label_issues.parquet")
    rows = gallery_rows(table)
    top = table.iloc[rows]
    assert top["issue_score"].min() >= table["issue_score"].drop(top.index).max()
    assert top["index"].tolist() == table["index"].head(GALLERY_SIZE).tolist()


def test_a_gallery_of_fewer_samples_and_odd_images(tmp_path):
    images = [Image.new("L", (8, 8), 200), Image.new("RGB", (300, 200), (0, 90, 200)),
              np.zeros((28, 28), np.uint8)]
    path = plot_gallery(images, ["cat", "a very long class name", "0"], ["dog", "?", "1"], [0.9, 0.8, 0.1],
                        [True, True, False], tmp_path / GALLERY_FILE, title="t", note="all 3 samples")
    assert_png(path, 200, 100)


def test_a_one_network_run_writes_curves(tmp_path):
    out = tmp_path / "standard"
    run_digits_demo("train.epochs=1", "method.name=standard", "train.label_issue_epochs=0", f"train.output_dir={out}")
    assert_png(out / CURVES_FILE, 600, 200)
    records = json.loads((out / "results.json").read_text())["epochs"]
    assert records[0]["selected_fraction"] == 1.0 and "test_acc_b" not in records[0]


def test_curves_of_records_without_clean_labels_and_with_noisy_test(tmp_path):
    records = [{"epoch": e, "forget_rate": 0.0, "selected_fraction": 1.0, "noisy_test_acc_a": 50.0 + e,
                "train_loss": 1.0} for e in range(3)]  # real noisy data: no label precision
    assert_png(plot_run_curves(records, tmp_path / CURVES_FILE, "noisy"), 600, 200)
    assert plot_run_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
