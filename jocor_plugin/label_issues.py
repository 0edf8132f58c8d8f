"""``python -m jocor_plugin.label_issues OUTPUT_DIR``: the label-issue dataset, gallery
(``label_issues/gallery.png``) and report of a finished (or checkpointed) run, optionally next to
cleanlab on K-fold cross-validated probabilities, whose folds are trained by the run's own trainer
(``cross_validated_probs``).

The score, the rules and the report are ``jocor_plugin.train.label_report``'s; the statistics
``jocor_plugin.train.meters.SampleStats``.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .core.cli import configure_logging, exit_code_of, make_parser
from .core.errors import UserError
from .train import label_report
from .train.label_report import (RULES, binary_metrics, cleanlab_issues, finish_label_issues, issue_table, load_stats,
                                 precision_at_k)
from .train.meters import STATS_FILE, SampleStats

__all__ = ["SampleStats", "STATS_FILE", "finish_label_issues", "load_stats", "issue_table", "binary_metrics",
           "precision_at_k", "cleanlab_issues", "cross_validated_probs", "export_label_issues", "main"]

logger = logging.getLogger("jocor_plugin.label_issues")


def cross_validated_probs(output_dir: Path, folds: int = 5, method: str = "standard",
                          epochs: Optional[int] = None) -> np.ndarray:
    """Out-of-sample softmax for every training sample: K-fold cross-validation of the run's
    recipe (same data, noise, architecture, optimizer, schedule and tau) with ``method``, each
    fold trained by the trainer (``Trainer.fit``, seed ``train.seed + 100 k``, nothing written);
    each fold's samples are predicted by the networks trained on the other folds (the pair's
    mean softmax)."""
    from accelerate import Accelerator

    from .train.checkpoint import TrainState
    from .config import load_config
    from .data.splits import build_noisy_splits
    from .train.estimate import run_forget_rate
    from .train.trainer import Trainer

    output_dir = Path(output_dir)
    cfg = load_config(output_dir / "config.yaml", [f"method.name={method}", "log.progress_bar=false"])
    epochs = epochs or cfg.train.epochs
    tau = run_forget_rate(output_dir, cfg)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    splits = build_noisy_splits(cfg)
    n = len(splits.train)
    order = np.random.default_rng(cfg.train.seed).permutation(n)
    probs = np.zeros((n, cfg.model.num_classes or splits.num_classes))
    for k in range(folds):
        held_out = np.sort(order[k::folds])
        fit = splits.train.select(np.setdiff1d(np.arange(n), held_out)).remove_columns("index")
        fit = fit.add_column("index", np.arange(len(fit), dtype=np.int64))  # the meters' 0..n-1
        fold = dataclasses.replace(splits, train=fit, test=splits.train.select(held_out), validation=None,
                                   noisy_validation=None)
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.train.seed = cfg.train.seed + 100 * (k + 1)
        trainer = Trainer(fold_cfg, accelerator, fold, output_dir / "label_issues" / f"cv_fold{k}",
                          forget_rate=tau if tau is not None else 0.0, checkpoints=False)
        with trainer.stop:
            trainer.method.before_training(trainer)
            trainer.fit(trainer.method, TrainState(), trainer.meter, epochs=epochs, track=False,
                        log_prefix=f"[cv fold {k + 1}/{folds}] ")
        logits_a, logits_b, _, index = trainer.per_sample_outputs(fold.test)
        softmax = [z.float().softmax(1) for z in (logits_a, logits_b) if z is not None]
        probs[index.numpy()] = (sum(softmax) / len(softmax)).numpy()
        logger.info("cross-validation fold %d/%d done (%s, %d epochs).", k + 1, folds, method, epochs)
    return probs


def export_label_issues(output_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """``label_report.export_label_issues`` with cross-validation available (``--cleanlab cv``)."""
    return label_report.export_label_issues(output_dir, cross_validate=cross_validated_probs, **kwargs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser("label_issues", "Write the label-issue dataset, gallery (the most suspect images) and "
                                         "report of a finished (or checkpointed) run.")
    parser.add_argument("output_dir", help="the run's train.output_dir")
    parser.add_argument("--rule", choices=RULES, default="topk",
                        help="is_label_issue: 'topk' = the tau*N highest scores; 'vote' = predicted != given "
                             "and selected in < half of the window's epochs")
    parser.add_argument("--cleanlab", default="auto", choices=["auto", "none", "in-sample", "cv", "both"],
                        help="cleanlab comparison: in-sample (the pair's training softmax), cv (K-fold "
                             "out-of-sample probabilities, trains K models), both, none; auto = in-sample "
                             "when cleanlab is installed")
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--cv-method", default="standard",
                        help="method(s) trained in each fold, comma-separated (e.g. standard,jocor)")
    parser.add_argument("--cv-epochs", type=int, default=None, help="epochs per fold (default: the run's)")
    parser.add_argument("--with-images", action="store_true", help="add the training images to the dataset")
    args = parser.parse_args(argv)
    configure_logging(main_process=True)  # also turns off datasets' progress bars

    def body() -> int:
        if args.cv_folds < 2:
            raise UserError(f"--cv-folds={args.cv_folds} is invalid; use >= 2.")
        report = export_label_issues(args.output_dir, rule=args.rule, cleanlab=args.cleanlab, cv_folds=args.cv_folds,
                                     cv_method=args.cv_method, cv_epochs=args.cv_epochs, with_images=args.with_images)
        print(label_report.markdown(report))
        return 0

    return exit_code_of(body)


if __name__ == "__main__":
    sys.exit(main())
