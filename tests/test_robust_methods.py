"""GCE, SCE and ELR: each loss against the formula worked by hand on a small batch, the data sets'
default arguments, out-of-range arguments refused in one line, ELR's per-sample targets kept in the
checkpoint (a stopped and resumed run equals one trained in one go, bit for bit), and a short run
of each that learns. The runs are in-process on the built-in digits (1,438 training images)."""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import (global_batch, half_batches_on_two_processes, method_argument_refusal, one_torch_thread,
                      run_in_process)
from jocor_plugin.methods import DataInfo, create_method, method_class

ROBUST = ["gce", "sce", "elr"]


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# 3 samples, 3 classes; sample 2's label is the one the network thinks least likely
Z = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [3.0, -2.0, 1.0]]
Y = [0, 1, 1]


def logits():
    return torch.tensor(Z, requires_grad=True)


def call(method, z, *, index=None):
    kwargs = {} if index is None else {"index": torch.tensor(index)}
    return method(z, None, torch.tensor(Y), forget_rate=0.0, epoch=0, **kwargs)


# ----------------------------------------------------------------------------- the losses by hand

@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_is_one_minus_p_y_to_the_q_over_q(q):
    # L_q = (1 - p_y^q) / q per sample, averaged over the batch
    expected = sum((1 - softmax(z)[y] ** q) / q for z, y in zip(Z, Y)) / len(Y)
    out = call(create_method("gce", q=q), logits())
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.selected_a.tolist() == [0, 1, 2] and out.selected_b is None  # as standard: every sample


def test_gce_gradient_is_finite_where_p_y_underflows():
    z = torch.tensor([[200.0, -200.0]], requires_grad=True)  # p_1 = e^-400 is 0 in float32
    out = create_method("gce")(z, None, torch.tensor([1]), forget_rate=0.0, epoch=0)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(1 / 0.7) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("alpha, beta", [(0.1, 1.0), (6.0, 0.1), (0.01, 1.0)])
def test_sce_is_alpha_ce_plus_beta_reverse_ce(alpha, beta):
    # CE = -log p_y; RCE = -sum_k p_k log(clip(onehot_k, 1e-4, 1)) = -log(1e-4) * (1 - p_y)
    expected = sum(alpha * -math.log(softmax(z)[y]) + beta * -math.log(1e-4) * (1 - softmax(z)[y])
                   for z, y in zip(Z, Y)) / len(Y)
    out = call(create_method("sce", alpha=alpha, beta=beta), logits())
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.selected_a.tolist() == [0, 1, 2] and out.selected_b is None


def test_sce_clips_the_softmax_at_1e_minus_7_as_the_authors():
    # p_y = e^-40 / (1 + e^-40) < 1e-7: CE = -log(1e-7) and no gradient through it; RCE's is left
    z = torch.tensor([[40.0, 0.0]], requires_grad=True)
    out = create_method("sce", alpha=1.0, beta=0.0)(z, None, torch.tensor([1]), forget_rate=0.0, epoch=0)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-math.log(1e-7), rel=1e-6) and z.grad.abs().sum() == 0


def test_elr_targets_are_running_averages_of_clipped_predictions_and_the_loss_by_hand():
    beta, lam = 0.7, 3.0
    method = create_method("elr", beta=beta, lam=lam)
    method.allocate(5, 3)
    index = [4, 0, 2]  # positions in a training set of 5

    def clipped(z):
        p = [min(max(v, 1e-4), 1 - 1e-4) for v in softmax(z)]
        return p, [v / sum(p) for v in p]

    t = {i: [0.0, 0.0, 0.0] for i in index}
    for step in range(2):  # the same samples twice: t <- beta t + (1 - beta) p / sum p
        z = [[v * (step + 1) for v in row] for row in Z]  # other predictions the second time
        expected = 0.0
        for i, row, y in zip(index, z, Y):
            p, p_hat = clipped(row)
            t[i] = [beta * a + (1 - beta) * b for a, b in zip(t[i], p_hat)]
            ce = -math.log(softmax(row)[y])
            expected += ce + lam * math.log(1 - sum(a * b for a, b in zip(t[i], p)))
        out = call(method, torch.tensor(z, requires_grad=True), index=index)
        assert out.loss.item() == pytest.approx(expected / len(Y), rel=1e-5)
        for i in index:
            assert method.targets[i].tolist() == pytest.approx(t[i], rel=1e-5)
    assert method.targets[[1, 3]].abs().sum() == 0  # samples not in a batch keep their zero target
    assert out.selected_a.tolist() == [0, 1, 2] and out.selected_b is None
    # the targets are constants of the loss (detached), kept as the method's checkpoint state
    state = method.state_dict()
    assert set(state) == {"targets"} and not state["targets"].requires_grad
    fresh = create_method("elr", beta=beta, lam=lam)
    fresh.allocate(5, 3)
    fresh.load_state_dict(state)
    assert fresh.targets.equal(method.targets)
    wrong = create_method("elr")
    wrong.allocate(4, 3)
    with pytest.raises(ValueError, match="shape"):
        wrong.load_state_dict(state)


