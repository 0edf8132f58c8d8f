"""train.fidelity=authors_code for DivideMix: the authors' Train_CIFAR.py set-up (docs/fidelity.md,
"DivideMix"), their symmetric noise, their PreAct ResNet-18, and the 90 % loss history."""
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import yaml
from datasets import Dataset

import jocor_plugin  # noqa: F401  (registers preact_resnet18)
from jocor_plugin.config import config_to_dict, load_config
from jocor_plugin.config.fidelity import authors_code_caveat, fidelity_defaults
from jocor_plugin.methods.codivide import clean_probability
from jocor_plugin.methods.dividemix import DivideMix
from jocor_plugin.noise import actual_noise_rate, add_label_noise, transition_matrix
from jocor_plugin.train.schedule import lr_beta1_at
from jocor_plugin.train.trainer import build_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C10, C100 = "data.name=uoft-cs/cifar10", "data.name=uoft-cs/cifar100"
AUTHORS = ["method.name=dividemix", "train.fidelity=authors_code"]


def _print_config(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "jocor_plugin.run", *args, "--print-config"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return yaml.safe_load(proc.stdout)


def _authors_set_up(cfg, warm_up, model):
    assert cfg["model"]["name"] == model
    optim = cfg["optim"]
    assert (optim["name"], optim["lr"], optim["momentum"], optim["weight_decay"]) == ("momentum", 0.02, 0.9, 5e-4)
    assert optim["kwargs"] == {"filter_bias_and_bn": False}
    assert (optim["schedule"], optim["lr_steps"], optim["step_epochs"]) == ("piecewise", [0.02, 0.002], 150)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["first_epoch"]) == (301, 128, 0)
    assert cfg["method"]["kwargs"] == {"warmup_epochs": warm_up}  # no history below 90 % noise
    assert cfg["noise"]["type"] == "symmetric_incl_true"


def test_print_config_shows_the_authors_set_up_on_cifar10_and_cifar100():
    _authors_set_up(_print_config(C10, *AUTHORS), 10, "preact_resnet18")  # the command line, once
    _authors_set_up(config_to_dict(load_config(None, [C100, *AUTHORS])), 30, "preact_resnet18.cifar100")


def test_the_jocor_recipes_give_way_to_the_authors_set_up_and_the_command_line_wins():
    """recipes/cifar10.yaml sets JoCoR's Adam, CNN and 200 epochs; under method.name=dividemix
    train.fidelity=authors_code they give way to DivideMix's own table (the recipe was written for
    JoCoR), while a key given on the command line wins, and with it its group: Adam keeps no 5e-4
    weight decay, and the run's caveat names what was kept."""
    for recipe, warm_up in (("recipes/cifar10.yaml", 10), ("recipes/cifar100.yaml", 30)):
        cfg = load_config(os.path.join(ROOT, recipe), AUTHORS)
        assert (cfg.optim.name, cfg.train.epochs, cfg.method.kwargs) == ("momentum", 301, {"warmup_epochs": warm_up})
        assert cfg.model.name.startswith("preact_resnet18") and cfg.noise.type == "symmetric_incl_true"
        kept = load_config(os.path.join(ROOT, recipe), [*AUTHORS, "optim.name=adam", "model.name=jocor_cnn",
                                                        "method.warmup_epochs=3"])
        assert (kept.optim.name, kept.optim.weight_decay, kept.optim.kwargs, kept.model.name) == ("adam", 0.0, {},
                                                                                                  "jocor_cnn")
        assert kept.method.kwargs == {"warmup_epochs": 3}
        note = authors_code_caveat(kept, owns_epochs=True)
        assert "optim.name='adam' (theirs: 'momentum')" in note and "model.name='jocor_cnn'" in note


def test_paper_mode_and_other_data_are_untouched():
    assert fidelity_defaults(load_config(None, [C10, "method.name=dividemix"]), set()) == {}
    cfg = load_config(None, ["data.name=digits", *AUTHORS])  # no authors' code for digits
    assert (cfg.optim.name, cfg.model.name, cfg.train.epochs, cfg.method.kwargs, cfg.train.first_epoch) == (
        "adam", "jocor_mlp", 200, {}, 0)
    assert "sets nothing for data.name=digits" in authors_code_caveat(cfg, owns_epochs=True)
    # JoCoR keeps the JoCoR authors' table
    assert load_config(None, ["data.name=digits", "train.fidelity=authors_code"]).train.first_epoch == 1


