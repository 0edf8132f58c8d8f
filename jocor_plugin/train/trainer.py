"""The trainer: a run wired from its recipe (``setup``), its epochs (``Trainer.fit``) and its end
(``train``). It knows methods only through ``Method``'s life cycle (``from_config`` and the
hooks, see ``jocor_plugin.methods.base.Method``): no method is named here.

Outputs in ``train.output_dir``: config.yaml, results.json, curves.png, checkpoints/, model_a|b/.

One module of about 400 lines on purpose: the run reads top to bottom here, as an Accelerate
example does (set-up, the services a method may use, the epochs, the end); one epoch's step is
``engine``, the folder ``run_folder``, the checkpoints ``checkpoint``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import accelerate.optimizer
import numpy as np
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import set_seed

from ..config import Config, config_to_dict
from ..config.fidelity import authors_code_caveat
from ..config.schema import forget_rate_source
from ..core.cli import multi_process_without_gpu
from ..core.errors import UserError
from ..core.results import (RESULTS_FILE, final_line, format_epoch, selection_score, selects, summarise,
                            write_json_atomic)
from ..data.loaders import InMemoryImages, make_loader, resolve_image_config
from ..data.splits import NoisySplits, build_noisy_splits, column_array, noise_matrix, paper_dataset
from ..data.views import ViewBatches
from ..methods import DataInfo, Method, method_class
from ..models.pair import check_forward, create_pair
from ..noise.label_noise import transition_matrix
from .checkpoint import GracefulStop, TrainState, find_checkpoint, load_checkpoint, save_checkpoint
from .engine import (EpochMeter, NonFiniteLossError, SkipNonFiniteStep, check_finite, evaluate, stop_requested,
                     train_one_epoch, zero_grad)
from .estimate import noisy_validation, resolve_forget_rate
from .export import export_models
from .label_report import finish_label_issues
from .meters import SampleStats
from .plots import write_run_curves
from .run_folder import RunFolder, record_changes
from .schedule import apply_optim_schedule, forget_rate_at

# Accelerate's AcceleratedOptimizer.step asks the file system whether the optional package
# lomo_optim is installed, twice per step (a file-system lookup: a measurable share of a small
# step, docs/performance.md). The answer does not change during a run, so it is asked once.
if not hasattr(accelerate.optimizer.is_lomo_available, "cache_info"):
    accelerate.optimizer.is_lomo_available = functools.cache(accelerate.optimizer.is_lomo_available)

__all__ = ["Trainer", "setup", "train", "build_optimizer", "data_info"]

logger = logging.getLogger(__name__)
result_logger = logging.getLogger(f"{__name__}.result")  # the final line: shown even with log.quiet


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """One optimizer over both networks, from timm's optimizer factory."""
    from timm.optim import create_optimizer_v2

    extra = {"betas": tuple(cfg.optim.betas)} if "adam" in cfg.optim.name.lower() else {}
    if cfg.optim.eps is not None:
        extra["eps"] = cfg.optim.eps
    try:  # momentum goes only to optimizers that take it (timm's factory sorts that out)
        return create_optimizer_v2(model, opt=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                   momentum=cfg.optim.momentum, **{**extra, **cfg.optim.kwargs})
    except TypeError as err:
        raise UserError(f"optim.name={cfg.optim.name!r} rejected an argument: {err}. Check optim.kwargs / "
                        f"optim.eps.") from None


def data_info(cfg: Config, splits: NoisySplits) -> DataInfo:
    """The data's facts a method may be built from (``Method.from_config``)."""
    dataset = paper_dataset(cfg.data.name)
    true_t = None
    if cfg.noise.type != "none":  # the T the noise was injected with (data.build_noisy_splits)
        true_t = transition_matrix(cfg.noise.type, cfg.noise.rate, splits.num_classes,
                                   dataset=cfg.noise.dataset or dataset or cfg.data.name,
                                   grouping=cfg.noise.grouping, matrix=noise_matrix(cfg))
    return DataInfo(name=cfg.data.name, dataset=dataset, num_classes=cfg.model.num_classes or splits.num_classes,
                    num_train=len(splits.train), noise_type=cfg.noise.type, noise_rate=cfg.noise.rate,
                    actual_noise_rate=splits.actual_noise_rate, transition_matrix=true_t)


