"""The paper's baselines and ablations on hand-built logits, the registry's plugins, and a tiny run of each.

Every expected loss below is worked out from the CE formula by hand (``ce``), not with torch.
Gradient checks feed each hand-built logits table through an identity ``nn.Linear`` so the logits
are exact and ``x.grad`` shows, per sample, what each network learned from.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jocor_plugin.methods import (ENTRY_POINT_GROUP, create_method, describe_method, estimate_transition_matrix,
                                  list_methods, load_transition_matrix, registry, transition_matrix_error)
from conftest import run_in_process

ROOT = Path(__file__).resolve().parents[1]
ALL_METHODS = ["standard", "standard_plus", "decoupling", "coteaching", "coteaching_plus", "jocor",
               "joint_only", "fcorrection"]


def ce(z, y):
    """Cross-entropy of one logits row, by hand."""
    return -z[y] + math.log(sum(math.exp(v) for v in z))


class Net:
    """An identity Linear on a leaf copy of ``logits``: the forward gives ``logits`` exactly."""

    def __init__(self, logits):
        table = torch.tensor(logits, dtype=torch.float32)
        self.x = table.clone().requires_grad_(True)
        self.layer = torch.nn.Linear(table.shape[1], table.shape[1])
        with torch.no_grad():
            self.layer.weight.copy_(torch.eye(table.shape[1]))
            self.layer.bias.zero_()
        self.logits = self.layer(self.x)

    def rows_with_grad(self) -> set[int]:
        return set(torch.nonzero(self.x.grad.abs().sum(1)).flatten().tolist())

    def param_grads_are_zero(self) -> bool:
        return all(p.grad is not None and torch.all(p.grad == 0) for p in self.layer.parameters())


def call(name, logits_a, logits_b, targets, *, tau, epoch=0, **kwargs):
    net_a = Net(logits_a)
    net_b = Net(logits_b) if logits_b is not None else None
    method = create_method(name, **kwargs)
    out = method(net_a.logits, net_b.logits if net_b else None, torch.tensor(targets),
                 forget_rate=tau, epoch=epoch)
    out.loss.backward()
    return out, net_a, net_b


def idx(t) -> set[int]:
    return set(t.tolist())


# ----------------------------------------------------------------------------- hand-built batches

# Co-teaching batch, all targets 0. By hand:
#   CE_a = [log(1+e^-3), log(1+e^-2), log(1+e), log 2] = [0.049, 0.127, 1.313, 0.693] -> a keeps {0, 1}
#   CE_b = [log 2, log(1+e), log(1+e^-4), log(1+e^-2)] = [0.693, 1.313, 0.018, 0.127] -> b keeps {2, 3}
CT_A = [[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
CT_B = [[0.0, 0.0], [0.0, 1.0], [4.0, 0.0], [2.0, 0.0]]
CT_Y = [0, 0, 0, 0]

# Co-teaching+ batch, all targets 0: samples 0 (both say 0) and 5 (both say 1) agree; 1-4 disagree.
#   CE_a = [.007, .049, .127, 1.313, 2.127, 5.007], CE_b = [.007, 1.313, 2.127, .018, .313, 5.007]
CTP_A = [[5.0, 0.0], [3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 5.0]]
CTP_B = [[5.0, 0.0], [0.0, 1.0], [0.0, 2.0], [4.0, 0.0], [1.0, 0.0], [0.0, 5.0]]
CTP_Y = [0, 0, 0, 0, 0, 0]


def test_standard_plus_keeps_its_own_small_losses():
    logits, y = [[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 2.0]], [0, 0, 1, 1]
    # CE = [0.049, 1.313, 0.693, 0.127]; tau 0.5 keeps floor(2) = {0, 3}
    out, net, _ = call("standard_plus", logits, None, y, tau=0.5)
    assert create_method("standard_plus").num_networks == 1 and out.selected_b is None
    assert idx(out.selected_a) == {0, 3}
    assert out.loss.item() == pytest.approx((ce(logits[0], 0) + ce(logits[3], 1)) / 2, rel=1e-6)
    assert net.rows_with_grad() == {0, 3}
    # tau 0.3 keeps floor(0.7 * 4) = 2 as well (not round(2.8) = 3)
    assert call("standard_plus", logits, None, y, tau=0.3)[0].selected_a.numel() == 2


def test_standard_learns_from_every_sample_with_one_network():
    logits, y = [[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0, 0, 1]
    out, net, _ = call("standard", logits, None, y, tau=0.5)
    assert out.loss.item() == pytest.approx(sum(ce(z, t) for z, t in zip(logits, y)) / 3, rel=1e-6)
    assert net.rows_with_grad() == {0, 1, 2} and out.selected_b is None


def test_decoupling_updates_both_networks_on_the_disagreement_only():
    logits_a = [[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]]  # predicts 0 1 0 1
    logits_b = [[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 1.0]]  # predicts 0 0 1 1
    y = [0, 0, 1, 1]
    out, net_a, net_b = call("decoupling", logits_a, logits_b, y, tau=0.5)
    assert idx(out.selected_a) == idx(out.selected_b) == {1, 2}
    # (CE_a(1) + CE_a(2) + CE_b(1) + CE_b(2)) / 2 = (1.313 + 1.313 + 0.313 + 0.127) / 2
    expected = (ce(logits_a[1], 0) + ce(logits_a[2], 1) + ce(logits_b[1], 0) + ce(logits_b[2], 1)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert net_a.rows_with_grad() == net_b.rows_with_grad() == {1, 2}


def test_coteaching_each_network_learns_from_its_peers_pick():
    out, net_a, net_b = call("coteaching", CT_A, CT_B, CT_Y, tau=0.5)
    assert idx(out.selected_a) == {2, 3}  # net a trains on b's pick
    assert idx(out.selected_b) == {0, 1}  # net b trains on a's pick
    expected = (ce(CT_A[2], 0) + ce(CT_A[3], 0)) / 2 + (ce(CT_B[0], 0) + ce(CT_B[1], 0)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert net_a.rows_with_grad() == {2, 3} and net_b.rows_with_grad() == {0, 1}


def test_coteaching_plus_is_coteaching_before_init_epoch():
    # 6 samples, tau 0.5 keeps 3: a's smallest {0, 1, 2}, b's smallest {0, 3, 4}; crossed
    out, net_a, net_b = call("coteaching_plus", CTP_A, CTP_B, CTP_Y, tau=0.5, epoch=1, init_epoch=2)
    assert idx(out.selected_a) == {0, 3, 4} and idx(out.selected_b) == {0, 1, 2}
    expected = (sum(ce(CTP_A[i], 0) for i in (0, 3, 4)) + sum(ce(CTP_B[i], 0) for i in (0, 1, 2))) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert net_a.rows_with_grad() == {0, 3, 4} and net_b.rows_with_grad() == {0, 1, 2}


def test_coteaching_plus_crosses_small_losses_inside_the_disagreement_from_init_epoch():
    # disagreement {1, 2, 3, 4}; tau 0.5 keeps floor(0.5 * 4) = 2 (not floor(0.5 * 6) = 3):
    # a's smallest there {1, 2}, b's {3, 4}; net a trains on {3, 4}, net b on {1, 2}
    out, net_a, net_b = call("coteaching_plus", CTP_A, CTP_B, CTP_Y, tau=0.5, epoch=2, init_epoch=2)
    assert idx(out.selected_a) == {3, 4} and idx(out.selected_b) == {1, 2}
    expected = (ce(CTP_A[3], 0) + ce(CTP_A[4], 0)) / 2 + (ce(CTP_B[1], 0) + ce(CTP_B[2], 0)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert net_a.rows_with_grad() == {3, 4} and net_b.rows_with_grad() == {1, 2}


@pytest.mark.parametrize("name, kwargs", [("decoupling", {}), ("coteaching_plus", {"init_epoch": 0})])
def test_empty_disagreement_is_a_zero_loss_reaching_every_parameter(name, kwargs):
    same = [[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]
    out, net_a, net_b = call(name, same, same, [1, 0, 0], tau=0.2, epoch=3, **kwargs)
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    assert out.selected_a.numel() == 0 and out.selected_b.numel() == 0
    assert out.selected_a.dtype == torch.long
    assert net_a.param_grads_are_zero() and net_b.param_grads_are_zero()


def build_method(overrides):
    """The recipe's method as the trainer builds it: ``from_config`` with the data's facts."""
    from jocor_plugin.config import load_config
    from jocor_plugin.data.splits import paper_dataset
    from jocor_plugin.methods import DataInfo, method_class

    cfg = load_config("recipes/demo.yaml", overrides)
    info = DataInfo(name=cfg.data.name, dataset=paper_dataset(cfg.data.name), num_classes=10, num_train=100,
                    noise_type=cfg.noise.type, noise_rate=cfg.noise.rate)
    return method_class(cfg.method.name).from_config(cfg, info)


def test_coteaching_plus_default_init_epoch_follows_the_dataset():
    def built(*overrides):
        return build_method(["method.name=coteaching_plus", *overrides])

    assert built("data.name=cifar10").init_epoch == 20
    assert built("data.name=cifar100").init_epoch == 5
    assert built("data.name=mnist5k").init_epoch == 0
    assert built("data.name=cifar10", "method.init_epoch=3").init_epoch == 3


def test_joint_only_is_jocor_without_the_kl_term():
    # CE_a + CE_b = [0.742, 1.440, 1.332, 0.820]; tau 0.5 keeps {0, 3}, both networks learn from them
    out, net_a, net_b = call("joint_only", CT_A, CT_B, CT_Y, tau=0.5)
    assert idx(out.selected_a) == idx(out.selected_b) == {0, 3}
    expected = sum(ce(CT_A[i], 0) + ce(CT_B[i], 0) for i in (0, 3)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert net_a.rows_with_grad() == net_b.rows_with_grad() == {0, 3}
    # the recipe's co_lambda (0.95 in demo.yaml) can't switch the KL back on
    assert build_method(["method.name=joint_only"]).co_lambda == 0.0


@pytest.mark.parametrize("name", ["standard_plus", "coteaching", "coteaching_plus", "joint_only"])
@pytest.mark.parametrize("batch, tau", [(128, 0.5), (100, 0.8), (7, 0.3)])
def test_small_loss_methods_keep_exactly_the_floor(name, batch, tau):
    torch.manual_seed(batch)
    logits_a, logits_b = torch.randn(batch, 5), torch.randn(batch, 5)
    method = create_method(name)
    pool = batch
    if name == "coteaching_plus":  # counts are taken inside the disagreement set
        pool = int((logits_a.argmax(1) != logits_b.argmax(1)).sum())
    out = method(logits_a, None if method.num_networks == 1 else logits_b, torch.randint(0, 5, (batch,)),
                 forget_rate=tau, epoch=0)
    assert out.selected_a.numel() == math.floor(round((1 - tau) * pool, 9))


# ----------------------------------------------------------------------------- F-correction

def test_fcorrection_loss_is_minus_log_of_softmax_times_T_by_hand():
    z, y = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [0, 2]
    T = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]
    expected = 0.0
    for row, t in zip(z, y):
        p = [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
        expected -= math.log(sum(p[j] * T[j][t] for j in range(3)))
    method = create_method("fcorrection")
    method.set_transition_matrix(torch.tensor(T))
    net = Net(z)
    out = method(net.logits, None, torch.tensor(y), forget_rate=0.5, epoch=0)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(expected / 2, rel=1e-6)
    assert net.rows_with_grad() == {0, 1} and out.selected_b is None and idx(out.selected_a) == {0, 1}
    assert method.num_networks == 1 and not method.needs_estimation


def test_fcorrection_without_a_matrix_is_cross_entropy_and_never_overflows():
    method = create_method("fcorrection")
    assert method.T is None and method.needs_estimation
    z, y = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [0, 2]
    out = method(torch.tensor(z), None, torch.tensor(y), forget_rate=0.0, epoch=0)
    assert out.loss.item() == pytest.approx((ce(z[0], 0) + ce(z[1], 2)) / 2, rel=1e-6)
    # identity T and p_y = e^-200: the naive log(softmax(z) @ T) is -inf, ours stays CE = 200
    method.set_transition_matrix(torch.eye(2))
    extreme = torch.tensor([[100.0, -100.0]], requires_grad=True)
    out = method(extreme, None, torch.tensor([1]), forget_rate=0.0, epoch=0)
    assert out.loss.item() == pytest.approx(200.0, rel=1e-5)
    out.loss.backward()
    assert torch.isfinite(extreme.grad).all()


def _synthetic_softmax_table(n: int, num_classes: int, above: int, seed: int = 0):
    """Rows that are softmax vectors where, in each column i, exactly ``above`` rows have a larger
    p(i|x) than a known anchor row; returns (probs, the anchors' rows, their positions in probs)."""
    rng = np.random.default_rng(seed)
    rows, anchors = [], []
    for i in range(num_classes):
        for _ in range(above):  # outliers: p(i|x) = 0.99
            rows.append(np.full(num_classes, 0.01 / (num_classes - 1)))
            rows[-1][i] = 0.99
        anchor = rng.dirichlet(np.ones(num_classes - 1)) * 0.1  # the anchor: p(i|x) = 0.9
        anchors.append(np.insert(anchor, i, 0.9))
        rows.append(anchors[-1])
    while len(rows) < n:  # fillers: every entry below 0.8
        row = rng.dirichlet(np.ones(num_classes) * 3)
        if row.max() < 0.8:
            rows.append(row)
    perm = rng.permutation(n)
    probs = np.array(rows)[perm]
    # class i's anchor was appended at position i * (above + 1) + above; find where perm moved it
    where = [int(np.nonzero(perm == i * (above + 1) + above)[0][0]) for i in range(num_classes)]
    return torch.tensor(probs, dtype=torch.float32), np.array(anchors), where


@pytest.mark.parametrize("n, above", [(101, 3), (100, 2), (400, 11)])
def test_transition_matrix_rows_are_the_97th_percentile_anchors(n, above):
    probs, anchors, where = _synthetic_softmax_table(n, 4, above)
    # cross-check the construction against numpy's percentile (interpolation "higher")
    for i, row in enumerate(where):
        assert probs[row, i].item() == pytest.approx(np.percentile(probs[:, i].numpy(), 97, method="higher"))
    T = estimate_transition_matrix(probs)
    assert T.shape == (4, 4)
    np.testing.assert_allclose(T.numpy(), anchors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(T.sum(1).numpy(), 1.0, rtol=1e-5)
    # percentile 100 is the argmax: the 0.99 outliers
    top = estimate_transition_matrix(probs, percentile=100.0)
    assert torch.allclose(top.diagonal(), torch.full((4,), 0.99))


def test_transition_matrix_error_and_files(tmp_path):
    true = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    # |I - T| sums to 3 * 0.2 + 6 * 0.1 = 1.2, |T| to 3
    assert transition_matrix_error(np.eye(3), true) == pytest.approx(0.4)
    assert transition_matrix_error(torch.tensor(true), true) == 0.0
    (tmp_path / "t.json").write_text(json.dumps(true.tolist()))
    (tmp_path / "results.json").write_text(json.dumps({"transition_matrix": {"estimated": true.tolist()}}))
    np.savetxt(tmp_path / "t.csv", true, delimiter=",")
    np.save(tmp_path / "t.npy", true)
    for name in ("t.json", "results.json", "t.csv", "t.npy"):
        assert np.allclose(load_transition_matrix(tmp_path / name).numpy(), true), name
    method = create_method("fcorrection", transition_matrix=str(tmp_path / "t.csv"))
    assert not method.needs_estimation and np.allclose(method.T.numpy(), true)
    np.savetxt(tmp_path / "bad.csv", [[0.5, 0.1], [0.5, 0.5]], delimiter=",")
    from jocor_plugin.core.errors import UserError

    with pytest.raises(UserError, match="must sum to 1"):
        load_transition_matrix(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="positive entry in every column"):
        create_method("fcorrection").set_transition_matrix([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(UserError, match="not found"):
        create_method("fcorrection", transition_matrix=str(tmp_path / "missing.csv"))


# ----------------------------------------------------------------------------- registry

def test_every_method_is_registered_with_a_one_line_description():
    assert set(ALL_METHODS) <= set(list_methods())
    for name in ALL_METHODS:
        line = describe_method(name)
        head, _, rest = line.partition(": ")
        assert head == name and "\n" not in line and len(rest) > 30
        assert rest.endswith(")") and "*args" not in rest
    assert "(init_epoch: int = 0)" in describe_method("coteaching_plus")
    assert "(no arguments)" in describe_method("coteaching")
    assert [create_method(n).num_networks for n in ALL_METHODS] == [1, 1, 2, 2, 2, 2, 2, 1]


def _fake_distribution(root: Path, entries: str) -> None:
    """An installed-looking distribution (a .dist-info folder on sys.path) with entry points."""
    info = root / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}")
    (root / "ep_methods.py").write_text(
        "from jocor_plugin.methods import register_method\n"
        "from jocor_plugin.methods.standard import Standard\n\n"
        "@register_method('ep_by_module')\n"
        "class ByModule(Standard):\n    '''Registered by importing the module.'''\n\n\n"
        "class ByClass(Standard):\n    '''Registered under the entry point's name.'''\n")


def test_entry_point_methods_load_once_lazily(tmp_path, monkeypatch, caplog):
    _fake_distribution(tmp_path, "mod = ep_methods\nep_by_class = ep_methods:ByClass\nbroken = no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "ep_by_class" not in registry._METHODS  # nothing loaded before the first lookup
    names = list_methods()
    assert {"ep_by_module", "ep_by_class"} <= set(names) and set(ALL_METHODS) <= set(names)
    assert "broken" in caplog.text and "Skipping method plugin" in caplog.text
    assert describe_method("ep_by_class").startswith("ep_by_class: Registered under the entry point's name.")
    caplog.clear()
    list_methods()
    assert caplog.text == ""  # loaded once


def test_entry_point_method_is_listed_by_the_command_line(tmp_path):
    _fake_distribution(tmp_path, "ep_by_class = ep_methods:ByClass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "jocor_plugin.run", "--list-methods"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ep_by_class: Registered under the entry point's name." in proc.stdout
    assert "ep_by_module: Registered by importing the module." in proc.stdout


# ----------------------------------------------------------------------------- end to end

def _run(*args: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    if not pythonpath:
        return run_in_process(["recipes/demo.yaml", *args])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [pythonpath, os.environ.get("PYTHONPATH", "")] if p)}
    return subprocess.run([sys.executable, "-m", "jocor_plugin.run", "recipes/demo.yaml", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_readme_example_method_runs_end_to_end(tmp_path):
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# my_pkg/my_methods\.py\n.*?)```", readme, re.S).group(1)
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "my_methods.py").write_text(code)
    out = tmp_path / "run"
    proc = _run("method.imports=my_pkg.my_methods", "method.name=my_method", "method.kwargs={temperature: 2.0}",
                "data.name=digits", "train.epochs=1", f"train.output_dir={out}", "log.progress_bar=false",
                pythonpath=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "results.json").is_file()
    assert "SelfPaced(temperature=2.0)" in proc.stdout
    assert "method.imports=my_pkg.my_methods" in readme and "method.name=my_method" in readme


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Every built-in method for 2 epochs on digits (in this process, one after the other)."""
    root = tmp_path_factory.mktemp("methods")

    def one(name):
        out = root / name
        return name, out, _run(f"method.name={name}", "data.name=digits", "train.epochs=2", "train.batch_size=64",
                               f"train.output_dir={out}", "log.progress_bar=false")

    return {name: (out, proc) for name, out, proc in map(one, ALL_METHODS)}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_trains_end_to_end(tiny_runs, name):
    out, proc = tiny_runs[name]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["epochs"]) == 2 and results["finished"]
    assert results["config"]["method"]["name"] == name
    two_nets = create_method(name).num_networks == 2
    assert ("test_acc_b" in results["epochs"][-1]) == two_nets
    assert all(math.isfinite(e["train_loss"]) for e in results["epochs"])
