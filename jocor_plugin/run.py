"""Entry point: ``python -m jocor_plugin.run RECIPE [key=value ...]`` (or under ``accelerate launch``).

Wires recipe -> noisy datasets -> network pair -> method -> Accelerate, then runs the epochs of
``engine``. Outputs in ``train.output_dir``: config.yaml, results.json, checkpoints/, model_a|b/.
"""
from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed

from .config import Config, config_to_dict, describe_config, load_config
from .data import NoisySplits, build_noisy_splits, make_loader, paper_dataset, resolve_image_config
from .checkpoint import GracefulStop, TrainState, find_checkpoint, load_checkpoint, save_checkpoint
from .engine import EpochMeter, NonFiniteLossError, evaluate, stop_requested, train_one_epoch
from .cli import configure_logging, exit_code_of, make_parser, multi_process_without_gpu
from .errors import Interrupted, UserError
from .estimate import DEFAULT_ESTIMATION_EPOCHS, estimate_noise_rate, noisy_validation
from .label_issues import SampleStats, finish_label_issues
from .methods import Method, create_method, describe_method, list_methods, method_class
from .methods.fcorrection import estimate_transition_matrix, transition_matrix_error
from .models import create_pair
from .noise import transition_matrix
from .schedule import apply_optim_schedule, forget_rate_at

__all__ = ["main", "train"]

logger = logging.getLogger("jocor_plugin.run")  # not "__main__" under python -m
LAST_EPOCHS = 10  # the paper reports the mean test accuracy over the last 10 epochs
# Co-teaching+'s init_epoch in the authors' code, per dataset (0 elsewhere).
INIT_EPOCH = {"mnist": 0, "cifar10": 20, "cifar100": 5}


# ----------------------------------------------------------------------------- wiring helpers

