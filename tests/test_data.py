import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from jocor_plugin.config import load_config
from jocor_plugin.data.loaders import InMemoryImages, make_loader, random_flip_crop, resolve_image_config
from jocor_plugin.data.splits import build_noisy_splits, load_splits
from jocor_plugin.core.errors import DataError
from jocor_plugin.models import create_backbone


def _digits_dict(n_per_split=60) -> DatasetDict:
    """A small real dataset (sklearn digits) in the Hub's usual layout, with CIFAR-style names."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = list((d.images * 255 / 16).astype(np.uint8))
    features = Features({"img": Image(), "fine_label": ClassLabel(names=[str(i) for i in range(10)])})
    train = Dataset.from_dict({"img": images[:n_per_split], "fine_label": d.target[:n_per_split]}, features=features)
    test = Dataset.from_dict({"img": images[n_per_split:2 * n_per_split],
                              "fine_label": d.target[n_per_split:2 * n_per_split]}, features=features)
    return DatasetDict(train=train, test=test)


def test_mnist5k_is_real_mnist_split_stratified_and_fixed():
    splits = load_splits(load_config(None, ["data.name=mnist5k"]).data)
    assert len(splits["train"]) == 4000 and len(splits["test"]) == 1000
    assert np.bincount(splits["test"]["label"]).tolist() == [100] * 10
    image = splits["train"][0]["image"]
    assert image.size == (28, 28) and image.mode == "L"
    again = load_splits(load_config(None, ["data.name=mnist5k", "train.seed=7"]).data)
    assert again["test"]["label"] == splits["test"]["label"]  # the split ignores the training seed


def test_digits_builtin():
    splits = load_splits(load_config(None, ["data.name=digits"]).data)
    assert len(splits["train"]) + len(splits["test"]) == 1797
    assert splits["train"][0]["image"].size == (8, 8)


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet_dir", "parquet_file", "imagefolder"])
def test_local_copies_load_through_datasets(tmp_path, layout):
    data = _digits_dict()
    path = tmp_path / "data"
    if layout == "save_to_disk":
        data.save_to_disk(str(path))
    elif layout == "parquet_dir":
        path.mkdir()
        for split, ds in data.items():
            ds.to_parquet(str(path / f"{split}.parquet"))
    elif layout == "parquet_file":
        path = tmp_path / "train.parquet"
        data["train"].to_parquet(str(path))
    else:
        for split, ds in data.items():
            for i, row in enumerate(ds):
                folder = path / split / str(row["fine_label"])
                folder.mkdir(parents=True, exist_ok=True)
                row["img"].save(folder / f"{i}.png")
    splits = load_splits(load_config(None, [f"data.path={path}", "data.name=local"]).data)
    assert set(splits) == {"train", "test"} and splits["train"].column_names == ["image", "label", "source_index"]
    labels = data["train"]["fine_label"]
    if layout == "parquet_file":  # a lone file: ~20 % held out as test, per class
        assert len(splits["train"]) + len(splits["test"]) == 60 and 10 <= len(splits["test"]) <= 14
        rows = splits["train"]["source_index"]  # the rows of the file the training samples are
        assert [labels[r] for r in rows] == splits["train"]["label"] and len(set(rows)) == len(rows)
        assert sorted([*splits["train"]["label"], *splits["test"]["label"]]) == sorted(labels)
    else:
        assert sorted(splits["train"]["label"]) == sorted(labels)


def test_hub_dataset_offline_fails_fast_with_a_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"data.path=DIR"):
        load_splits(load_config(None, ["data.name=ylecun/mnist"]).data)


def test_missing_path_and_missing_columns(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(load_config(None, [f"data.path={tmp_path / 'nope'}"]).data)
    data = _digits_dict()
    data.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="data.label_column='target' is not a column"):
        load_splits(load_config(None, [f"data.path={tmp_path / 'd'}", "data.label_column=target"]).data)


def test_labels_outside_the_classes_are_rejected():
    cfg = load_config(None, ["data.name=digits", "data.num_classes=5"])
    with pytest.raises(DataError, match=r"The labels of the 'train' split go up to 9 but data.num_classes=5"):
        build_noisy_splits(cfg)


def test_noise_goes_into_train_only_and_is_reproducible():
    cfg = load_config(None, ["data.name=digits", "noise.rate=0.4", "train.seed=3"])
    a, b = build_noisy_splits(cfg), build_noisy_splits(cfg)
    assert a.train["label"] == b.train["label"]
    assert {"clean_label", "is_noisy", "index"} <= set(a.train.column_names)
    assert a.test.column_names == ["image", "label"]
    assert 0.33 < a.actual_noise_rate < 0.47
    other = build_noisy_splits(load_config(None, ["data.name=digits", "noise.rate=0.4", "train.seed=4"]))
    assert other.train["label"] != a.train["label"]
    assert other.train["clean_label"] == a.train["clean_label"]


def test_in_memory_batches_are_normalised_and_indexed():
    cfg = load_config(None, ["data.name=digits", "data.mean=[0.5]", "data.std=[0.25]"])
    splits = build_noisy_splits(cfg)
    net = create_backbone("jocor_mlp", num_classes=10, in_chans=1, img_size=8)
    image_config = resolve_image_config(cfg.data, net, in_chans=1)
    assert image_config["input_size"] == (1, 8, 8)
    ds = InMemoryImages(splits.train, image_config)
    batch = ds.__getitems__([3, 0, 5])
    assert batch["pixel_values"].shape == (3, 1, 8, 8)
    expected = (np.asarray(splits.train[3]["image"], np.float32) / 255 - 0.5) / 0.25
    assert np.allclose(batch["pixel_values"][0, 0].numpy(), expected, atol=1e-5)
    assert batch["index"].tolist() == [3, 0, 5]
    assert batch["label"].tolist() == [splits.train[i]["label"] for i in (3, 0, 5)]


def test_in_memory_resizes_to_the_backbone_input():
    cfg = load_config(None, ["data.name=digits"])
    splits = build_noisy_splits(cfg)
    image_config = resolve_image_config(cfg.data, create_backbone("jocor_cnn", num_classes=10, in_chans=3), 3)
    batch = InMemoryImages(splits.test, image_config).__getitems__([0, 1])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_streamed_loader_uses_timm_transforms():
    cfg = load_config(None, ["data.name=digits", "data.in_memory=false", "data.num_workers=0"])
    splits = build_noisy_splits(cfg)
    image_config = resolve_image_config(cfg.data, create_backbone("jocor_cnn", num_classes=10, in_chans=1), 1)
    loader = make_loader(splits.train, cfg.data, image_config, batch_size=16, train=True, device="cpu", seed=0)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (16, 1, 32, 32)
    assert {"label", "clean_label", "is_noisy", "index"} <= set(batch)


def test_batched_augmentation_keeps_shape_and_content():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    y = random_flip_crop(x, padding=2)
    assert y.shape == x.shape
    assert torch.all((y == 0) | torch.isin(y, x))  # only original pixels or padding


@pytest.mark.parametrize("padding", [3, 0])
@pytest.mark.parametrize("flip", [True, False])
def test_batched_augmentation_is_flip_pad_crop_per_image(flip, padding):
    """The one-gather crop equals flipping, zero-padding and slicing each image in turn, with the
    same random draws (flip, then row offset, then column offset); without padding (no crop, a
    shortcut) too, and it draws the same numbers, so what follows is unchanged."""
    x = torch.rand(16, 3, 7, 9)
    torch.manual_seed(5)
    y = random_flip_crop(x, padding, flip)
    after = torch.rand(4)
    torch.manual_seed(5)
    flipped = torch.rand(16) < 0.5 if flip else torch.zeros(16, dtype=torch.bool)
    dy, dx = (torch.randint(0, 2 * padding + 1, (16, 1)) for _ in range(2))
    assert torch.equal(torch.rand(4), after)
    for i in range(16):
        image = x[i].flip(2) if flipped[i] else x[i]
        padded = torch.nn.functional.pad(image, (padding,) * 4)
        expected = padded[:, dy[i, 0]:dy[i, 0] + 7, dx[i, 0]:dx[i, 0] + 9]
        assert torch.equal(y[i], expected), i
    assert flipped.any() == flip and torch.equal(y, x) == (padding == 0 and not flip)
    assert y.data_ptr() != x.data_ptr()  # a new tensor: the caller's images are never written to


def test_test_split_held_out_of_noisy_labels_is_flagged(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="jocor_plugin"):
        real = build_noisy_splits(load_config(None, ["data.name=digits", "noise.type=none"]))
    assert real.noisy_test and "reported as noisy_test_acc" in caplog.text
    assert "source_index" in real.train.column_names and real.label_names == [str(i) for i in range(10)]
    assert not build_noisy_splits(load_config(None, ["data.name=digits"])).noisy_test  # injected: test is clean
