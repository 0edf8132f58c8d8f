"""Issue 29, "your own noisy folder, trusted": what a user meets trying their own data, each point as
they would try it -- a sweep rerun on other data, a launch that asked for more processes than it
got, a Hub name or a typo offline, a tracker that isn't installed, and predict on a folder with one
bad file. Fast: no training run is started."""
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import jocor_plugin  # noqa: F401  (registers jocor_mlp)
from jocor_plugin.config import ConfigError, load_config
from jocor_plugin.core.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- 1. sweeps with run identity

@pytest.fixture
def in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the sweep files name recipes/... relative to the checkout


def _finish(folder: Path, recipe: dict) -> None:
    """A finished run folder as a run leaves it (results.json's config is its resolved recipe)."""
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"config": recipe, "finished": True, "epochs": [],
                                                     "summary": {"test_acc_last10": 42.0}}))


def test_a_sweep_rerun_on_other_data_is_refused_not_reported_as_finished(in_repo_root, tmp_path, capsys):
    from jocor_plugin import sweep

    config = sweep.load_sweep("sweeps/forget_rate_grid.yaml")
    points = sweep.sweep_points(config, max_runs=2)
    out = tmp_path / "grid"
    first = ["train.epochs=2"]
    for name, recipe in sweep.validate_points(config, points, out, first).items():
        _finish(out / name, recipe)  # the first sweep, on the built-in digits

    # the same sweep again: both points are its own finished runs, no process is started
    assert sweep.main(["sweeps/forget_rate_grid.yaml", "--out", str(out), "--max-runs", "2", *first]) == 0
    assert (out / "summary.md").read_text().count("skipped (finished)") == 2
    capsys.readouterr()

    # the same sweep on the user's own folder: refused in one line naming the difference
    folder = tmp_path / "shop_photos"
    args = ["sweeps/forget_rate_grid.yaml", "--out", str(out), "--max-runs", "2", *first,
            f"data.path={folder}", "noise.type=none"]
    assert sweep.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "holds a run of another recipe" in err[0], err
    assert "data.path null -> " in err[0] and "noise.type" in err[0] and "--out" in err[0]
    assert "skipped" not in (out / "summary.md").read_text().replace("skipped (finished)", "")  # old table kept

    # a finished run of fewer epochs is not the one asked for either (an unfinished one may be extended)
    assert sweep.main(["sweeps/forget_rate_grid.yaml", "--out", str(out), "--max-runs", "2",
                       "train.epochs=3"]) == 2
    assert "train.epochs 2 -> 3" in capsys.readouterr().err
    # keys that don't change results (log.*) don't count
    assert sweep.main(["sweeps/forget_rate_grid.yaml", "--out", str(out), "--max-runs", "2", *first,
                       "log.quiet=true"]) == 0


def test_a_job_whose_folder_holds_another_recipe_fails_under_its_claim(tmp_path):
    from jocor_plugin.config import config_to_dict
    from jocor_plugin.experiments.jobs import Job, recipe_difference, run_jobs

    old = config_to_dict(load_config(None, ["data.name=digits"]))
    new = config_to_dict(load_config(None, ["data.name=digits", "noise.rate=0.2"]))
    _finish(tmp_path / "run", old)
    assert recipe_difference(tmp_path / "run", old) == []
    assert [c.key for c in recipe_difference(tmp_path / "run", new)] == ["noise.rate"]
    job = Job("run", [sys.executable, "-c", "raise SystemExit(7)"], tmp_path / "run.log", folder=tmp_path / "run",
              recipe=new)
    outcome = run_jobs([job])["run"]
    assert outcome.failed and outcome.code == 2  # not 'skipped (finished)', and nothing was started
    assert "another recipe (noise.rate 0.5 -> 0.2)" in (tmp_path / "run.log").read_text()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config"] == old  # untouched


# ----------------------------------------------------------------------------- 2. a launch that got fewer processes

def test_launch_shortfall_from_what_accelerate_sets(monkeypatch):
    from jocor_plugin.core.cli import launch_shortfall

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "MASTER_ADDR",
                 "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert launch_shortfall(1) is None  # python -m jocor_plugin.run
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch_shortfall(2) is None  # torchrun / --multi_gpu: what was asked
    assert "asked for 2 processes but this run has 1" in launch_shortfall(1)
    monkeypatch.delenv("WORLD_SIZE")
    # accelerate launch --num_processes 2 --cpu: its simple launcher sets these and starts one process
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    line = launch_shortfall(1)
    assert "several processes" in line and "accelerate_configs/cpu_2proc.yaml" in line and "\n" not in line


def test_accelerate_launch_cpu_with_two_processes_warns_once():
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "jocor_plugin.run", "data.name=digits", "--print-config"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stdout.splitlines() if "asked for several processes" in line]
    assert len(warnings) == 1 and "cpu_2proc.yaml" in warnings[0], proc.stdout[:2000]


# ----------------------------------------------------------------------------- 3. Hub names and typos offline