def build_method(cfg: Config) -> Method:
    """The recipe's method; ``method.*`` keys its constructor accepts are passed on."""
    cls = method_class(cfg.method.name)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in vars(cfg.method).items() if k in accepted and k != "kwargs"}
    if kwargs.get("init_epoch", 0) is None:
        kwargs["init_epoch"] = INIT_EPOCH.get(paper_dataset(cfg.data.name), 0)
    method = create_method(cfg.method.name, **{**kwargs, **cfg.method.kwargs})
    method.selection = cfg.method.selection
    return method


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One optimizer over both networks, from timm's optimizer factory."""
    from timm.optim import create_optimizer_v2

    extra = {"betas": tuple(cfg.optim.betas)} if "adam" in cfg.optim.name.lower() else {}
    return create_optimizer_v2(model, opt=cfg.optim.name, lr=cfg.optim.lr,
                               weight_decay=cfg.optim.weight_decay, **extra)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def prepare_output_dir(cfg: Config) -> Path:
    """Refuse to overwrite an earlier run unless asked to (``train.overwrite`` / ``train.resume``)."""
    # e.g. train.output_dir=outputs/sweep/$WANDB_RUN_ID: one folder per run of a W&B sweep agent
    cfg.train.output_dir = os.path.expandvars(cfg.train.output_dir)
    out = Path(cfg.train.output_dir)
    results = out / "results.json"
    if results.is_file() and cfg.train.resume is None and not cfg.train.overwrite:
        finished = json.loads(results.read_text()).get("finished", False)
        what = "a finished run" if finished else "an unfinished run"
        fix = "train.overwrite=true to replace it" + ("" if finished else ", or train.resume=auto to continue it")
        raise UserError(f"train.output_dir={str(out)!r} already holds {what}; choose another "
                        f"train.output_dir, or set {fix}.")
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's figures: mean test accuracy over the last 10 epochs (of both networks when
    there are two, as the authors average them), and the final label precision."""
    last = records[-LAST_EPOCHS:]
    per_net = {k: float(np.mean([r[k] for r in last])) for k in ("test_acc_a", "test_acc_b") if k in last[0]}
    summary: dict[str, Any] = {"test_acc_last10": float(np.mean(list(per_net.values())))}
    summary.update({f"{k}_last10": v for k, v in per_net.items()})
    summary["final_test_acc"] = float(np.mean([records[-1][k] for k in per_net]))
    if "label_precision" in records[-1]:
        summary["final_label_precision"] = records[-1]["label_precision"]
    if _selects(records[-1]):  # the paper's Clothing1M "best": the epoch of best (clean) validation
        best = max(records, key=_selection_score)
        summary.update(best_epoch=best["epoch"], test_acc_best=float(np.mean([best[k] for k in per_net])))
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


def _selects(record: dict[str, Any]) -> bool:
    """Whether the epochs carry a model-selection score (clean or noisy validation)."""
    return "val_acc_a" in record or "noisy_val_acc" in record


def _selection_score(record: dict[str, Any]) -> float:
    """Clean validation accuracy when the data has a validation split, else the noisy one."""
    return _mean_val_acc(record) if "val_acc_a" in record else record["noisy_val_acc"]


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    accs = " ".join(f"{k[-1]} {record[k]:.2f}" for k in ("test_acc_a", "test_acc_b") if k in record)
    precision = f"  label_precision {record['label_precision']:.4f}" if "label_precision" in record else ""
    if "val_acc_a" in record:
        precision = f"  val_acc {_mean_val_acc(record):.2f}" + precision
    if "noisy_val_acc" in record:
        precision = f"  noisy_val_acc {record['noisy_val_acc']:.2f}" + precision
    return (f"epoch {record['epoch'] + 1:>3}/{epochs}  loss {record['train_loss']:.4f}  test_acc {accs}"
            f"{precision}  selected {record['selected_fraction']:.3f}  forget_rate "
            f"{record['forget_rate']:.3f}  lr {record['lr']:.2e}  {record['epoch_time_s']:.1f}s")


def export_models(accelerator: Accelerator, pair: torch.nn.Module, out: Path,
                  image_config: dict[str, Any]) -> list[str]:
    """Each network as a timm folder (model.safetensors + config.json): load it with
    ``timm.create_model("local-dir:<folder>")`` or by name with ``pretrained_cfg_overlay``.
    Called on every process: ``get_state_dict`` gathers the full weights when FSDP shards them."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf  # what timm.models.save_for_hf writes

    state = accelerator.get_state_dict(pair)
    paths = []
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(pair)
        data_config = {k: image_config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")}
        for name, net in zip(("net_a", "net_b"), unwrapped.networks):
            folder = out / name.replace("net_", "model_")
            folder.mkdir(parents=True, exist_ok=True)
            weights = {k[len(name) + 1:]: v.contiguous() for k, v in state.items() if k.startswith(name + ".")}
            save_file(weights, str(folder / "model.safetensors"))
            save_config_for_hf(net, str(folder / "config.json"), data_config=data_config)
            paths.append(str(folder / "model.safetensors"))
    return paths


# ----------------------------------------------------------------------------- training

@dataclass
class Run:
    """Everything one training run is wired from (built by ``setup``)."""

    cfg: Config
    out: Path
    accelerator: Accelerator
    splits: NoisySplits
    method: Method
    pair: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_loader: Any
    eval_loaders: dict[str, Any]  # "test", and "validation" when the data has one
    image_config: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)

    def write_results(self) -> None:
        if self.accelerator.is_main_process:
            _write_json_atomic(self.out / "results.json", self.results)