def test_elr_without_indices_says_so():
    method = create_method("elr")
    with pytest.raises(RuntimeError, match="index"):
        call(method, logits())


# ----------------------------------------------------------------------------- defaults and arguments

def built(name, dataset, noise_type="symmetric", **kwargs):
    """``name`` as the trainer builds it (``from_config``) for a paper data set."""
    from jocor_plugin.config import load_config

    overrides = [f"method.name={name}", *(f"method.kwargs={{{k}: {v}}}" for k, v in kwargs.items())]
    cfg = load_config("recipes/demo.yaml", overrides)
    info = DataInfo(name=dataset or "digits", dataset=dataset, num_classes=10, num_train=100,
                    noise_type=noise_type, noise_rate=0.4)
    return method_class(name).from_config(cfg, info)


def test_the_authors_arguments_per_data_set():
    sce = {d: (m.alpha, m.beta) for d in ("mnist", "cifar10", "cifar100", None) for m in [built("sce", d)]}
    assert sce == {"mnist": (0.01, 1.0), "cifar10": (0.1, 1.0), "cifar100": (6.0, 0.1), None: (0.1, 1.0)}
    elr = {(d, n): (m.beta, m.lam) for d in ("cifar10", "cifar100", None) for n in ("symmetric", "asymmetric")
           for m in [built("elr", d, n)]}
    assert elr == {("cifar10", "symmetric"): (0.7, 3.0), ("cifar10", "asymmetric"): (0.9, 1.0),
                   ("cifar100", "symmetric"): (0.9, 7.0), ("cifar100", "asymmetric"): (0.9, 7.0),
                   (None, "symmetric"): (0.7, 3.0), (None, "asymmetric"): (0.7, 3.0)}
    assert (built("sce", "cifar100", alpha=1.0).alpha, built("sce", "cifar100", alpha=1.0).beta) == (1.0, 0.1)
    assert built("elr", "cifar100", lam=2.0).lam == 2.0 and built("gce", None).q == 0.7


@pytest.mark.parametrize("kwargs, named", [
    ("{q: 0}", "method.q=0"), ("{q: 1.5}", "method.q=1.5"),
    ("{alpha: -1}", "method.alpha=-1"), ("{alpha: 0, beta: 0}", "method.alpha=0"),
    ("{beta: 1.0}", "method.beta=1.0"), ("{lam: -2}", "method.lam=-2"),
], ids=["gce-q0", "gce-q1.5", "sce-alpha", "sce-zero", "elr-beta", "elr-lam"])
def test_out_of_range_arguments_are_refused_in_one_line(kwargs, named, tmp_path):
    name = {"q": "gce", "alpha": "sce"}.get(kwargs[1:].split(":")[0], "elr")
    assert named in method_argument_refusal(name, kwargs, tmp_path)


# ----------------------------------------------------------------------------- runs

