"""Nothing lost, where it is easiest to lose: a run stopped (at an epoch end or inside an epoch) and
continued with ``train.resume=auto`` gives the per-epoch records and the weights of the same run
trained in one go, exactly -- also when randomness follows the checkpoint (dropout, augmentation,
DivideMix's crops, flips and mixup draw from the global generators a checkpoint must restore), and
without training a stage that estimates something (F-correction's T, ``forget_rate=auto``'s tau)
a second time.

The stop is requested in this process, as a SIGTERM would request it, at a chosen point in the
run (``stop_at``): no timing, the same point on every machine. All runs are in-process on the
built-in digits (1,438 training images, 22 steps of 64 per epoch), a few seconds each.
"""
import contextlib
import importlib
import json
import logging
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import one_torch_thread, run_in_process
from jocor_plugin.train.checkpoint import GracefulStop
from jocor_plugin.train.engine import EpochMeter
from jocor_plugin.train.trainer import Trainer

# 3 epochs with the forget rate ramping (T_k = 2) and the lr/beta1 decaying in the last one, so a
# resumed epoch that took the schedule from the wrong epoch shows in the records
RECIPE = ["recipes/demo.yaml", "data.name=digits", "noise.rate=0.4", "train.epochs=3", "train.batch_size=64",
          "method.num_gradual=2", "optim.decay_start=2", "train.seed=3", "log.progress_bar=false",
          "train.export_models=false"]
TIMES = ("train_time_s", "epoch_time_s")  # the only figures allowed to differ
RANDOM = {  # randomness drawn after every checkpoint, from the generators the checkpoint holds
    "dropout": ["model.kwargs={drop_rate: 0.3}"],
    "augment": ["data.augment=true"],
    "dividemix": ["method.name=dividemix", "method.kwargs={warmup_epochs: 1, flip: true}"],
}


def run(out: Path, *args: str, code: int = 0):
    proc = run_in_process([*RECIPE, *args, f"train.output_dir={out}"])
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def records(out: Path) -> str:
    """The run's per-epoch records without their timings, as JSON text: compared exactly (floats
    round-trip) and NaN-aware."""
    epochs = json.loads((out / "results.json").read_text())["epochs"]
    return json.dumps([{k: v for k, v in r.items() if k not in TIMES} for r in epochs], sort_keys=True)