def setup(cfg: Config) -> Run:
    out = prepare_output_dir(cfg)
    accelerator = Accelerator(
        cpu=multi_process_without_gpu(),
        log_with=None if cfg.log.tracker == "none" else cfg.log.tracker, project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed))
    set_seed(cfg.train.seed)
    logger.info("Accelerate: %d process(es) (%s) on %s, mixed precision %s.", accelerator.num_processes,
                accelerator.distributed_type.value, accelerator.device, accelerator.mixed_precision)
    resolved = config_to_dict(cfg)
    logger.info("Resolved config:\n%s", yaml.safe_dump(resolved, sort_keys=False))

    splits = build_noisy_splits(cfg)  # logs the requested and the actual noise rate
    method = build_method(cfg)
    in_chans = cfg.model.in_chans or splits.in_chans
    pair = create_pair(cfg.model.name, num_classes=cfg.model.num_classes or splits.num_classes,
                       in_chans=in_chans, num_networks=method.num_networks, seed=cfg.train.seed,
                       pretrained=cfg.model.pretrained, pretrained_file=cfg.model.pretrained_file,
                       **cfg.model.kwargs)
    image_config = resolve_image_config(cfg.data, pair.net_a, in_chans)
    if cfg.train.compile:  # in place: the module, its state_dict keys and checkpoints stay eager's
        pair.compile()
    if len(splits.train) < cfg.train.batch_size * accelerator.num_processes:
        raise UserError(f"train.batch_size={cfg.train.batch_size} x {accelerator.num_processes} process(es) "
                        f"is larger than the {len(splits.train)} training samples; lower train.batch_size.")
    if accelerator.is_main_process:  # only once the data and models are known to be good
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    train_loader = make_loader(splits.train, cfg.data, image_config, batch_size=cfg.train.batch_size,
                               train=True, device=accelerator.device, seed=cfg.train.seed)
    eval_sets = {"test": splits.test, "validation": splits.validation,
                 "noisy_validation": splits.noisy_validation}
    eval_loaders = {name: make_loader(ds, cfg.data, image_config, batch_size=cfg.train.eval_batch_size,
                                      train=False, device=accelerator.device, seed=cfg.train.seed,
                                      drop_last=cfg.train.eval_drop_last and name == "test")
                    for name, ds in eval_sets.items() if ds is not None}
    optimizer = build_optimizer(cfg, pair)
    pair, optimizer, train_loader, *loaders = accelerator.prepare(pair, optimizer, train_loader,
                                                                  *eval_loaders.values())
    results = {"config": resolved, "noise": {"type": cfg.noise.type, "rate": cfg.noise.rate,
                                             "actual_rate": splits.actual_noise_rate},
               "num_train": len(splits.train), "num_test": len(splits.test),
               **({"num_noisy_validation": len(splits.noisy_validation)} if splits.noisy_validation else {}),
               "num_processes": accelerator.num_processes, "finished": False}
    return Run(cfg, out, accelerator, splits, method, pair, optimizer, train_loader,
               dict(zip(eval_loaders, loaders)), image_config, results)


def evaluate_all(run: Run) -> dict[str, float]:
    """Accuracy of each network on the test split (``test_acc_*``) and validation (``val_acc_*``)."""
    record = evaluate(run.pair, run.eval_loaders["test"], run.accelerator)
    if "validation" in run.eval_loaders:
        val = evaluate(run.pair, run.eval_loaders["validation"], run.accelerator)
        record.update({k.replace("test_", "val_"): v for k, v in val.items()})
    if "noisy_validation" in run.eval_loaders and forget_rate_known(run.cfg):  # the final tau, every epoch
        record.update(noisy_validation(run.pair, run.eval_loaders["noisy_validation"], run.accelerator,
                                       run.cfg.forget_rate))
    return record


def forget_rate_known(cfg: Config) -> bool:
    """False only before method.forget_rate=auto has been estimated."""
    return cfg.method.forget_rate != "auto" or cfg.estimated_forget_rate is not None


