"""Per-epoch records of short fixed-seed runs, pinned bit for bit.

Speed work and refactors must not change what is trained: every method's records (losses,
accuracies, label precision, selected fraction, forget rate, lr) are compared with exact float
equality to ``tests/data/pinned_records.json``. A change that *means* to change results regenerates
the file with ``PIN_RECORDS_UPDATE=1 pytest tests/test_pinned_records.py`` and says why in its commit.
"""
import json
import os
from pathlib import Path

import pytest
import torch

from jocor_plugin.config import load_config
from jocor_plugin.run import train

PINNED = Path(__file__).parent / "data" / "pinned_records.json"
METHODS = ["standard", "standard_plus", "decoupling", "coteaching", "coteaching_plus", "jocor",
           "joint_only", "fcorrection", "dividemix"]
# short but not trivial: 3 epochs of 22 steps on 1,437 digits, tau ramping (T_k = 2), lr/beta1
# decaying in the last epoch, F-correction's T estimated from a 1-epoch first stage
RECIPE = ["data.name=digits", "noise.rate=0.4", "train.epochs=3", "train.batch_size=64",
          "method.num_gradual=2", "optim.decay_start=2", "method.estimation_epochs=1",
          "log.progress_bar=false", "train.export_models=false", "train.keep_checkpoints=0", "train.seed=3"]
# DivideMix: a 1-epoch warm-up, then 2 co-divided MixMatch epochs, the flip on (digits default off)
METHOD_ARGS = {"dividemix": ["method.kwargs={warmup_epochs: 1, flip: true}"]}
TIMES = ("train_time_s", "epoch_time_s")


def records(name: str, out: Path) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the arithmetic's order must not depend on the machine's core count
    try:
        result = train(load_config("recipes/demo.yaml", [*RECIPE, f"method.name={name}", *METHOD_ARGS.get(name, []),
                                                         f"train.output_dir={out}"]))
    finally:
        torch.set_num_threads(threads)
    return [{k: v for k, v in r.items() if k not in TIMES} for r in result["epochs"]]


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(PINNED.read_text()) if PINNED.is_file() else {}


@pytest.mark.parametrize("name", METHODS)
def test_records_are_pinned(name, pinned, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    got = records(name, tmp_path / name)
    if os.environ.get("PIN_RECORDS_UPDATE") == "1":
        data = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
        data[name] = got
        PINNED.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        pytest.skip("records written")  # only ever when asked to regenerate
    assert name in pinned, f"no pinned records for {name}: regenerate with PIN_RECORDS_UPDATE=1"
    # compared as JSON text: exact (floats round-trip) and NaN-aware (a label precision with nothing
    # selected is NaN)
    assert json.dumps(got, sort_keys=True) == json.dumps(pinned[name], sort_keys=True)
