"""Find the mislabeled samples: what the network pair learned about each training sample.

During training ``meters.SampleStats`` keeps, on the device, per sample and per epoch of the last
``train.label_issue_epochs`` epochs: whether either network selected it (trained on it), the
method's per-sample loss (JoCoR's joint loss; the networks' mean cross-entropy for methods that
don't report one) and whether the two networks' argmaxes agree; plus the pair's mean softmax of
the latest epoch. At the end of a run it is written to ``label_issue_stats.safetensors``.

``python -m jocor_plugin.label_issues OUTPUT_DIR`` (or ``train.export_label_issues=true``) turns
it into ``OUTPUT_DIR/label_issues/``: a ``datasets.Dataset`` (save_to_disk, parquet, CSV), sorted
by ``issue_score``, and, where clean labels are known, a report (precision/recall/F1 of
``is_label_issue`` against ``is_noisy``, precision@k plot) next to cleanlab's ``find_label_issues``;
``label_issues/gallery.png`` shows the highest-scoring samples' images (``plots.plot_gallery``).

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
from typing import Any, Callable, Optional

import numpy as np

from ..core.errors import UserError
from .meters import CHECKPOINT_STATS_FILE, STATS_FILE, SampleStats
from .plots import GALLERY_FILE, GALLERY_SIZE, gallery_rows, plot_gallery

__all__ = ["finish_label_issues", "load_stats", "issue_table", "label_issue_rule", "binary_metrics",
           "precision_at_k", "cleanlab_issues", "export_label_issues", "find_stats_file", "RULES",
           "CrossValidate", "markdown"]

logger = logging.getLogger("jocor_plugin.label_issues")
RULES = ("topk", "vote")
#: (run folder, folds, method, epochs or None) -> out-of-sample softmax [N, C] (``label_issues``)
CrossValidate = Callable[[Path, int, str, Optional[int]], np.ndarray]


def finish_label_issues(accelerator: Any, output_dir: Path, stats: SampleStats, *, export: bool,
                        metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """End of a run: write ``label_issue_stats.safetensors`` (with the run's ``metadata``: its
    forget rate, method, noise) and, with ``export``, the label-issue dataset and report. Returns
    what goes into results.json under ``label_issues``."""
    path = Path(output_dir) / STATS_FILE
    info: dict[str, Any] = {"stats": str(path)}
    if accelerator.is_main_process:
        stats.save(path, metadata)
        if export:
            report = export_label_issues(output_dir)
            info.update(flagged=report["flagged"], report=str(Path(output_dir) / "label_issue_report.md"),
                        dataset=report["files"]["dataset"], metrics=report.get("methods"))
    accelerator.wait_for_everyone()
    return {"label_issues": info}


# ----------------------------------------------------------------------------- after training

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


# ----------------------------------------------------------------------------- report

def _run_info(output_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The run's forget rate (the tau it trained with: results.json's, its estimate's, else the
    recipe's), method and noise, from its config.yaml (else the stats' metadata)."""
    info = {k: meta[k] for k in ("forget_rate", "method", "num_networks", "noise_type", "noise_rate", "data")
            if meta.get(k) is not None}
    config = output_dir / "config.yaml"
    if config.is_file():
        from ..config import load_config
        from ..methods import method_class
        from .estimate import run_forget_rate

        cfg = load_config(config)
        info.update(method=cfg.method.name, noise_type=cfg.noise.type, noise_rate=cfg.noise.rate,
                    num_networks=method_class(cfg.method.name).num_networks, data=cfg.data.name)
        tau = run_forget_rate(output_dir, cfg)
        if tau is not None:
            info["forget_rate"] = tau
    info.setdefault("forget_rate", 0.0)
    info.setdefault("num_networks", 2)
    return info


