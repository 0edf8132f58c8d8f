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
