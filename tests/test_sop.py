"""SOP (sparse over-parameterization): the loss against the authors' formula worked by hand on a
small batch, one step of u and v against their gradients derived by hand, the data sets' default
learning rates, out-of-range arguments refused in one line, ``--list-methods``, u and v kept in the
checkpoint (a resumed run equals one trained in one go, bit for bit), a short run that learns, and
two processes that update u and v as one process with the whole batch. The runs are in-process on
the built-in digits (1,438 training images)."""
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import (global_batch, half_batches_on_two_processes, method_argument_refusal, one_torch_thread,
                      run_in_process)
from jocor_plugin import create_method, load_config
from jocor_plugin.methods import DataInfo, method_class

EPS = 1e-4  # the authors' clamp
# 3 samples, 3 classes (as tests/test_robust_methods.py); sample 2's label is its least likely class
Z = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [3.0, -2.0, 1.0]]
Y = [0, 1, 1]
INDEX = [4, 0, 2]  # their positions in a training set of 5
# u^2 = 0.25 (inside the clamp), 1.44 (clamped to 1: no gradient), 0.09; v^2 up to 0.36, enough to
# push p_k - v_k^2 below the 1e-4 clamp for sample 2's unlikely classes
U = [0.5, 1.2, 0.3]
V = [[0.4, 0.2, 0.1], [0.3, 0.6, 0.2], [0.1, 0.5, 0.6]]


def softmax(z):
    e = [math.exp(x) for x in z]
    return [x / sum(e) for x in e]


def by_hand(z, y, u, v):
    """The authors' per-sample terms (model/loss.py:70-95 at 9a3fd24) in plain Python: CE, the
    squared residual r, U_y, the clamped prediction before normalising, and its sum S."""
    p = softmax(z)
    onehot = [1.0 if k == y else 0.0 for k in range(len(z))]
    big_u = [min(max(u * u * t, 0.0), 1.0) for t in onehot]
    big_v = [min(max(w * w * (1 - t), 0.0), 1.0) for w, t in zip(v, onehot)]
    pred = [max(a + b - c, EPS) for a, b, c in zip(p, big_u, big_v)]
    s = max(sum(pred), EPS)
    q = [min(max(x / s, EPS), 1.0) for x in pred]
    argmax = [1.0 if k == z.index(max(z)) else 0.0 for k in range(len(z))]
    r = [a + b - c - t for a, b, c, t in zip(argmax, big_u, big_v, onehot)]
    return -math.log(q[y]), r, big_u, pred, s


def prepared(lr_u=10.0, lr_v=10.0, num_samples=5):
    method = create_method("sop", lr_u=lr_u, lr_v=lr_v)
    method.allocate(num_samples, 3)
    method.u[INDEX] = torch.tensor(U)[:, None]
    method.v[INDEX] = torch.tensor(V)
    return method


def call(method, z):
    return method(z, None, torch.tensor(Y), forget_rate=0.0, epoch=0, index=torch.tensor(INDEX))


# ----------------------------------------------------------------------------- the loss and the step by hand

def test_the_loss_is_the_authors_ce_plus_mse_by_hand():
    terms = [by_hand(z, y, u, v) for z, y, u, v in zip(Z, Y, U, V)]
    ce = sum(t[0] for t in terms) / len(Y)
    mse = sum(x * x for t in terms for x in t[1]) / len(Y)  # sum over samples and classes / B
    z = torch.tensor(Z, requires_grad=True)
    out = call(prepared(), z)
    assert out.loss.item() == pytest.approx(ce + mse, rel=1e-6)
    assert out.selected_a.tolist() == [0, 1, 2] and out.selected_b is None  # as standard: every sample
    # the network's gradient is CE's alone (V detached, the argmax one-hot constant): CE written
    # the authors' way in torch, with F.normalize's L1 normalisation
    out.loss.backward()
    ref_z = torch.tensor(Z, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.tensor(Y), 3).float()
    big_u = (torch.tensor(U)[:, None] ** 2 * y).clamp(0, 1)
    big_v = (torch.tensor(V) ** 2 * (1 - y)).clamp(0, 1)
    pred = torch.clamp(torch.softmax(ref_z, dim=1) + big_u - big_v, min=EPS)
    pred = torch.nn.functional.normalize(pred, p=1, eps=EPS).clamp(EPS, 1.0)
    (-(y * torch.log(pred)).sum(dim=1).mean()).backward()
    torch.testing.assert_close(z.grad, ref_z.grad, rtol=1e-6, atol=1e-7)


