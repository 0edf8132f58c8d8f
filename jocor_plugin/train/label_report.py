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

The score and the rules: ``label_scores``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..core.errors import UserError
from .label_scores import (RULES, binary_metrics, cleanlab_issues, issue_table, label_issue_rule, load_stats,
                           precision_at_k)
from .meters import CHECKPOINT_STATS_FILE, STATS_FILE, SampleStats
from .plots import GALLERY_FILE, GALLERY_SIZE, gallery_rows, plot_gallery

__all__ = ["finish_label_issues", "load_stats", "issue_table", "label_issue_rule", "binary_metrics",
           "precision_at_k", "cleanlab_issues", "export_label_issues", "find_stats_file", "RULES",
           "CrossValidate", "markdown"]

logger = logging.getLogger("jocor_plugin.label_issues")
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


# ----------------------------------------------------------------------------- report

def _run_info(output_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The run's forget rate (the tau it trained with: results.json's, its estimate's, else the
    recipe's), the rate rule ``topk`` flags (``flag_rate``: tau, or with ``forget_rate=auto`` the
    lower end of the estimate's interval, ``estimate.estimated_flag_rate``), method and noise, from
    its config.yaml (else the stats' metadata)."""
    info = {k: meta[k] for k in ("forget_rate", "method", "num_networks", "noise_type", "noise_rate", "data")
            if meta.get(k) is not None}
    config = output_dir / "config.yaml"
    if config.is_file():
        from ..config import load_config
        from ..methods import method_class
        from .estimate import estimated_flag_rate, run_forget_rate

        cfg = load_config(config)
        info.update(method=cfg.method.name, noise_type=cfg.noise.type, noise_rate=cfg.noise.rate,
                    num_networks=method_class(cfg.method.name).num_networks, data=cfg.data.name)
        tau = run_forget_rate(output_dir, cfg)
        if tau is not None:
            info["forget_rate"] = tau
        flag_rate = estimated_flag_rate(output_dir) if cfg.method.forget_rate == "auto" else None
        if flag_rate is not None:
            info["flag_rate"] = flag_rate
    info.setdefault("forget_rate", 0.0)
    info.setdefault("flag_rate", info["forget_rate"])
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
    if report["rule"] == "topk" and info["flag_rate"] != info["forget_rate"]:
        lines[-2] += (f" tau was estimated (forget_rate=auto), so `topk` flags the top {info['flag_rate']:.3f} "
                      f"of the set, the lower end of the estimate's 90 % interval: the noise the evidence is sure "
                      f"of. The ranking (`issue_score`) goes on below the cut.")
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
    path = find_stats_file(out)
    stats, meta = load_stats(path)
    window = int(stats["seen"].any(axis=1).sum())  # the epochs gathered (only the last ones are)
    if window == 0:
        raise UserError(f"{path} holds no epoch's statistics yet: a run gathers them over its last "
                        f"{stats['seen'].shape[0]} epochs only (train.label_issue_epochs), and this one stopped "
                        f"after epoch {int(stats['epochs'])}. Let it finish (continue it with train.resume=auto), "
                        f"then run this again.")
    info = _run_info(out, meta)
    table = issue_table(stats, info["flag_rate"], rule, info["num_networks"])
    known = "is_noisy" in table
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
               **binary_metrics(label_issue_rule(table, info["flag_rate"], other), noisy)}
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

