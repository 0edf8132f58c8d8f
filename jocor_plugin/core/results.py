"""A run's results: the per-epoch records summarised as the paper reports them, the epoch's log
line, and the one way results.json (and the run's other small JSON files) is written and read."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

__all__ = ["LAST_EPOCHS", "summarise", "format_epoch", "final_line", "selects", "selection_score", "read_results",
           "write_json_atomic", "RESULTS_FILE", "test_metric"]

LAST_EPOCHS = 10  # the paper reports the mean test accuracy over the last 10 epochs
RESULTS_FILE = "results.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write, then rename: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def read_results(out: str | os.PathLike, *, strict: bool = False) -> dict[str, Any]:
    """A run folder's results.json, {} when it is missing. A half-written or edited one is {} too
    (a grid or sweep scanning its runs counts it as unfinished), or with ``strict`` (a user's own
    run folder) a one-line error that says what to do."""
    path = Path(out) / RESULTS_FILE
    try:
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        return loaded
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        if not strict:
            return {}
        raise UserError(f"{path} is not valid JSON ({str(err).splitlines()[0][:80]}): the run there was cut off "
                        f"while writing it, or it was edited. Continue it with train.resume=auto, replace it with "
                        f"train.overwrite=true, or choose another train.output_dir.") from None


def test_metric(record: dict[str, Any]) -> str:
    """'test_acc', or 'noisy_test_acc' when the test labels are as noisy as the training labels
    (a test split held out of real noisy data): the record's accuracy keys are named so."""
    return "noisy_test_acc" if "noisy_test_acc_a" in record else "test_acc"


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's figures: mean test accuracy over the last 10 epochs (of both networks when
    there are two, as the authors average them), and the final label precision. With a noisy
    test split every figure is named ``noisy_test_acc...`` instead."""
    last = records[-LAST_EPOCHS:]
    acc = test_metric(records[-1])
    per_net = {k: float(np.mean([r[k] for r in last])) for k in (f"{acc}_a", f"{acc}_b") if k in last[0]}
    summary: dict[str, Any] = {f"{acc}_last10": float(np.mean(list(per_net.values())))}
    summary.update({f"{k}_last10": v for k, v in per_net.items()})
    summary[f"final_{acc}"] = float(np.mean([records[-1][k] for k in per_net]))
    if "test_acc_ensemble" in last[-1]:  # a method that also predicts with both networks' mean
        summary["test_acc_ensemble_last10"] = float(np.mean([r["test_acc_ensemble"] for r in last
                                                             if "test_acc_ensemble" in r]))
    if "label_precision" in records[-1]:
        summary["final_label_precision"] = records[-1]["label_precision"]
    if selects(records[-1]):  # the paper's Clothing1M "best": the epoch of best (clean) validation
        best = max(records, key=selection_score)
        summary.update({"best_epoch": best["epoch"], f"{acc}_best": float(np.mean([best[k] for k in per_net]))})
        if "val_acc_a" in best:
            summary["val_acc_best"] = _mean_val_acc(best)
        else:  # data.val_split: the noisy validation score picked it
            summary.update(noisy_val_acc_best=best["noisy_val_acc"],
                           noisy_val_acc_all_last10=float(np.mean([r["noisy_val_acc_all"] for r in last])))
    summary["epochs"] = len(records)
    summary["mean_epoch_time_s"] = float(np.mean([r["epoch_time_s"] for r in records]))
    return summary


def _mean_val_acc(record: dict[str, Any]) -> float:
    return float(np.mean([v for k, v in record.items() if k.startswith("val_acc_")]))


def selects(record: dict[str, Any]) -> bool:
    """Whether the epochs carry a model-selection score (clean or noisy validation)."""
    return "val_acc_a" in record or "noisy_val_acc" in record


def selection_score(record: dict[str, Any]) -> float:
    """Clean validation accuracy when the data has a validation split, else the noisy one."""
    return _mean_val_acc(record) if "val_acc_a" in record else record["noisy_val_acc"]


def format_epoch(record: dict[str, Any], epochs: int, show_forget_rate: bool = True) -> str:
    """The epoch's log line; ``show_forget_rate=False`` for methods that don't drop a share of each
    batch (the record keeps the key either way)."""
    acc = test_metric(record)
    accs = " ".join(f"{k[-1]} {record[k]:.2f}" for k in (f"{acc}_a", f"{acc}_b") if k in record)
    if "test_acc_ensemble" in record:
        accs += f" both {record['test_acc_ensemble']:.2f}"
    precision = f"  label_precision {record['label_precision']:.4f}" if "label_precision" in record else ""
    if "val_acc_a" in record:
        precision = f"  val_acc {_mean_val_acc(record):.2f}" + precision
    if "noisy_val_acc" in record:
        precision = f"  noisy_val_acc {record['noisy_val_acc']:.2f}" + precision
    tau = f"  forget_rate {record['forget_rate']:.3f}" if show_forget_rate else ""
    return (f"epoch {record['epoch'] + 1:>3}/{epochs}  loss {record['train_loss']:.4f}  {acc} {accs}"
            f"{precision}  selected {record['selected_fraction']:.3f}{tau}  lr {record['lr']:.2e}  "
            f"{record['epoch_time_s']:.1f}s")


def final_line(summary: dict[str, Any], out: Path) -> str:
    """The run's last log line: the figure to quote (the best-by-validation epoch's and its folder,
    where there is validation; else the paper's mean of the last 10 epochs) and where the rest is."""
    acc = "noisy_test_acc" if "noisy_test_acc_last10" in summary else "test_acc"
    parts = []
    if "best_epoch" in summary:
        by = "clean validation" if "val_acc_best" in summary else "noisy validation"
        parts.append(f"{acc}_best {summary[f'{acc}_best']:.2f} at epoch {summary['best_epoch'] + 1} (best by {by}; "
                     f"deploy {out / 'best'}), final_{acc} {summary[f'final_{acc}']:.2f}")
    parts.append(f"{acc}_last10 {summary[f'{acc}_last10']:.2f}")
    if "final_label_precision" in summary:
        parts.append(f"final label precision {summary['final_label_precision']:.4f}")
    return f"Done: {', '.join(parts)}. Results in {out / RESULTS_FILE}."
