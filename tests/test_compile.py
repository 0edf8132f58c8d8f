"""train.compile compiles the pair in place: state_dict keys, checkpoints and exports stay eager's."""
from pathlib import Path

from jocor_plugin.config import load_config
from jocor_plugin.train.trainer import setup

ROOT = Path(__file__).resolve().parents[1]


def test_compile_is_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = ["data.name=digits", "log.progress_bar=false", f"train.output_dir={tmp_path}"]
    eager = setup(load_config("recipes/demo.yaml", cfg))
    compiled = setup(load_config("recipes/demo.yaml", [*cfg, "train.compile=true", "train.overwrite=true"]))
    net = compiled.accelerator.unwrap_model(compiled.pair)
    assert net._compiled_call_impl is not None  # compiled lazily, at the first step
    assert eager.accelerator.unwrap_model(eager.pair)._compiled_call_impl is None
    assert list(net.state_dict()) == list(eager.accelerator.unwrap_model(eager.pair).state_dict())
