"""No silent wrong output: predict, grids, fidelity, DivideMix and the other tools refuse bad input in
one line (``error: ...``, exit 2, no traceback, nothing of an earlier run changed), and two grid
runners on one grid never undo each other's runs. Tested in-process and on tiny data."""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import pytest
import timm
import torch
import yaml

import jocor_plugin  # noqa: F401  (registers jocor_mlp)
from conftest import run_in_process
from jocor_plugin.config import config_to_dict, load_config
from jocor_plugin.experiments.jobs import CLAIM_FILE, SKIPPED_FINISHED, SKIPPED_HELD, Job, run_jobs
from jocor_plugin.core.lock import OutputLock
from jocor_plugin.models.timm_folder import save_network

ROOT = Path(__file__).resolve().parents[1]
DATA_CONFIG = {"input_size": (1, 28, 28), "mean": (0.0,), "std": (1.0,), "interpolation": "bilinear",
               "crop_pct": 1.0}
# a short digits run: one epoch of two steps, nothing exported
TINY = ["data.name=digits", "train.epochs=1", "train.batch_size=64", "train.max_steps_per_epoch=2",
        "log.progress_bar=false", "train.export_models=false", "train.label_issue_epochs=0",
        "train.keep_checkpoints=0"]


def run_tool(main: Callable[[Sequence[str]], int], argv: Sequence[object]) -> subprocess.CompletedProcess:
    """A tool's ``main(argv)`` in this process, its output captured as a subprocess's would be."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def refused(proc: subprocess.CompletedProcess, *fragments: str, progress: int = 0) -> str:
    """Exit 2 with one ``error: ...`` line on stderr (after ``progress`` lines of the tool's own
    progress, e.g. predict's 'Predicting N image(s)'), no traceback, naming every fragment."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == progress + 1 and lines[-1].startswith("error: "), proc.stderr
    assert not any(line.startswith("error") for line in lines[:-1]), proc.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- predict

@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("net") / "model_a"
    torch.manual_seed(0)
    save_network(timm.create_model("jocor_mlp", num_classes=10, in_chans=1), folder, data_config=DATA_CONFIG,
                 label_names=[f"class_{i}" for i in range(10)])
    return folder


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.new("L", (28, 28), 128).save(path)
    return path


def _edited_copy(network: Path, target: Path, num_classes: int, model_args: bool) -> Path:
    """``network`` with config.json saying ``num_classes`` classes (and as many names)."""
    target.mkdir()
    (target / "model.safetensors").write_bytes((network / "model.safetensors").read_bytes())
    config = json.loads((network / "config.json").read_text())
    config["num_classes"], config["label_names"] = num_classes, [f"n{i}" for i in range(num_classes)]
    if model_args:
        config["model_args"]["num_classes"] = num_classes
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_predict_refuses_a_config_that_does_not_describe_the_weights(network, image, tmp_path):
    from jocor_plugin.predict import main

    # config.json says 12 classes: timm would build a fresh classifier in place of the saved one
    net12 = _edited_copy(network, tmp_path / "net_nc12", 12, model_args=False)
    out = tmp_path / "p.csv"
    line = refused(run_tool(main, [net12, image, "--out", out]), "net_nc12", "head.weight",
                   "config.json says 12 classes, model.safetensors holds a classifier for 10", progress=1)
    assert not out.exists()
    assert "initialised it afresh" in line
    # a size mismatch timm itself refuses: the tensor and both shapes stay in the line
    net5 = _edited_copy(network, tmp_path / "net_nc5", 5, model_args=True)
    refused(run_tool(main, [net5, image]), "net_nc5", "size mismatch for head.weight", "[10, 256]", "[5, 256]",
            progress=1)


def test_predict_refuses_bad_paths_devices_and_huge_images(network, image, tmp_path):
    from jocor_plugin.predict import main

    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    refused(run_tool(main, [network, image, "--out", blocker / "x.csv"]), "is a file, not a folder")
    assert blocker.read_text() == "keep me"
    refused(run_tool(main, [network, image, "--device", "gpu"]), "--device 'gpu'", "cpu, cuda")
    if not torch.cuda.is_available():
        refused(run_tool(main, [network, image, "--device", "cuda"]), "no CUDA GPU")
    # a 15,000 x 15,000 PNG header: PIL refuses it as a decompression bomb before decoding anything
    huge = tmp_path / "huge.png"
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 15000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    refused(run_tool(main, [network, huge]), "huge.png", "225000000 pixels", "Downscale", progress=1)


# ----------------------------------------------------------------------------- reproduce --report-only

def _grid(tmp_path: Path, **extra) -> Path:
    grid = {"recipe": "recipes/demo.yaml", "output_dir": str(tmp_path / "runs"), "report_dir": str(tmp_path / "report"),
            "overrides": " ".join(TINY), "methods": {"standard": None, "jocor": None},
            "settings": {"sym-20": "noise.rate=0.2"}, "seeds": [1], **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid))  # JSON is YAML
    return path