class Trainer:
    """One run's parts (the networks, optimizer, loaders, the method) and its epochs.

    ``forget_rate`` is the run's tau: the recipe's, or None until ``method.forget_rate=auto`` is
    estimated (``estimate.resolve_forget_rate``); ``checkpoints=False`` (e.g. a cross-validation
    fold) writes nothing into ``out``.
    """

    def __init__(self, cfg: Config, accelerator: Accelerator, splits: NoisySplits, out: Path, *,
                 forget_rate: Optional[float], checkpoints: bool = True):
        self.cfg, self.accelerator, self.splits, self.out = cfg, accelerator, splits, out
        self.forget_rate, self.checkpoints = forget_rate, checkpoints
        self.data_info = data_info(cfg, splits)
        self.method = method_class(cfg.method.name).from_config(cfg, self.data_info)
        in_chans = cfg.model.in_chans or splits.in_chans
        pair = create_pair(cfg.model.name, num_classes=self.data_info.num_classes, in_chans=in_chans,
                           num_networks=self.method.num_networks, seed=cfg.train.seed,
                           pretrained=cfg.model.pretrained, pretrained_file=cfg.model.pretrained_file,
                           **cfg.model.kwargs)
        self.image_config = resolve_image_config(cfg.data, pair.net_a, in_chans)
        if cfg.train.compile:  # in place: the module, its state_dict keys and checkpoints stay eager's
            pair.compile()
        if len(splits.train) < cfg.train.batch_size * accelerator.num_processes:
            raise UserError(f"train.batch_size={cfg.train.batch_size} x {accelerator.num_processes} process(es) "
                            f"is larger than the {len(splits.train)} training samples; lower train.batch_size.")
        test_batch = cfg.train.eval_batch_size * accelerator.num_processes
        if cfg.train.eval_drop_last and len(splits.test) < test_batch:  # every test batch would be dropped: nan
            from_fidelity = "train.eval_batch_size" not in cfg.explicit_keys and cfg.train.fidelity == "authors_code"
            source = " (train.batch_size, as train.fidelity=authors_code sets it)" if from_fidelity else ""
            fix = "lower train.batch_size or set train.eval_batch_size" if from_fidelity else \
                "lower train.eval_batch_size"
            raise UserError(f"train.eval_drop_last=true would drop every test batch: train.eval_batch_size="
                            f"{cfg.train.eval_batch_size}{source} x {accelerator.num_processes} process(es) is more "
                            f"than the {len(splits.test)} test images, so no test accuracy could be measured; {fix} "
                            f"to at most {len(splits.test) // accelerator.num_processes}, or set "
                            f"train.eval_drop_last=false.")
        train_loader = self._loader(splits.train, train=True, batch_size=cfg.train.batch_size)
        eval_sets = {"test": splits.test, "validation": splits.validation,
                     "noisy_validation": splits.noisy_validation}
        eval_loaders = {name: self._loader(ds, train=False, batch_size=cfg.train.eval_batch_size,
                                           drop_last=cfg.train.eval_drop_last and name == "test")
                        for name, ds in eval_sets.items() if ds is not None}
        optimizer = build_optimizer(cfg, pair)
        loaders = [train_loader, *eval_loaders.values()]
        self.pair, self.optimizer, self.train_loader, *loaders = accelerator.prepare(
            pair, optimizer, *loaders, device_placement=[None, None, *map(_placement, loaders)])
        self.eval_loaders = dict(zip(eval_loaders, loaders))
        self.results: dict[str, Any] = {}
        self.stop = GracefulStop()
        self.meter = EpochMeter(len(splits.train), accelerator.device)
        self.stats: Optional[SampleStats] = None  # the label-issue statistics, in an epoch that gathers them

    # ------------------------------------------------------------------ what hooks use

    def _loader(self, dataset: Any, *, train: bool, batch_size: int, **kwargs: Any) -> Any:
        return make_loader(dataset, self.cfg.data, self.image_config, batch_size=batch_size, train=train,
                           device=self.accelerator.device, seed=self.cfg.train.seed, **kwargs)

    def make_loader(self, dataset: Any, *, train: bool, batch_size: int, decoded: Any = None) -> Any:
        """A loader over ``dataset`` (a ``datasets.Dataset`` with the training set's columns),
        prepared by Accelerate (sharded over the processes); ``decoded``: its images already
        decoded in memory (``data.InMemoryImages``), reused instead of decoded again."""
        loader = self._loader(dataset, train=train, batch_size=batch_size, decoded=decoded)
        return self.accelerator.prepare(loader, device_placement=[_placement(loader)])

    @torch.no_grad()
    def per_sample_outputs(self, dataset: Any = None) -> tuple[torch.Tensor, Optional[torch.Tensor],
                                                                torch.Tensor, torch.Tensor]:
        """(logits_a, logits_b or None, labels, index) of every sample of ``dataset`` (default:
        the training set) in eval mode, in its order, gathered from all processes, on the CPU."""
        decoded = getattr(self.train_loader, "dataset", None) if dataset is None else None
        loader = self.make_loader(self.splits.train if dataset is None else dataset, train=False,
                                  batch_size=self.cfg.train.eval_batch_size,
                                  decoded=decoded if isinstance(decoded, InMemoryImages) else None)
        self.pair.eval()
        parts: list[list[torch.Tensor]] = []
        for batch in loader:
            logits = [z for z in self.pair(batch["pixel_values"]) if z is not None]
            parts.append(list(self.accelerator.gather_for_metrics((*logits, batch["label"], batch["index"]))))
        columns = [torch.cat(c).cpu() for c in zip(*parts)]
        logits_b = columns[1] if len(columns) == 4 else None
        return columns[0], logits_b, columns[-2], columns[-1]

    @contextmanager
    def scratch(self) -> Iterator[None]:
        """A throw-away stage: on exit the networks get back the weights they had on entry and
        the optimizer forgets its state (no Adam moments)."""
        unwrapped = self.accelerator.unwrap_model(self.pair)
        initial = {k: v.clone() for k, v in unwrapped.state_dict().items()}
        yield
        unwrapped.load_state_dict(initial)
        self.optimizer.state.clear()

    def run_stage(self, method: Method, *, epochs: int, log_prefix: str, dataset: Any = None,
                  until: Optional[Callable[[dict[str, Any]], bool]] = None) -> list[dict[str, Any]]:
        """``epochs`` plain epochs of ``method`` at tau 0, from the current weights, without
        checkpoints; logged, not tracked (they would precede training's steps, which W&B drops).
        ``dataset``: train on it (a part of the training set, same columns) instead of the whole
        set; ``until(record)``: asked after each epoch, True ends the stage early."""
        original = self.train_loader
        if dataset is not None:
            self.train_loader = self.make_loader(dataset, train=True, batch_size=self.cfg.train.batch_size)
        try:
            return self.fit(method, TrainState(), EpochMeter(len(self.splits.train), self.accelerator.device),
                            epochs=epochs, checkpoints=False, log_prefix=log_prefix, tau=0.0, track=False,
                            until=until)
        finally:
            self.train_loader = original

    def write_json(self, path: Path, payload: dict[str, Any]) -> None:
        """A JSON file in the run's folder, written once (main process), atomically."""
        if self.accelerator.is_main_process and self.checkpoints:
            write_json_atomic(path, payload)

    def view_batches(self, views: int, *, flip: bool, padding: int) -> ViewBatches:
        """``views`` augmented views of training samples by index (``ViewBatches``): in memory the
        training loader's decoded images, not a second decoding."""
        decoded = getattr(self.train_loader, "dataset", None)
        return ViewBatches(self.splits.train, self.cfg.data, self.image_config, device=self.accelerator.device,
                           views=views, in_memory=decoded if isinstance(decoded, InMemoryImages) else None,
                           flip=flip, padding=padding)

    def training_column(self, name: str) -> np.ndarray:
        """A column of the training set (``label``, ``clean_label``, ``is_noisy``, ``index``) as an array."""
        return column_array(self.splits.train, name)

    def guarded_step(self, net: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        """Around a method's own ``optimizer.step()`` for ``net``: under ``train.nan_policy=skip`` a
        step with a non-finite gradient leaves ``net``'s weights and optimizer state as they were
        (``engine.SkipNonFiniteStep``); otherwise nothing."""
        if self.cfg.train.nan_policy != "skip":
            return contextlib.nullcontext()
        return SkipNonFiniteStep(net, self.optimizer).step(update=True)

    def zero_grad(self) -> None:
        """``optimizer.zero_grad(set_to_none=True)`` as the engine's step clears it (``engine.zero_grad``:
        without the signature inspection Accelerate's wrapper takes on every call)."""
        zero_grad(self.optimizer, self.accelerator)

    def check_finite(self, epoch: int) -> None:
        """Read the meter's non-finite count (one host read): stop on a NaN/inf loss unless
        ``train.nan_policy=skip``."""
        check_finite(self.meter, self.accelerator, epoch, self.cfg.train.nan_policy)

    def write_results(self) -> None:
        self.write_json(self.out / RESULTS_FILE, self.results)

    # ------------------------------------------------------------------ epochs

    def evaluate(self) -> dict[str, float]:
        """Accuracy of each network on the test split (``test_acc_*``) and validation
        (``val_acc_*``); noisy validation once tau is known."""
        record = evaluate(self.pair, self.eval_loaders["test"], self.accelerator, drop_last=self.cfg.train.eval_drop_last)
        if self.splits.noisy_test:  # held out of noisy labels: agreement with them, named so
            record = {f"noisy_{k}": v for k, v in record.items()}
        if "validation" in self.eval_loaders:
            val = evaluate(self.pair, self.eval_loaders["validation"], self.accelerator)
            record.update({k.replace("test_", "val_"): v for k, v in val.items()})
        if "noisy_validation" in self.eval_loaders and self.forget_rate is not None:  # the final tau
            record.update(noisy_validation(self.pair, self.eval_loaders["noisy_validation"], self.accelerator,
                                           self.forget_rate))
        return record

    def fit(self, method: Method, state: TrainState, meter: EpochMeter, *, epochs: int, checkpoints: bool = True,
            log_prefix: str = "", stats: Optional[SampleStats] = None, tau: Optional[float] = None,
            track: bool = True, first_epoch: int = 0,
            until: Optional[Callable[[dict[str, Any]], bool]] = None) -> list[dict[str, Any]]:
        """Train from ``state`` to ``epochs``: one record per epoch, a checkpoint after each.
        ``tau`` defaults to the run's forget rate. ``first_epoch`` (train.first_epoch): the epoch
        counter starts there, so ``epochs - first_epoch`` epochs train and the lr/beta1 plan is indexed
        by ``epoch + first_epoch``; the official forget schedule already counts that way."""
        cfg, accelerator = self.cfg, self.accelerator
        tau = self.forget_rate if tau is None else tau
        checkpoints = checkpoints and self.checkpoints
        keep = cfg.train.keep_checkpoints if checkpoints else 0
        self.meter = meter
        if stats is not None:
            stats.keep_from(epochs - first_epoch)
        while state.epoch < epochs - first_epoch:
            epoch, start = state.epoch, time.perf_counter()
            lr = apply_optim_schedule(self.optimizer, epoch + first_epoch, epochs, cfg.optim)
            forget_rate = forget_rate_at(epoch, tau, cfg.method)
            self.train_loader.set_epoch(epoch)
            # the label-issue statistics of the epochs their window keeps (a method's own epoch reads self.stats)
            self.stats = stats if stats is not None and stats.collecting else None
            method.before_epoch(self, epoch)
            try:
                completed = method.train_epoch(self, epoch, forget_rate)
                if completed is None:
                    completed = train_one_epoch(
                        self.pair, method, self.train_loader, self.optimizer, accelerator, epoch=epoch,
                        forget_rate=forget_rate, meter=meter, log_interval=cfg.train.log_interval,
                        max_steps=cfg.train.max_steps_per_epoch, nan_policy=cfg.train.nan_policy,
                        should_stop=self.stop, progress=cfg.log.progress_bar, stats=self.stats,
                        clip_grad=cfg.train.clip_grad, clip_mode=cfg.train.clip_mode)
            except NonFiniteLossError as err:
                last_good = sorted((self.out / "checkpoints").glob("epoch_*"))
                raise NonFiniteLossError(f"{err} The last good state is {last_good[-1] if last_good else 'not saved'}"
                                         f" (train.resume=PATH continues from it).", err.step) from None
            if not completed:
                state.step = meter.steps
                saved = save_checkpoint(accelerator, self.out, state, keep, meter, stats, force=True,
                                        recipe=self.results["config"], stop=self.stop,
                                        method_state=method.state_dict()) if checkpoints else None
                raise self.stop.interrupted(f"in epoch {epoch + 1} after step {state.step}", saved)
            record = {"epoch": epoch, "lr": lr, "forget_rate": forget_rate,
                      "train_time_s": time.perf_counter() - start}  # without evaluation (benchmarks)
            record.update(meter.summarise(accelerator, method.num_networks))
            record.update(self.evaluate())
            method.after_epoch(self, epoch, record)
            record["epoch_time_s"] = time.perf_counter() - start
            state.records.append(record)
            state.epoch, state.step = epoch + 1, 0
            meter.reset()
            if stats is not None:
                stats.end_epoch(accelerator)
            if track:
                accelerator.log({f"{log_prefix}{k}": v for k, v in record.items() if k != "epoch"}, step=epoch)
            logger.info(log_prefix + format_epoch(record, epochs, show_forget_rate=method.uses_forget_rate))
            if checkpoints and selects(record) and max(state.records, key=selection_score) is record:
                export_models(accelerator, self.pair, self.out / "best", self.image_config, self.label_names)
            # a signal late in the epoch
            stopping = state.epoch < epochs - first_epoch and stop_requested(self.stop, accelerator)
            saved = None
            if checkpoints:
                self.results.update(epochs=state.records, summary=summarise(state.records),
                                    **({"recipe_changes": state.recipe_changes} if state.recipe_changes else {}))
                self.write_results()
                saved = save_checkpoint(accelerator, self.out, state, keep, stats=stats, force=stopping,
                                        recipe=self.results["config"], stop=self.stop,
                                        method_state=method.state_dict())
            if stopping:
                raise self.stop.interrupted(f"after epoch {epoch + 1}", saved)
            if until is not None and until(record):  # e.g. an estimation stage that has converged
                break
        return state.records

    @property
    def label_names(self) -> list[str]:
        """The class names of the training labels (else '0', '1', ...)."""
        return self.splits.label_names


def _placement(loader: Any) -> Optional[bool]:
    """Accelerate's device placement for a loader: none for in-memory data, whose batches are cut on
    the device already (moving each would only walk the batch: ~1 % of a small model's step);
    Accelerate's default otherwise."""
    return False if isinstance(loader.dataset, InMemoryImages) else None


def setup(cfg: Config, folder: Optional[RunFolder] = None) -> Trainer:
    """Accelerate, the noisy data and the trainer for ``folder`` (default: the recipe's, checked)."""
    out = (folder or RunFolder.for_recipe(cfg)).path
    accelerator = Accelerator(
        cpu=multi_process_without_gpu(),
        log_with=None if cfg.log.tracker == "none" else cfg.log.tracker, project_dir=str(out),
        gradient_accumulation_steps=cfg.train.grad_accum_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.train.seed))
    if cfg.log.quiet and accelerator.is_main_process:  # warnings, errors and the final line only
        logging.getLogger("jocor_plugin").setLevel(logging.WARNING)
        result_logger.setLevel(logging.INFO)
    set_seed(cfg.train.seed)
    logger.info("Accelerate: %d process(es) (%s) on %s, mixed precision %s.", accelerator.num_processes,
                accelerator.distributed_type.value, accelerator.device, accelerator.mixed_precision)
    if cfg.log.tracker == "tensorboard":  # Accelerate writes them under project_dir/<project>
        logger.info("TensorBoard event files: %s (tensorboard --logdir %s).", out / cfg.log.project, out)
    resolved = config_to_dict(cfg)
    if cfg.log.print_config and accelerator.is_main_process:  # always in config.yaml; printed on request
        print(yaml.safe_dump(resolved, sort_keys=False), flush=True)
    splits = build_noisy_splits(cfg)  # logs the requested and the actual noise rate
    auto = cfg.method.forget_rate == "auto"
    trainer = Trainer(cfg, accelerator, splits, out, forget_rate=None if auto else cfg.forget_rate)
    check_forward(accelerator.unwrap_model(trainer.pair).net_a, cfg.model.name, trainer.image_config["input_size"],
                  trainer.data_info.num_classes,
                  {k: trainer.image_config[k] for k in ("input_size", "mean", "std", "interpolation", "crop_pct")})
    trainer.results = {
        "config": resolved, "noise": ({"type": "none"} if cfg.noise.type == "none" else  # nothing injected
                                      {"type": cfg.noise.type, "rate": cfg.noise.rate,
                                       "actual_rate": splits.actual_noise_rate}),
        "num_train": len(splits.train), "num_test": len(splits.test),
        **({"num_noisy_validation": len(splits.noisy_validation)} if splits.noisy_validation else {}),
        "num_processes": accelerator.num_processes, "finished": False}
    return trainer


