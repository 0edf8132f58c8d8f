"""python -m jocor_plugin.predict: class names, probabilities, top-k, the pair averaged, folders and globs."""
import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import jocor_plugin  # noqa: F401  (registers jocor_mlp)
from jocor_plugin.predict import find_images, main, predict
from jocor_plugin.models.timm_folder import class_names, load_network, save_network

ROOT = Path(__file__).resolve().parents[1]
NAMES = [f"class_{i}" for i in range(10)]
DATA_CONFIG = {"input_size": (1, 28, 28), "mean": (0.0,), "std": (1.0,), "interpolation": "bilinear",
               "crop_pct": 1.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder as a run exports it: model_a and model_b, each a timm folder with class names."""
    out = tmp_path_factory.mktemp("run")
    for i, name in enumerate("ab"):
        torch.manual_seed(i)
        net = timm.create_model("jocor_mlp", num_classes=10, in_chans=1)
        save_network(net, out / f"model_{name}", data_config=DATA_CONFIG, label_names=NAMES)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(5):
        sub = folder / ("cats" if i < 3 else "dogs")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(sub / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (40, 32, 3), dtype=np.uint8)).save(folder / "rgb.jpg")  # resized
    (folder / "notes.txt").write_text("not an image")
    return folder


def _reference(folder: Path, path: Path) -> torch.Tensor:
    """The network's softmax with timm's own eval transform, computed by hand."""
    net = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))
    with torch.no_grad():
        return net(transform(Image.open(path).convert("L"))[None]).softmax(1)[0]


def test_exported_folder_carries_class_names_and_is_readable(run_dir):
    config = json.loads((run_dir / "model_a" / "config.json").read_text())
    assert config["label_names"] == NAMES
    assert class_names(load_network(run_dir / "model_a")) == NAMES
    mode = stat.S_IMODE(os.stat(run_dir / "model_a" / "model.safetensors").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # not safetensors' 0600


def test_pair_is_the_mean_softmax_with_class_names(run_dir, images):
    image = images / "cats" / "img0.png"
    rows = predict(run_dir, [image], topk=3)
    expected = (_reference(run_dir / "model_a", image) + _reference(run_dir / "model_b", image)) / 2
    top = expected.topk(3)
    assert [h["index"] for h in rows[0]["topk"]] == top.indices.tolist()
    assert [h["label"] for h in rows[0]["topk"]] == [NAMES[i] for i in top.indices.tolist()]
    assert [h["prob"] for h in rows[0]["topk"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    single = predict(run_dir, [image], topk=10, net="b")
    assert sum(h["prob"] for h in single[0]["topk"]) == pytest.approx(1.0, abs=1e-5)
    assert [h["prob"] for h in single[0]["topk"]] == pytest.approx(
        _reference(run_dir / "model_b", image).sort(descending=True).values.tolist(), abs=1e-6)


def test_folders_and_globs(images):
    assert [p.name for p in find_images([str(images)])] == ["img0.png", "img1.png", "img2.png", "img3.png",
                                                             "img4.png", "rgb.jpg"]
    assert len(find_images([str(images / "**" / "*.png")])) == 5
    assert find_images([str(images / "cats" / "img1.png")]) == [images / "cats" / "img1.png"]


def test_python_m_predict_writes_csv(run_dir, images, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "jocor_plugin.predict", str(run_dir), str(images), "--topk", "2",
                           "--out", str(tmp_path / "p.csv")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "model_a + model_b (softmax averaged)" in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6 and all("class_" in line for line in lines)
    with open(tmp_path / "p.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {"image", "top1_label", "top1_prob", "top2_label"} <= set(table[0])
    assert float(table[0]["top1_prob"]) >= float(table[0]["top2_prob"])


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_network_to_json(run_dir, images, tmp_path, capsys):
    code, _, err = _cli(capsys, run_dir / "model_a", images / "cats", "--topk", "1", "--out", tmp_path / "p.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 3 and len(rows[0]["topk"]) == 1 and rows[0]["topk"][0]["label"] in NAMES


@pytest.mark.parametrize("args, message", [
    (["{tmp}", "{images}"], "holds no exported network"),
    (["{run}", "{tmp}/missing.png"], "is not a file, a folder or a glob"),
    (["{run}", "{images}/notes.txt"], "Cannot read the image"),
    (["{run}", "{images}", "--out", "{tmp}/p.txt"], "give a .csv or .json"),
])
def test_bad_input_is_one_line(run_dir, images, tmp_path, capsys, args, message):
    code, _, err = _cli(capsys, *[a.format(tmp=tmp_path, images=images, run=run_dir) for a in args])
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and message in last and "Traceback" not in err, err
