from pathlib import Path

import pytest

from jocor_plugin.config import ConfigError, describe_config, load_config, with_reference_table

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_are_typed_by_the_schema():
    cfg = load_config(None, ["model.name=resnet18", "method.co_lambda=0.9", "noise.rate=0.5",
                             "train.epochs=3", "data.path=null", "optim.betas=[0.9, 0.99]",
                             "data.name=1234", "model.kwargs={drop_rate: 0.1}"])
    assert cfg.model.name == "resnet18"
    assert cfg.method.co_lambda == 0.9 and isinstance(cfg.method.co_lambda, float)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.path is None
    assert cfg.optim.betas == [0.9, 0.99]
    assert cfg.data.name == "1234"  # a str key keeps what was typed
    assert cfg.model.kwargs == {"drop_rate": 0.1}


def test_integer_and_yaml11_exponent_given_for_float_are_accepted(tmp_path):
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 8e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(recipe).optim.lr == 8e-4


@pytest.mark.parametrize("override, words", [
    ("train.epcohs=3", ["train.epcohs", "Did you mean 'train.epochs'"]),
    ("trian.epochs=3", ["trian", "Did you mean 'train'"]),
    ("train.epochs=three", ["train.epochs", "'three'", "int"]),
    ("train.epochs=2.5", ["train.epochs", "int"]),
    ("log.progress_bar=maybe", ["log.progress_bar", "bool"]),
    ("noise.type=symetric", ["noise.type", "Did you mean 'symmetric'"]),
    ("noise.rate=1.0", ["noise.rate", "[0, 1)"]),
    ("noise.rate=-0.1", ["noise.rate", "[0, 1)"]),
    ("method.forget_rate=1", ["method.forget_rate", "[0, 1)"]),
    ("method.name=jocr", ["method.name", "Did you mean 'jocor'"]),
    ("train.batch_size=0", ["train.batch_size"]),
    ("train.epochs", ["section.key=value"]),
])
def test_bad_overrides_name_key_value_and_fix(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value)


def test_recipe_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  batchsize: 64\n")
    with pytest.raises(ConfigError, match=r"train.batchsize.*Did you mean 'train.batch_size'"):
        load_config(bad)
    bad.write_text("model:\n  name: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"model.name"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_forget_rate_defaults_to_noise_rate_half_for_asymmetric():
    assert load_config(None, ["noise.rate=0.2"]).forget_rate == 0.2
    assert load_config(None, ["noise.type=asymmetric", "noise.rate=0.4"]).forget_rate == 0.2
    assert load_config(None, ["method.forget_rate=0.3"]).forget_rate == 0.3


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe, tmp_path):
    """A shipped recipe loads; every key it sets arrives with its value (``train.output_dir`` with
    its ``{section.key}`` placeholders filled, '/' -> '_'); its model is a timm model and its method
    a registered one (load_config checks neither name against them); and the resolved recipe, as
    written to config.yaml, loads back to itself."""
    import re

    import timm
    import yaml

    import jocor_plugin.models.pair  # noqa: F401  (registers the paper's networks with timm)
    from jocor_plugin.config import config_to_dict
    from jocor_plugin.methods import list_methods

    cfg = load_config(recipe)
    resolved = config_to_dict(cfg)
    for section, keys in yaml.safe_load(recipe.read_text()).items():
        for key, value in keys.items():
            if (section, key) == ("train", "output_dir"):
                value = re.sub(r"\{(\w+)\.(\w+)\}", lambda m: str(resolved[m[1]][m[2]]).replace("/", "_"), value)
            assert resolved[section][key] == value, f"{section}.{key}"
    assert timm.is_model(cfg.model.name), cfg.model.name
    assert cfg.method.name in list_methods()
    written = tmp_path / "config.yaml"
    written.write_text(yaml.safe_dump(resolved, sort_keys=False))
    assert config_to_dict(load_config(written)) == resolved


def test_reference_lists_every_key_and_readme_uses_it():
    table = describe_config(markdown=True)
    for key in ["data.name", "data.path", "noise.type", "noise.rate", "model.name", "method.name",
                "method.co_lambda", "method.forget_rate", "train.epochs", "train.batch_size",
                "train.seed", "train.output_dir", "train.resume", "log.tracker"]:
        assert f"`{key}`" in table
    reference = (ROOT / "docs" / "recipes.md").read_text()  # the recipe reference page (README links it)
    assert table in reference
    assert with_reference_table(reference) == reference, "docs/recipes.md's recipe reference is stale: run `make docs`"


