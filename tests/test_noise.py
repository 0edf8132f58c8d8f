import logging

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from jocor_plugin.noise.label_noise import (CIFAR100_COARSE, NOISE_TYPES, actual_noise_rate, add_label_noise,
                                noisy_labels, transition_matrix)

N = 5000
RNG = np.random.default_rng(1234)  # only builds clean labels; the noise itself must not use it


def _clean(num_classes: int, n: int = N) -> np.ndarray:
    return np.random.default_rng(num_classes).integers(0, num_classes, n)


def _flip_rate(noise_type: str, rate: float, num_classes: int, seed: int = 0, **kw) -> float:
    clean = _clean(num_classes)
    T = transition_matrix(noise_type, rate, num_classes, **kw)
    return float(np.mean(noisy_labels(clean, np.arange(N), T, seed) != clean))


# ----------------------------------------------------------------------------- matrices

MATRIX_CASES = ([(t, c, {}) for t in ("none", "symmetric", "pairflip") for c in (2, 10, 100)]
                + [("asymmetric", 10, {"dataset": "mnist"}), ("asymmetric", 10, {"dataset": "cifar10"}),
                   ("asymmetric", 100, {"dataset": "cifar100"}),
                   ("asymmetric", 100, {"dataset": "cifar100", "grouping": "superclass"})])


@pytest.mark.parametrize("noise_type,num_classes,kw", MATRIX_CASES)
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8])
def test_matrix_is_row_stochastic(noise_type, num_classes, kw, rate):
    T = transition_matrix(noise_type, rate, num_classes, **kw)
    assert T.shape == (num_classes, num_classes) and T.dtype == np.float64
    assert np.all((T >= 0) & (T <= 1))
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)


def test_noise_types_exported():
    assert tuple(NOISE_TYPES)[:4] == ("none", "symmetric", "pairflip", "asymmetric")  # built-ins first; tests may register more
    np.testing.assert_array_equal(transition_matrix("none", 0.4, 7), np.eye(7))


@pytest.mark.parametrize("num_classes", [2, 10, 100])
def test_symmetric_never_redraws_true_class(num_classes):
    T = transition_matrix("symmetric", 0.4, num_classes)
    np.testing.assert_allclose(np.diag(T), 0.6)
    off = T[~np.eye(num_classes, dtype=bool)]
    np.testing.assert_allclose(off, 0.4 / (num_classes - 1))


def test_pairflip_structure():
    T = transition_matrix("pairflip", 0.45, 5)
    expected = 0.55 * np.eye(5)
    for i in range(5):
        expected[i, (i + 1) % 5] = 0.45
    np.testing.assert_allclose(T, expected)
    assert T[4, 0] == pytest.approx(0.45)  # wraps around


@pytest.mark.parametrize("dataset,flips", [
    ("mnist", {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}),
    ("mnist5k", {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}),  # aliases starting with "mnist"
    ("cifar10", {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}),
])
def test_asymmetric_exact_maps(dataset, flips):
    T = transition_matrix("asymmetric", 0.4, 10, dataset=dataset)
    for src, dst in flips.items():
        assert T[src, src] == pytest.approx(0.6) and T[src, dst] == pytest.approx(0.4)
    for c in set(range(10)) - set(flips):
        np.testing.assert_array_equal(T[c], np.eye(10)[c])


def test_cifar100_blocks():
    T = transition_matrix("asymmetric", 0.2, 100, dataset="cifar100")
    assert T[0, 1] == pytest.approx(0.2) and T[4, 0] == pytest.approx(0.2)
    assert T[99, 95] == pytest.approx(0.2) and T[5, 6] == pytest.approx(0.2)
    assert T[4, 5] == 0.0  # never crosses a block
    np.testing.assert_allclose(np.diag(T), 0.8)


def test_cifar100_superclass():
    T = transition_matrix("asymmetric", 0.2, 100, dataset="cifar100", grouping="superclass")
    # aquatic mammals (coarse 0): beaver 4, dolphin 30, otter 55, seal 72, whale 95
    assert [f for f in range(100) if CIFAR100_COARSE[f] == 0] == [4, 30, 55, 72, 95]
    for src, dst in [(4, 30), (30, 55), (55, 72), (72, 95), (95, 4)]:
        assert T[src, dst] == pytest.approx(0.2)
    assert T[4, 0] == 0.0 and T[0, 1] == 0.0  # not the block grouping
    targets = T.copy()
    np.fill_diagonal(targets, 0)
    dst = targets.argmax(axis=1)
    assert sorted(dst) == list(range(100))  # a permutation ...
    assert all(CIFAR100_COARSE[s] == CIFAR100_COARSE[d] for s, d in enumerate(dst))  # ... within groups