def fit(run: Run, method: Method, state: TrainState, meter: EpochMeter, stop: GracefulStop, *,
        epochs: int, checkpoints: bool = True, log_prefix: str = "",
        stats: Optional[SampleStats] = None, tau: Optional[float] = None,
        track: bool = True, first_epoch: int = 0) -> list[dict[str, Any]]:
    """Train from ``state`` to ``epochs``: one record per epoch, a checkpoint after each.
    ``tau`` defaults to the recipe's forget rate. ``first_epoch`` (train.first_epoch): the epoch
    counter starts there, so ``epochs - first_epoch`` epochs train and the lr/beta1 plan is indexed
    by ``epoch + first_epoch``; the official forget schedule already counts that way."""
    cfg, accelerator = run.cfg, run.accelerator
    tau = cfg.forget_rate if tau is None else tau
    keep = cfg.train.keep_checkpoints if checkpoints else 0
    while state.epoch < epochs - first_epoch:
        epoch, start = state.epoch, time.perf_counter()
        lr = apply_optim_schedule(run.optimizer, epoch + first_epoch, epochs, cfg.optim)
        forget_rate = forget_rate_at(epoch, tau, cfg.method)
        run.train_loader.set_epoch(epoch)
        try:
            completed = train_one_epoch(
                run.pair, method, run.train_loader, run.optimizer, accelerator, epoch=epoch,
                forget_rate=forget_rate, meter=meter, log_interval=cfg.train.log_interval,
                max_steps=cfg.train.max_steps_per_epoch, nan_policy=cfg.train.nan_policy,
                should_stop=stop, progress=cfg.log.progress_bar, stats=stats)
        except NonFiniteLossError as err:
            last_good = sorted((run.out / "checkpoints").glob("epoch_*"))
            raise NonFiniteLossError(f"{err} The last good state is {last_good[-1] if last_good else 'not saved'}"
                                     f" (train.resume=PATH continues from it).", err.step) from None
        if not completed:
            state.step = meter.steps
            saved = save_checkpoint(accelerator, run.out, state, keep, meter, stats,
                                    force=True) if checkpoints else None
            raise interrupted(stop, f"in epoch {epoch + 1} after step {state.step}", saved)
        record = {"epoch": epoch, "lr": lr, "forget_rate": forget_rate,
                  "train_time_s": time.perf_counter() - start}  # without evaluation (benchmarks)
        record.update(meter.summarise(accelerator, method.num_networks))
        record.update(evaluate_all(run))
        record["epoch_time_s"] = time.perf_counter() - start
        state.records.append(record)
        state.epoch, state.step = epoch + 1, 0
        meter.reset()
        if stats is not None:
            stats.end_epoch(accelerator)
        if track:
            accelerator.log({f"{log_prefix}{k}": v for k, v in record.items() if k != "epoch"}, step=epoch)
        logger.info(log_prefix + format_epoch(record, epochs))
        if checkpoints and _selects(record) and max(state.records, key=_selection_score) is record:
            export_models(accelerator, run.pair, run.out / "best", run.image_config)
        stopping = state.epoch < epochs - first_epoch and stop_requested(stop, accelerator)  # a signal late in the epoch
        saved = None
        if checkpoints:
            run.results.update(epochs=state.records, summary=summarise(state.records))
            run.write_results()
            saved = save_checkpoint(accelerator, run.out, state, keep, stats=stats, force=stopping)
        if stopping:
            raise interrupted(stop, f"after epoch {epoch + 1}", saved)
    return state.records


def interrupted(stop: GracefulStop, where: str, saved: Optional[Path]) -> Interrupted:
    if saved is None:
        return Interrupted(f"Stopped by {signal_name(stop.signal)} {where}, before training proper began; "
                           f"nothing to resume: run the same command again.", stop.signal)
    return Interrupted(f"Stopped by {signal_name(stop.signal)} {where}; checkpoint saved to {saved}. "
                       f"Resume with the same command and train.resume=auto.", stop.signal)


def estimate_transition(run: Run, method: Method, stop: GracefulStop) -> None:
    """F-correction's first stage: train the network with plain cross-entropy, estimate T from its
    softmax on the training set, then restart the network and optimizer from their initial state.
    T goes to ``transition_matrix.json`` (with the stage's epochs) so a resumed run skips this stage."""
    saved = run.out / "transition_matrix.json"
    if saved.is_file():
        run.results["transition_matrix"] = json.loads(saved.read_text())
        method.set_transition_matrix(run.results["transition_matrix"]["estimated"])
        return
    epochs = run.cfg.method.estimation_epochs or run.cfg.train.epochs
    logger.info("F-correction stage 1: %d epochs of standard training to estimate T.", epochs)
    records, probs = pretrain_softmax(run, method, stop, epochs=epochs, log_prefix="[estimate T] ")
    estimated = estimate_transition_matrix(probs, method.percentile)
    method.set_transition_matrix(estimated)
    info: dict[str, Any] = {"estimated": estimated.tolist(), "estimation_epochs": records}
    if run.cfg.noise.type != "none":
        true = transition_matrix(run.cfg.noise.type, run.cfg.noise.rate, run.splits.num_classes,
                                 dataset=run.cfg.noise.dataset or paper_dataset(run.cfg.data.name),
                                 grouping=run.cfg.noise.grouping)
        info.update(true=true.tolist(), error=transition_matrix_error(estimated, true))
        logger.info("Estimated T: relative L1 error %.4f against the true T.", info["error"])
    run.results["transition_matrix"] = info
    if run.accelerator.is_main_process:
        _write_json_atomic(saved, info)