def final_weights(out: Path) -> dict:
    """Both networks (and nothing else) of the run's last checkpoint."""
    return load_file(str(sorted((out / "checkpoints").glob("epoch_*"))[-1] / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].equal(b[key]), key


@contextlib.contextmanager
def stop_at(epochs: int, steps: int = 0):
    """Ask the run to stop (``GracefulStop()`` true, as after a SIGTERM) at every poll once
    ``epochs`` epochs of training proper are logged and ``steps`` more steps trained. The trainer
    polls at its logging intervals inside an epoch and at each epoch end: ``steps=0`` stops at the
    end of epoch ``epochs``, ``steps=1`` at the first interval of the next one. A stage's epochs
    (logged as '[estimate ...] epoch') don't count."""
    seen = {"epochs": 0, "steps": 0}

    class EpochLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("epoch "):
                seen["epochs"] += 1

    def polled(stop: GracefulStop) -> bool:
        if seen["epochs"] >= epochs and seen["steps"] >= steps:
            stop.signal = signal.SIGTERM
        return stop.signal is not None

    real_update = EpochMeter.update

    def update(meter, *args, **kwargs):
        real_update(meter, *args, **kwargs)
        if seen["epochs"] >= epochs:
            seen["steps"] += 1

    handler, trainer_log = EpochLines(), logging.getLogger("jocor_plugin.train.trainer")
    trainer_log.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(GracefulStop, "__call__", polled)
            mp.setattr(EpochMeter, "update", update)
            yield seen
    finally:
        trainer_log.removeHandler(handler)


def interrupted_and_resumed(out: Path, *args: str, epochs: int, steps: int = 0) -> Path:
    """Run ``args`` into ``out`` stopped by ``stop_at(epochs, steps)``, then resume it to the end;
    returns the checkpoint the stop wrote."""
    with stop_at(epochs, steps):
        proc = run(out, *args, code=128 + signal.SIGTERM)
    assert "Stopped by SIGTERM" in proc.stderr and "train.resume=auto" in proc.stderr, proc.stderr
    saved = sorted((out / "checkpoints").glob("epoch_*"))[-1]
    assert f"checkpoint saved to {saved}" in proc.stderr
    assert len(json.loads((out / "results.json").read_text())["epochs"]) == epochs  # stopped where asked
    proc = run(out, *args, "train.resume=auto")
    assert f"Resumed from {saved}: epoch {epochs + 1}, step 0." in proc.stdout
    return saved


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The recipe without dropout or augmentation, trained in one go."""
    out = tmp_path_factory.mktemp("plain") / "run"
    run(out)
    return out


@pytest.mark.parametrize("case", sorted(RANDOM))
def test_a_run_resumed_at_an_epoch_end_with_randomness_after_it_is_exact(case, tmp_path, plain):
    """Stopped after epoch 1 of 3 and resumed: records and final weights equal an uninterrupted
    run's although dropout masks, crops and flips (and DivideMix's mixup permutations) are drawn
    after the checkpoint -- only if the checkpoint's random states are the ones training goes on
    with. The randomness is real: the same recipe without it trains differently."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    run(full, *RANDOM[case])
    saved = interrupted_and_resumed(cut, *RANDOM[case], epochs=1)
    assert saved.name == "epoch_0001"
    assert records(cut) == records(full)
    assert_same_weights(final_weights(cut), final_weights(full))
    if case != "dividemix":  # DivideMix always augments; the others must differ from the plain recipe
        assert records(full) != records(plain)


def test_augmentation_trains_and_stays_out_of_evaluation(tmp_path):
    """``data.augment=true`` on in-memory data: a run learns with it (clean labels, one network:
    well above the 10 % of chance, the loss falling every epoch); the training batches are cropped
    and flipped, each batch with its own draws (a function of the seed and the batch's samples, so
    a resumed run draws them alike), the evaluation batches never."""
    import torch

    from jocor_plugin.config import load_config
    from jocor_plugin.data import InMemoryImages, build_noisy_splits, make_loader

    out = tmp_path / "aug"
    run(out, "data.augment=true", "noise.rate=0.0", "method.name=standard")
    epochs = json.loads((out / "results.json").read_text())["epochs"]
    losses = [r["train_loss"] for r in epochs]
    assert epochs[-1]["test_acc_a"] > 50 and losses == sorted(losses, reverse=True) and len(set(losses)) == 3
    cfg = load_config(None, ["data.name=digits", "data.augment=true"])
    splits = build_noisy_splits(cfg)
    image_config = {"input_size": (1, 28, 28), "mean": (0.0,), "std": (1.0,), "interpolation": "bilinear",
                    "crop_pct": 1.0}
    train = make_loader(splits.train, cfg.data, image_config, batch_size=64, train=True, device="cpu", seed=0)
    test = make_loader(splits.test, cfg.data, image_config, batch_size=64, train=False, device="cpu", seed=0)
    assert isinstance(train.dataset, InMemoryImages) and isinstance(test.dataset, InMemoryImages)
    first, again = (train.dataset.__getitems__(list(range(64)))["pixel_values"] for _ in range(2))
    other = train.dataset.__getitems__(list(range(1, 65)))["pixel_values"]
    plain = train.dataset.with_augment(False).__getitems__(list(range(65)))["pixel_values"]
    assert torch.equal(first, again)  # the same batch, the same draws
    assert not torch.equal(first, plain[:64]) and not torch.equal(other[:63], first[1:])  # augmented, anew
    first, second = (test.dataset.__getitems__(list(range(64)))["pixel_values"] for _ in range(2))
    assert torch.equal(first, second)