def test_a_hub_name_or_a_typo_offline_fails_at_once_with_the_data_path_fix(monkeypatch):
    from jocor_plugin.data.splits import load_splits

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as the user set it
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_splits(load_config(None, ["data.name=fashionmnist"]).data)
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert "Did you mean 'fashion_mnist'?" in message and "data.path=DIR" in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_an_unreachable_hub_is_found_out_in_seconds_not_after_retries(monkeypatch):
    import datasets
    from huggingface_hub import constants

    from jocor_plugin.data import sources
    from jocor_plugin.data.splits import load_splits

    for name in (*sources.OFFLINE_VARIABLES, *sources.PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: as a machine offline
    assert sources.hub_reachable() is False
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"can't be reached from here\. Download it .* data.path=DIR"):
        load_splits(load_config(None, ["data.name=ylecun/mnist"]).data)
    assert time.perf_counter() - start < 10
    assert datasets.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is False  # restored


def test_a_model_typo_is_caught_before_the_data_loads_and_hub_names_still_pass():
    from conftest import run_in_process

    with pytest.raises(ConfigError, match=r"model.name='resnet81' is not a timm model\. Did you mean 'resnet18'"):
        load_config(None, ["model.name=resnet81"])
    for name in ("resnet18", "resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k", "jocor_cnn"):
        assert load_config(None, [f"model.name={name}"]).model.name == name
    # the recipe is refused on the model, before the (also misspelled, offline) data is looked at
    proc = run_in_process(["data.name=fashionmnist", "model.name=resnet81"])
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: model.name='resnet81'"), proc.stderr


# ----------------------------------------------------------------------------- 4. a tracker not installed

def test_a_tracker_whose_package_is_missing_is_refused_naming_the_install(monkeypatch):
    import accelerate.tracking

    assert load_config(None, ["log.tracker=tensorboard"]).log.tracker == "tensorboard"  # installed here
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError) as err:
        load_config(None, ["log.tracker=tensorboard"])
    assert "pip install tensorboard (or pip install 'jocor_plugin[tensorboard]')" in str(err.value)
    with pytest.raises(ConfigError, match=r"the comet-ml package is not installed.*pip install comet-ml"):
        load_config(None, ["log.tracker=comet_ml"])
    assert load_config(None, ["log.tracker=none"]).log.tracker == "none"


# ----------------------------------------------------------------------------- 5. predict on a folder with bad files

@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    from jocor_plugin.models.timm_folder import save_network

    folder = tmp_path_factory.mktemp("run") / "model_a"
    torch.manual_seed(0)
    save_network(timm.create_model("jocor_mlp", num_classes=10, in_chans=1), folder,
                 data_config={"input_size": (1, 28, 28), "mean": (0.0,), "std": (1.0,),
                              "interpolation": "bilinear", "crop_pct": 1.0},
                 label_names=[f"class_{i}" for i in range(10)])
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four images in two class folders, a truncated PNG and a text file named .jpg among them."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        sub = folder / ("cats" if i < 2 else "dogs")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(sub / f"img{i}.png")
    (folder / "cats" / "cut.png").write_bytes((folder / "cats" / "img0.png").read_bytes()[:40])
    (folder / "dogs" / "notes.jpg").write_text("not an image")
    return folder


def test_predict_skips_unreadable_files_with_a_line_each_and_a_summary(network, photos, tmp_path, capsys):
    from jocor_plugin.predict import main

    out = tmp_path / "p.csv"
    assert main([str(network), str(photos), "--topk", "1", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert len(stdout.strip().splitlines()) == 4 and len(out.read_text().strip().splitlines()) == 5  # + header
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: skipped ")]
    assert len(warnings) == 2 and any("cut.png" in w for w in warnings) and any("notes.jpg" in w for w in warnings)
    assert "Skipped 2 of 6 file(s)" in stderr and "error" not in stderr
    # --strict: the first bad file stops the batch, in one line
    assert main([str(network), str(photos), "--strict"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Cannot read the image")
    # only bad files: nothing to predict is an error, not an empty result
    assert main([str(network), str(photos / "dogs" / "notes.jpg")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Cannot read the image")
    with pytest.raises(SystemExit):  # --help says what happens to bad files
        main(["--help"])
    assert "--strict" in capsys.readouterr().out


def test_predict_in_python_takes_what_the_command_line_takes(network, photos, caplog):
    from jocor_plugin.predict import predict

    def images(rows):
        return sorted(Path(r["image"]).name for r in rows)

    with caplog.at_level(logging.WARNING, logger="jocor_plugin.predict"):
        assert images(predict(network, str(photos), topk=1)) == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert sum("Skipped" in r.getMessage() for r in caplog.records) == 2
    assert images(predict(network, photos / "dogs")) == ["img2.png", "img3.png"]  # a Path
    assert images(predict(network, f"{photos}/cats/img*.png")) == ["img0.png", "img1.png"]  # a glob
    assert images(predict(network, [photos / "cats" / "img0.png", f"{photos}/dogs"])) == [
        "img0.png", "img2.png", "img3.png"]  # a list of both
    skipped = []
    predict(network, photos, on_skip=lambda path, why: skipped.append(path.name))
    assert sorted(skipped) == ["cut.png", "notes.jpg"]
    with pytest.raises(DataError, match="Cannot read the image"):
        predict(network, photos, strict=True)