def pretrain_softmax(run: Run, method: Method, stop: GracefulStop, *, epochs: int,
                     log_prefix: str) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """A throw-away first stage: train ``epochs`` from the initial weights (tau 0), take the
    training-set softmax, then restore the initial weights and a fresh optimizer (no Adam moments).
    Its epochs are logged and returned, not sent to the trackers: they would precede training's
    steps, which W&B drops."""
    unwrapped = run.accelerator.unwrap_model(run.pair)
    initial = {k: v.clone() for k, v in unwrapped.state_dict().items()}
    records = fit(run, method, TrainState(), EpochMeter(len(run.splits.train), run.accelerator.device), stop,
                  epochs=epochs, checkpoints=False, log_prefix=log_prefix, tau=0.0, track=False)
    probs = train_softmax(run)
    unwrapped.load_state_dict(initial)
    run.optimizer.state.clear()
    return records, probs


def resolve_forget_rate(run: Run, stop: GracefulStop) -> None:
    """method.forget_rate=auto: estimate the noise rate from a briefly trained standard network
    (``jocor_plugin.estimate``) and use it as tau. Kept in ``noise_estimate.json`` so a resumed run
    reuses it."""
    cfg = run.cfg
    if cfg.method.forget_rate != "auto":
        return
    saved = run.out / "noise_estimate.json"
    if saved.is_file():
        info = json.loads(saved.read_text())
    else:
        epochs = cfg.method.estimation_epochs or DEFAULT_ESTIMATION_EPOCHS
        logger.info("forget_rate=auto: %d epochs of standard training to estimate the noise rate.", epochs)
        # plain cross-entropy: 'standard' for one network, co-teaching at tau 0 (no selection) for two
        stage = create_method("standard" if run.method.num_networks == 1 else "coteaching")
        records, probs = pretrain_softmax(run, stage, stop, epochs=epochs, log_prefix="[estimate tau] ")
        info = estimate_noise_rate(probs, run.splits.train["label"])
        info.update(estimation_epochs=epochs, actual_rate=run.splits.actual_noise_rate,
                    estimation_test_acc=records[-1]["test_acc_a"])
        if run.accelerator.is_main_process:
            _write_json_atomic(saved, info)
    cfg.estimated_forget_rate = info["rate"]
    run.results["forget_rate_estimate"] = info
    actual = info.get("actual_rate")
    logger.info("forget_rate=auto: estimated noise rate %.3f%s -> tau = %.3f.", info["raw_rate"],
                f" (actual {actual:.3f})" if actual is not None else "", info["rate"])


