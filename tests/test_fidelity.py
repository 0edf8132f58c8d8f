"""train.fidelity=authors_code: each detail of the authors' code (docs/fidelity.md), and the NaN
of their KL formulation that this project's loss avoids."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from jocor_plugin.config import config_to_dict, load_config
from jocor_plugin.data import build_noisy_splits, make_loader, permutation_split
from jocor_plugin.methods.jocor import joint_loss, symmetric_kl
from jocor_plugin.noise import authors_noisy_labels, transition_matrix
from jocor_plugin.train.schedule import forget_rate_at, lr_beta1_at

DIGITS = ["data.name=digits", "noise.rate=0.5"]


def test_authors_code_sets_its_defaults_and_explicit_keys_win():
    paper = load_config(None, DIGITS)
    assert (paper.train.first_epoch, paper.train.max_steps_per_epoch, paper.train.eval_drop_last,
            paper.noise.sampler, paper.data.split, paper.method.forget_schedule) == (
        0, None, False, "hashed", "stratified", "paper")
    cfg = load_config(None, [*DIGITS, "train.fidelity=authors_code", "train.batch_size=64"])
    assert cfg.train.first_epoch == 1 and cfg.method.forget_schedule == "official"
    assert cfg.train.max_steps_per_epoch == 401 and cfg.train.eval_drop_last is True
    assert cfg.train.eval_batch_size == 64  # their one batch_size serves both loaders
    assert (cfg.noise.sampler, cfg.noise.seed, cfg.data.split) == ("authors", 0, "permutation")
    # an explicit value wins over the mode, and config.yaml records what was used
    cfg = load_config(None, [*DIGITS, "train.fidelity=authors_code", "noise.seed=7", "train.first_epoch=0",
                             "train.max_steps_per_epoch=null"])
    assert (cfg.noise.seed, cfg.train.first_epoch, cfg.train.max_steps_per_epoch) == (7, 0, None)
    dumped = yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))
    assert dumped["noise"]["sampler"] == "authors" and dumped["train"]["eval_drop_last"] is True


def test_first_epoch_must_leave_an_epoch_to_train():
    from jocor_plugin.config import ConfigError

    with pytest.raises(ConfigError, match="train.first_epoch"):
        load_config(None, ["train.fidelity=authors_code", "train.epochs=1"])


def test_asymmetric_tau_is_half_the_rate_in_both_modes():
    # algorithm/jocor.py halves noise_rate for asymmetric noise (main.py's forget_rate is unused)
    for mode in ("paper", "authors_code"):
        cfg = load_config(None, ["noise.type=asymmetric", "noise.rate=0.4", f"train.fidelity={mode}"])
        assert cfg.forget_rate == pytest.approx(0.2)


def test_authors_epoch_indexing_of_tau_lr_and_beta1():
    # their epoch e = 1..N-1 trains with alpha_plan[e], beta1_plan[e], rate_schedule[e]
    cfg = load_config(None, ["train.fidelity=authors_code", "train.epochs=200", "optim.decay_start=80",
                             "method.num_gradual=10"])
    first = cfg.train.first_epoch
    trained = cfg.train.epochs - first
    assert trained == 199
    plan = [lr_beta1_at(t + first, cfg.train.epochs, cfg.optim) for t in range(trained)]
    assert plan[78] == (1e-3, 0.9) and plan[79] == (pytest.approx(1e-3), 0.1)  # their epoch 80
    assert plan[-1][0] == pytest.approx(1e-3 / 120)  # their epoch 199
    taus = [forget_rate_at(t, 0.8, cfg.method) for t in range(trained)]
    assert taus[:9] == pytest.approx([0.8 * e / 9 for e in range(1, 10)]) and taus[9:] == pytest.approx([0.8] * 190)


def test_run_trains_n_minus_one_epochs_with_the_shifted_plan(tmp_path):
    from jocor_plugin.run import train

    cfg = load_config(None, [*DIGITS, "train.fidelity=authors_code", "train.epochs=3", "optim.decay_start=1",
                             "method.num_gradual=3", "train.batch_size=64", "train.max_steps_per_epoch=2",
                             "train.label_issue_epochs=0", "train.export_models=false", "train.keep_checkpoints=0",
                             "log.progress_bar=false", f"train.output_dir={tmp_path / 'run'}"])
    records = train(cfg)["epochs"]
    assert len(records) == 2  # epoch 0 only evaluates
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 0.5e-3])  # alpha_plan[1], alpha_plan[2]
    assert [r["forget_rate"] for r in records] == pytest.approx([0.25, 0.5])  # linspace(0, .5, 3)[1:]


def _test_loader(cfg):
    from jocor_plugin.data import resolve_image_config
    from jocor_plugin.models import create_pair

    splits = build_noisy_splits(cfg)
    image_config = resolve_image_config(cfg.data, create_pair("jocor_mlp", num_classes=10, in_chans=1).net_a, 1)
    return splits, make_loader(splits.test, cfg.data, image_config, batch_size=cfg.train.eval_batch_size,
                               train=False, device="cpu", seed=1, drop_last=cfg.train.eval_drop_last)


def test_test_loader_drops_the_last_partial_batch():
    splits, loader = _test_loader(load_config(None, [*DIGITS, "train.fidelity=authors_code"]))
    assert len(splits.test) == 359
    assert sum(len(b["label"]) for b in loader) == 256  # 2 full batches of 128
    splits, loader = _test_loader(load_config(None, DIGITS))
    assert sum(len(b["label"]) for b in loader) == 359


def test_authors_code_decays_cifar100_from_epoch_100_and_others_from_the_recipe():
    assert load_config("recipes/cifar100.yaml").optim.decay_start == 80  # the paper
    assert load_config("recipes/cifar100.yaml", ["train.fidelity=authors_code"]).optim.decay_start == 100
    assert load_config("recipes/cifar10.yaml", ["train.fidelity=authors_code"]).optim.decay_start == 80
    assert load_config("recipes/cifar100.yaml", ["train.fidelity=authors_code",
                                                 "optim.decay_start=90"]).optim.decay_start == 90


def test_test_accuracy_counts_every_image_of_the_kept_batches():
    """With the last partial batch dropped, accuracy is over the 256 images of the 2 whole batches:
    Accelerate's gather_for_metrics would cut the second to the remainder (359 % 128 = 103)."""
    from accelerate import Accelerator

    from jocor_plugin.train.engine import evaluate

    _, loader = _test_loader(load_config(None, [*DIGITS, "train.fidelity=authors_code"]))
    labels = [b["label"] for b in loader]

    class FirstBatchRight(torch.nn.Module):  # right on the first batch, wrong on the others
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            y = labels[self.calls] if self.calls == 0 else (labels[self.calls] + 1) % 10
            self.calls += 1
            logits = torch.nn.functional.one_hot(y, 10).float()
            return logits, logits

    accelerator = Accelerator(cpu=True)
    acc = evaluate(FirstBatchRight(), accelerator.prepare(loader), accelerator, drop_last=True)
    assert acc["test_acc_a"] == pytest.approx(100 * 128 / 256)


