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
def test_shipped_recipes_validate(recipe):
    load_config(recipe)


def test_reference_lists_every_key_and_readme_uses_it():
    table = describe_config(markdown=True)
    for key in ["data.name", "data.path", "noise.type", "noise.rate", "model.name", "method.name",
                "method.co_lambda", "method.forget_rate", "train.epochs", "train.batch_size",
                "train.seed", "train.output_dir", "train.resume", "log.tracker"]:
        assert f"`{key}`" in table
    readme = (ROOT / "README.md").read_text()
    assert table in readme
    assert with_reference_table(readme) == readme, "README's recipe reference is stale: run `make docs`"