def test_report_only_refuses_a_grid_without_finished_runs_and_names_a_cut_file(tmp_path):
    from jocor_plugin.reproduce import main

    grid = _grid(tmp_path)
    refused(run_tool(main, [grid, "--report-only"]), "has finished", "Run the grid first")
    assert not (tmp_path / "report").exists()
    finished = tmp_path / "runs" / "sym-20" / "standard" / "seed1"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text(json.dumps({"finished": True, "summary": {"test_acc_last10": 90.0},
                                                       "epochs": []}))
    cut = tmp_path / "runs" / "sym-20" / "jocor" / "seed1" / "results.json"
    cut.parent.mkdir(parents=True)
    cut.write_text('{"finished": true, "epochs": [{"epoch": 0, "test_acc_a"')
    before = snapshot(tmp_path / "runs")
    refused(run_tool(main, [grid, "--report-only"]), str(cut), "not valid JSON")
    assert snapshot(tmp_path / "runs") == before and not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------- fidelity

def test_authors_code_with_a_batch_larger_than_the_test_split_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"finished": true}')  # an earlier run, to be replaced
    (out / "config.yaml").write_text("{}")
    before = snapshot(out)
    # digits: 359 test images; authors_code drops the last partial test batch of train.batch_size
    refused(run_in_process(["recipes/demo.yaml", *TINY, "train.fidelity=authors_code", "train.epochs=2",
                            "train.batch_size=400",
                            f"train.output_dir={out}", "train.overwrite=true"]),
            "train.eval_batch_size=400 (train.batch_size, as train.fidelity=authors_code sets it)",
            "359 test images", "train.eval_drop_last=false")
    assert snapshot(out) == before


def test_dividemix_says_what_authors_code_and_a_long_warm_up_do(tmp_path):
    """authors_code with DivideMix on data its authors never ran says so once, at the start (their
    code sets nothing for it), and a warm-up as long as the run is said once too; the run goes on."""
    proc = run_in_process(["recipes/demo.yaml", *TINY, "method.name=dividemix", "train.fidelity=authors_code",
                           "train.epochs=1", "method.warmup_epochs=1", "method.crop_padding=0",
                           f"train.output_dir={tmp_path / 'run'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    fidelity = [line for line in lines if line.startswith("train.fidelity=authors_code")]
    assert len(fidelity) == 1 and "the authors' code of dividemix sets nothing for data.name=digits" in fidelity[0]
    warm_up = [line for line in lines if "never divides" in line]
    assert len(warm_up) == 1 and "warmup_epochs=1 covers all 1 trained epochs" in warm_up[0]


# ----------------------------------------------------------------------------- method arguments

@pytest.mark.parametrize("overrides, named", [
    (["method.name=dividemix", "method.kwargs={p_threshold: 1.5}"], "method.p_threshold=1.5"),
    (["method.name=dividemix", "method.views=0"], "method.views=0"),
    (["method.name=dividemix", "method.crop_padding=-2"], "method.crop_padding=-2"),
    (["method.name=dividemix", "method.warmup_epochs=-1"], "method.warmup_epochs=-1"),
    (["method.name=dividemix", "method.views=2.5"], "method.views=2.5 has type float"),
    (["method.name=jocor", "method.co_lambda=3"], "method.co_lambda=3"),
    (["method.name=coteaching_plus", "method.init_epoch=-1"], "method.init_epoch=-1"),
    (["method.name=fcorrection", "method.percentile=120"], "method.percentile=120"),
    (["noise.type=asymmetric", "noise.transition_matrix=RAGGED"], "rows have [2, 3] entries"),
], ids=["p_threshold", "views", "crop_padding", "warmup", "views-type", "co_lambda", "init_epoch", "percentile",
        "ragged-matrix"])
def test_method_arguments_and_matrices_are_checked_with_the_recipe(overrides, named, tmp_path):
    ragged = tmp_path / "T.json"
    ragged.write_text("[[0.7, 0.3], [0.2, 0.5, 0.3]]")
    out = tmp_path / "run"
    overrides = [o.replace("RAGGED", str(ragged)) for o in overrides]
    refused(run_in_process(["recipes/demo.yaml", "data.name=digits", *overrides, f"train.output_dir={out}"]), named)
    assert not out.exists()


def test_a_grid_with_an_out_of_range_dividemix_value_fails_its_up_front_check(tmp_path):
    from jocor_plugin.reproduce import main

    grid = _grid(tmp_path, methods={"dividemix": None, "jocor": None},
                 cells={"dividemix": {"sym-20": {"method.kwargs": "{p_threshold: 1.5}"}}})
    refused(run_tool(main, [grid, "--dry-run"]), "sym-20/dividemix/seed1", "method.p_threshold=1.5",
            "in [0, 1]")
    refused(run_tool(main, [grid]), "method.p_threshold=1.5")  # before any run starts
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- label_issues

def _run_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config_to_dict(load_config(None, ["data.name=digits"]))))
    return folder


