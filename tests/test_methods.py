import math

import pytest
import torch
import torch.nn.functional as F

from jocor_plugin.methods import Method, MethodOutput, create_method, list_methods, num_to_keep, register_method


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_jocor_loss_matches_the_formula_on_hand_made_logits():
    logits_a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits_b = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.5, 0.0]])
    targets = torch.tensor([0, 1, 1])
    lam = 0.7
    expected = []
    for za, zb, y in zip(logits_a.tolist(), logits_b.tolist(), targets.tolist()):
        pa = [math.exp(v) / sum(math.exp(u) for u in za) for v in za]
        pb = [math.exp(v) / sum(math.exp(u) for u in zb) for v in zb]
        ce = -math.log(pa[y]) - math.log(pb[y])
        expected.append((1 - lam) * ce + lam * (_kl(pa, pb) + _kl(pb, pa)))
    out = create_method("jocor", co_lambda=lam)(logits_a, logits_b, targets, forget_rate=0.0, epoch=0)
    assert out.loss.item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    # tau = 1/3 keeps floor(2/3 * 3) = 2 samples: the two smallest joint losses
    out = create_method("jocor", co_lambda=lam)(logits_a, logits_b, targets, forget_rate=1 / 3, epoch=0)
    smallest = sorted(range(3), key=lambda i: expected[i])[:2]
    assert sorted(out.selected_a.tolist()) == sorted(smallest)
    assert torch.equal(out.selected_a, out.selected_b)
    assert out.loss.item() == pytest.approx(sum(expected[i] for i in smallest) / 2, rel=1e-6)


@pytest.mark.parametrize("batch, tau", [(128, 0.5), (128, 0.2), (100, 0.8), (10, 0.9), (7, 0.0)])
def test_jocor_keeps_exactly_the_floor_smallest(batch, tau):
    torch.manual_seed(batch)
    logits_a, logits_b = torch.randn(batch, 10), torch.randn(batch, 10)
    targets = torch.randint(0, 10, (batch,))
    method = create_method("jocor", co_lambda=0.9)
    out = method(logits_a, logits_b, targets, forget_rate=tau, epoch=5)
    k = math.floor(round((1 - tau) * batch, 9))
    assert out.selected_a.numel() == k
    ce = F.cross_entropy(logits_a, targets, reduction="none") + F.cross_entropy(logits_b, targets, reduction="none")
    pa, pb = logits_a.softmax(1), logits_b.softmax(1)
    joint = 0.1 * ce + 0.9 * ((pa - pb) * (pa.log() - pb.log())).sum(1)
    assert set(out.selected_a.tolist()) == set(torch.argsort(joint)[:k].tolist())


def test_jocor_gradient_reaches_both_networks_only_through_kept_samples():
    net_a, net_b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(8, 4, requires_grad=True)
    targets = torch.randint(0, 3, (8,))
    out = create_method("jocor")(net_a(x), net_b(x), targets, forget_rate=0.5, epoch=0)
    out.loss.backward()
    assert net_a.weight.grad.abs().sum() > 0 and net_b.weight.grad.abs().sum() > 0
    dropped = sorted(set(range(8)) - set(out.selected_a.tolist()))
    assert torch.all(x.grad[dropped] == 0) and torch.all(x.grad[out.selected_a].abs().sum(1) > 0)


def test_empty_selection_is_a_zero_loss_that_reaches_every_parameter():
    net_a, net_b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(1, 4)
    out = create_method("jocor")(net_a(x), net_b(x), torch.tensor([1]), forget_rate=0.5, epoch=0)
    assert out.selected_a.numel() == 0
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in [*net_a.parameters(), *net_b.parameters()])


def test_standard_is_single_network_cross_entropy_on_everything():
    method = create_method("standard")
    assert method.num_networks == 1
    logits, targets = torch.randn(6, 4), torch.randint(0, 4, (6,))
    out = method(logits, None, targets, forget_rate=0.5, epoch=0)
    assert out.loss.item() == pytest.approx(F.cross_entropy(logits, targets).item())
    assert out.selected_a.tolist() == list(range(6)) and out.selected_b is None


def test_num_to_keep_is_exact_floor():
    assert num_to_keep(10, 0.9) == 1
    assert num_to_keep(128, 0.5) == 64
    assert num_to_keep(3, 0.5) == 1


def test_registry_suggests_and_accepts_new_methods():
    with pytest.raises(KeyError, match="Did you mean 'jocor'"):
        create_method("jocr")

    @register_method("test_half_batch")
    class HalfBatch(Method):
        """Trains on the first half of the batch."""

        def __call__(self, logits_a, logits_b, targets, *, forget_rate, epoch):
            keep = torch.arange(targets.numel() // 2)
            return MethodOutput(F.cross_entropy(logits_a[keep], targets[keep]), keep, keep)

    assert "test_half_batch" in list_methods()
    out = create_method("test_half_batch")(torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]),
                                           forget_rate=0.0, epoch=0)
    assert out.selected_a.tolist() == [0, 1]
