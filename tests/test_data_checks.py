"""Data a classifier can't train on ends the run before training with one line and exit 2, leaving
an earlier run in train.output_dir as it was: labels that don't fit, string
labels, image files that don't decode (or are left out on request), empty data, a single-class
folder; images of mixed sizes are resized. Tiny data written here; the CLI's main, in-process."""
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import datasets
from datasets import Dataset, Features, Image as ImageFeature, Value
from PIL import Image

import jocor_plugin.run as run_module
from conftest import one_torch_thread

DEMO = str(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")
FAST = ["train.epochs=1", "train.batch_size=4", "train.eval_batch_size=16", "train.export_models=false",
        "train.label_issue_epochs=0", "log.progress_bar=false", "data.num_workers=0"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(run_module, "configure_logging", lambda: None)  # keep pytest's log capture
    datasets.disable_progress_bars()  # as configure_logging does
    with one_torch_thread():
        yield


@pytest.fixture
def earlier(tmp_path) -> Path:
    """An output folder holding an earlier run's files (the recipe has train.overwrite=true)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("mine: true\n")
    (out / "results.json").write_text(json.dumps({"finished": True, "mine": True}))
    return out


def refused(capsys, out: Path, *args: str) -> str:
    """Run the CLI; it must exit 2 with one ``error:`` line and leave ``out``'s earlier run alone."""
    code = run_module.main([DEMO, *FAST, f"train.output_dir={out}", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert (out / "config.yaml").read_text() == "mine: true\n"
    assert json.loads((out / "results.json").read_text())["mine"] is True
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "results.json"]
    return err.strip()


def trained(capsys, out: Path, *args: str) -> dict:
    assert run_module.main([DEMO, *FAST, f"train.output_dir={out}", *map(str, args)]) == 0, \
        capsys.readouterr().err
    return json.loads((out / "results.json").read_text())


def folder(root: Path, classes: list[str], n: int = 6, sizes=((8, 8),)) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, sizes[i % len(sizes)], dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def damage(root: Path) -> Path:
    """One truncated PNG and one text file named .png in ``root``'s class folders."""
    png = root / "a" / "3.png"
    png.write_bytes(png.read_bytes()[:40])
    (root / "b" / "notes.png").write_bytes(b"not an image")
    return root


def png_bytes(value: int) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def parquet(path: Path, labels: list, bad_row: int = -1) -> Path:
    images = [{"bytes": b"not an image", "path": None} if i == bad_row else png_bytes(i) for i in range(len(labels))]
    pd.DataFrame({"image": images,
                  "label": pd.Series(labels, dtype=object if labels and isinstance(labels[0], str) else None)}
                 ).to_parquet(path)
    return path


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("key, message", [
    ("model.num_classes=2", "error: model.num_classes=2 is below the 3 classes of the data (labels up to 2); "
                            "set model.num_classes to at least 3 (or leave it unset)."),
    ("data.num_classes=2", "error: The labels of the 'train' split go up to 2 but data.num_classes=2; set "
                           "data.num_classes to at least 3 (or leave it unset)."),
])
def test_num_classes_below_the_labels_is_one_line(tmp_path, capsys, earlier, key, message):
    data = parquet(tmp_path / "three.parquet", [0, 1, 2] * 8)
    assert refused(capsys, earlier, f"data.path={data}", key) == message


@pytest.mark.parametrize("labels, values, fix", [
    (["cat", "dog"] * 8, "string values ('cat', 'dog')", "dataset.class_encode_column('label')"),
    ([0.0, 1.0] * 8, "float64 values (0.0, 1.0)", "dataset.cast_column('label', datasets.Value('int64'))")])
def test_string_or_float_labels_are_one_line_with_the_fix(tmp_path, capsys, earlier, labels, values, fix):
    data = parquet(tmp_path / "labels.parquet", labels)
    assert refused(capsys, earlier, f"data.path={data}") == (
        f"error: The label column 'label' of data.path='{data}' holds {values}, not class indices 0..C-1; "
        f"convert it before saving the data, e.g. {fix}, or set data.label_column to the column of class indices.")


# ----------------------------------------------------------------------------- image files

def test_a_file_that_doesnt_decode_is_named_before_training(tmp_path, capsys, earlier):
    data = damage(folder(tmp_path / "imgs", ["a", "b"]))
    line = refused(capsys, earlier, f"data.path={data}", "data.in_memory=true")
    assert re.fullmatch(rf"error: The image {data}/(a/3|b/notes)\.png can't be decoded \(.+\); remove or "
                        r"replace it, or set data.skip_bad_images=true to leave such files out\.", line), line
    bytes_only = parquet(tmp_path / "bytes.parquet", [0, 1] * 8, bad_row=6)  # no file name: its row is named
    line = refused(capsys, earlier, f"data.path={bytes_only}", "data.in_memory=true")
    assert line.startswith("error: The image at row 6 of the training data can't be decoded (cannot identify "), line


@pytest.mark.parametrize("in_memory", ["true", "false"])
def test_skip_bad_images_leaves_them_out_and_says_how_many(tmp_path, capsys, caplog, in_memory):
    data = damage(folder(tmp_path / "imgs", ["a", "b"]))
    results = trained(capsys, tmp_path / "out", f"data.path={data}", "data.skip_bad_images=true",
                      f"data.in_memory={in_memory}")
    assert results["num_train"] + results["num_test"] == 13 - 2  # 12 images and a text file; one truncated
    assert re.search(r"Left out 2 of 13 images of the 'train' split that can't be decoded "
                     r"\(data\.skip_bad_images=true\), e\.g\. .*\.png\.", caplog.text)


def test_streamed_a_file_that_doesnt_decode_is_one_line_naming_it(tmp_path, capsys):
    """Streamed, a file is read first in training (a check of every file at each start would cost
    minutes on a large dataset): one line naming it, from a DataLoader worker too."""
    data = damage(folder(tmp_path / "imgs", ["a", "b"]))
    out = tmp_path / "out"
    code = run_module.main([DEMO, *FAST, f"train.output_dir={out}", f"data.path={data}",
                            "data.in_memory=false", "data.num_workers=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.fullmatch(rf"error: The image {data}/(a/3|b/notes)\.png can't be decoded \(.+\); .*\n", err), err


def test_images_of_mixed_sizes_are_resized_in_memory(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="jocor_plugin")
    data = folder(tmp_path / "mixed", ["a", "b"], sizes=[(8, 8), (10, 12)])
    results = trained(capsys, tmp_path / "out", f"data.path={data}", "data.in_memory=true")
    assert results["finished"] and "The images have 2 different sizes: each resized to 28x28." in caplog.text


# ----------------------------------------------------------------------------- empty or one class

def test_an_empty_parquet_file_or_dataset_is_one_line(tmp_path, capsys, earlier):
    empty = parquet(tmp_path / "empty.parquet", [])
    assert refused(capsys, earlier, f"data.path={empty}") == \
        f"error: data.path='{empty}' holds no rows; point data.path at a parquet file with images in it."
    saved = tmp_path / "saved"
    Dataset.from_dict({"image": [], "label": []}, features=Features(
        {"image": ImageFeature(), "label": Value("int64")})).save_to_disk(str(saved))
    assert refused(capsys, earlier, f"data.path={saved}") == \
        f"error: data.path='{saved}' holds no rows; point data.path at data with images in it."


def test_a_single_class_image_folder_says_so(tmp_path, capsys, earlier):
    data = folder(tmp_path / "single", ["cat"])
    assert refused(capsys, earlier, f"data.path={data}") == (
        f"error: data.path='{data}' holds one class folder only (cat/); a classifier needs two or more: one "
        f"sub-folder of images per class.")
    for image in (data / "cat").iterdir():  # no class folder at all
        image.rename(data / image.name)
    (data / "cat").rmdir()
    assert refused(capsys, earlier, f"data.path={data}") == (
        f"error: data.path='{data}' holds images but no class sub-folders; put each class's images in a "
        f"sub-folder named after it (cat/, dog/, ...).")
