"""End to end through the command line, as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import jocor_plugin  # noqa: F401
from conftest import run_in_process

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.name=digits", "train.epochs=2", "train.batch_size=64", "log.progress_bar=false"]


def run(*args: str, launcher=None, check=True):
    """The command line: in this process, or with ``launcher`` (e.g. accelerate launch) in a new one."""
    if launcher is None:
        proc = run_in_process(args)
    else:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([*launcher, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "jocor"
    proc = run("recipes/demo.yaml", *TINY, f"train.output_dir={out}")
    return out, proc


def test_python_m_run_writes_results_config_checkpoints(tiny_run):
    out, proc = tiny_run
    r = results(out)
    assert r["finished"] is True and len(r["epochs"]) == 2
    for record in r["epochs"]:
        assert {"epoch", "test_acc_a", "test_acc_b", "label_precision", "selected_fraction", "train_loss"} <= set(record)
        assert 0 <= record["label_precision"] <= 1 and 0 <= record["test_acc_a"] <= 100
    assert r["summary"]["test_acc_last10"] == pytest.approx(
        sum(e["test_acc_a"] + e["test_acc_b"] for e in r["epochs"]) / 4)
    assert 0.3 < r["noise"]["actual_rate"] < 0.7
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "epoch_0001").is_dir()
    assert "label_precision" in proc.stdout and "test_acc a" in proc.stdout  # per-epoch line


def test_forget_rate_ramps_as_the_paper(tiny_run):
    out, _ = tiny_run
    assert [e["forget_rate"] for e in results(out)["epochs"]] == pytest.approx([0.0, 0.05])


def test_exported_models_load_in_plain_timm(tiny_run):
    out, _ = tiny_run
    from safetensors.torch import load_file

    weights = load_file(out / "model_a" / "model.safetensors")
    by_dir = timm.create_model(f"local-dir:{out / 'model_a'}", pretrained=True)
    by_name = timm.create_model("jocor_mlp", pretrained=True, num_classes=10, in_chans=1, img_size=28,
                                pretrained_cfg_overlay=dict(file=str(out / "model_a" / "model.safetensors"),
                                                            num_classes=10))
    for model in (by_dir, by_name):
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, weights[name]), name
    b = load_file(out / "model_b" / "model.safetensors")
    assert not torch.equal(b["fc1.weight"], weights["fc1.weight"])


def test_resume_continues_exactly(tiny_run, tmp_path):
    out, _ = tiny_run
    three = tmp_path / "three"
    run("recipes/demo.yaml", *TINY, "train.epochs=3", f"train.output_dir={three}")
    resumed = tmp_path / "resumed"
    run("recipes/demo.yaml", *TINY, "train.epochs=2", f"train.output_dir={resumed}")
    run("recipes/demo.yaml", *TINY, "train.epochs=3", f"train.output_dir={resumed}", "train.resume=auto")
    full, cont = results(three)["epochs"], results(resumed)["epochs"]
    assert len(cont) == 3
    for a, b in zip(full, cont):
        for key in ("train_loss", "test_acc_a", "test_acc_b", "label_precision"):
            assert a[key] == pytest.approx(b[key], abs=1e-9), (a["epoch"], key)


def test_accelerate_launch_runs_the_same_entry_point(tmp_path):
    out = tmp_path / "launched"
    proc = run("--config_file", "accelerate_configs/cpu.yaml", "--mixed_precision", "bf16", "-m",
               "jocor_plugin.run", "recipes/demo.yaml", *TINY, "method.name=standard", f"train.output_dir={out}",
               "log.tracker=tensorboard", launcher=(sys.executable, "-m", "accelerate.commands.launch"))
    assert "mixed precision bf16" in proc.stdout  # autocast on the CPU
    r = results(out)
    assert r["finished"] and "test_acc_b" not in r["epochs"][0]  # a single network for standard
    assert not (out / "model_b").exists()
    assert list(out.glob("jocor_plugin/events.out.tfevents*"))  # the tensorboard tracker wrote


def test_two_cpu_processes_train_one_model_with_gloo(tmp_path):
    out = tmp_path / "ddp"
    proc = run("--config_file", "accelerate_configs/cpu_2proc.yaml", "-m", "jocor_plugin.run", "recipes/demo.yaml",
               *TINY, "method.selection=global", f"train.output_dir={out}",
               launcher=(sys.executable, "-m", "accelerate.commands.launch"))
    r = results(out)
    assert r["num_processes"] == 2 and r["finished"] and len(r["epochs"]) == 2
    assert proc.stdout.count("epoch   2/2") == 1  # only the main process prints
    assert "2 process(es) (MULTI_CPU)" in proc.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_load_as_accelerate_reads_them(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1 and config.mixed_precision in ("no", "bf16", "fp16")
    if config.distributed_type.value == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


def test_wandb_tracker_works_offline(tmp_path):
    out = tmp_path / "wb"
    run("recipes/demo.yaml", *TINY, "train.epochs=1", f"train.output_dir={out}", "log.tracker=wandb")
    assert list((out / "wandb").glob("offline-run-*"))


def test_refuses_to_overwrite_a_finished_run(tiny_run):
    out, _ = tiny_run
    before = (out / "results.json").read_text()
    proc = run("recipes/demo.yaml", *TINY, f"train.output_dir={out}", "train.overwrite=false", check=False)
    assert proc.returncode == 2
    assert "already holds a finished run" in proc.stderr and "train.overwrite=true" in proc.stderr
    assert (out / "results.json").read_text() == before


@pytest.mark.parametrize("override, message", [
    ("train.epcohs=3", "Did you mean 'train.epochs'"),
    ("model.name=resnet81", "Did you mean"),
    ("noise.rate=1.5", "noise.rate=1.5 is invalid"),
])
def test_bad_input_is_one_clear_line_without_traceback(tmp_path, override, message):
    proc = run("recipes/demo.yaml", *TINY, f"train.output_dir={tmp_path / 'x'}", override, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_help_config_and_list_methods():
    assert "`method.co_lambda`" in run("--help-config", "--markdown").stdout
    listing = run("--list-methods").stdout
    assert "jocor:" in listing and "co_lambda" in listing and "standard:" in listing


def test_fcorrection_estimates_t_then_trains_a_fresh_network(tmp_path):
    out = tmp_path / "fc"
    proc = run("recipes/demo.yaml", *TINY, "method.name=fcorrection", f"train.output_dir={out}")
    r = results(out)
    t = r["transition_matrix"]
    assert len(t["estimated"]) == 10 and len(t["estimation_epochs"]) == 2
    assert t["error"] > 0 and t["true"][0][0] == pytest.approx(0.5)
    assert proc.stdout.count("[estimate T] epoch") == 2 and len(r["epochs"]) == 2
    # a given matrix skips the estimation stage
    given = tmp_path / "T.json"
    given.write_text(json.dumps(t["true"]))
    proc = run("recipes/demo.yaml", *TINY, "method.name=fcorrection", f"method.transition_matrix={given}",
               f"train.output_dir={tmp_path / 'given'}")
    assert "[estimate T]" not in proc.stdout and "transition_matrix" not in results(tmp_path / "given")


def test_clean_validation_split_picks_and_exports_the_best_epoch(tmp_path):
    from datasets import load_from_disk  # noqa: F401  (the layout a user saves)

    from jocor_plugin.config import load_config
    from jocor_plugin.data import load_splits

    splits = load_splits(load_config(None, ["data.name=digits"]).data)
    halves = splits["test"].train_test_split(test_size=0.5, seed=0)
    splits["validation"], splits["test"] = halves["train"], halves["test"]
    splits.save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "val"
    run("recipes/demo.yaml", *TINY, "train.epochs=3", f"data.path={tmp_path / 'data'}", f"train.output_dir={out}")
    r = results(out)
    assert all("val_acc_a" in e and "val_acc_b" in e for e in r["epochs"])
    best = max(r["epochs"], key=lambda e: e["val_acc_a"] + e["val_acc_b"])
    assert r["summary"]["best_epoch"] == best["epoch"]
    assert r["summary"]["test_acc_best"] == pytest.approx((best["test_acc_a"] + best["test_acc_b"]) / 2)
    assert (out / "best" / "model_a" / "model.safetensors").is_file()