# The loader fetches one batch ahead of the step (Accelerate's DataLoaderShard looks ahead to know
# the last batch): augmentation drawn from the global generator while fetching would put the next
# batch's draws into a mid-epoch checkpoint's random states; "augment" checks it doesn't.
@pytest.mark.parametrize("case", ["dropout", "augment"])
def test_a_stop_inside_an_epoch_resumes_exactly(case, tmp_path):
    """A stop polled at the first logging interval of epoch 2 (after 5 of its 22 steps) writes a
    mid-epoch checkpoint (``epoch_0001_step_000005``: 1 epoch and 5 steps done, with the epoch's
    meter); resumed, the epoch goes on from step 6 over the same sample order, and the records and
    weights equal an uninterrupted run's."""
    args = ["train.log_interval=5", *RANDOM[case]]
    full, cut = tmp_path / "full", tmp_path / "cut"
    run(full, *args)
    with stop_at(epochs=1, steps=1):
        proc = run(cut, *args, code=128 + signal.SIGTERM)
    saved = sorted((cut / "checkpoints").glob("epoch_*"))[-1]
    assert "_step_" in saved.name and saved.name == "epoch_0001_step_000005", saved.name
    assert "in epoch 2 after step 5" in proc.stderr and str(saved) in proc.stderr
    state = json.loads((saved / "trainer_state.json").read_text())
    assert (state["epoch"], state["step"], len(state["records"])) == (1, 5, 1)
    assert (saved / "epoch_meter.safetensors").is_file()
    run(cut, *args, "train.resume=auto")
    assert records(cut) == records(full)
    assert_same_weights(final_weights(cut), final_weights(full))


ESTIMATES = {  # the stage's recipe, the estimator it calls once, and where its result goes in results.json
    "fcorrection": (["method.name=fcorrection"], "jocor_plugin.methods.fcorrection.estimate_transition_matrix",
                    "transition_matrix", "estimated"),
    "forget_rate=auto": (["method.forget_rate=auto"], "jocor_plugin.train.estimate.estimate_noise_rate",
                         "forget_rate_estimate", "rate"),
}


@pytest.mark.parametrize("case", sorted(ESTIMATES))
def test_a_resumed_run_doesnt_estimate_again(case, tmp_path, monkeypatch):
    """F-correction's transition matrix and ``forget_rate=auto``'s tau come from a stage trained
    before epoch 1; a run stopped after epoch 1 and resumed reuses the saved estimate (no stage, no
    estimator call) and its records equal an uninterrupted run's, which estimates once."""
    args, estimator, section, key = ESTIMATES[case]
    args = [*args, "method.estimation_epochs=1"]
    module, name = estimator.rsplit(".", 1)
    calls = {"estimator": 0, "stage": 0}
    real_estimator, real_stage = getattr(importlib.import_module(module), name), Trainer.run_stage

    def counted_estimator(*a, **k):
        calls["estimator"] += 1
        return real_estimator(*a, **k)

    def counted_stage(*a, **k):
        calls["stage"] += 1
        return real_stage(*a, **k)

    monkeypatch.setattr(estimator, counted_estimator)
    monkeypatch.setattr(Trainer, "run_stage", counted_stage)

    def counted(out: Path, *more: str, code: int = 0) -> dict:
        calls.update(estimator=0, stage=0)
        run(out, *args, *more, code=code)
        return dict(calls)

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert counted(full) == {"estimator": 1, "stage": 1}
    with stop_at(epochs=1):
        assert counted(cut, code=128 + signal.SIGTERM) == {"estimator": 1, "stage": 1}
    assert sorted(p.name for p in (cut / "checkpoints").glob("epoch_*"))[-1] == "epoch_0001"
    assert counted(cut, "train.resume=auto") == {"estimator": 0, "stage": 0}
    assert records(cut) == records(full)
    assert_same_weights(final_weights(cut), final_weights(full))
    resumed, whole = (json.loads((out / "results.json").read_text()) for out in (cut, full))
    assert resumed[section][key] == whole[section][key] and resumed["forget_rate"] == whole["forget_rate"]