RUN = ["recipes/demo.yaml", "data.name=digits", "noise.rate=0.4", "train.batch_size=64", "train.seed=3",
       "log.progress_bar=false", "train.export_models=false", "train.label_issue_epochs=0"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def run(out: Path, *args: str, code: int = 0):
    proc = run_in_process([*RUN, *args, f"train.output_dir={out}"])
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def last_checkpoint(out: Path) -> Path:
    return sorted((out / "checkpoints").glob("epoch_*"))[-1]


@pytest.fixture(scope="module")
def standard_epoch(tmp_path_factory) -> dict:
    """The first epoch's record of ``standard`` (which selects every sample) on the same data."""
    out = tmp_path_factory.mktemp("standard") / "run"
    run(out, "method.name=standard", "train.epochs=1", "train.keep_checkpoints=0")
    return results(out)["epochs"][0]


@pytest.mark.parametrize("name", ROBUST)
def test_a_short_run_learns_and_selects_every_sample(name, tmp_path, standard_epoch):
    out = tmp_path / name
    run(out, f"method.name={name}", "train.epochs=4", "train.keep_checkpoints=1")
    epochs = results(out)["epochs"]
    assert epochs[-1]["test_acc_a"] > 60 and "test_acc_b" not in epochs[-1]  # chance is 10 %
    # as standard: every sample is "selected", so the label precision is the clean share of the
    # epoch's samples (the loader drops the last partial batch), standard's figure exactly
    for key in ("selected_fraction", "label_precision", "label_precision_a"):
        assert epochs[0][key] == standard_epoch[key], key
    assert epochs[0]["selected_fraction"] == 1.0
    saved = {p.name for p in last_checkpoint(out).iterdir()}
    assert ("method_state.safetensors" in saved) == (name == "elr")


@pytest.mark.parametrize("steps", [0, 1], ids=["after-epoch-1", "inside-epoch-2"])
def test_elr_stopped_and_resumed_equals_one_run(steps, tmp_path):
    from test_resume import records, stop_at

    args = ["method.name=elr", "train.epochs=3", "train.log_interval=5"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(whole, *args)
    with stop_at(1, steps):
        proc = run(parts, *args, code=143)
    assert "Stopped by SIGTERM" in proc.stderr
    stopped = last_checkpoint(parts)
    assert stopped.name == ("epoch_0001" if steps == 0 else "epoch_0001_step_000005")
    targets = load_file(str(stopped / "method_state.safetensors"))["targets"]
    assert targets.shape == (results(parts)["num_train"], 10) and targets.abs().sum() > 0
    proc = run(parts, *args, "train.resume=auto")
    assert f"Resumed from {stopped}" in proc.stdout
    assert records(parts) == records(whole)
    for file in ("model.safetensors", "method_state.safetensors"):
        a, b = (load_file(str(last_checkpoint(o) / file)) for o in (whole, parts))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), file


def test_a_checkpoint_without_the_method_state_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["method.name=elr", "train.epochs=2", "train.max_steps_per_epoch=2"]
    from test_resume import stop_at

    with stop_at(1):
        run(out, *args, code=143)
    (last_checkpoint(out) / "method_state.safetensors").unlink()
    manifest = last_checkpoint(out) / "manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items()
                                    if k != "method_state.safetensors"}))
    proc = run(out, *args, "train.resume=auto", code=2)
    assert "holds no method_state.safetensors" in proc.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- truncated GCE

def test_truncated_gce_is_the_weighted_l_q_minus_the_truncation_constant_by_hand():
    # L = mean_i w_i ((1 - p_y^q)/q - (1 - k^q)/q): w = 1 is L_q shifted by -L_q(k), w = 0 drops i
    q, k = 0.7, 0.5
    method = create_method("gce", truncated=True, k=k)
    method.allocate(5)
    method.weights[[0, 2]] = 0.0  # sample 0 of the training set pruned, and 2
    index = [4, 0, 2]
    w = [1.0, 0.0, 0.0]
    l_qk = (1 - k ** q) / q
    expected = sum(wi * ((1 - softmax(z)[y] ** q) / q - l_qk) for wi, z, y in zip(w, Z, Y)) / len(Y)
    out = call(method, logits(), index=index)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.selected_a.tolist() == [0, 1, 2]  # nothing pruned by the method yet: every sample
    method.allocate(5)  # before any pruning: plain L_q less the constant
    out = call(method, logits(), index=index)
    assert out.loss.item() == pytest.approx(sum((1 - softmax(z)[y] ** q) / q - l_qk for z, y in zip(Z, Y)) / 3,
                                            rel=1e-6)
    assert create_method("gce").wants_index is False and method.wants_index is True


class PruningTrainer:
    """What truncated GCE uses of the trainer: the data's size and one pass over the training set."""

    def __init__(self, logits, labels):
        self.logits, self.labels, self.passes = torch.tensor(logits), torch.tensor(labels), 0
        self.data_info = DataInfo(name="toy", dataset=None, num_classes=3, num_train=len(labels),
                                  noise_type="symmetric", noise_rate=0.4)
        self.accelerator = type("Accelerator", (), {"device": torch.device("cpu")})()

    def per_sample_outputs(self):
        self.passes += 1
        return self.logits, None, self.labels, torch.arange(len(self.labels))