def test_label_issues_names_a_cut_stats_file_and_a_run_stopped_before_its_first_epoch(tmp_path):
    from jocor_plugin.label_issues import main

    folder = _run_folder(tmp_path)
    (folder / "checkpoints" / "epoch_0000").mkdir(parents=True)  # the initial weights only
    line = refused(run_tool(main, [folder]), "train.label_issue_epochs=10", "stopped before saving any",
                   "train.resume=auto")
    assert ">= 1 (the default)" not in line  # no advice to set what the run already had
    stats = folder / "label_issue_stats.safetensors"
    stats.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"seen\": {\"dtype\"")  # cut short in its header
    refused(run_tool(main, [folder]), str(stats), "cut short")
    assert stats.read_bytes().endswith(b"\"dtype\"")


# ----------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_names_the_files_missing_under_data_path(tmp_path):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"")
    line = refused(run_in_process(["recipes/demo.yaml", "data.name=fashion_mnist", f"data.path={folder}",
                                   f"train.output_dir={tmp_path / 'run'}"]),
                   "does not hold t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")
    assert "could not be loaded" not in line and "train-images" not in line.split("does not hold")[1].split("(")[0]


# ----------------------------------------------------------------------------- two runners, one grid

def test_a_claimed_or_finished_folder_is_skipped_not_failed(tmp_path):
    """The job runner of grids and sweeps decides when a job starts: a folder another runner has
    claimed, or a finished run, starts no process and counts as skipped."""
    held, finished = tmp_path / "held", tmp_path / "finished"
    finished.mkdir()
    (finished / "results.json").write_text('{"finished": true}')
    never = [sys.executable, "-c", "raise SystemExit(3)"]  # a run that would fail, were it started
    with OutputLock(held, name=CLAIM_FILE):
        outcomes = run_jobs([Job("held", never, tmp_path / "held.log", folder=held),
                             Job("finished", never, tmp_path / "finished.log", folder=finished)])
    assert outcomes["held"].skipped == SKIPPED_HELD and outcomes["finished"].skipped == SKIPPED_FINISHED
    assert not any(o.failed for o in outcomes.values()) and not list(tmp_path.glob("*.log"))
    assert run_jobs([Job("free", never, tmp_path / "free.log", folder=held)])["free"].code == 3


def test_two_reproduce_processes_on_one_grid_train_every_run_once(tmp_path, monkeypatch):
    """A second ``reproduce`` of the same grid 5 s after the first (this process: it saves one
    start-up of torch): both exit 0, each run trains once, none is counted as failed."""
    from jocor_plugin.reproduce import main

    grid = _grid(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the runs share the cores with the other runner's
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    first = subprocess.Popen([sys.executable, "-m", "jocor_plugin.reproduce", str(grid)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(5)
        second = run_tool(main, [grid])
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    for code, text in ((first.returncode, out + err), (second.returncode, second.stdout + second.stderr)):
        assert code == 0, text[-3000:]
        assert "run(s) failed" not in text and "Traceback" not in text
    logs = sorted((tmp_path / "runs").glob("*/*/seed1/train.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert text.count("Training jocor_mlp") == 1 and text.count("Done:") == 1, text[-2000:]
        assert json.loads((log.parent / "results.json").read_text())["finished"]
        assert not (log.parent / CLAIM_FILE).exists() and not (log.parent / ".lock").exists()