def test_permutation_split_keeps_the_permuted_order():
    train, test = permutation_split(10, 0.2, seed=0)
    order = np.random.RandomState(0).permutation(10)
    assert train.tolist() == order[:8].tolist() and test.tolist() == order[8:].tolist()


def _their_noisify(y, P, random_state):
    """The authors' procedure as a formula: labels as an (m, 1) column, one RandomState, a
    one-draw multinomial over P's row per sample, in order."""
    y = np.asarray(y)[:, None]
    flipper = np.random.RandomState(random_state)
    return np.array([np.where(flipper.multinomial(1, P[y[i], :][0], 1)[0] == 1)[0][0] for i in range(len(y))])


@pytest.mark.parametrize("noise_type,rate", [("symmetric", 0.8), ("pairflip", 0.45), ("asymmetric", 0.4)])
def test_authors_sampler_gives_their_labels(noise_type, rate):
    y = np.random.RandomState(3).randint(0, 10, 500)
    T = transition_matrix(noise_type, rate, 10, dataset="mnist")
    ours = authors_noisy_labels(y, T, 0)
    assert ours.tolist() == _their_noisify(y, T, 0).tolist()
    assert abs((ours != y).mean() - np.mean(1 - np.diag(T)[y])) < 0.06


def test_authors_noise_ignores_the_training_seed():
    labels = {seed: np.asarray(build_noisy_splits(load_config(
        None, [*DIGITS, "train.fidelity=authors_code", f"train.seed={seed}"])).train["label"]) for seed in (1, 2)}
    assert (labels[1] == labels[2]).all()
    hashed = {seed: np.asarray(build_noisy_splits(load_config(None, [*DIGITS, f"train.seed={seed}"])).train["label"])
              for seed in (1, 2)}
    assert (hashed[1] != hashed[2]).any()


def _authors_kl(z_a, z_b):
    """algorithm/loss.py's formulation as a formula: F.kl_div(log_softmax(pred), softmax(target))
    both ways, the gradient flowing into the target's softmax."""
    kl = lambda pred, target: F.kl_div(F.log_softmax(pred, 1), F.softmax(target, 1), reduction="none").sum(1)  # noqa: E731
    return kl(z_a, z_b) + kl(z_b, z_a)


@pytest.mark.parametrize("co_lambda", [0.0, 0.95])
def test_our_loss_stays_finite_where_the_authors_kl_gradient_is_nan(co_lambda):
    # a logit gap of 110: float32 softmax underflows to exactly 0 (below ~1e-45), then the gradient of
    # target * log(target) is log(0) = -inf times the softmax Jacobian's 0 = NaN, at lambda 0 too
    z_a = torch.tensor([[110.0, 0.0, 0.0], [2.0, 1.0, 0.0]], requires_grad=True)
    z_b = torch.tensor([[109.0, 0.0, 1.0], [1.0, 2.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    assert (F.softmax(z_a, 1) == 0).any()
    supervised = F.cross_entropy(z_a, targets, reduction="none") + F.cross_entropy(z_b, targets, reduction="none")
    theirs = ((1 - co_lambda) * supervised + co_lambda * _authors_kl(z_a, z_b)).mean()
    assert torch.isfinite(theirs)  # the forward pass is fine ...
    theirs.backward()
    assert torch.isnan(z_a.grad).any() and torch.isnan(z_b.grad).any()  # ... its gradient is not
    z_a.grad = z_b.grad = None
    ours = joint_loss(z_a, z_b, targets, co_lambda).mean()
    ours.backward()
    assert torch.isfinite(ours) and torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()
    # and where nothing underflows the two are the same function with the same gradient
    x_a, x_b = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10, requires_grad=True)
    (g_ours,) = torch.autograd.grad(symmetric_kl(x_a, x_b).sum(), x_a)
    (g_theirs,) = torch.autograd.grad(_authors_kl(x_a, x_b).sum(), x_a)
    assert torch.allclose(g_ours, g_theirs, atol=1e-6)
