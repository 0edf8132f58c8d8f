"""Label-issue scores from the pair's per-sample statistics (``meters.SampleStats``): each
sample's issue score, the rule that flags ``is_label_issue``, precision / recall against known
noise, precision@k, and cleanlab's ``find_label_issues`` for comparison.

The score (higher = more likely mislabeled), each term in [0, 1]:

    issue_score = ( (1 - selected_fraction)          # the pair kept dropping it
                  + loss_rank                        # its mean loss, as a quantile over the set
                  + (1 - p_given) ) / 3              # the pair's softmax disagrees with its label

``is_label_issue`` (rule ``topk``, the default): the ``round(tau * N)`` highest scores, tau the
run's forget rate. JoCoR already assumes that a fraction tau of the data is noisy -- it drops
that fraction of every batch -- so flagging tau*N samples is the pair's own estimate; no extra
threshold to tune. Rule ``vote``: predicted label != given label and selected in fewer than half
of the window's epochs (no tau needed). A sample never trained on (possible with ``drop_last`` in
a very short run) gets neutral terms and ``predicted_label`` -1.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from .meters import CHECKPOINT_STATS_FILE, STATS_FILE

__all__ = ["RULES", "load_stats", "issue_table", "label_issue_rule", "binary_metrics", "precision_at_k",
           "cleanlab_issues"]

logger = logging.getLogger("jocor_plugin.label_issues")
RULES = ("topk", "vote")


def load_stats(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Tensors (as numpy) and metadata of a stats file written by ``SampleStats.save``; a file cut
    short (a run stopped while writing it) is a one-line ``UserError`` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k).numpy() for k in f.keys()}
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        checkpointed = sorted(Path(path).parent.glob(f"checkpoints/epoch_*/{CHECKPOINT_STATS_FILE}")) \
            if Path(path).name == STATS_FILE else []
        fix = (f"delete it to use the newest checkpoint's statistics ({checkpointed[-1].parent.name}), or continue "
               f"the run with train.resume=auto, which writes it again" if checkpointed else
               "train the run again (train.overwrite=true) to write it again")
        raise UserError(f"{path} can't be read ({' '.join(str(err).split())}): it was cut short (the run stopped "
                        f"while writing it?) or damaged; {fix}.") from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta


def _window(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-sample means over the epochs of the window in which the sample was seen."""
    seen = stats["seen"].astype(bool)
    n_seen = seen.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = lambda x: np.where(n_seen > 0, (x * seen).sum(0) / n_seen, np.nan)  # noqa: E731
        return {"epochs_seen": n_seen, "selected_fraction": mean(stats["selected"].astype(float)),
                "mean_loss": mean(stats["loss"].astype(float)), "agreement": mean(stats["agree"].astype(float))}


def _quantile_rank(x: np.ndarray) -> np.ndarray:
    """Each value's rank as a fraction in [0, 1] (ties share the mean rank); NaN -> 0.5."""
    from scipy.stats import rankdata

    ranks = np.full(len(x), 0.5)
    ok = ~np.isnan(x)
    if ok.sum() > 1:
        ranks[ok] = (rankdata(x[ok]) - 1) / (ok.sum() - 1)
    return ranks


def issue_table(stats: dict[str, np.ndarray], forget_rate: float, rule: str = "topk",
                num_networks: int = 2) -> "Any":
    """One row per training sample (a pandas DataFrame), sorted by ``issue_score`` descending."""
    import pandas as pd

    if rule not in RULES:
        raise UserError(f"--rule {rule!r} is unknown; choose one of {', '.join(RULES)}.")
    given, probs = stats["given_label"].astype(np.int64), stats["probs"].astype(np.float64)
    window = _window(stats)
    ever_seen = probs.sum(1) > 0  # a sample never trained on (e.g. drop_last, few epochs): no evidence
    p_given = np.where(ever_seen, np.take_along_axis(probs, np.clip(given, 0, None)[:, None], 1)[:, 0], 0.5)
    selected = np.nan_to_num(window["selected_fraction"], nan=0.5)
    score = ((1.0 - selected) + _quantile_rank(window["mean_loss"]) + (1.0 - p_given)) / 3.0
    table = pd.DataFrame({"index": np.arange(len(given), dtype=np.int64), "given_label": given,
                          "predicted_label": np.where(ever_seen, probs.argmax(1), -1).astype(np.int64),
                          "issue_score": score,
                          "selected_fraction": window["selected_fraction"], "mean_loss": window["mean_loss"],
                          "given_label_prob": p_given, "epochs_seen": window["epochs_seen"].astype(np.int64)})
    if num_networks > 1:
        table["agreement"] = window["agreement"]
    table["is_label_issue"] = label_issue_rule(table, forget_rate, rule)
    clean = stats["clean_label"].astype(np.int64)
    if (clean >= 0).all():
        table["clean_label"], table["is_noisy"] = clean, clean != given
    return table.sort_values("issue_score", ascending=False, kind="stable").reset_index(drop=True)


def label_issue_rule(table: Any, forget_rate: float, rule: str) -> np.ndarray:
    """``topk``: the round(tau * N) highest scores; ``vote``: predicted != given and selected in
    fewer than half of the window's epochs."""
    if rule == "vote":
        return ((table["predicted_label"] != table["given_label"])
                & (table["selected_fraction"].fillna(1.0) < 0.5)).to_numpy()
    k = int(round(forget_rate * len(table)))
    if k == 0 and len(table):  # e.g. a method that uses no tau (elr, gce, ...) on data without injected noise
        logger.warning("Label issues: tau = %g, so rule topk flags no sample; the ranking (issue_score) is still "
                       "written. Give the run a tau (method.forget_rate=R, or method.forget_rate=auto to estimate it) "
                       "to flag the top R*N.", forget_rate)
    flagged = np.zeros(len(table), dtype=bool)
    flagged[np.argsort(-table["issue_score"].to_numpy(), kind="stable")[:k]] = True
    return flagged


def binary_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the flagged samples against the truly noisy ones."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(np.asarray(actual, bool), np.asarray(predicted, bool),
                                                 average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f), "flagged": int(np.sum(predicted)),
            "noisy": int(np.sum(actual))}


def precision_at_k(order: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """precision@k for k = 1..N when the samples are flagged in ``order`` (most suspect first)."""
    hits = np.cumsum(np.asarray(actual, bool)[order])
    return hits / np.arange(1, len(order) + 1)


# ----------------------------------------------------------------------------- cleanlab

def cleanlab_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's ``find_label_issues`` (default: prune by noise rate) as a boolean mask, and its
    label-quality score (self-confidence; low = suspect) for a full ranking."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.asarray(probs, dtype=np.float64)
    total = probs.sum(1, keepdims=True)
    probs = np.where(total > 0, probs / np.where(total > 0, total, 1), 1.0 / probs.shape[1])  # unseen: uniform
    mask = find_label_issues(labels, probs, n_jobs=1)
    return np.asarray(mask, bool), get_label_quality_scores(labels, probs)
