"""DivideMix: the mixture split, co-divide, the MixMatch parts and (further down) a short run."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jocor_plugin.methods.codivide import clean_probability, co_divide, normalise_losses
from jocor_plugin.methods.mixmatch import (co_guess, co_refine, confidence_penalty, linear_rampup, mix_lambda,
                                           mixmatch_losses, mixup, prior_penalty, semi_loss, sharpen)


def _two_mode_losses(n_clean=700, n_noisy=300, seed=0):
    """Small losses for clean labels, large ones for noisy labels, shuffled."""
    g = torch.Generator().manual_seed(seed)
    clean = 0.1 + 0.05 * torch.randn(n_clean, generator=g).abs()
    noisy = 2.0 + 0.3 * torch.randn(n_noisy, generator=g)
    losses = torch.cat([clean, noisy])
    is_clean = torch.cat([torch.ones(n_clean, dtype=torch.bool), torch.zeros(n_noisy, dtype=torch.bool)])
    perm = torch.randperm(losses.numel(), generator=g)
    return losses[perm], is_clean[perm]


def test_mixture_separates_a_two_mode_loss():
    losses, is_clean = _two_mode_losses()
    normalised = normalise_losses(losses)
    assert normalised.min() == 0 and normalised.max() == 1
    prob = clean_probability(normalised, seed=1)
    assert prob.shape == losses.shape and prob.dtype == torch.float32
    assert ((prob > 0.5) == is_clean).float().mean() > 0.99
    assert prob[is_clean].mean() > 0.95 and prob[~is_clean].mean() < 0.05
    # the clean component is the one with the smaller mean, whatever order the fit found
    assert torch.equal(clean_probability(normalised, seed=2) > 0.5, prob > 0.5)


def test_mixture_over_a_history_fits_the_mean_of_the_epochs():
    losses, is_clean = _two_mode_losses()
    noise = torch.rand(losses.numel(), generator=torch.Generator().manual_seed(3))
    history = [normalise_losses(losses + noise), normalise_losses(losses - noise + 1)]
    prob = clean_probability(history[-1], history, seed=0)
    expected = clean_probability(torch.stack(history).mean(0), seed=0)
    assert torch.equal(prob, expected)


def test_constant_losses_normalise_to_zeros_not_nan():
    assert torch.equal(normalise_losses(torch.full((5,), 0.7)), torch.zeros(5))


def test_co_divide_trains_each_network_on_its_peers_division():
    prob_a = torch.tensor([0.9, 0.2, 0.6, 0.1])
    prob_b = torch.tensor([0.1, 0.8, 0.7, 0.4])
    for_a, for_b = co_divide(prob_a, prob_b, p_threshold=0.5)
    assert for_a.labelled.tolist() == [False, True, True, False] and torch.equal(for_a.prob, prob_b)
    assert for_b.labelled.tolist() == [True, False, True, False] and torch.equal(for_b.prob, prob_a)


def test_sharpen_keeps_a_distribution_and_lowers_its_entropy():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    sharp = sharpen(p, 0.5)
    assert torch.allclose(sharp.sum(1), torch.ones(2))
    assert torch.allclose(sharp[0], torch.tensor([25.0, 9.0, 4.0]) / 38.0)
    assert torch.allclose(sharpen(p, 1.0), p)


def test_co_refine_mixes_the_label_and_the_networks_views_by_the_clean_probability():
    labels = torch.tensor([0, 2, 1])
    views = [torch.tensor([[0.2, 0.5, 0.3]] * 3), torch.tensor([[0.4, 0.3, 0.3]] * 3)]
    refined = co_refine(labels, torch.tensor([1.0, 0.0, 0.5]), views, temperature=1.0)
    assert torch.allclose(refined[0], torch.tensor([1.0, 0.0, 0.0]))  # w = 1: the given label
    assert torch.allclose(refined[1], torch.tensor([0.3, 0.4, 0.3]))  # w = 0: mean of the views
    assert torch.allclose(refined[2], torch.tensor([0.15, 0.7, 0.15]))
    assert torch.allclose(co_refine(labels, torch.tensor([0.0, 0.0, 0.5]), views, 0.5),
                          sharpen(co_refine(labels, torch.tensor([0.0, 0.0, 0.5]), views, 1.0), 0.5))


def test_co_guess_averages_every_view_of_both_networks_then_sharpens():
    views = [torch.tensor([[0.6, 0.4]]), torch.tensor([[0.2, 0.8]]), torch.tensor([[0.5, 0.5]]),
             torch.tensor([[0.3, 0.7]])]
    assert torch.allclose(co_guess(views, 1.0), torch.tensor([[0.4, 0.6]]))
    assert torch.allclose(co_guess(views, 0.5), torch.tensor([[4 / 13, 9 / 13]]))


def test_mix_lambda_favours_the_first_input():
    rng = np.random.default_rng(0)
    draws = [mix_lambda(4.0, rng) for _ in range(200)]
    assert min(draws) >= 0.5 and max(draws) <= 1.0 and len(set(draws)) == 200
    assert mix_lambda(0.0, rng) == 1.0


def test_mixup_is_the_convex_combination_with_the_permuted_batch():
    x, p = torch.randn(6, 1, 4, 4), torch.softmax(torch.randn(6, 3), 1)
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    mixed_x, mixed_p = mixup(x, p, 0.7, perm)
    assert mixed_x.shape == x.shape and mixed_p.shape == p.shape
    assert torch.allclose(mixed_x[2], 0.7 * x[2] + 0.3 * x[5])
    assert torch.allclose(mixed_p.sum(1), torch.ones(6))
    same_x, same_p = mixup(x, p, 1.0, perm)
    assert torch.equal(same_x, x) and torch.equal(same_p, p)


def test_semi_loss_is_soft_cross_entropy_plus_mean_squared_error():
    logits_x, logits_u = torch.randn(4, 3), torch.randn(5, 3)
    targets_x, targets_u = torch.softmax(torch.randn(4, 3), 1), torch.softmax(torch.randn(5, 3), 1)
    lx, lu = semi_loss(logits_x, targets_x, logits_u, targets_u)
    assert lx.item() == pytest.approx(-(targets_x * F.log_softmax(logits_x, 1)).sum(1).mean().item(), rel=1e-6)
    assert lu.item() == pytest.approx(((logits_u.softmax(1) - targets_u) ** 2).sum().item() / 15, rel=1e-6)
    _, empty = semi_loss(logits_x, targets_x, logits_u[:0], targets_u[:0])
    assert empty.item() == 0.0


def test_linear_rampup_is_the_authors_schedule():
    assert linear_rampup(10.0, 10, 25.0) == 0.0
    assert linear_rampup(10.5, 10, 25.0) == pytest.approx(25.0 * 0.5 / 16)
    assert linear_rampup(18.0, 10, 25.0) == pytest.approx(12.5)
    assert linear_rampup(40.0, 10, 25.0) == 25.0 and linear_rampup(3.0, 10, 25.0) == 0.0


def test_prior_penalty_is_zero_for_a_uniform_mean_and_grows_with_collapse():
    assert prior_penalty(torch.zeros(8, 4)).item() == pytest.approx(0.0, abs=1e-7)
    balanced = torch.eye(4).repeat(2, 1) * 10  # every class predicted equally often
    assert prior_penalty(balanced).item() == pytest.approx(0.0, abs=1e-5)
    collapsed = torch.tensor([[10.0, 0, 0, 0]] * 8)
    assert prior_penalty(collapsed).item() > 1.0


def test_confidence_penalty_is_the_negative_entropy():
    assert confidence_penalty(torch.zeros(3, 5)).item() == pytest.approx(-math.log(5), rel=1e-6)
    assert confidence_penalty(torch.tensor([[50.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_mixmatch_step_shapes_targets_and_gradients():
    torch.manual_seed(0)
    net, peer = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    x = [torch.randn(4, 6), torch.randn(4, 6)]
    u = [torch.randn(5, 6), torch.randn(5, 6)]
    labels, weights = torch.tensor([0, 1, 2, 0]), torch.tensor([0.9, 0.6, 0.8, 1.0])
    perm = torch.randperm(18)
    lx, lu, penalty = mixmatch_losses(net, peer, x, labels, weights, u, temperature=0.5, lam=0.8, perm=perm)
    assert lx.ndim == lu.ndim == penalty.ndim == 0 and lu > 0
    (lx + 25 * lu + penalty).backward()
    assert net.weight.grad.abs().sum() > 0 and peer.weight.grad is None  # targets carry no gradient

    # lam = 1 leaves every sample unmixed: L_x is the cross-entropy with the refined targets
    with torch.no_grad():
        refined = co_refine(labels, weights, [net(v).softmax(1) for v in x], 0.5)
        guessed = co_guess([z.softmax(1) for v in u for z in (net(v), peer(v))], 0.5)
        lx1, lu1, _ = mixmatch_losses(net, peer, x, labels, weights, u, temperature=0.5, lam=1.0, perm=perm)
        logits_x = net(torch.cat(x))
        assert lx1.item() == pytest.approx(
            -(torch.cat([refined] * 2) * F.log_softmax(logits_x, 1)).sum(1).mean().item(), rel=1e-5)
        assert lu1.item() == pytest.approx(
            ((net(torch.cat(u)).softmax(1) - torch.cat([guessed] * 2)) ** 2).mean().item(), rel=1e-5)
        # every sample labelled: no unlabelled part, L_u = 0
        _, lu0, _ = mixmatch_losses(net, peer, x, labels, weights, [], temperature=0.5, lam=0.8,
                                    perm=torch.randperm(8))
        assert lu0.item() == 0.0


# ----------------------------------------------------------------------------- the epoch's plumbing

from types import SimpleNamespace  # noqa: E402

from jocor_plugin.methods import create_method  # noqa: E402
from jocor_plugin.methods.dividemix import shard_batches  # noqa: E402


@pytest.mark.parametrize("n, world, batch", [(10, 1, 4), (10, 3, 2), (7, 2, 3), (5, 4, 64)])
def test_shard_batches_split_one_shuffle_evenly_over_the_processes(n, world, batch):
    indices = torch.arange(100, 100 + n)
    shards = [shard_batches(indices, batch, torch.Generator().manual_seed(0), world, rank) for rank in range(world)]
    flat = [torch.cat(s) for s in shards]
    assert len({f.numel() for f in flat}) == 1 and len({len(s) for s in shards}) == 1  # same steps everywhere
    assert set(torch.cat(flat).tolist()) == set(indices.tolist())  # every sample, wrapped to even shares
    assert all(b.numel() > 1 for s in shards for b in s)  # no one-sample batch (batch norm)
    assert shard_batches(indices[:0], batch, torch.Generator(), world, 0) == []


def _digits(*overrides):
    from jocor_plugin.config import load_config
    from jocor_plugin.data import build_noisy_splits, resolve_image_config
    from jocor_plugin.models import create_backbone

    cfg = load_config(None, ["data.name=digits", "noise.rate=0.4", *overrides])
    splits = build_noisy_splits(cfg)
    image_config = resolve_image_config(cfg.data, create_backbone("jocor_mlp", num_classes=10, in_chans=1,
                                                                  img_size=8), 1)
    return cfg, splits, image_config


def test_view_batches_in_memory_draw_independent_crops_of_the_chosen_samples():
    from jocor_plugin.data import InMemoryImages
    from jocor_plugin.data.views import ViewBatches

    cfg, splits, image_config = _digits()
    images = InMemoryImages(splits.train, image_config)
    plain = images.__getitems__([4, 9, 2])["pixel_values"]
    torch.manual_seed(0)
    (batch,) = ViewBatches(splits.train, cfg.data, image_config, device="cpu", in_memory=images, padding=1,
                           flip=False).batches([torch.tensor([4, 9, 2])])
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (3, 1, 8, 8)
    assert not torch.equal(batch["views"][0], batch["views"][1])
    assert batch["index"].tolist() == [4, 9, 2] and batch["label"].tolist() == splits.train[[4, 9, 2]]["label"]
    (same,) = ViewBatches(splits.train, cfg.data, image_config, device="cpu", in_memory=images, padding=0,
                          flip=False).batches([torch.tensor([4, 9, 2])])
    assert all(torch.equal(v, plain) for v in same["views"])  # no padding, no flip: the images themselves


def test_view_batches_streamed_apply_the_training_transform_per_view():
    from jocor_plugin.data.views import ViewBatches

    cfg, splits, image_config = _digits("data.in_memory=false", "data.num_workers=0")
    batches = list(ViewBatches(splits.train, cfg.data, image_config, device="cpu", views=3).batches(
        [torch.tensor([1, 2, 3, 4]), torch.tensor([8, 7])]))
    assert [len(b["views"]) for b in batches] == [3, 3]
    assert batches[0]["views"][2].shape == (4, 1, 8, 8) and batches[1]["index"].tolist() == [8, 7]


def test_each_network_trains_on_its_peers_division(monkeypatch):
    """Net A's losses call samples 0-5 clean, net B's 6-11: A must train on 6-11, B on 0-5."""
    from accelerate import Accelerator

    from jocor_plugin.models import PairNet

    n, labels = 12, torch.zeros(12, dtype=torch.long)
    confident, wrong = torch.tensor([8.0, 0.0]), torch.tensor([0.0, 8.0])
    logits_a = torch.stack([confident if i < 6 else wrong for i in range(n)])
    logits_b = torch.stack([wrong if i < 6 else confident for i in range(n)])
    pair = PairNet(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    order = torch.randperm(n)  # the trainer's pass is gathered: rows come with their index
    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True), pair=pair, cfg=SimpleNamespace(
        train=SimpleNamespace(seed=0)), splits=SimpleNamespace(train=[None] * n),
        per_sample_outputs=lambda: (logits_a[order], logits_b[order], labels[order], order))
    method = create_method("dividemix", warmup_epochs=1)
    trained = []
    monkeypatch.setattr(method, "_mixmatch_epoch",
                        lambda t, net, peer, division, epoch, which: trained.append((net, peer, division)))
    assert method.train_epoch(trainer, 1, 0.0) is True
    (net_1, peer_1, div_1), (net_2, peer_2, div_2) = trained
    assert net_1 is pair.net_a and peer_1 is pair.net_b and net_2 is pair.net_b and peer_2 is pair.net_a
    assert torch.nonzero(div_1.labelled).squeeze(1).tolist() == list(range(6, 12))
    assert torch.nonzero(div_2.labelled).squeeze(1).tolist() == list(range(6))
    assert torch.all(div_1.prob[6:] > 0.9) and torch.all(div_1.prob[:6] < 0.1)


def test_a_loader_over_already_decoded_images_shares_them():
    from jocor_plugin.data import InMemoryImages, make_loader

    cfg, splits, image_config = _digits()
    images = InMemoryImages(splits.train, image_config, augment=True)
    loader = make_loader(splits.train, cfg.data, image_config, batch_size=32, train=False, device="cpu", seed=0,
                         decoded=images)
    assert loader.dataset.images is images.images and not loader.dataset.augment and images.augment
    assert torch.equal(next(iter(loader))["pixel_values"], images.with_augment(False).__getitems__(list(range(32)))[
        "pixel_values"])


def test_a_short_run_learns_and_divides_better_than_chance(tmp_path, caplog):
    """Digits with 40 % symmetric noise: 2 warm-up epochs, then 2 DivideMix epochs, end to end."""
    import logging

    caplog.set_level(logging.INFO, logger="jocor_plugin")
    from jocor_plugin.config import load_config
    from jocor_plugin.run import train

    cfg = load_config(None, ["method.name=dividemix", "data.name=digits", "noise.rate=0.4", "train.epochs=4",
                             "train.batch_size=64", "method.kwargs={warmup_epochs: 2}", "log.progress_bar=false",
                             f"train.output_dir={tmp_path}", "train.export_models=false", "train.label_issue_epochs=1"])
    results = train(cfg)
    first, *_, last = results["epochs"]
    clean_fraction = 1.0 - results["noise"]["actual_rate"]
    assert first["label_precision"] == pytest.approx(clean_fraction)  # the warm-up trains on every sample
    assert "loss_u" not in first and last["loss_u"] > 0 and last["loss_x"] > 0
    for name in "ab":  # each network's labelled set is much cleaner than the data
        assert last[f"label_precision_{name}"] > clean_fraction + 0.2 and last[f"clean_auc_{name}"] > 0.85
        assert 0.3 < last[f"labelled_fraction_{name}"] < 0.9
    assert last["test_acc_ensemble"] > 60 and results["summary"]["test_acc_ensemble_last10"] > 60  # chance: 10
    assert (tmp_path / "label_issue_stats.safetensors").is_file()
    # tau does not apply: the log names neither it nor a forget rate
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epoch_lines) == 4 and not any("forget_rate" in line for line in epoch_lines)
    assert not any(r.getMessage().startswith("tau = ") for r in caplog.records)
    # the MLP has no convolution: the run says the default crop shifts its inputs, and how to drop it
    assert cfg.model.name == "jocor_mlp"
    assert any("has no convolution" in r.getMessage() and "crop_padding: 0" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("overrides", [["method.kwargs={crop_padding: 0}"], ["model.name=jocor_cnn"]])
def test_no_crop_warning_when_the_crop_is_chosen_or_the_backbone_convolves(overrides, tmp_path, caplog):
    """The warning is for the default crop on a backbone without convolutions only."""
    import logging

    caplog.set_level(logging.INFO, logger="jocor_plugin")
    from jocor_plugin.config import load_config
    from jocor_plugin.run import train

    train(load_config(None, ["method.name=dividemix", "data.name=digits", "train.epochs=1", *overrides,
                             "train.max_steps_per_epoch=2",  # the warning is said before training
                             "log.progress_bar=false", f"train.output_dir={tmp_path}", "train.export_models=false",
                             "train.label_issue_epochs=0", "train.keep_checkpoints=0"]))
    assert not any("has no convolution" in r.getMessage() for r in caplog.records)
    # digits get no flip, so without the crop nothing but mixup varies the two views
    expected = "augmentation: none" if "crop_padding" in overrides[0] else "augmentation: crop (padding 4)."
    assert any(expected in r.getMessage() for r in caplog.records)