def find_stats_file(output_dir: Path) -> Path:
    """The run's final stats file, else the newest checkpoint's (an unfinished run)."""
    final = output_dir / STATS_FILE
    if final.is_file():
        return final
    found = sorted((output_dir / "checkpoints").glob(f"epoch_*/{CHECKPOINT_STATS_FILE}"))
    if found:
        logger.info("No %s in %s: using the newest checkpoint's statistics (%s).", STATS_FILE, output_dir,
                    found[-1].parent.name)
        return found[-1]
    missing = f"{output_dir} holds no label-issue statistics ({STATS_FILE} or checkpoints/*/{CHECKPOINT_STATS_FILE})"
    train = _recipe_train_section(output_dir)
    if train is None:
        raise UserError(f"{missing} and no readable config.yaml: is it a run's train.output_dir? Give the folder a "
                        f"run wrote into.")
    from ..config import TrainConfig  # late, as _run_info: the schema pulls in the methods

    defaults = TrainConfig()
    epochs = int(train.get("label_issue_epochs", defaults.label_issue_epochs))
    if epochs < 1:
        raise UserError(f"{missing}: the run there trained with train.label_issue_epochs={epochs}, which keeps none; "
                        f"train it again with train.label_issue_epochs >= 1 (the default).")
    # the run keeps them, but has not written them yet
    when = ("only when it finishes (train.keep_checkpoints=0)"
            if int(train.get("keep_checkpoints", defaults.keep_checkpoints)) == 0 else "with each epoch's checkpoint")
    raise UserError(f"{missing} yet: the run there keeps them (train.label_issue_epochs={epochs}) but stopped before "
                    f"saving any; they are written {when}. Let it train (continue a stopped run with "
                    f"train.resume=auto, or start it again with train.overwrite=true), then run this again.")


def _recipe_train_section(output_dir: Path) -> Optional[dict[str, Any]]:
    """The ``train`` section of the run's config.yaml; None without a readable one."""
    import yaml

    try:
        recipe = yaml.safe_load((output_dir / "config.yaml").read_text())
        return dict(recipe.get("train") or {})
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None


