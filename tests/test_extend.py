"""README "How to extend": a method, a noise type and a data source, each one file with its
registration (examples/extend/), picked by name in a recipe and trained together."""
from pathlib import Path

import numpy as np

from conftest import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]


def test_a_method_a_noise_type_and_a_data_source_each_from_one_file(tmp_path, monkeypatch):
    from jocor_plugin.config import load_config
    from jocor_plugin.data.splits import build_noisy_splits, column_array
    from jocor_plugin.noise import NOISE_TYPES
    from jocor_plugin.train.trainer import train

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "extend"))
    cfg = load_config("recipes/demo.yaml", [
        "method.imports=[my_method, my_noise, my_data]", "method.name=median_loss", "noise.type=to_first",
        "noise.rate=0.3", "data.name=squares", "train.epochs=1", "train.batch_size=16", "log.progress_bar=false",
        "train.export_models=false", f"train.output_dir={tmp_path / 'run'}"])
    assert cfg.forget_rate == 0.3  # the noise type's default tau
    assert NOISE_TYPES["to_first"].paper_setting(0.3) == "To-first-30%"  # its label in reports

    splits = build_noisy_splits(cfg)  # the data source, with the noise type injected
    given, clean = column_array(splits.train, "label"), column_array(splits.train, "clean_label")
    assert len(splits.train) == 160 and len(splits.test) == 40  # test split held out of the 200
    flipped = given != clean
    assert 0.05 < flipped.mean() < 0.3 and (given[flipped] == 0).all()  # every flip lands on class 0

    with one_torch_thread():
        record = train(cfg)["epochs"][0]
    assert record["median_loss_kept"] == record["selected_fraction"]  # the method's after_epoch hook
    assert 0.45 < record["selected_fraction"] < 0.8 and np.isfinite(record["train_loss"])