def test_one_step_of_u_and_v_by_hand():
    lr_u, lr_v, b = 10.0, 100.0, len(Y)
    method = prepared(lr_u, lr_v)
    call(method, torch.tensor(Z, requires_grad=True))
    for row, (z, y, u, v) in zip(INDEX, zip(Z, Y, U, V)):
        _, r, _, pred, s = by_hand(z, y, u, v)
        # d/du: CE through U_y = u^2 (d(-log(pred_y / S))/dU_y = 1/S - 1/pred_y) and MSE's 2 r_y,
        # times dU_y/du = 2u where u^2 is inside the clamp [0, 1]
        inside = u * u <= 1.0
        grad_u = 2 * u * inside * ((1 / s - 1 / pred[y]) + 2 * r[y]) / b
        # d/dv_k: MSE only, -2 r_k times dV_k/dv_k = 2 v_k (1 - y_k)
        grad_v = [-2 * r[k] * 2 * v[k] * (k != y) / b for k in range(3)]
        assert method.u[row].item() == pytest.approx(u - lr_u * grad_u, rel=1e-5)
        assert method.v[row].tolist() == pytest.approx([a - lr_v * g for a, g in zip(v, grad_v)], rel=1e-5)
    assert method.u[INDEX[1]].item() == pytest.approx(U[1])  # u^2 = 1.44 is clamped to 1: no gradient
    untouched = prepared(lr_u, lr_v)  # rows not in the batch keep their initial draw
    assert method.u[[1, 3]].equal(untouched.u[[1, 3]]) and method.v[[1, 3]].equal(untouched.v[[1, 3]])


def test_u_and_v_start_tiny_from_their_own_generator_and_are_the_checkpoint_state():
    method = create_method("sop")
    method.allocate(6, 4, seed=7)
    assert method.u.shape == (6, 1) and method.v.shape == (6, 4)
    assert 0 < method.u.abs().max() < 1e-7 and 0 < method.v.abs().max() < 1e-7  # N(0, 1e-8^2)
    state = torch.get_rng_state()
    again = create_method("sop")
    again.allocate(6, 4, seed=7)
    assert again.u.equal(method.u) and again.v.equal(method.v) and torch.get_rng_state().equal(state)
    call_method = prepared()
    call(call_method, torch.tensor(Z))
    saved = call_method.state_dict()
    assert set(saved) == {"u", "v"} and not saved["u"].requires_grad
    fresh = create_method("sop")
    fresh.allocate(5, 3)
    fresh.load_state_dict({k: v.clone() for k, v in saved.items()})
    assert fresh.u.equal(call_method.u) and fresh.v.equal(call_method.v)
    wrong = create_method("sop")
    wrong.allocate(5, 4)
    with pytest.raises(ValueError, match="shape"):
        wrong.load_state_dict(saved)
    with pytest.raises(RuntimeError, match="index"):
        create_method("sop")(torch.tensor(Z), None, torch.tensor(Y), forget_rate=0.0, epoch=0)


def test_a_non_finite_step_leaves_u_and_v_as_they_were():
    method = prepared()
    before = method.state_dict()
    before = {k: v.clone() for k, v in before.items()}
    call(method, torch.full((3, 3), float("nan")))
    assert all(method.state_dict()[k].equal(before[k]) for k in before)


# ----------------------------------------------------------------------------- defaults and arguments

def built(dataset, noise_type="symmetric", **kwargs):
    overrides = ["method.name=sop", *(f"method.kwargs={{{k}: {v}}}" for k, v in kwargs.items())]
    cfg = load_config("recipes/demo.yaml", overrides)
    info = DataInfo(name=dataset or "digits", dataset=dataset, num_classes=10, num_train=100,
                    noise_type=noise_type, noise_rate=0.4)
    return method_class("sop").from_config(cfg, info)


def test_the_authors_learning_rates_per_data_set():
    got = {(d, n): (m.lr_u, m.lr_v) for d in ("cifar10", "cifar100", None) for n in ("symmetric", "asymmetric")
           for m in [built(d, n)]}
    assert got == {("cifar10", "symmetric"): (10.0, 10.0), ("cifar10", "asymmetric"): (10.0, 100.0),
                   ("cifar100", "symmetric"): (1.0, 10.0), ("cifar100", "asymmetric"): (0.1, 100.0),
                   (None, "symmetric"): (10.0, 10.0), (None, "asymmetric"): (10.0, 10.0)}
    assert built("cifar100", lr_u=2.0).lr_u == 2.0 and built("cifar100", lr_u=2.0).lr_v == 10.0
    assert built(None).init_std == 1e-8