@torch.no_grad()
def train_softmax(run: Run) -> torch.Tensor:
    """Softmax of net_a on every training sample (in training-set order, gathered)."""
    loader = run.accelerator.prepare(make_loader(
        run.splits.train, run.cfg.data, run.image_config, batch_size=run.cfg.train.eval_batch_size,
        train=False, device=run.accelerator.device, seed=run.cfg.train.seed))
    run.pair.eval()
    probs = [run.accelerator.gather_for_metrics(run.pair(batch["pixel_values"])[0].float().softmax(1))
             for batch in loader]
    return torch.cat(probs).cpu()


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` to the end (or from a checkpoint); return the results written to results.json."""
    run = setup(cfg)
    state, meter = TrainState(), EpochMeter(len(run.splits.train), run.accelerator.device)
    stats = SampleStats.for_dataset(run.splits.train, cfg.model.num_classes or run.splits.num_classes,
                                    cfg.train.label_issue_epochs, run.accelerator.device) \
        if cfg.train.label_issue_epochs else None
    checkpoint = find_checkpoint(cfg.train.resume, run.out)
    # trackers take flat scalars (TensorBoard's hparams refuse None and lists)
    flat = {f"{s}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
            for s, d in run.results["config"].items() for k, v in d.items()}
    run.accelerator.init_trackers(cfg.log.project, config=flat, init_kwargs={
        "wandb": {"name": cfg.log.run_name or run.out.name, "dir": str(run.out)}})
    with GracefulStop() as stop:
        resolve_forget_rate(run, stop)  # method.forget_rate=auto: a brief standard stage estimates tau
    logger.info("Training %s (%s) with %s for %d epochs; tau = %.3f (%s selection); %d train / %d test "
                "samples.", cfg.model.name, "1 network" if run.method.num_networks == 1 else "2 networks",
                run.method, cfg.train.epochs, cfg.forget_rate, cfg.method.selection, len(run.splits.train),
                len(run.splits.test))
    with GracefulStop() as stop:
        if "standard" in getattr(run.method, "stages", ()):
            estimate_transition(run, run.method, stop)
        if checkpoint is not None:
            load_checkpoint(run.accelerator, checkpoint, state, meter, stats)
            logger.info("Resumed from %s: epoch %d, step %d.", checkpoint, state.epoch + 1, state.step)
        else:
            save_checkpoint(run.accelerator, run.out, state, cfg.train.keep_checkpoints)  # initial weights
        fit(run, run.method, state, meter, stop, epochs=cfg.train.epochs, stats=stats,
            first_epoch=cfg.train.first_epoch)

    results = run.results
    if cfg.train.export_models:
        results["exported_models"] = export_models(run.accelerator, run.pair, run.out, run.image_config)
    if stats is not None:  # label_issue_stats.safetensors (+ the label-issue dataset and report)
        results.update(finish_label_issues(run.accelerator, run.out, stats, export=cfg.train.export_label_issues))
    results.update(epochs=state.records, summary=summarise(state.records), finished=True)
    run.write_results()
    # the summary's scalars (test_acc_last10, noisy_val_acc_best, ...) as metrics: W&B sweeps optimise them
    run.accelerator.log({k: v for k, v in results["summary"].items() if isinstance(v, (int, float))},
                        step=len(state.records) - 1)
    logger.info("Done: test_acc_last10 %.2f%s. Results in %s/results.json.",
                results["summary"]["test_acc_last10"],
                f", final label precision {results['summary']['final_label_precision']:.4f}"
                if "final_label_precision" in results["summary"] else "", run.out)
    run.accelerator.end_training()
    return results


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser(
        "run", "Train a pair of timm networks on noisy labels (JoCoR and baselines).",
        epilog="Example: python -m jocor_plugin.run recipes/mnist5k_sym50.yaml method.name=standard "
               "train.epochs=20")
    parser.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. noise.rate=0.2")
    parser.add_argument("--help-config", action="store_true", help="list every recipe key and exit")
    parser.add_argument("--markdown", action="store_true", help="with --help-config: a Markdown table")
    parser.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    return parser.parse_args(argv)


def signal_name(signum: Optional[int]) -> str:
    return signal.Signals(signum).name if signum else "request"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging()
    if args.help_config:
        print(describe_config(markdown=args.markdown))
        return 0
    if args.list_methods:
        print("\n".join(describe_method(name) for name in list_methods()))
        return 0
    if args.recipe is not None and "=" in args.recipe and not args.recipe.endswith((".yaml", ".yml")):
        args.overrides, args.recipe = [args.recipe, *args.overrides], None

    def body() -> int:
        cfg = load_config(args.recipe, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        else:
            train(cfg)
        return 0

    return exit_code_of(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