def test_explicit_keys_and_kwargs_entries_win():
    cfg = load_config(None, [C10, *AUTHORS, "train.epochs=3", "method.kwargs={warmup_epochs: 1, crop_padding: 0}",
                             "optim.weight_decay=0", "noise.type=symmetric"])
    assert cfg.train.epochs == 3 and cfg.method.kwargs == {"warmup_epochs": 1, "crop_padding": 0}
    assert cfg.optim.weight_decay == 0 and cfg.optim.name == "momentum" and cfg.noise.type == "symmetric"
    cfg = load_config(None, [C10, *AUTHORS, "optim.name=adamw"])  # another optimizer: none of their optim values
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.kwargs) == (1e-3, "paper", {})


def test_optimizer_is_plain_sgd_with_weight_decay_on_every_parameter():
    cfg = load_config(None, [C10, *AUTHORS])
    net = timm.create_model(cfg.model.name, num_classes=10)
    opt = build_optimizer(cfg, net)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.02, 0.9, 5e-4, False)
    assert len(group["params"]) == len(list(net.parameters()))  # biases and BN weights decay too
    # timm's default (what filter_bias_and_bn=false turns off): 1-d parameters in a group without decay
    cfg.optim.kwargs = {}
    assert sorted(g["weight_decay"] for g in build_optimizer(cfg, net).param_groups) == [0.0, 5e-4]


def test_lr_drops_tenfold_from_epoch_150():
    cfg = load_config(None, [C10, *AUTHORS])
    lrs = [lr_beta1_at(e, cfg.train.epochs, cfg.optim)[0] for e in (0, 149, 150, 300)]
    assert lrs == [0.02, 0.02, 0.002, 0.002]


def test_loss_history_at_90_percent_noise():
    assert load_config(None, [C10, *AUTHORS, "noise.rate=0.9"]).method.kwargs == {"warmup_epochs": 10,
                                                                                    "loss_history": 5}
    assert "loss_history" not in load_config(None, [C10, *AUTHORS, "noise.rate=0.8"]).method.kwargs
    method = DivideMix(loss_history=5)
    g = torch.Generator().manual_seed(0)
    epochs = [torch.rand(50, generator=g) for _ in range(7)]
    for k, losses in enumerate(epochs):
        fed = method.division_input(0, losses)
        assert torch.allclose(fed, torch.stack(epochs[max(0, k - 4):k + 1]).mean(0))  # history[-5:].mean(0)
    assert torch.equal(method.division_input(1, epochs[0]), epochs[0])  # each network its own history
    once = DivideMix()  # below 90 %: this epoch's losses, what clean_probability fitted before
    assert once.division_input(0, epochs[0]) is epochs[0] and once.division_input(0, epochs[1]) is epochs[1]
    assert torch.equal(clean_probability(method.division_input(0, epochs[0]), seed=0),
                       clean_probability(epochs[0], [*method._history[0]], seed=0))


@pytest.mark.parametrize("rate, classes", [(0.5, 10), (0.9, 10), (0.8, 100)])
def test_symmetric_incl_true_noise_rate_and_determinism(rate, classes):
    T = transition_matrix("symmetric_incl_true", rate, classes)
    assert np.allclose(T.sum(1), 1) and np.isclose(1 - T[0, 0], rate * (classes - 1) / classes)
    labels = np.arange(6000) % classes
    ds = Dataset.from_dict({"label": labels})
    noisy = add_label_noise(ds, noise_type="symmetric_incl_true", rate=rate, num_classes=classes, seed=3)
    assert abs(actual_noise_rate(noisy) - rate * (classes - 1) / classes) < 0.03
    again = add_label_noise(ds, noise_type="symmetric_incl_true", rate=rate, num_classes=classes, seed=3)
    assert noisy["label"] == again["label"]
    other = add_label_noise(ds, noise_type="symmetric_incl_true", rate=rate, num_classes=classes, seed=4)
    assert noisy["label"] != other["label"]
    wrong = np.asarray(noisy["label"])[np.asarray(noisy["is_noisy"])]
    assert np.bincount(wrong, minlength=classes).min() > 0  # wrong labels reach every class


def test_preact_resnet18_builds_in_timm_as_their_resnet18():
    net = timm.create_model("preact_resnet18", num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 11_171_274  # their PreResNet.ResNet18(10)
    assert not any(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]) == 3
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)  # their avg_pool2d(out, 4)
    cfg = timm.data.resolve_data_config({}, model=net)
    assert cfg["mean"] == (0.4914, 0.4822, 0.4465) and cfg["input_size"] == (3, 32, 32)
    wide = timm.create_model("preact_resnet18.cifar100", num_classes=100)
    assert sum(p.numel() for p in wide.parameters()) == 11_217_444
    assert timm.data.resolve_data_config({}, model=wide)["std"] == (0.267, 0.256, 0.276)
    small = timm.create_model("preact_resnet18", num_classes=3, in_chans=1)
    assert small(torch.randn(2, 1, 8, 8)).shape == (2, 3)