def test_data_name_comes_from_the_data_unless_the_recipe_names_it(tmp_path):
    recipe = ROOT / "recipes" / "mnist5k_sym50.yaml"
    assert load_config(recipe, [f"data.path={tmp_path / 'my_photos'}/"]).data.name == "my_photos"
    assert load_config(recipe, [f"data.path={tmp_path / 'shop.parquet'}"]).data.name == "shop"
    assert load_config(recipe, [f"data.path={tmp_path / 'shop' / '*.parquet'}"]).data.name == "shop"
    assert load_config(recipe).data.name == "mnist5k"  # the built-in itself
    named = ["data.name=uoft-cs/cifar10", f"data.path={tmp_path / 'copy'}"]  # a hub id with a local copy
    assert load_config(None, named).data.name == "uoft-cs/cifar10"


def test_default_output_dir_names_data_and_method():
    assert load_config(None).train.output_dir == "outputs/mnist5k_jocor"
    assert load_config(None, ["method.name=standard", "data.name=uoft-cs/cifar10"]).train.output_dir == \
        "outputs/uoft-cs_cifar10_standard"
    cfg = load_config(None, ["train.output_dir=runs/{noise.type}{noise.rate}/$WANDB_RUN_ID/${HOME}"])
    assert cfg.train.output_dir == "runs/symmetric0.5/$WANDB_RUN_ID/${HOME}"  # $VARS: at run time
    with pytest.raises(ConfigError, match=r"\{train.epoch\} is not a recipe key"):
        load_config(None, ["train.output_dir=out/{train.epoch}"])


def test_real_noisy_data_estimates_tau_unless_given():
    from jocor_plugin.config.schema import forget_rate_source

    cfg = load_config(None, ["noise.type=none"])
    assert cfg.method.forget_rate == "auto" and "estimated" in forget_rate_source(cfg)
    assert cfg.noise.rate == 0.0  # nothing injected: the recipe records no rate
    assert load_config(None, ["noise.type=none", "method.forget_rate=0.3"]).forget_rate == 0.3
    standard = load_config(None, ["noise.type=none", "method.name=standard"])  # tau unused: nothing to estimate
    assert standard.method.forget_rate is None and forget_rate_source(standard) == "unused by standard"
    assert load_config(None, ["noise.rate=0.2"]).method.forget_rate is None  # injected noise: tau = its rate


def test_own_asymmetric_class_map(tmp_path):
    import json

    import numpy as np

    T = np.eye(3)
    T[0, 0], T[0, 1] = 0.6, 0.4  # class 0 -> 1 with 40 %
    path = tmp_path / "T.json"
    path.write_text(json.dumps(T.tolist()))
    cfg = load_config(None, ["noise.type=asymmetric", f"noise.transition_matrix={path}"])
    assert cfg.forget_rate == pytest.approx(0.4 / 3)
    with pytest.raises(ConfigError, match="noise.transition_matrix.*noise.type=asymmetric"):
        load_config(None, [f"noise.transition_matrix={path}"])
    path.write_text("[[0.5, 0.4], [0, 1]]")
    with pytest.raises(ConfigError, match="noise.transition_matrix=.*must sum to 1"):
        load_config(None, ["noise.type=asymmetric", f"noise.transition_matrix={path}"])


def test_timm_schedule_with_warmup_and_optimizer_arguments():
    from timm.scheduler import create_scheduler_v2
    import torch

    from jocor_plugin.train.schedule import lr_beta1_at

    cfg = load_config(None, ["optim.schedule=cosine", "optim.warmup_epochs=3", "optim.lr=0.1", "optim.min_lr=1e-4",
                             "optim.name=sgd", "optim.momentum=0.8", "optim.kwargs={nesterov: true}"])
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    timm_sched, _ = create_scheduler_v2(probe, sched="cosine", num_epochs=20, warmup_epochs=3, min_lr=1e-4)
    for epoch in range(20):
        timm_sched.step(epoch)
        assert lr_beta1_at(epoch, 20, cfg.optim)[0] == pytest.approx(probe.param_groups[0]["lr"])
    assert lr_beta1_at(0, 20, cfg.optim)[0] == pytest.approx(1e-5)  # warm-up starts at optim.warmup_lr
    with pytest.raises(ConfigError, match="optim.warmup_epochs.*timm's schedules"):
        load_config(None, ["optim.warmup_epochs=2"])  # the paper's schedule has no warm-up


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("true", True), ("false", False)])
def test_progress_bar_auto_or_bool(value, expected):
    assert load_config(None, [f"log.progress_bar={value}"]).log.progress_bar == expected