def _plot_precision_at_k(curves: dict[str, np.ndarray], noise_rate: float, k_marks: dict[str, int],
                         path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.axhline(noise_rate, color="grey", ls=":", lw=1, label=f"random ({noise_rate:.1%} noisy)")
    for i, (name, k) in enumerate(k_marks.items()):
        ax.axvline(k, color="black", ls="--", lw=0.8)
        ax.text(k, 0.03 + 0.4 * i, f"{name} = {k} ", rotation=90, va="bottom", ha="right", fontsize=8)
    n = len(next(iter(curves.values())))
    ax.set(xlabel="k (samples flagged, most suspect first)", ylabel="precision@k", ylim=(0, 1.02), title=title,
           xlim=(0, min(n, 2.5 * max(k_marks.values(), default=n))))  # where the methods differ
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    info = report["run"]
    lines = [f"# Label-issue report: {info.get('data', '?')}, {info.get('noise_type', '?')} "
             f"{info.get('noise_rate', '?')} noise, {info.get('method', '?')}", "",
             f"{report['num_samples']} training samples; statistics over the last {report['window_epochs']} "
             f"of {report['epochs']} epochs; forget rate tau = {info['forget_rate']}; rule `{report['rule']}` "
             f"flags {report['flagged']} samples.", ""]
    if report.get("gallery"):
        lines += [f"Gallery of the most suspect samples (image, given → predicted class, issue score; red frame: "
                  f"flagged): [{report['gallery']}]({report['gallery']})", "", f"![gallery]({report['gallery']})", ""]
    if "methods" not in report:
        lines.append("No clean labels: precision/recall can't be measured (the dataset is still written).")
        return "\n".join(lines) + "\n"
    lines += [f"Truly mislabeled (`is_noisy`): {report['noisy']} ({report['noisy'] / report['num_samples']:.1%}).", "",
              "| method | probabilities | flagged | precision | recall | F1 | precision@noisy |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in report["methods"]:
        lines.append(f"| {row['name']} | {row['probabilities']} | {row['flagged']} | {row['precision']:.4f} | "
                     f"{row['recall']:.4f} | {row['f1']:.4f} | {row['precision_at_noisy']:.4f} |")
    lines += ["", "precision@noisy: precision of the top-k of the method's ranking, k = the true number of "
              "noisy samples (= recall at that k).", ""]
    if report.get("plot"):
        lines.append(f"![precision@k]({report['plot']})")
    return "\n".join(lines) + "\n"


def export_label_issues(output_dir: str | Path, *, rule: str = "topk", cleanlab: str = "auto", cv_folds: int = 5,
                        cv_method: str = "standard", cv_epochs: Optional[int] = None,
                        with_images: bool = False, cross_validate: Optional[CrossValidate] = None) -> dict[str, Any]:
    """Write ``OUTPUT_DIR/label_issues/`` (Dataset, parquet, CSV, gallery.png) and, in OUTPUT_DIR,
    ``label_issue_report.{md,json}`` and ``label_issues_precision_at_k.png``; return the report.
    The ``cv`` comparisons need ``cross_validate`` (``label_issues.cross_validated_probs``)."""
    from datasets import Dataset, concatenate_datasets

    out = Path(output_dir)
    stats, meta = load_stats(find_stats_file(out))
    info = _run_info(out, meta)
    table = issue_table(stats, info["forget_rate"], rule, info["num_networks"])
    known = "is_noisy" in table
    window = int(min(int(stats["epochs"]), stats["seen"].shape[0]))
    report: dict[str, Any] = {"run": info, "rule": rule, "num_samples": len(table), "epochs": int(stats["epochs"]),
                              "window_epochs": window, "flagged": int(table["is_label_issue"].sum())}
    curves: dict[str, np.ndarray] = {}
    if known:
        noisy = table["is_noisy"].to_numpy()
        report["noisy"] = int(noisy.sum())
        curves["ours (issue_score)"] = precision_at_k(np.arange(len(table)), noisy)
        ours = {"name": f"ours ({rule})", "probabilities": "training statistics of the pair",
                **binary_metrics(table["is_label_issue"].to_numpy(), noisy)}
        other = [r for r in RULES if r != rule][0]
        alt = {"name": f"ours ({other})", "probabilities": "training statistics of the pair",
               **binary_metrics(label_issue_rule(table, info["forget_rate"], other), noisy)}
        report["methods"] = [ours, alt]

    cv = [f"cv-{name.strip()}" for name in cv_method.split(",") if name.strip()]
    modes = {"auto": ["in-sample"], "none": [], "in-sample": ["in-sample"], "cv": cv, "both": ["in-sample", *cv]}
    if cleanlab not in modes:
        raise UserError(f"--cleanlab {cleanlab!r} is unknown; choose one of {', '.join(modes)}.")
    try:
        import cleanlab as _cleanlab  # noqa: F401
    except ImportError:
        if cleanlab != "auto" and modes[cleanlab]:
            raise UserError("cleanlab is not installed; pip install 'jocor_plugin[cleanlab]' (or --cleanlab none).") \
                from None
        modes["auto"] = []
    labels = table["given_label"].to_numpy()
    row_of = np.argsort(table["index"].to_numpy())  # index -> row in the sorted table
    for mode in modes[cleanlab]:
        if mode == "in-sample":
            probs, what = stats["probs"], "in-sample: the pair's mean softmax in its last training epoch"
        else:
            method = mode.removeprefix("cv-")
            cache = out / "label_issues" / f"cv_probs_{method}_{cv_folds}fold_{cv_epochs or 'all'}ep.npy"
            if cache.is_file():
                probs = np.load(cache)
            elif cross_validate is None:
                raise UserError(f"--cleanlab {cleanlab}: cross-validation is run by python -m jocor_plugin.label_issues.")
            else:
                probs = cross_validate(out, cv_folds, method, cv_epochs)
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, probs)
            what = f"out-of-sample: {cv_folds}-fold cross-validated, {method} training"
        mask, quality = cleanlab_issues(stats["given_label"], probs)
        column = f"cleanlab_{mode.replace('-', '_')}"
        table[f"{column}_is_label_issue"] = mask[table["index"].to_numpy()]
        table[f"{column}_label_quality"] = quality[table["index"].to_numpy()]
        if known:
            curve = f"cleanlab {mode} (self-confidence)"
            curves[curve] = precision_at_k(row_of[np.argsort(quality, kind="stable")], noisy)
            report["methods"].append({"name": f"cleanlab find_label_issues ({mode})", "probabilities": what,
                                      "curve": curve,
                                      **binary_metrics(table[f"{column}_is_label_issue"].to_numpy(), noisy)})
    if known:
        for row in report["methods"]:
            row["precision_at_noisy"] = float(curves[row.pop("curve", "ours (issue_score)")][max(report["noisy"], 1) - 1])

    target = out / "label_issues"
    target.mkdir(parents=True, exist_ok=True)
    train = _training_split(out)
    _add_sample_columns(table, train, num_classes=stats["probs"].shape[1])
    dataset = Dataset.from_pandas(table, preserve_index=False)
    if with_images and train is not None:
        dataset = concatenate_datasets([train.select(table["index"].to_numpy()).select_columns(["image"]), dataset],
                                       axis=1)
    dataset.save_to_disk(str(target / "dataset"))
    dataset.to_parquet(str(target / "label_issues.parquet"))
    dataset.remove_columns([c for c in dataset.column_names if c == "image"]).to_csv(
        str(target / "label_issues.csv"), index=False)
    report["files"] = {"dataset": str(target / "dataset"), "parquet": str(target / "label_issues.parquet"),
                       "csv": str(target / "label_issues.csv")}
    try:
        gallery = _write_gallery(table, train, target / GALLERY_FILE, info, report["flagged"])
    except Exception as err:  # noqa: BLE001 -- a picture must not fail the export (or the finished run)
        logger.warning("Label issues: %s not written: %s", target / GALLERY_FILE, " ".join(str(err).split())[:200])
        gallery = None
    if gallery is not None:
        report["files"]["gallery"] = str(gallery)
        report["gallery"] = gallery.relative_to(out).as_posix()
    if known:
        k_marks = {"tau*N": int(round(info["forget_rate"] * len(table))), "#noisy": report["noisy"]}
        plot = out / "label_issues_precision_at_k.png"
        _plot_precision_at_k(curves, report["noisy"] / len(table), k_marks, plot,
                             f"{info.get('data', '')} {info.get('noise_type', '')} {info.get('noise_rate', '')}: "
                             f"precision@k")
        report["plot"] = plot.name
    (out / "label_issue_report.json").write_text(json.dumps(report, indent=2))
    (out / "label_issue_report.md").write_text(markdown(report))
    logger.info("Label issues: %d of %d flagged; dataset in %s, report in %s.", report["flagged"], len(table),
                target, out / "label_issue_report.md")
    return report


def _write_gallery(table: Any, train: Any, path: Path, info: dict[str, Any], flagged: int) -> Optional[Path]:
    """``label_issues/gallery.png``: the ``GALLERY_SIZE`` highest-scoring samples' images from the
    training split, each with its given -> predicted class and score. None (with a warning) when
    the run's data can't be read or has no images."""
    if train is None or "image" not in train.column_names:
        logger.warning("Label issues: no gallery (%s).", "the run's data can't be read" if train is None
                       else "the training split has no image column")
        return None
    rows = gallery_rows(table, GALLERY_SIZE)
    pick = table.iloc[rows]
    images = train.select(pick["index"].to_numpy()).select_columns(["image"])["image"]

    def names(column: str) -> list[str]:
        if column + "_name" in pick:
            return [name or "?" for name in pick[column + "_name"]]
        return [str(v) if v >= 0 else "?" for v in pick[column]]

    shown = (f"the {len(rows)} highest issue scores of {len(table)}" if len(rows) == GALLERY_SIZE else
             f"all {len(rows)} samples (fewer than {GALLERY_SIZE})")
    note = f"{shown}; red frame: flagged ({flagged} in all); given → predicted, issue score"
    title = (f"Label issues: {info.get('data', '')}, {info.get('noise_type', '')} {info.get('noise_rate', '')} "
             f"noise, {info.get('method', '')}")
    return plot_gallery(images, names("given_label"), names("predicted_label"), pick["issue_score"].tolist(),
                        pick["is_label_issue"].tolist(), path, title=title, note=note)


def _training_split(output_dir: Path) -> Any:
    """The run's training split, rebuilt from its config.yaml (row i is the stats' sample i); None
    when the run's data can no longer be read (the table then lacks rows' files and class names)."""
    from ..config import load_config
    from ..data.splits import build_noisy_splits

    if not (output_dir / "config.yaml").is_file():
        return None
    try:
        return build_noisy_splits(load_config(output_dir / "config.yaml")).train
    except UserError as err:
        logger.warning("Label issues: the run's data can't be read (%s); writing them without file paths and "
                       "class names.", err)
        return None


def _add_sample_columns(table: Any, train: Any, num_classes: int) -> None:
    """Where each sample is in the user's data (``source_index``, ``path``) and its labels' class
    names, right after ``index``."""
    if train is None:
        return
    from ..data.loaders import sample_identity
    from ..data.splits import class_names

    rows = table["index"].to_numpy()
    at = list(table.columns).index("index") + 1
    for name, values in sample_identity(train).items():
        table.insert(at, name, values[rows])
        at += 1
    names = np.asarray(class_names(train.features["label"], num_classes) + [""], dtype=object)  # -1: never seen
    for column in ("given_label", "predicted_label", "clean_label"):
        if column in table:
            table.insert(list(table.columns).index(column) + 1, f"{column}_name", names[table[column].to_numpy()])

