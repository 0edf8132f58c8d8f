"""Guards that keep runs apart and refuse bad input early (issue 16), tested in-process and fast:
the output-folder lock, the resume recipe check, checkpoint writes and verification, recipe loading."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from jocor_plugin import checkpoint as ckpt
from jocor_plugin.checkpoint import GracefulStop, TrainState, save_checkpoint, verify_checkpoint
from jocor_plugin.config import ConfigError, config_to_dict, load_config
from jocor_plugin.errors import Interrupted, UserError
from jocor_plugin.lock import LOCK_FILE, OutputLock
from jocor_plugin.recipe_changes import format_changes, recipe_changes


# ----------------------------------------------------------------------------- lock

def test_a_second_run_on_a_locked_folder_fails_at_once(tmp_path):
    out = tmp_path / "run"
    with OutputLock(out):
        owner = json.loads((out / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] and owner["started"]
        with pytest.raises(UserError, match=r"is in use by another run \(pid \d+ on .*started"):
            OutputLock(out).acquire()
    assert not out.exists()  # the lock was all it held: nothing left behind
    with OutputLock(out):  # free again
        pass


def test_a_lock_held_by_another_process_and_a_stale_one(tmp_path, caplog):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from jocor_plugin.lock import OutputLock\n"
        f"l = OutputLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid} "):
            OutputLock(out).acquire()
    finally:
        holder.kill()  # as kill -9: the lock file stays, the flock goes
        holder.wait()
    assert (out / LOCK_FILE).is_file()
    with OutputLock(out):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "Took over the lock of pid" in caplog.text


def test_an_output_dir_that_is_a_file_or_not_writable(tmp_path, monkeypatch):
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        OutputLock(afile).acquire()
    real_open = os.open

    def denied(path, *args, **kwargs):  # chmod doesn't stop root: refuse as a read-only folder would
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UserError, match="is not writable"):
        OutputLock(tmp_path / "ro").acquire()
    assert not (tmp_path / "ro").exists()


# ----------------------------------------------------------------------------- recipe changes

def test_resume_recipe_changes_name_each_key_and_allow_more_epochs():
    old = config_to_dict(load_config(None, ["data.name=digits", "train.epochs=4"]))
    same = config_to_dict(load_config(None, ["data.name=digits", "train.epochs=9", "train.log_interval=3",
                                             "train.keep_checkpoints=5", "log.tracker=tensorboard",
                                             "train.output_dir=elsewhere", "train.resume=auto"]))
    assert recipe_changes(old, same) == []
    new = config_to_dict(load_config(None, ["data.name=digits", "train.epochs=2", "train.batch_size=64",
                                            "noise.rate=0.2", "train.seed=3", "method.name=coteaching",
                                            "optim.lr=0.01"]))
    changes = recipe_changes(old, new)
    assert {c.key for c in changes} == {"train.epochs", "train.batch_size", "noise.rate", "train.seed",
                                        "method.name", "optim.lr"}
    text = format_changes(changes)
    assert "noise.rate 0.5 -> 0.2" in text and "train.batch_size 128 -> 64" in text and "train.epochs 4 -> 2" in text


# ----------------------------------------------------------------------------- checkpoints

def _tiny(tmp_path):
    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator


def _state(epoch):
    state = TrainState()
    state.epoch = epoch
    return state


def test_checkpoint_disk_full_keeps_the_previous_and_removes_the_temporary(tmp_path, monkeypatch):
    accelerator = _tiny(tmp_path)
    first = save_checkpoint(accelerator, tmp_path, _state(1), keep=2, recipe={"a": {"b": 1}})
    before = sorted(p.name for p in first.iterdir())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_manifest", full)
    with pytest.raises(UserError) as err:
        save_checkpoint(accelerator, tmp_path, _state(2), keep=2)
    message = str(err.value)
    assert "No space left on device" in message and f"the previous checkpoint {first} is intact" in message
    assert "\n" not in message
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0001"]  # no .tmp_ left
    assert sorted(p.name for p in first.iterdir()) == before
    verify_checkpoint(first)


def test_a_read_only_checkpoints_folder_is_one_line(tmp_path, monkeypatch):
    accelerator = _tiny(tmp_path)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ckpt, "write_manifest", denied)
    with pytest.raises(UserError, match="Permission denied; no earlier checkpoint exists. Make .* writable"):
        save_checkpoint(accelerator, tmp_path, _state(1), keep=2)


@pytest.mark.parametrize("damage", ["delete random states", "tamper random states", "tamper weights",
                                    "delete weights"])
def test_a_missing_or_tampered_checkpoint_file_is_refused(tmp_path, damage):
    accelerator = _tiny(tmp_path)
    path = save_checkpoint(accelerator, tmp_path, _state(1), keep=2)
    verify_checkpoint(path)
    target = path / ("random_states_0.pkl" if "random" in damage else "model.safetensors")
    if damage.startswith("delete"):
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{target.name} (is missing|changed after the checkpoint was written)"):
        verify_checkpoint(path)


def test_random_states_are_checked_without_a_manifest(tmp_path):
    accelerator = _tiny(tmp_path)
    path = save_checkpoint(accelerator, tmp_path, _state(1), keep=2)
    (path / "manifest.json").unlink()  # as an older checkpoint
    verify_checkpoint(path)
    (path / "random_states_0.pkl").write_bytes(b"garbage")
    with pytest.raises(UserError, match="random_states_0.pkl .* can't be read"):
        verify_checkpoint(path)


def test_a_second_ctrl_c_while_saving_finishes_the_checkpoint_then_stops(tmp_path, monkeypatch):
    accelerator = _tiny(tmp_path)
    real_manifest = ckpt.write_manifest

    def slow_manifest(folder):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C lands mid-write
        real_manifest(folder)

    monkeypatch.setattr(ckpt, "write_manifest", slow_manifest)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: stop requested
        assert stop()
        with pytest.raises(Interrupted, match="once the checkpoint being written was complete") as err:
            save_checkpoint(accelerator, tmp_path, _state(1), keep=2, stop=stop)
    assert err.value.exit_code == 130
    verify_checkpoint(tmp_path / "checkpoints" / "epoch_0001")
    with GracefulStop() as stop:  # outside a checkpoint write the second Ctrl-C aborts at once
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted, match="Aborted by a second Ctrl-C, without saving"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)


# ----------------------------------------------------------------------------- recipes

def test_a_recipe_with_the_same_section_twice_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 3\ndata:\n  name: digits\ntrain:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"'train' appears twice \(lines 1 and 5\)"):
        load_config(recipe)
    recipe.write_text("train:\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match="'epochs' appears twice"):
        load_config(recipe)


def test_an_unset_variable_in_a_path_is_refused(monkeypatch):
    monkeypatch.delenv("JOCOR_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="the environment variable JOCOR_NOT_SET is not set"):
        load_config(None, ["train.output_dir=outputs/$JOCOR_NOT_SET"])
    with pytest.raises(ConfigError, match="data.path=.*JOCOR_NOT_SET is not set"):
        load_config(None, ["data.path=${JOCOR_NOT_SET}/data"])
    monkeypatch.setenv("JOCOR_SET", "abc")
    assert load_config(None, ["train.output_dir=outputs/$JOCOR_SET"]).train.output_dir == "outputs/abc"
