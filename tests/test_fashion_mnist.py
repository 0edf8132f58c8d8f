"""The built-in Fashion-MNIST: idx reader, split, class names, flip map and the no-data error,
on small idx.gz files written here in the real format (no Debian package, no hub needed)."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from jocor_plugin.config import load_config
from jocor_plugin.data import build_noisy_splits, load_splits
from jocor_plugin.core.errors import DataError
from jocor_plugin.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from jocor_plugin.noise import transition_matrix


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """LeCun's idx format: 0, 0, type 0x08 (ubyte), ndim, then big-endian uint32 sizes, then data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fake_fashion_mnist(folder: Path, n_train: int = 50, n_test: int = 20, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_round_trips(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte", array, compress)
    got = read_idx(tmp_path / ("x-idx3-ubyte.gz" if compress else "x-idx3-ubyte"))
    np.testing.assert_array_equal(got, array)


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")  # float type, not ubyte
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(short)


def test_builtin_reads_data_path_with_split_and_class_names(tmp_path):
    expected = fake_fashion_mnist(tmp_path)
    splits = load_splits(load_config(None, ["data.name=fashion_mnist", f"data.path={tmp_path}"]).data)
    assert len(splits["train"]) == 50 and len(splits["test"]) == 20
    assert splits["train"].features["label"].names == FASHION_MNIST_CLASSES
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    first = np.asarray(splits["train"][3]["image"])
    np.testing.assert_array_equal(first, expected["train"][0][3])
    assert splits["test"]["label"] == list(expected["t10k"][1])


def test_noisy_splits_and_grey_channel(tmp_path):
    fake_fashion_mnist(tmp_path, n_train=200)
    splits = build_noisy_splits(load_config(None, ["data.name=fashion_mnist", f"data.path={tmp_path}",
                                                   "noise.rate=0.5"]))
    assert splits.in_chans == 1 and splits.num_classes == 10
    assert 0.3 < splits.actual_noise_rate < 0.7


def test_asymmetric_map_is_semantic_and_flips_half_the_classes():
    T = transition_matrix("asymmetric", 0.4, 10, dataset="fashion_mnist")
    name = FASHION_MNIST_CLASSES.index
    flips = {(FASHION_MNIST_CLASSES[i], FASHION_MNIST_CLASSES[j]) for i in range(10) for j in range(10)
             if i != j and T[i, j] > 0}
    assert flips == {("T-shirt/top", "Shirt"), ("Pullover", "Coat"), ("Coat", "Pullover"),
                     ("Sandal", "Sneaker"), ("Sneaker", "Ankle boot")}
    assert T[name("Trouser"), name("Trouser")] == 1.0 and T[name("Bag"), name("Bag")] == 1.0
    assert np.isclose(np.mean(1 - np.diag(T)), 0.2)  # half the classes flip at r: overall r / 2
    # the hub id picks the same map; noise.dataset=mnist applies MNIST's index map instead
    from jocor_plugin.data.splits import paper_dataset
    assert paper_dataset("zalando-datasets/fashion_mnist") == "fashion_mnist"
    mnist = transition_matrix("asymmetric", 0.4, 10, dataset="mnist")
    assert mnist[7, 1] == pytest.approx(0.4) and not np.allclose(mnist, T)


def test_asymmetric_noise_on_fashion_mnist_follows_the_clothing_map(tmp_path):
    fake_fashion_mnist(tmp_path, n_train=400)
    cfg = ["data.name=fashion_mnist", f"data.path={tmp_path}", "noise.type=asymmetric", "noise.rate=0.4"]
    train = build_noisy_splits(load_config(None, cfg)).train
    pairs = {(c, n) for c, n in zip(train["clean_label"], train["label"]) if c != n}
    assert pairs <= {(0, 6), (2, 4), (4, 2), (5, 7), (7, 9)} and pairs
    index_map = build_noisy_splits(load_config(None, [*cfg, "noise.dataset=mnist"])).train
    pairs = {(c, n) for c, n in zip(index_map["clean_label"], index_map["label"]) if c != n}
    assert pairs <= {(7, 1), (2, 7), (5, 6), (6, 5), (3, 8)} and pairs


def test_without_data_one_error_names_both_ways(tmp_path, monkeypatch):
    import jocor_plugin.data.fashion_mnist as fm

    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "absent")

    def offline():
        raise ConnectionError("offline")

    with pytest.raises(DataError) as err:
        load_fashion_mnist(None, load_hub=offline)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "data.path" in message
    assert "zalando-datasets/fashion_mnist" in message and "\n" not in message
    with pytest.raises(DataError, match="does not hold"):  # a named folder never falls back
        load_splits(load_config(None, ["data.name=fashion_mnist", f"data.path={tmp_path}"]).data)


def test_without_data_from_the_command_line(tmp_path, monkeypatch, capsys):
    from jocor_plugin.run import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code = main(["recipes/fashion_mnist.yaml", f"data.path={tmp_path}", f"train.output_dir={tmp_path / 'o'}"])
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
