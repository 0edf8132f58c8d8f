"""Nothing lost: interruption and exact resume, non-finite losses, and bad input (one clear line)."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from jocor_plugin.train.checkpoint import write_manifest
from conftest import run_in_process

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
CMD = [sys.executable, "-m", "jocor_plugin.run", "recipes/demo.yaml", "data.name=digits",
       "log.progress_bar=false"]
LONG = ["train.epochs=4", "train.batch_size=16", "train.log_interval=5"]


def run(*args, check=True, own_process=False):
    """The run's command line, in this process unless it needs one of its own (e.g. --debug raises)."""
    if own_process:
        proc = subprocess.run([*CMD, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    else:
        proc = run_in_process([*CMD[3:], *args])
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def epochs(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["epochs"]


def sigterm_after_first_epoch(*args: str) -> str:
    """Start a 4-epoch run, send SIGTERM once epoch 1 is logged; check the exit code, return stderr."""
    proc = subprocess.Popen([*CMD, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if line.startswith("epoch   1/4"):
            proc.send_signal(signal.SIGTERM)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    return stderr


def test_sigterm_saves_a_checkpoint_and_resume_is_exact(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    stderr = sigterm_after_first_epoch(*LONG, f"train.output_dir={cut}")
    assert "checkpoint saved to" in stderr and "train.resume=auto" in stderr and "Traceback" not in stderr
    interrupted = sorted((cut / "checkpoints").glob("epoch_*"))[-1]
    assert f"checkpoint saved to {interrupted}" in stderr  # the newest checkpoint is the stop's
    # usually inside epoch 2 (epoch_0001_step_SSSSSS); a signal that lands just after an epoch line
    # stops at that epoch end (epoch_0001, also exact); either way before the last epoch's end
    state = json.loads((interrupted / "trainer_state.json").read_text())
    assert 1 <= state["epoch"] < 4 and len(state["records"]) == state["epoch"]
    assert interrupted.name == f"epoch_{state['epoch']:04d}" + (f"_step_{state['step']:06d}" if state["step"] else "")
    run(*LONG, f"train.output_dir={cut}", "train.resume=auto")
    run(*LONG, f"train.output_dir={full}")
    a, b = epochs(full), epochs(cut)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        for key in ("train_loss", "test_acc_a", "test_acc_b", "label_precision", "selected_fraction"):
            assert x[key] == pytest.approx(y[key], abs=1e-9), (x["epoch"], key)


def test_sigterm_between_logging_intervals_stops_at_the_epoch_end(tmp_path):
    """An epoch shorter than train.log_interval never reaches a mid-epoch check: stop at its end."""
    out = tmp_path / "short"
    args = ["train.epochs=4", "train.batch_size=64", "train.log_interval=1000", "train.keep_checkpoints=0"]
    stderr = sigterm_after_first_epoch(*args, f"train.output_dir={out}")
    assert "after epoch" in stderr and "train.resume=auto" in stderr
    saved = sorted((out / "checkpoints").glob("epoch_*"))  # written although keep_checkpoints=0
    assert saved and "_step_" not in saved[-1].name
    run(*args, f"train.output_dir={out}", "train.resume=auto")
    assert len(epochs(out)) == 4


def test_checkpoints_are_pruned_to_keep_and_never_half_written(tmp_path):
    out = tmp_path / "k"
    run("train.epochs=3", "train.keep_checkpoints=2", f"train.output_dir={out}")
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["epoch_0002", "epoch_0003"]
    assert all((out / "checkpoints" / n / "trainer_state.json").is_file() for n in names)


def test_nonfinite_loss_stops_with_the_step_and_last_good_checkpoint(tmp_path):
    proc = run("train.epochs=2", "optim.lr=1e30", "train.log_interval=5", f"train.output_dir={tmp_path / 'n'}",
               check=False)
    assert proc.returncode == 2
    assert "NaN/inf at step" in proc.stderr and "epoch_0000" in proc.stderr and "nan_policy=skip" in proc.stderr


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_finite(tensors: dict) -> None:
    assert tensors and all(bool(torch.isfinite(t).all()) for t in tensors.values())


def test_nan_policy_skip_keeps_going(tmp_path):
    """A diverging run (lr 1e30) goes on past its NaN/inf losses, and what it leaves (checkpoint and
    exported networks) is finite: a skipped step's NaN gradient never reaches a weight."""
    out = tmp_path / "s"
    run("train.epochs=1", "optim.lr=1e30", "train.nan_policy=skip", f"train.output_dir={out}")
    assert epochs(out)[0]["nonfinite_steps"] > 0
    assert_finite(weights(out / "checkpoints" / "epoch_0001" / "model.safetensors"))
    for name in ("model_a", "model_b"):
        assert_finite(weights(out / name / "model.safetensors"))


@pytest.mark.parametrize("decay", ["0.0", "0.1"])  # weight decay must not move a skipped step either
def test_nan_policy_skip_leaves_the_weights_of_a_skipped_step_unchanged(tmp_path, monkeypatch, decay):
    """Every step's loss NaN (the method's loss times NaN, so every gradient is NaN): each step is
    skipped and changes nothing, so after the epoch the weights are still the initial ones
    (checkpoint epoch_0000), bit for bit, in the checkpoint and in the exported networks."""
    import dataclasses

    from jocor_plugin.methods import method_class

    jocor = method_class("jocor")
    real_call, calls = jocor.__call__, []

    def nan_loss(self, *args, **kwargs):
        calls.append(1)
        out = real_call(self, *args, **kwargs)
        return dataclasses.replace(out, loss=out.loss * float("nan"))

    monkeypatch.setattr(jocor, "__call__", nan_loss)
    out = tmp_path / "nan"
    run("train.epochs=1", "train.nan_policy=skip", "train.keep_checkpoints=2", f"optim.weight_decay={decay}",
        f"train.output_dir={out}")
    assert calls and [r["nonfinite_steps"] for r in epochs(out)] == [len(calls)]  # every step skipped
    initial = weights(out / "checkpoints" / "epoch_0000" / "model.safetensors")
    final = weights(out / "checkpoints" / "epoch_0001" / "model.safetensors")
    assert_finite(initial)
    assert initial.keys() == final.keys() and all(initial[k].equal(final[k]) for k in initial)
    for name in ("a", "b"):
        exported = weights(out / f"model_{name}" / "model.safetensors")
        assert exported.keys() == {k[len("net_a."):] for k in initial if k.startswith(f"net_{name}.")}
        assert all(exported[k].equal(initial[f"net_{name}.{k}"]) for k in exported)


def test_dividemix_skips_its_own_nonfinite_steps_without_moving_the_weights(tmp_path, monkeypatch):
    """DivideMix steps the optimizer itself (per network): under nan_policy=skip its all-NaN warm-up
    steps leave the weights as they started, weight decay included (the trainer's guarded_step)."""
    from jocor_plugin.methods import method_class

    dividemix = method_class("dividemix")
    real_loss = dividemix.warmup_loss
    monkeypatch.setattr(dividemix, "warmup_loss", lambda self, *a: real_loss(self, *a) * float("nan"))
    out = tmp_path / "dm"
    run("method.name=dividemix", "train.epochs=1", "train.nan_policy=skip", "train.keep_checkpoints=2",
        "optim.weight_decay=0.1", "train.max_steps_per_epoch=3", "train.label_issue_epochs=0",
        f"train.output_dir={out}")
    assert epochs(out)[0]["nonfinite_steps"] > 0
    initial = weights(out / "checkpoints" / "epoch_0000" / "model.safetensors")
    final = weights(out / "checkpoints" / "epoch_0001" / "model.safetensors")
    assert_finite(initial)
    assert all(initial[k].equal(final[k]) for k in initial)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_skipped_step_after_finite_ones_leaves_weights_and_optimizer_state_unchanged(optimizer):
    """After finite steps the optimizer has momentum (Adam's moments, SGD's buffer) and weight
    decay: a step with a NaN gradient must move neither the weights nor that state."""
    from jocor_plugin.train.engine import SkipNonFiniteStep

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = (torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1))
    skip = SkipNonFiniteStep(model, opt)
    x = torch.randn(8, 4)
    for scale in (1.0, 1.0, float("nan"), 1.0):
        (model(x).square().mean() * scale).backward()
        before = ([p.clone() for p in model.parameters()],
                  [{k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
                   for p in model.parameters()])
        with skip.step(update=True):
            opt.step()
        opt.zero_grad(set_to_none=True)
        changed = any(not p.equal(b) for p, b in zip(model.parameters(), before[0]))
        assert changed == (scale == scale)  # finite steps move the weights, the NaN one doesn't
        if scale != scale:
            for p, state in zip(model.parameters(), before[1]):
                assert all(torch.equal(opt.state[p][k], v) if torch.is_tensor(v) else opt.state[p][k] == v
                           for k, v in state.items())


def test_resume_from_an_explicit_folder_and_bad_resume_path(tmp_path):
    out = tmp_path / "r"
    run("train.epochs=1", f"train.output_dir={out}")
    run("train.epochs=2", f"train.output_dir={out}", f"train.resume={out / 'checkpoints' / 'epoch_0001'}")
    assert len(epochs(out)) == 2
    proc = run(f"train.output_dir={tmp_path / 'x'}", f"train.resume={tmp_path / 'nothing'}", check=False)
    assert proc.returncode == 2 and "not a checkpoint folder" in proc.stderr


class _RunsCode:
    """A pickle that creates a folder when unpickled: what loading must never do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_pickled_code_in_weights_or_checkpoints_is_refused_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"fc1.weight": _RunsCode(marker)}, evil)
    proc = run("train.epochs=1", f"model.pretrained_file={evil}", f"train.output_dir={tmp_path / 'w'}", check=False)
    assert proc.returncode == 2 and "Could not load pretrained weights" in proc.stderr
    out = tmp_path / "c"
    run("train.epochs=1", f"train.output_dir={out}")
    shutil.copy(evil, out / "checkpoints" / "epoch_0001" / "optimizer.bin")
    proc = run("train.epochs=2", f"train.output_dir={out}", "train.resume=auto", check=False)
    assert proc.returncode == 2 and "optimizer.bin changed after the checkpoint was written" in proc.stderr
    write_manifest(out / "checkpoints" / "epoch_0001")  # a forger who also rewrites the manifest
    proc = run("train.epochs=2", f"train.output_dir={out}", "train.resume=auto", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: Could not load the checkpoint")
    assert "unpickling them could run code" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def _weights(tmp_path, name, tensors):
    path = tmp_path / name
    if isinstance(tensors, bytes):
        path.write_bytes(tensors)
    else:
        save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("case, args, message", [
    ("batch larger than data", ["train.batch_size=5000"], "larger than the 1438 training samples"),
    ("missing weights", ["model.pretrained_file=/nonexistent/w.safetensors"], "does not exist"),
    ("corrupt weights", ["model.pretrained_file={corrupt}"], "Could not load pretrained weights"),
    ("other architecture", ["model.pretrained_file={other}"], "doesn't hold jocor_mlp's weights"),
    ("backbone can't take the input", ["model.name=jocor_cnn", "data.input_size=20"], "jocor_cnn can't take the data's 1x20x20 inputs"),
    ("unknown noise type", ["noise.type=gaussian"], "noise.type='gaussian' is not allowed"),
    ("forget rate 1", ["method.forget_rate=1.0"], "method.forget_rate=1.0 is invalid"),
    ("missing data path", ["data.path=/nonexistent/data"], "data.path='/nonexistent/data' does not exist"),
    ("hub offline", ["data.name=uoft-cs/cifar10"], "data.path=DIR"),
])
def test_bad_input_fails_with_one_line_and_keeps_earlier_results(tmp_path, case, args, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"finished": False, "mine": True}))
    (out / "config.yaml").write_text("mine: true\n")
    corrupt = _weights(tmp_path, "corrupt.safetensors", b"not a safetensors file")
    other = _weights(tmp_path, "other.safetensors", {"fc1.weight": torch.zeros(3, 3)})
    args = [a.format(corrupt=corrupt, other=other) for a in args]
    proc = run(*args, f"train.output_dir={out}", "train.overwrite=true", check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert json.loads((out / "results.json").read_text())["mine"] is True  # nothing overwritten
    assert (out / "config.yaml").read_text() == "mine: true\n"


def test_debug_flag_shows_the_traceback(tmp_path):
    proc = run("noise.rate=2", f"train.output_dir={tmp_path}", "--debug", check=False, own_process=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_resume_refuses_a_changed_recipe_unless_allowed_and_records_it(tmp_path):
    out = tmp_path / "r"
    run("train.epochs=1", f"train.output_dir={out}")
    config, results = (out / "config.yaml").read_text(), (out / "results.json").read_text()
    proc = run("train.epochs=2", "train.batch_size=64", "noise.rate=0.2", f"train.output_dir={out}",
               "train.resume=auto", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "noise.rate 0.5 -> 0.2, train.batch_size 128 -> 64" in proc.stderr
    assert "train.resume_allow_changes=true" in proc.stderr
    assert (out / "config.yaml").read_text() == config and (out / "results.json").read_text() == results
    run("train.epochs=2", "noise.rate=0.2", f"train.output_dir={out}", "train.resume=auto",
        "train.resume_allow_changes=true")
    recorded = json.loads((out / "results.json").read_text())
    assert recorded["recipe_changes"] == [{"key": "noise.rate", "old": 0.5, "new": 0.2, "epoch": 1, "step": 0}]
    assert len(recorded["epochs"]) == 2 and recorded["config"]["noise"]["rate"] == 0.2


def test_a_second_run_on_a_busy_output_dir_fails_at_once(tmp_path):
    """Refused before writing anything: the busy folder holds only the holder's lock, and is gone
    once that lock is released (it is removed only if the lock was all it ever held)."""
    from jocor_plugin.core.lock import LOCK_FILE, OutputLock

    out = tmp_path / "busy"
    with OutputLock(out):
        proc = run("train.epochs=1", f"train.output_dir={out}", check=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    assert proc.returncode == 2 and proc.stderr.startswith("error: train.output_dir=") and "in use by another run (pid" in proc.stderr
    assert not out.exists()


def test_an_output_dir_that_is_a_file_or_holds_a_corrupt_results_json_is_one_line(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    proc = run(f"train.output_dir={afile}", check=False)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr and afile.read_text() == "x"
    out = tmp_path / "corrupt"
    out.mkdir()
    (out / "results.json").write_text('{"finished": tr')
    proc = run(f"train.output_dir={out}", "train.overwrite=false", check=False)
    assert proc.returncode == 2 and "results.json is not valid JSON" in proc.stderr and "train.overwrite=true" in proc.stderr
    assert proc.stderr.count("\n") == 1 and (out / "results.json").read_text() == '{"finished": tr'