@pytest.mark.parametrize("kwargs, named", [
    ("{lr_u: 0}", "method.lr_u=0"), ("{lr_v: -1}", "method.lr_v=-1"),
    ("{init_std: 0}", "method.init_std=0"),
], ids=["lr_u", "lr_v", "init_std"])
def test_out_of_range_arguments_are_refused_in_one_line(kwargs, named, tmp_path):
    assert named in method_argument_refusal("sop", kwargs, tmp_path)


def test_list_methods_shows_sop_with_its_arguments():
    proc = run_in_process(["--list-methods"])
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("sop: "))
    assert line.endswith("(lr_u: Optional[float] = None, lr_v: Optional[float] = None, init_std: float = 1e-08)")


# ----------------------------------------------------------------------------- runs

RUN = ["recipes/demo.yaml", "data.name=digits", "noise.rate=0.4", "train.batch_size=64", "train.seed=3",
       "log.progress_bar=false", "train.export_models=false", "train.label_issue_epochs=0"]
TIMES = ("train_time_s", "epoch_time_s")  # the only figures allowed to differ


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def run(out: Path, *args: str) -> subprocess.CompletedProcess:
    proc = run_in_process([*RUN, *args, f"train.output_dir={out}"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def epochs(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["epochs"]


def last_checkpoint(out: Path) -> Path:
    return sorted((out / "checkpoints").glob("epoch_*"))[-1]


def test_a_short_run_learns_and_a_resumed_run_equals_one_in_one_go(tmp_path):
    whole, parts, standard = tmp_path / "whole", tmp_path / "parts", tmp_path / "standard"
    run(whole, "method.name=sop", "train.epochs=3")
    records = epochs(whole)
    assert records[-1]["test_acc_a"] > 60 and "test_acc_b" not in records[-1]  # chance is 10 %
    # as standard: every sample is "selected", so the label precision is the clean share of the
    # epoch's samples, standard's figure exactly
    run(standard, "method.name=standard", "train.epochs=1", "train.keep_checkpoints=0")
    for key in ("selected_fraction", "label_precision", "label_precision_a"):
        assert records[0][key] == epochs(standard)[0][key], key
    state = load_file(str(last_checkpoint(whole) / "method_state.safetensors"))
    assert state["u"].shape == (json.loads((whole / "results.json").read_text())["num_train"], 1)
    assert state["u"].abs().max() > 1e-6  # u moved from its 1e-8 start
    # stopped after epoch 1 and continued to 3: the records, the weights, u and v bit for bit
    run(parts, "method.name=sop", "train.epochs=1")
    proc = run(parts, "method.name=sop", "train.epochs=3", "train.resume=auto")
    assert "Resumed from" in proc.stdout
    assert [{k: v for k, v in r.items() if k not in TIMES} for r in epochs(parts)] == \
           [{k: v for k, v in r.items() if k not in TIMES} for r in records]
    for file in ("model.safetensors", "method_state.safetensors"):
        a, b = (load_file(str(last_checkpoint(o) / file)) for o in (whole, parts))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), file


# ----------------------------------------------------------------------------- two processes

def test_two_processes_update_u_and_v_as_one_process_with_the_whole_batch(tmp_path):
    make = "create_method('sop', lr_u=10.0, lr_v=100.0, init_std=0.3); method.allocate(20, 3, seed=1)"  # large steps
    tables = half_batches_on_two_processes(make, "torch.cat([method.u, method.v], dim=1)", tmp_path)
    assert tables.shape == (2, 20, 4) and tables[0].equal(tables[1])  # both processes hold the same u, v
    logits, targets, index = global_batch(20, 3, 8)  # one process, the whole batch of 8
    method = create_method("sop", lr_u=10.0, lr_v=100.0, init_std=0.3)
    method.allocate(20, 3, seed=1)
    start = torch.cat([method.u, method.v], dim=1)
    method(logits, None, targets, forget_rate=0.0, epoch=0, index=index)
    one = torch.cat([method.u, method.v], dim=1)
    assert not one[index].equal(start[index])  # the batch's rows moved
    torch.testing.assert_close(tables[0], one, rtol=1e-6, atol=1e-7)
