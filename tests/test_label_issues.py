"""Label-issue statistics, the export CLI and its report."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from datasets import load_from_disk
from safetensors.torch import load_file

from jocor_plugin.label_issues import (SampleStats, binary_metrics, cross_validated_probs, issue_table, load_stats,
                                       main as label_issues_main, precision_at_k)
from jocor_plugin.core.errors import UserError
from jocor_plugin.methods import MethodOutput
from jocor_plugin.train.label_report import export_label_issues
from conftest import run_digits_demo

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"index", "given_label", "predicted_label", "issue_score", "is_label_issue", "is_noisy", "clean_label"}


class OneProcess:
    """What SampleStats needs of an Accelerator, for a single process."""
    num_processes, is_main_process = 1, True

    @staticmethod
    def reduce(tensor, reduction="sum"):
        return tensor


def step(stats, index, logits_a, logits_b, labels, selected_a, selected_b, loss=None):
    batch = {"index": torch.tensor(index), "label": torch.tensor(labels)}
    out = MethodOutput(loss=torch.zeros(()), selected_a=torch.tensor(selected_a, dtype=torch.long),
                       selected_b=None if selected_b is None else torch.tensor(selected_b, dtype=torch.long),
                       per_sample_loss=None if loss is None else torch.tensor(loss))
    stats.update(batch, logits_a, logits_b, out)


def as_numpy(stats):
    return {k: v.cpu().numpy() for k, v in stats.state_dict().items()}


def test_stats_accumulate_selection_loss_agreement_over_the_window():
    torch.manual_seed(0)
    stats = SampleStats(4, 3, window=2, device="cpu")
    labels = [0, 1, 2, 0]
    agree = torch.tensor([[5.0, 0, 0], [0, 5, 0]])      # both networks predict 0, 1
    differ = torch.tensor([[5.0, 0, 0], [5, 0, 0]])     # b predicts 0 for the second sample
    # epoch 0: the method reports its loss for the first batch; the second falls back to mean CE
    step(stats, [0, 1], agree, agree, labels[:2], [0], [0], loss=[0.5, 4.0])
    la, lb = torch.randn(2, 3), torch.randn(2, 3)
    step(stats, [2, 3], la, lb, labels[2:], [1], None)
    stats.end_epoch(OneProcess())
    fallback = ((F.cross_entropy(la, torch.tensor(labels[2:]), reduction="none")
                 + F.cross_entropy(lb, torch.tensor(labels[2:]), reduction="none")) / 2)
    # epoch 1: sample 3 is not seen (drop_last), sample 1 now selected by b only
    step(stats, [0, 1], agree, differ, labels[:2], [0], [1], loss=[1.5, 2.0])
    step(stats, [2], la[:1], lb[:1], labels[2:3], [], None, loss=[3.0])
    stats.end_epoch(OneProcess())

    table = issue_table(as_numpy(stats), forget_rate=0.25).set_index("index").sort_index()
    assert table["epochs_seen"].tolist() == [2, 2, 2, 1]
    assert table["selected_fraction"].tolist() == [1.0, 0.5, 0.0, 1.0]
    assert table["mean_loss"].tolist() == pytest.approx([1.0, 3.0, (float(fallback[0]) + 3.0) / 2, float(fallback[1])])
    assert table["agreement"].tolist() == [1.0, 0.5, pytest.approx(float(la[0].argmax() == lb[0].argmax())),
                                           float(la[1].argmax() == lb[1].argmax())]
    # the predicted class: argmax of the pair's mean softmax in the latest epoch the sample was seen
    assert table.loc[1, "predicted_label"] == 0 and table.loc[0, "predicted_label"] == 0
    assert table.loc[3, "predicted_label"] == int(((la[1].softmax(0) + lb[1].softmax(0)) / 2).argmax())
    # a third epoch evicts the first (window of 2)
    step(stats, [0, 1, 2, 3], torch.zeros(4, 3), torch.zeros(4, 3), labels, [], [], loss=[9.0, 9.0, 9.0, 9.0])
    stats.end_epoch(OneProcess())
    table = issue_table(as_numpy(stats), forget_rate=0.25).set_index("index").sort_index()
    assert table["mean_loss"].tolist() == pytest.approx([5.25, 5.5, 6.0, 9.0])
    assert table["epochs_seen"].tolist() == [2, 2, 2, 1]


def test_score_ranks_the_never_selected_high_loss_sample_first_and_flags_tau_n():
    stats = SampleStats(4, 2, window=3, device="cpu")
    for _ in range(3):
        logits = torch.tensor([[4.0, 0], [4.0, 0], [0, 4.0], [4.0, 0]])
        step(stats, [0, 1, 2, 3], logits, logits, [0, 0, 0, 1], [0, 1, 2], [0, 1, 2],
             loss=[0.1, 0.2, 3.0, 5.0])
        stats.end_epoch(OneProcess())
    table = issue_table(as_numpy(stats), forget_rate=0.5)
    assert table["index"].tolist()[:2] == [3, 2]  # never selected and highest loss, then the next worst
    assert table["issue_score"].is_monotonic_decreasing
    assert table["is_label_issue"].tolist() == [True, True, False, False]
    vote = issue_table(as_numpy(stats), forget_rate=0.5, rule="vote").set_index("index").sort_index()
    assert vote["is_label_issue"].tolist() == [False, False, False, True]  # 2 was selected: not a vote


def test_mid_epoch_state_dict_resumes_exactly():
    torch.manual_seed(1)
    batches = [(list(range(i, i + 3)), torch.randn(3, 4), torch.randn(3, 4), [i % 4, 1, 2], [0, 1], [2])
               for i in (0, 3, 6)]
    full, first = SampleStats(9, 4, 2, "cpu"), SampleStats(9, 4, 2, "cpu")
    for epoch in range(2):
        for b in batches:
            step(full, *b)
        full.end_epoch(OneProcess())
    for b in batches:
        step(first, *b)
    first.end_epoch(OneProcess())
    step(first, *batches[0])  # a checkpoint after one step of the second epoch
    resumed = SampleStats(9, 4, 2, "cpu")
    resumed.load_state_dict({k: v.clone() for k, v in first.state_dict().items()}, OneProcess())
    for b in batches[1:]:
        step(resumed, *b)
    resumed.end_epoch(OneProcess())
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_gathering_only_the_epochs_the_window_keeps_gives_the_same_statistics():
    torch.manual_seed(2)
    epochs = [[(list(range(i, i + 3)), torch.randn(3, 4), torch.randn(3, 4), [i % 4, 1, 2], [0, 1], [2])
               for i in (0, 3, 6)] for _ in range(5)]
    every, last = SampleStats(9, 4, 2, "cpu"), SampleStats(9, 4, 2, "cpu")
    last.keep_from(5)
    gathered = []
    for batches in epochs:
        gathered.append(last.collecting)
        for b in batches:
            step(every, *b)
            if last.collecting:
                step(last, *b)
        every.end_epoch(OneProcess())
        last.end_epoch(OneProcess())
    assert gathered == [False, False, False, True, True]
    for name, value in every.state_dict().items():
        assert torch.equal(value, last.state_dict()[name]), name


def test_resuming_with_another_window_is_a_clear_error():
    with pytest.raises(UserError, match="label_issue_epochs"):
        SampleStats(5, 3, 4, "cpu").load_state_dict(SampleStats(5, 3, 2, "cpu").state_dict())


def test_precision_recall_f1_and_precision_at_k_on_a_known_example():
    flagged = np.array([1, 1, 1, 0, 0, 0], bool)
    noisy = np.array([1, 0, 1, 1, 0, 0], bool)
    m = binary_metrics(flagged, noisy)
    assert (m["precision"], m["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert m["f1"] == pytest.approx(2 / 3) and m["flagged"] == 3 and m["noisy"] == 3
    m = binary_metrics(np.array([1, 0, 0, 0], bool), np.array([1, 1, 0, 0], bool))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert binary_metrics(np.zeros(3, bool), np.ones(3, bool))["precision"] == 0.0  # nothing flagged
    assert precision_at_k(np.array([3, 0, 1, 2]), noisy[:4]).tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4])


# ----------------------------------------------------------------------------- end to end

def test_run_with_export_writes_dataset_parquet_csv_and_report(label_issue_export):
    ds = load_from_disk(str(label_issue_export / "label_issues" / "dataset"))
    assert COLUMNS <= set(ds.column_names) and len(ds) == 1438
    scores = np.asarray(ds["issue_score"])
    assert np.all(np.diff(scores) <= 0)
    assert sorted(ds["index"]) == list(range(len(ds)))
    parquet = pd.read_parquet(label_issue_export / "label_issues" / "label_issues.parquet")
    csv = pd.read_csv(label_issue_export / "label_issues" / "label_issues.csv")
    assert parquet["index"].tolist() == csv["index"].tolist() == ds["index"]
    # the columns agree with what the run's noise injection says, and tau*N are flagged
    assert (ds.to_pandas()["is_noisy"] == (np.asarray(ds["given_label"]) != np.asarray(ds["clean_label"]))).all()
    results = json.loads((label_issue_export / "results.json").read_text())
    assert results["label_issues"]["flagged"] == sum(ds["is_label_issue"]) == round(0.5 * len(ds))
    report = json.loads((label_issue_export / "label_issue_report.json").read_text())
    ours = report["methods"][0]
    assert ours["name"] == "ours (topk)" and 0 <= ours["precision"] <= 1
    assert ours["precision"] == pytest.approx(binary_metrics(np.asarray(ds["is_label_issue"]),
                                                             np.asarray(ds["is_noisy"]))["precision"])
    assert (label_issue_export / "label_issues_precision_at_k.png").stat().st_size > 1000
    assert "| ours (topk) |" in (label_issue_export / "label_issue_report.md").read_text()


def test_cli_rewrites_from_the_saved_stats_with_another_rule(label_issue_export, tmp_path, capsys):
    for name in ("config.yaml", "label_issue_stats.safetensors"):  # all the CLI needs of a run
        shutil.copy(label_issue_export / name, tmp_path / name)
    assert label_issues_main([str(tmp_path), "--rule", "vote", "--cleanlab", "none"]) == 0
    table = pd.read_parquet(tmp_path / "label_issues" / "label_issues.parquet")
    flagged = table["is_label_issue"]
    assert flagged.tolist() == ((table["predicted_label"] != table["given_label"])
                                & (table["selected_fraction"] < 0.5)).tolist()
    assert "ours (vote)" in capsys.readouterr().out
    assert label_issues_main([str(tmp_path / "nothing")]) == 2


def test_cleanlab_comparison_in_sample_and_cross_validated(label_issue_export):
    report = json.loads((label_issue_export / "label_issue_report.json").read_text())  # written with cleanlab installed
    in_sample = [m for m in report["methods"] if m["name"] == "cleanlab find_label_issues (in-sample)"]
    assert in_sample and 0 < in_sample[0]["flagged"] < report["num_samples"]
    probs = cross_validated_probs(label_issue_export, folds=2, epochs=1)
    assert probs.shape == (1438, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    stats, _ = load_stats(label_issue_export / "label_issue_stats.safetensors")
    # out-of-sample: better than chance at predicting the clean label after one epoch
    assert (probs.argmax(1) == stats["clean_label"]).mean() > 0.2


def test_resume_keeps_the_statistics_exact(label_issue_export, tmp_path):
    out = tmp_path / "resumed"  # the second epoch again, from the run's checkpoint after the first
    first_epoch = label_issue_export / "checkpoints" / "epoch_0001"
    run_digits_demo("train.epochs=2", f"train.output_dir={out}", f"train.resume={first_epoch}")
    full, resumed = (load_file(p / "label_issue_stats.safetensors") for p in (label_issue_export, out))
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_a_run_gathers_the_last_epochs_only_and_a_checkpoint_before_them_says_so(tmp_path):
    out = tmp_path / "run"
    run_digits_demo("train.epochs=3", "train.label_issue_epochs=1", f"train.output_dir={out}")
    stats, _ = load_stats(out / "label_issue_stats.safetensors")
    assert stats["seen"].any(axis=1).tolist() == [True] and int(stats["epochs"]) == 3
    early = tmp_path / "early"  # what label_issues finds in a run stopped after its second epoch
    (early / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "config.yaml", early / "config.yaml")
    shutil.copytree(out / "checkpoints" / "epoch_0002", early / "checkpoints" / "epoch_0002")
    early_stats, _ = load_stats(early / "checkpoints" / "epoch_0002" / "sample_stats.safetensors")
    assert not early_stats["seen"].any() and int(early_stats["epochs"]) == 2
    with pytest.raises(UserError, match="last 1 epochs only .* stopped after epoch 2"):
        export_label_issues(early, cleanlab="none")
    report = export_label_issues(out, cleanlab="none")
    assert (report["window_epochs"], report["epochs"]) == (1, 3)
    assert "over the last 1 of 3 epochs" in (out / "label_issue_report.md").read_text()


def test_auto_forget_rate_with_the_export_finishes_and_flags_what_the_estimate_is_sure_of(tmp_path):
    # tau=auto + train.export_label_issues trained to the end, then failed ("not
    # estimated yet"), and so did python -m jocor_plugin.label_issues on such a run
    out = tmp_path / "auto"
    run_digits_demo("train.epochs=1", "method.forget_rate=auto", "method.estimation_epochs=1", f"train.output_dir={out}",
                    "train.export_label_issues=true")
    results = json.loads((out / "results.json").read_text())
    tau = results["forget_rate"]
    assert results["finished"] and tau == results["forget_rate_estimate"]["rate"]
    assert f"resolved to tau = {tau!r}" in (out / "config.yaml").read_text()
    report = json.loads((out / "label_issue_report.json").read_text())
    n = report["num_samples"]
    # topk flags the lower end of the estimate's 90 % interval, not tau_hat itself
    sure = results["forget_rate_estimate"]["interval"][0]
    assert 0 <= sure < tau and report["run"]["forget_rate"] == tau and report["run"]["flag_rate"] == sure
    assert report["flagged"] == results["label_issues"]["flagged"] == round(sure * n) < round(tau * n)
    assert "the lower end of the estimate's 90 % interval" in (out / "label_issue_report.md").read_text()
    (out / "label_issue_report.json").unlink()
    assert label_issues_main([str(out), "--cleanlab", "none"]) == 0
    again = json.loads((out / "label_issue_report.json").read_text())
    assert again["run"]["forget_rate"] == tau and again["flagged"] == round(sure * n)


def test_topk_with_tau_zero_flags_nothing_and_says_how_to_flag(caplog):
    """A method that uses no tau, on data without injected noise, has tau 0: topk flags none, and
    the log says what to give so that it does."""
    import logging

    import pandas as pd

    from jocor_plugin.train.label_scores import label_issue_rule

    table = pd.DataFrame({"issue_score": [0.9, 0.1, 0.5]})
    with caplog.at_level(logging.WARNING, logger="jocor_plugin.label_issues"):
        assert not label_issue_rule(table, 0.0, "topk").any()
    assert "method.forget_rate=auto" in caplog.text
    caplog.clear()
    assert label_issue_rule(table, 0.34, "topk").tolist() == [True, False, False] and not caplog.text