def train(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` to the end (or from a checkpoint); return the results written to results.json.
    The output folder is locked for the run's life; nothing is written into it before every check
    (data, models, the checkpoint and its recipe) has passed."""
    folder = RunFolder.for_recipe(cfg)
    with folder.lock(PartialState(cpu=multi_process_without_gpu()).is_main_process):
        return _train(cfg, folder)


def _train(cfg: Config, folder: RunFolder) -> dict[str, Any]:
    trainer = setup(cfg, folder)
    accelerator, method, results = trainer.accelerator, trainer.method, trainer.results
    state, meter = TrainState(), trainer.meter
    stats = SampleStats.for_dataset(trainer.splits.train, trainer.data_info.num_classes,
                                    cfg.train.label_issue_epochs, accelerator.device) \
        if cfg.train.label_issue_epochs else None
    checkpoint = find_checkpoint(cfg.train.resume, trainer.out)
    changes = folder.check_resume(checkpoint, results["config"], cfg.train.resume_allow_changes,
                                  accelerator.process_index) if checkpoint is not None else []
    if accelerator.is_main_process:
        folder.start_writing(results["config"], fresh=checkpoint is None)
    accelerator.wait_for_everyone()
    # trackers take flat scalars (TensorBoard's hparams refuse None and lists)
    flat = {f"{s}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
            for s, d in results["config"].items() for k, v in d.items()}
    wandb_args = {"entity": cfg.log.entity, "group": cfg.log.group, "tags": cfg.log.tags or None,
                  "notes": cfg.log.notes}
    accelerator.init_trackers(cfg.log.project, config=flat, init_kwargs={"wandb": {
        "name": cfg.log.run_name or trainer.out.name, "dir": str(trainer.out),
        **{k: v for k, v in wandb_args.items() if v is not None}}})
    with trainer.stop:
        resolve_forget_rate(trainer)  # tau: the recipe's, or estimated by a brief stage (auto)
        logger.info("Training %s (%s) with %s for %d epochs; %d train / %d test samples.", cfg.model.name,
                    "1 network" if method.num_networks == 1 else "2 networks", method, cfg.train.epochs,
                    len(trainer.splits.train), len(trainer.splits.test))
        if method.uses_forget_rate:
            logger.info("tau = %.3f, %s; %s selection.", trainer.forget_rate, forget_rate_source(cfg),
                        cfg.method.selection)
        caveat = authors_code_caveat(cfg, owns_epochs=type(method).train_epoch is not Method.train_epoch)
        if caveat:
            logger.warning(caveat)
        method.before_training(trainer)
        if checkpoint is not None:
            load_checkpoint(accelerator, checkpoint, state, meter, stats, method)
            record_changes(state, changes)
            logger.info("Resumed from %s: epoch %d, step %d.", checkpoint, state.epoch + 1, state.step)
        else:
            save_checkpoint(accelerator, trainer.out, state, cfg.train.keep_checkpoints,  # initial weights
                            recipe=results["config"], stop=trainer.stop, method_state=method.state_dict())
        trainer.fit(method, state, meter, epochs=cfg.train.epochs, stats=stats, first_epoch=cfg.train.first_epoch)

    if cfg.train.export_models:
        results["exported_models"] = export_models(accelerator, trainer.pair, trainer.out, trainer.image_config,
                                                   trainer.label_names)
    if stats is not None:  # label_issue_stats.safetensors (+ the label-issue dataset and report)
        results.update(finish_label_issues(accelerator, trainer.out, stats, export=cfg.train.export_label_issues,
                                           metadata=_stats_metadata(trainer)))
    results.update(epochs=state.records, summary=summarise(state.records), finished=True)
    trainer.write_results()
    if accelerator.is_main_process:  # curves.png: the records' accuracy, label precision, selected fraction
        write_run_curves(state.records, trainer.out, f"{cfg.data.name}, {cfg.noise.type} {cfg.noise.rate} noise, "
                                                     f"{cfg.method.name}, {cfg.model.name}")
    # the summary's scalars (test_acc_last10, noisy_val_acc_best, ...) as metrics: W&B sweeps optimise them
    accelerator.log({k: v for k, v in results["summary"].items() if isinstance(v, (int, float))},
                    step=len(state.records) - 1)
    result_logger.info(final_line(results["summary"], trainer.out))
    accelerator.end_training()
    return results


def _stats_metadata(trainer: Trainer) -> dict[str, Any]:
    """What the label-issue report needs to know of the run, kept with its statistics."""
    return {"forget_rate": trainer.forget_rate, "method": trainer.cfg.method.name,
            "num_networks": trainer.method.num_networks, "noise_type": trainer.cfg.noise.type,
            "noise_rate": trainer.cfg.noise.rate, "data": trainer.cfg.data.name}