def test_truncated_gce_prunes_on_schedule_keeping_the_samples_with_p_y_at_least_k():
    # w_i = 1 iff L_q(p_y) <= L_q(k), i.e. p_y >= k: sample 0 (p_y = 0.74) kept, 1 (0.58) kept,
    # 2 (p_y = 0.04) pruned
    trainer = PruningTrainer(Z, Y)
    method = create_method("gce", truncated=True)  # the paper's: from epoch 40, every 10
    method.before_training(trainer)
    pruned_at = []
    for epoch in range(65):
        passes = trainer.passes
        method.before_epoch(trainer, epoch)
        if trainer.passes > passes:
            pruned_at.append(epoch)
    assert pruned_at == [40, 50, 60]
    p_y = [softmax(z)[y] for z, y in zip(Z, Y)]
    assert method.weights.tolist() == [1.0 if p >= 0.5 else 0.0 for p in p_y] == [1.0, 1.0, 0.0]
    out = call(method, logits(), index=[0, 1, 2])
    assert out.selected_a.tolist() == [0, 1]  # after pruning: the samples of weight 1
    # the weights and the epoch of the last pruning are the checkpoint state: a run resumed inside
    # epoch 60 does not prune again (with weights trained since)
    state = method.state_dict()
    assert set(state) == {"weights", "pruned_epoch"} and state["pruned_epoch"].tolist() == [60]
    resumed = create_method("gce", truncated=True)
    resumed.before_training(trainer)
    resumed.load_state_dict({k: v.clone() for k, v in state.items()})
    passes = trainer.passes
    resumed.before_epoch(trainer, 60)
    assert trainer.passes == passes and resumed.weights.equal(method.weights)
    with pytest.raises(ValueError, match="shape"):
        create_method("gce", truncated=True).load_state_dict(state)
    assert create_method("gce").state_dict() == {}  # plain GCE keeps no state


@pytest.mark.parametrize("kwargs, named", [
    ("{truncated: true, k: 1.5}", "method.k=1.5"), ("{truncated: true, prune_every: 0}",
                                                           "method.prune_every=0"),
    ("{truncated: true, prune_start: -1}", "method.prune_start=-1"),
], ids=["k", "prune_every", "prune_start"])
def test_truncated_gce_arguments_out_of_range_are_refused_in_one_line(kwargs, named, tmp_path):
    assert named in method_argument_refusal("gce", kwargs, tmp_path)


def test_truncated_gce_run_prunes_mostly_noisy_labels(tmp_path, standard_epoch):
    # pruned before epochs 3 and 4 (not the paper's 40 and 50: the digits are fitted in 3; pruning
    # a barely trained network keeps only the few samples it already finds likely)
    out = tmp_path / "truncated"
    run(out, "method.name=gce", "method.kwargs={truncated: true, prune_start: 3, prune_every: 1}",
        "train.epochs=5", "train.keep_checkpoints=1")
    epochs = results(out)["epochs"]
    assert epochs[-1]["test_acc_a"] > 60
    assert epochs[0]["label_precision"] == standard_epoch["label_precision"]  # no pruning yet: every sample
    assert [r["selected_fraction"] == 1.0 for r in epochs] == [True, True, True, False, False]
    for record in epochs[3:]:  # the kept samples are the clean ones, mostly
        assert record["label_precision"] > standard_epoch["label_precision"] + 0.2
    state = load_file(str(last_checkpoint(out) / "method_state.safetensors"))
    assert state["pruned_epoch"].tolist() == [4] and 0 < state["weights"].sum() < state["weights"].numel()


def test_truncated_gce_stopped_inside_a_pruning_epoch_and_resumed_equals_one_run(tmp_path):
    from test_resume import records, stop_at

    args = ["method.name=gce", "method.kwargs={truncated: true, prune_start: 3, prune_every: 1}",
            "train.epochs=4", "train.log_interval=5"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(whole, *args)
    with stop_at(3, 1):  # 5 steps into epoch 3 (0-based), which pruned at its start
        run(parts, *args, code=143)
    stopped = last_checkpoint(parts)
    assert stopped.name == "epoch_0003_step_000005"
    assert load_file(str(stopped / "method_state.safetensors"))["pruned_epoch"].tolist() == [3]
    run(parts, *args, "train.resume=auto")
    assert records(parts) == records(whole)
    for file in ("model.safetensors", "method_state.safetensors"):
        a, b = (load_file(str(last_checkpoint(o) / file)) for o in (whole, parts))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), file


# ----------------------------------------------------------------------------- two processes

def test_elr_two_processes_update_the_targets_as_one_process_with_the_whole_batch(tmp_path):
    """Each process updates its own samples' rows and the rows are gathered every step: both
    processes then hold the table one process would after the whole batch."""
    make = "create_method('elr', beta=0.7, lam=3.0); method.allocate(20, 3)"
    tables = half_batches_on_two_processes(make, "method.targets", tmp_path)
    assert tables.shape == (2, 20, 3) and tables[0].equal(tables[1])
    logits, targets, index = global_batch(20, 3, 8)
    method = create_method("elr", beta=0.7, lam=3.0)
    method.allocate(20, 3)
    method(logits, None, targets, forget_rate=0.0, epoch=0, index=index)
    assert method.targets[index].abs().sum() > 0  # the batch's rows moved
    torch.testing.assert_close(tables[0], method.targets, rtol=1e-6, atol=1e-7)