# ----------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_symmetric_actual_rate(rate, num_classes):
    # a redraw-the-true-class bug would give r(C-1)/C: 0.25 instead of 0.5 for C=2
    assert _flip_rate("symmetric", rate, num_classes) == pytest.approx(rate, abs=0.025)


def test_pairflip_actual_rate_and_targets():
    clean = _clean(10)
    noisy = noisy_labels(clean, np.arange(N), transition_matrix("pairflip", 0.45, 10), seed=3)
    flipped = noisy != clean
    assert flipped.mean() == pytest.approx(0.45, abs=0.025)
    np.testing.assert_array_equal(noisy[flipped], (clean[flipped] + 1) % 10)


def test_asymmetric_mnist_actual_rate():
    clean = _clean(10)
    noisy = noisy_labels(clean, np.arange(N), transition_matrix("asymmetric", 0.4, 10, dataset="mnist"), 0)
    flipping = np.isin(clean, [7, 2, 5, 6, 3])
    assert np.mean(noisy != clean) == pytest.approx(0.4 * flipping.mean(), abs=0.02)
    np.testing.assert_array_equal(noisy[~flipping], clean[~flipping])


def test_zero_rate_changes_nothing():
    clean = _clean(10)
    for t in ("symmetric", "pairflip"):
        np.testing.assert_array_equal(noisy_labels(clean, np.arange(N), transition_matrix(t, 0.0, 10), 5), clean)


def test_pure_function_of_seed_index_label():
    clean, idx = _clean(10), np.arange(N)
    T = transition_matrix("symmetric", 0.5, 10)
    full = noisy_labels(clean, idx, T, seed=7)
    np.testing.assert_array_equal(noisy_labels(clean, idx, T, seed=7), full)
    perm = RNG.permutation(N)  # shuffled order
    np.testing.assert_array_equal(noisy_labels(clean[perm], idx[perm], T, seed=7), full[perm])
    parts = [noisy_labels(clean[s:s + 333], idx[s:s + 333], T, seed=7) for s in range(0, N, 333)]
    np.testing.assert_array_equal(np.concatenate(parts), full)  # batch boundaries don't matter
    other = noisy_labels(clean, idx, T, seed=8)
    assert np.mean(other != full) > 0.3  # a fixed RNG ignoring the seed would give 0


def test_golden_values():
    # Pins the hash: changing it would silently change every benchmark's noisy labels.
    T = transition_matrix("symmetric", 0.5, 10)
    got = noisy_labels(np.zeros(12, dtype=np.int64), np.arange(12), T, seed=0)
    assert got.tolist() == [0, 0, 2, 8, 5, 8, 1, 3, 9, 7, 0, 0]


# ----------------------------------------------------------------------------- datasets

def _ds(n: int = 200, num_classes: int = 10, column: str = "label", class_label: bool = False) -> Dataset:
    feature = ClassLabel(num_classes=num_classes) if class_label else Value("int64")
    return Dataset.from_dict({"x": np.arange(n, dtype=np.float32), column: _clean(num_classes, n)},
                             features=Features({"x": Value("float32"), column: feature}))


def test_add_label_noise_columns_and_dtypes(caplog):
    ds = _ds()
    with caplog.at_level(logging.INFO, logger="jocor_plugin.noise.label_noise"):
        out = add_label_noise(ds, noise_type="symmetric", rate=0.4, num_classes=10, seed=0)
    assert set(out.column_names) == {"x", "label", "clean_label", "is_noisy", "index"}
    for col, dtype in [("label", "int64"), ("clean_label", "int64"), ("is_noisy", "bool"), ("index", "int64")]:
        assert out.features[col].dtype == dtype
    cols = out.with_format("numpy")[:]
    np.testing.assert_array_equal(cols["clean_label"], ds.with_format("numpy")[:]["label"])
    np.testing.assert_array_equal(cols["is_noisy"], cols["label"] != cols["clean_label"])
    np.testing.assert_array_equal(cols["index"], np.arange(len(ds)))
    np.testing.assert_array_equal(cols["x"], np.arange(len(ds)))  # other columns untouched
    assert actual_noise_rate(out) == pytest.approx(cols["is_noisy"].mean())
    assert 0.2 < actual_noise_rate(out) < 0.6
    assert "requested rate 0.400" in caplog.text and "actual" in caplog.text


def test_add_label_noise_matches_noisy_labels_and_is_cacheable():
    ds = _ds()
    kw = dict(noise_type="pairflip", rate=0.45, num_classes=10, seed=11)
    a, b = add_label_noise(ds, **kw), add_label_noise(ds, **kw)
    assert a._fingerprint == b._fingerprint  # fn + fn_kwargs hash deterministically
    T = transition_matrix("pairflip", 0.45, 10)
    clean = ds.with_format("numpy")[:]["label"]
    np.testing.assert_array_equal(a.with_format("numpy")[:]["label"], noisy_labels(clean, np.arange(200), T, 11))
    assert add_label_noise(ds, **{**kw, "seed": 12})._fingerprint != a._fingerprint


