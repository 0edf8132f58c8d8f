"""The engine's device-side figures equal the packaged `evaluate` metrics and a running float32 sum
bit for bit (they replaced them in the step and at the epoch's end for speed)."""
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from jocor_plugin.train.engine import EpochMeter, evaluate
from jocor_plugin.train.metrics import load_metric
from jocor_plugin.models import PairNet


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def fill(meter: EpochMeter, steps: int, batch: int, seed: int, same_selection: bool, losses=None) -> list:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(meter.num_samples, generator=g)
    noisy = torch.rand(meter.num_samples, generator=g) < 0.4
    out = []
    for step in range(steps):
        index = order[step * batch:(step + 1) * batch]
        loss = torch.rand((), generator=g) * 3 if losses is None else torch.tensor(losses[step])
        sel_a = torch.randperm(batch, generator=g)[:batch // 2]
        sel_b = sel_a if same_selection else torch.randperm(batch, generator=g)[:batch // 3]
        meter.update({"index": index, "is_noisy": noisy[index]}, loss, sel_a, sel_b)
        out.append((index, noisy[index], loss, sel_a, sel_b))
    return out


@pytest.mark.parametrize("same_selection", [True, False])
def test_summarise_matches_the_evaluate_metrics(accelerator, same_selection):
    meter = EpochMeter(1000, "cpu")
    steps = fill(meter, 70, 12, seed=1, same_selection=same_selection)  # more steps than the initial slots
    seen, clean = np.zeros(1000, bool), np.zeros(1000, bool)
    selected = np.zeros((2, 1000), bool)
    running = torch.zeros(())
    for index, noisy, loss, sel_a, sel_b in steps:
        seen[index] = True
        clean[index] = ~noisy.numpy()
        selected[0, index[sel_a]] = True
        selected[1, index[sel_b]] = True
        running += loss
    got = meter.summarise(accelerator, 2)
    metric = load_metric("label_precision")
    assert got["train_loss"] == running.item() / 70
    assert got["selected_fraction"] == float(selected[:, seen].mean())
    for i, name in enumerate("ab"):
        want = metric.compute(predictions=selected[i][seen], references=clean[seen])["label_precision"]
        assert got[f"label_precision_{name}"] == want
    want = metric.compute(predictions=selected[:, seen].ravel(),
                          references=np.tile(clean[seen], 2))["label_precision"]
    assert got["label_precision"] == want and got["nonfinite_steps"] == 0


def test_label_precision_of_a_hand_worked_epoch(accelerator):
    """Two steps over 8 of 10 samples, the noisy labels and each network's selection known:

    step 1: samples 0 1 2 3, noisy 2 3;  A selects batch positions 0, 2 -> samples 0, 2
                                         B selects batch positions 1, 3 -> samples 1, 3
    step 2: samples 4 5 6 7, noisy 5;    A selects positions 0, 1, 2    -> samples 4, 5, 6
                                         B selects position 0           -> sample 4
    A selected {0, 2, 4, 5, 6}, clean among them {0, 4, 6}: precision 3/5 = 0.6
    B selected {1, 3, 4}, clean {1, 4}: 2/3
    the pair: (3 + 2) / (5 + 3) = 5/8 = 0.625
    selected fraction: 8 selections of 2 x 8 seen samples = 0.5 (samples 8, 9 unseen don't count)
    loss: (1.0 + 2.0) / 2 steps = 1.5"""
    meter = EpochMeter(10, "cpu")
    noisy = torch.tensor([0, 0, 1, 1, 0, 1, 0, 0, 1, 1], dtype=torch.bool)
    for index, sel_a, sel_b, loss in ((torch.arange(0, 4), [0, 2], [1, 3], 1.0),
                                      (torch.arange(4, 8), [0, 1, 2], [0], 2.0)):
        meter.update({"index": index, "is_noisy": noisy[index]}, torch.tensor(loss), torch.tensor(sel_a),
                     torch.tensor(sel_b))
    got = meter.summarise(accelerator, 2)
    assert got["label_precision_a"] == pytest.approx(3 / 5) and got["label_precision_b"] == pytest.approx(2 / 3)
    assert got["label_precision"] == pytest.approx(5 / 8)
    assert got["selected_fraction"] == 0.5 and got["train_loss"] == 1.5 and got["nonfinite_steps"] == 0
    # one selection for both networks (JoCoR passes the same tensor): A's figures, for both
    meter = EpochMeter(10, "cpu")
    chosen = torch.tensor([0, 1, 2])  # samples 0, 1, 2: clean, clean, noisy
    meter.update({"index": torch.arange(0, 4), "is_noisy": noisy[:4]}, torch.tensor(1.0), chosen, chosen)
    got = meter.summarise(accelerator, 2)
    assert got["label_precision_a"] == got["label_precision_b"] == got["label_precision"] == pytest.approx(2 / 3)
    assert got["selected_fraction"] == 0.75  # 3 of 4 seen, by each network


def test_nothing_selected_is_nan(accelerator):
    meter = EpochMeter(20, "cpu")
    meter.update({"index": torch.arange(4), "is_noisy": torch.zeros(4, dtype=torch.bool)}, torch.tensor(1.0),
                 torch.zeros(0, dtype=torch.long), None)
    got = meter.summarise(accelerator, 1)
    assert math.isnan(got["label_precision_a"]) and math.isnan(got["label_precision"])
    assert got["selected_fraction"] == 0.0


def test_nonfinite_losses_are_counted_and_left_out_of_the_sum(accelerator):
    losses = [0.5, float("nan"), 1.25, float("inf"), 2.0]
    meter = EpochMeter(100, "cpu")
    fill(meter, 5, 10, seed=2, same_selection=True, losses=losses)
    assert int(meter.nonfinite_steps()) == 2 and meter.first_nonfinite() == 1
    got = meter.summarise(accelerator, 2)
    assert got["nonfinite_steps"] == 2 and got["train_loss"] == pytest.approx(3.75 / 5)


def test_state_dict_resumes_mid_epoch_exactly(accelerator):
    whole, first, resumed = EpochMeter(500, "cpu"), EpochMeter(500, "cpu"), EpochMeter(500, "cpu")
    steps = fill(whole, 30, 10, seed=3, same_selection=False)
    for index, noisy, loss, sel_a, sel_b in steps[:17]:
        first.update({"index": index, "is_noisy": noisy}, loss, sel_a, sel_b)
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    for index, noisy, loss, sel_a, sel_b in steps[17:]:
        resumed.update({"index": index, "is_noisy": noisy}, loss, sel_a, sel_b)
    assert resumed.summarise(accelerator, 2) == whole.summarise(accelerator, 2)


def test_an_older_mid_epoch_checkpoint_still_resumes(accelerator):
    """Checkpoints written before the per-step losses held the running sums instead."""
    whole, resumed = EpochMeter(300, "cpu"), EpochMeter(300, "cpu")
    steps = fill(whole, 20, 10, seed=4, same_selection=True)
    seen, clean, selected = (torch.zeros(300, dtype=torch.bool), torch.zeros(300, dtype=torch.bool),
                             torch.zeros(2, 300, dtype=torch.bool))
    loss_sum = torch.zeros(())
    for index, noisy, loss, sel_a, _ in steps[:8]:
        seen[index], clean[index] = True, ~noisy
        selected[:, index[sel_a]] = True
        loss_sum += loss
    resumed.load_state_dict({"steps": torch.tensor(8), "loss_sum": loss_sum, "nonfinite_steps": torch.tensor(0),
                             "first_nonfinite": torch.tensor(-1), "seen": seen, "clean": clean,
                             "selected": selected, "has_clean_labels": torch.tensor(True)})
    for index, noisy, loss, sel_a, sel_b in steps[8:]:
        resumed.update({"index": index, "is_noisy": noisy}, loss, sel_a, sel_b)
    assert resumed.summarise(accelerator, 2) == whole.summarise(accelerator, 2)


def test_evaluate_matches_the_accuracy_metric(accelerator):
    torch.manual_seed(0)
    pair = PairNet(torch.nn.Linear(6, 3), torch.nn.Linear(6, 3))
    x, y = torch.randn(103, 6), torch.randint(0, 3, (103,))
    loader = [{"pixel_values": x[i:i + 25], "label": y[i:i + 25]} for i in range(0, 103, 25)]
    got = evaluate(pair, loader, accelerator)
    metric = load_metric("accuracy")
    with torch.no_grad():
        for name, net in zip("ab", pair.networks):
            want = metric.compute(predictions=net(x).argmax(1).numpy(), references=y.numpy())["accuracy"]
            assert got[f"test_acc_{name}"] == 100.0 * want
    assert set(evaluate(PairNet(pair.net_a), loader, accelerator)) == {"test_acc_a"}


def test_the_optimizer_step_does_not_search_the_file_system(accelerator, monkeypatch):
    """Accelerate's wrapped optimizer asks whether lomo_optim is installed on every step (a
    file-system search); the trainer makes it ask once."""
    import importlib.util

    import jocor_plugin.train.trainer  # noqa: F401  (caches the lookup)

    model = torch.nn.Linear(4, 2)
    optimizer = accelerator.prepare(torch.optim.Adam(model.parameters()))
    optimizer.step()  # the one lookup, if the cache was empty
    searches = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: searches.append(a) or real_find_spec(*a, **k))
    for _ in range(5):
        model(torch.ones(3, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert searches == []


def test_a_selection_of_the_whole_batch_marks_every_sample_without_indexing_by_it():
    """A selection as long as the batch (unique positions, any order) is the whole batch: the meter
    and the label-issue statistics take that shortcut, with the same masks as indexing."""
    from jocor_plugin.methods import MethodOutput
    from jocor_plugin.train.meters import SampleStats

    index = torch.tensor([7, 2, 9, 4])
    for selected_a, selected_b, expected in ((torch.tensor([3, 1, 0, 2]), None, [2, 4, 7, 9]),
                                             (torch.tensor([1, 3]), torch.tensor([0, 1, 2, 3]), [2, 4, 7, 9]),
                                             (torch.tensor([1, 3]), None, [2, 4])):
        meter = EpochMeter(10, "cpu")
        meter.update({"index": index}, torch.tensor(1.0), selected_a, selected_b)
        assert meter.selected[0].nonzero().squeeze(1).tolist() == sorted(index[selected_a].tolist())
        stats = SampleStats(10, 3, window=1, device="cpu")
        logits = torch.randn(4, 3)
        stats.update({"index": index, "label": torch.tensor([0, 1, 2, 0])}, logits, None,
                     MethodOutput(loss=torch.tensor(0.0), selected_a=selected_a, selected_b=selected_b))
        assert stats.cur_selected.nonzero().squeeze(1).tolist() == expected
