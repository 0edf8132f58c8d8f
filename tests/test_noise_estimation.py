"""``method.forget_rate=auto``'s estimator (jocor_plugin/train/estimate.py): its pieces on synthetic
probabilities, and one tiny run whose weak evidence gives one warning line."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from jocor_plugin.train.estimate import (MAX_SPREAD, HeldOutMonitor, bootstrap_interval, confident_joint,
                                         confident_joint_rate, estimate_noise_rate, estimate_spread,
                                         split_for_estimation, weak_evidence)


def noisy_table(rate: float, classes: int = 4, n: int = 2000, accuracy: float = 1.0, seed: int = 0):
    """Clean labels, labels flipped uniformly to another class with probability ``rate``, and a
    network's softmax that puts 0.7 on its prediction (the clean class with probability ``accuracy``)."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, classes, n)
    flip = rng.random(n) < rate
    noisy = np.where(flip, (clean + rng.integers(1, classes, n)) % classes, clean)
    predicted = np.where(rng.random(n) < accuracy, clean, (clean + rng.integers(1, classes, n)) % classes)
    probs = np.full((n, classes), 0.3 / (classes - 1))
    probs[np.arange(n), predicted] = 0.7
    return probs, noisy, clean


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_confident_joint_recovers_the_flipped_fraction(rate):
    probs, noisy, clean = noisy_table(rate)
    joint = confident_joint(probs, noisy)
    assert joint.sum() == len(noisy)  # every sample is confident in its predicted class
    assert np.array_equal(joint, np.histogram2d(noisy, clean, bins=[np.arange(5)] * 2)[0])
    assert confident_joint_rate(probs, noisy) == pytest.approx(np.mean(noisy != clean), abs=1e-9)


def test_confident_joint_skips_unconfident_samples_and_missing_classes():
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.2, 0.8, 0.0], [0.5, 0.5, 0.0]])
    labels = np.array([0, 0, 1, 1])  # class 2 has no sample: its threshold is never reached
    joint = confident_joint(probs, labels)
    # thresholds 0.85 (class 0) and 0.65 (class 1): sample 1 (0.8 / 0.2) is confident in neither
    assert joint.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert confident_joint_rate(probs, labels) == pytest.approx(0.0)


def test_bootstrap_interval_narrows_with_more_samples():
    small = bootstrap_interval(*noisy_table(0.3, n=200)[:2])
    large = bootstrap_interval(*noisy_table(0.3, n=5000)[:2])
    assert small[0] < 0.3 < small[1] and large[0] < 0.3 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3


def test_split_for_estimation_is_stratified_seeded_and_disjoint():
    labels = np.repeat([0, 1, 2], [40, 80, 1])
    train, held = split_for_estimation(labels, 0.25, seed=3)
    assert np.intersect1d(train, held).size == 0 and np.union1d(train, held).size == labels.size
    assert np.bincount(labels[held], minlength=3).tolist() == [10, 20, 0]  # a lone sample stays in training
    assert np.array_equal(held, split_for_estimation(labels, 0.25, seed=3)[1])


def test_a_good_estimate_is_quiet_and_weak_ones_warn_once():
    probs, noisy, clean = noisy_table(0.3, n=4000)
    good = estimate_noise_rate(probs, noisy, probs_b=probs)
    assert good["raw_rate"] == pytest.approx(np.mean(noisy != clean), abs=1e-9)
    assert good["warning"] is None and estimate_spread(good) <= MAX_SPREAD
    # few held-out samples: the bootstrap interval is wide
    few = estimate_noise_rate(*noisy_table(0.3, n=60)[:2])
    assert estimate_spread(few) > MAX_SPREAD and "uncertain by" in few["warning"]
    # an under-fit network (half of its predictions wrong): its mistakes look like noise, so the
    # estimate is too high and nothing in it shows that; only a stage stopped at its cap warns
    probs_w, noisy_w, _ = noisy_table(0.3, n=4000, accuracy=0.5)
    assert estimate_noise_rate(probs_w, noisy_w)["raw_rate"] > 0.5
    weak = estimate_noise_rate(probs_w, noisy_w, converged=False)
    assert "still improving" in weak["warning"] and "under-fit" in weak["warning"]
    for info in (few, weak):
        assert "\n" not in info["warning"] and "method.forget_rate" in info["warning"] \
            and "data.val_split" in info["warning"]
    # the two networks disagree
    other = estimate_noise_rate(probs, noisy, probs_b=probs_w)
    assert other["raw_rate"] == pytest.approx((other["rate_a"] + other["rate_b"]) / 2)
    assert f"the networks' {other['rate_a']:.3f} and {other['rate_b']:.3f}" in weak_evidence(other)


def test_held_out_monitor_keeps_each_networks_best_and_stops_after_patience_epochs():
    monitor = HeldOutMonitor.__new__(HeldOutMonitor)
    monitor.patience, monitor.epoch, monitor.stopped = 2, -1, False
    monitor.best_acc, monitor.best_epoch, monitor.best_probs, monitor.accuracies = [], [], [], []
    accs = iter([(0.5, 0.5), (0.6, 0.5), (0.6005, 0.55), (0.59, 0.5), (0.7, 0.5)])
    labels = np.zeros(1000, dtype=np.int64)

    def table(acc: float) -> np.ndarray:
        right = np.arange(1000) < round(acc * 1000)
        return np.stack([right, ~right], axis=1).astype(float)

    monitor.outputs = lambda: ([table(a) for a in next(accs)], labels)
    stops = [monitor({}) for _ in range(4)]
    # network a: best at epoch 1 (0.6005 is no rise: MIN_IMPROVEMENT); b: best at 2, so 2 more epochs
    assert stops == [False, False, False, False] and monitor({}) is False
    assert monitor.best_epoch == [4, 2] and monitor.best_acc == pytest.approx([0.7, 0.55])
    monitor.outputs = lambda: ([table(0.6), table(0.5)], labels)
    assert monitor({}) is False and monitor({}) is True and monitor.stopped


def test_a_tiny_run_estimates_once_and_warns_on_weak_evidence(tmp_path, caplog):
    """One epoch of stage on 'digits' (an under-fit network, a small held-out part): the run
    estimates tau, records the evidence and warns in one line."""
    from jocor_plugin.config import load_config
    from jocor_plugin.train.trainer import train

    cfg = load_config("recipes/demo.yaml", ["data.name=digits", "noise.rate=0.4", "train.epochs=1",
                                            "train.batch_size=64", "method.forget_rate=auto",
                                            "method.estimation_epochs=1", "optim.lr=0.0001",
                                            f"train.output_dir={tmp_path}", "train.export_models=false"])
    with caplog.at_level(logging.INFO, logger="jocor_plugin"):
        results = train(cfg)
    info = results["forget_rate_estimate"]
    assert info["estimation_epochs"] == 1 and info["best_epoch"] == [1, 1] and not info["converged"]
    assert results["forget_rate"] == info["rate"] and 0 <= info["rate"] <= 0.95
    assert json.loads((tmp_path / "noise_estimate.json").read_text())["rate"] == info["rate"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "forget_rate=auto" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0] == info["warning"] and "under-fit" in warnings[0]
