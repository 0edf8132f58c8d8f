import pytest
import torch

from jocor_plugin.config import load_config
from jocor_plugin.train.schedule import apply_optim_schedule, forget_rate_at, lr_beta1_at


def test_paper_forget_rate_ramps_linearly_to_tau_at_t_k():
    m = load_config(None, ["method.num_gradual=10"]).method
    rates = [forget_rate_at(t, 0.5, m) for t in range(13)]
    assert rates[0] == 0.0 and rates[5] == pytest.approx(0.25)
    assert rates[10:] == pytest.approx([0.5] * 3)
    assert all(a <= b for a, b in zip(rates, rates[1:]))


def test_official_forget_rate_is_the_authors_linspace_shifted_by_their_epoch_0():
    m = load_config(None, ["method.num_gradual=10", "method.forget_schedule=official"]).method
    # authors: rate_schedule[:10] = linspace(0, tau, 10); they train epochs 1..N-1
    linspace = [0.5 * i / 9 for i in range(10)]
    assert [forget_rate_at(t, 0.5, m) for t in range(9)] == pytest.approx(linspace[1:])
    assert forget_rate_at(20, 0.5, m) == 0.5


def test_exponent_shapes_the_ramp():
    m = load_config(None, ["method.num_gradual=10", "method.exponent=2"]).method
    assert forget_rate_at(5, 0.4, m) == pytest.approx(0.4 * 0.25)


def test_paper_adam_schedule_decays_lr_and_steps_beta1():
    o = load_config(None, ["optim.decay_start=80"]).optim
    assert lr_beta1_at(79, 200, o) == (1e-3, 0.9)
    lr, beta1 = lr_beta1_at(80, 200, o)
    assert lr == pytest.approx(1e-3) and beta1 == 0.1
    assert lr_beta1_at(140, 200, o)[0] == pytest.approx(0.5e-3)
    assert lr_beta1_at(199, 200, o)[0] == pytest.approx(1e-3 / 120)


def test_piecewise_schedule_as_clothing1m():
    o = load_config(None, ["optim.schedule=piecewise", "optim.lr_steps=[8e-4, 5e-4, 5e-5]",
                           "optim.step_epochs=5"]).optim
    assert [lr_beta1_at(t, 15, o)[0] for t in (0, 4, 5, 10, 14, 20)] == pytest.approx(
        [8e-4, 8e-4, 5e-4, 5e-5, 5e-5, 5e-5])


def test_schedule_is_applied_to_the_optimizer():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.999))
    o = load_config(None, ["optim.decay_start=2"]).optim
    assert apply_optim_schedule(opt, 3, 4, o) == pytest.approx(0.5e-3)
    assert opt.param_groups[0]["betas"] == (0.1, 0.999)
