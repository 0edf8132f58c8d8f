"""Guards that keep runs apart and refuse bad input early, tested in-process and fast:
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

from jocor_plugin.train import checkpoint as ckpt
from jocor_plugin.train.checkpoint import GracefulStop, TrainState, save_checkpoint, verify_checkpoint
from jocor_plugin.config import ConfigError, config_to_dict, expand_path_variables, load_config
from jocor_plugin.core.errors import Interrupted, UserError
from jocor_plugin.core.lock import LOCK_FILE, OutputLock
from jocor_plugin.config.changes import format_changes, recipe_changes


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
        "import sys, time; from pathlib import Path; from jocor_plugin.core.lock import OutputLock\n"
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



def test_resume_of_an_older_checkpoint_reads_keys_added_since_as_their_defaults():
    # a checkpoint written before train.fidelity / noise.sampler existed: same recipe otherwise
    defaults = config_to_dict(load_config(None, []))
    new = config_to_dict(load_config(None, ["data.name=digits"]))
    old = {section: dict(values) for section, values in new.items()}
    del old["train"]["fidelity"], old["noise"]["sampler"]
    assert recipe_changes(old, new, defaults=defaults) == []
    # a value set away from the default still counts
    changed = config_to_dict(load_config(None, ["data.name=digits", "train.fidelity=authors_code"]))
    keys = {c.key for c in recipe_changes(old, changed, defaults=defaults)}
    assert "train.fidelity" in keys
    assert {c.key for c in recipe_changes(old, new)} == {"train.fidelity", "noise.sampler"}  # no defaults given

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
        expand_path_variables(load_config(None, ["train.output_dir=outputs/$JOCOR_NOT_SET"]))
    with pytest.raises(ConfigError, match="data.path=.*JOCOR_NOT_SET is not set"):
        expand_path_variables(load_config(None, ["data.path=${JOCOR_NOT_SET}/data"]))
    monkeypatch.setenv("JOCOR_SET", "abc")
    cfg = load_config(None, ["train.output_dir=outputs/$JOCOR_SET"])
    expand_path_variables(cfg)
    assert cfg.train.output_dir == "outputs/abc"


# ----------------------------------------------------------------------------- models

def test_backbones_that_dont_fit_the_data_or_the_weights_are_one_line(tmp_path):
    from safetensors.torch import save_file
    import timm
    from jocor_plugin.core.errors import ModelError
    from jocor_plugin.models import check_forward, create_backbone
    cnn = create_backbone("jocor_cnn", num_classes=10, in_chans=1)
    with pytest.raises(ModelError, match="jocor_cnn can't take the data's 1x28x28 inputs.*model.kwargs=\\{img_size: 28\\}"):
        check_forward(cnn, "jocor_cnn", (1, 28, 28), 10)
    check_forward(create_backbone("jocor_cnn", num_classes=10, in_chans=1, img_size=28), "jocor_cnn", (1, 28, 28), 10)
    check_forward(cnn, "jocor_cnn", (1, 32, 32), 10)
    mlp = create_backbone("jocor_mlp", num_classes=3, in_chans=3)  # RGB: exports too (timm's check)
    check_forward(mlp, "jocor_mlp", (3, 28, 28), 3, {"input_size": (3, 28, 28), "mean": (0,) * 3, "std": (1,) * 3,
                                                     "interpolation": "bilinear", "crop_pct": 1.0})
    vit = create_backbone("vit_tiny_patch16_224", num_classes=3, in_chans=3)
    with pytest.raises(ModelError, match="model.kwargs=\\{img_size: 32\\}"):
        check_forward(vit, "vit_tiny_patch16_224", (3, 32, 32), 3)
    with pytest.raises(ModelError, match="takes no argument 'hiden_dim'. Did you mean 'hidden_dim'"):
        create_backbone("jocor_mlp", num_classes=10, in_chans=1, hiden_dim=64)
    other = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("jocor_cnn").state_dict().items()}, str(other))
    for name in ("jocor_mlp", "resnet18"):  # resnet18: timm only warns (its classifier is replaced)
        with pytest.raises(ModelError, match=f"doesn't hold {name}'s weights: [0-9]+ of its"):
            create_backbone(name, num_classes=10, in_chans=1, pretrained_file=str(other))


def test_unknown_optimizer_and_method_kwargs_are_one_line():
    with pytest.raises(ConfigError, match="optim.name='adamw2' is not one of timm's optimizers. Did you mean 'adamw'"):
        load_config(None, ["optim.name=adamw2"])
    with pytest.raises(ConfigError, match="method 'jocor' takes no argument 'co_lambdaa'. Did you mean 'method.co_lambda'"):
        load_config(None, ["method.kwargs={co_lambdaa: 0.5}"])