def test_add_label_noise_renames_column_and_keeps_classlabel():
    ds = _ds(column="fine", class_label=True)
    out = add_label_noise(ds, noise_type="symmetric", rate=0.3, num_classes=10, seed=0, label_column="fine")
    assert "fine" not in out.column_names and "label" in out.column_names
    assert isinstance(out.features["label"], ClassLabel) and isinstance(out.features["clean_label"], ClassLabel)
    assert out.features["label"].num_classes == 10


def test_add_label_noise_none_only_adds_index():
    ds = _ds(class_label=True)
    out = add_label_noise(ds, noise_type="none", rate=0.0, num_classes=10, seed=0)
    assert set(out.column_names) == {"x", "label", "index"}
    assert isinstance(out.features["label"], ClassLabel)
    assert out["label"][:] == ds["label"][:]
    assert out["index"][:] == list(range(200))
    with pytest.raises(ValueError, match="clean_label"):
        actual_noise_rate(out)


def test_index_is_row_index_of_a_selected_dataset():
    ds = _ds().shuffle(seed=0).select(range(50))
    out = add_label_noise(ds, noise_type="symmetric", rate=0.5, num_classes=10, seed=0)
    assert out["index"][:] == list(range(50))
    assert out["clean_label"][:] == ds["label"][:]


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\)") as err:
        transition_matrix("symmetric", rate, 10)
    assert str(rate) in str(err.value)


def test_unknown_type_suggests_close_match():
    with pytest.raises(ValueError, match="symmetric") as err:
        transition_matrix("symetric", 0.2, 10)
    assert "Did you mean 'symmetric'" in str(err.value) and "pairflip" in str(err.value)


@pytest.mark.parametrize("kw,match", [
    ({"noise_type": "symmetric", "num_classes": 1}, "at least 2"),
    ({"noise_type": "asymmetric", "num_classes": 10}, "noise.dataset"),
    ({"noise_type": "asymmetric", "num_classes": 10, "dataset": "svhn"}, "mnist, cifar10, cifar100"),
    ({"noise_type": "asymmetric", "num_classes": 10, "dataset": "cifar100"}, "needs 100 classes"),
    ({"noise_type": "asymmetric", "num_classes": 100, "dataset": "cifar100", "grouping": "x"}, "superclass"),
])
def test_matrix_errors(kw, match):
    noise_type = kw.pop("noise_type")
    with pytest.raises(ValueError, match=match):
        transition_matrix(noise_type, 0.2, **kw)


def test_labels_out_of_range():
    ds = Dataset.from_dict({"label": [0, 3, 10, 12, -1]})
    with pytest.raises(ValueError, match=r"3 labels outside \[0, 10\)") as err:
        add_label_noise(ds, noise_type="symmetric", rate=0.2, num_classes=10, seed=0)
    assert "min -1" in str(err.value) and "max 12" in str(err.value) and "num_classes" in str(err.value)


def test_missing_label_column_lists_columns():
    with pytest.raises(ValueError, match=r"'target'.*\['x', 'label'\]"):
        add_label_noise(_ds(), noise_type="symmetric", rate=0.2, num_classes=10, seed=0, label_column="target")


def test_non_integer_labels():
    with pytest.raises(ValueError, match="integer"):
        add_label_noise(Dataset.from_dict({"label": [0.5, 1.0]}), noise_type="symmetric", rate=0.2,
                        num_classes=10, seed=0)


def test_asymmetric_noise_without_a_class_map_asks_for_one(tmp_path):
    from jocor_plugin.config import load_config
    from jocor_plugin.data import build_noisy_splits
    from jocor_plugin.core.errors import DataError

    with pytest.raises(DataError, match=r"no class map for 'digits': set noise.transition_matrix=FILE .* or "
                                        r"noise.dataset to one of mnist, cifar10"):
        build_noisy_splits(load_config(None, ["data.name=digits", "noise.type=asymmetric"]))
    T = np.eye(10)
    T[3, 3], T[3, 8] = 0.5, 0.5  # only 3 -> 8
    np.save(tmp_path / "T.npy", T)
    splits = build_noisy_splits(load_config(None, ["data.name=digits", "noise.type=asymmetric",
                                                   f"noise.transition_matrix={tmp_path / 'T.npy'}"]))
    flipped = splits.train.filter(lambda r: r["is_noisy"])
    assert set(flipped["clean_label"]) == {3} and set(flipped["label"]) == {8}
