"""Typed recipes: YAML files plus dotted ``key=value`` overrides, validated before any work.

A recipe has one section per concern (``data``, ``noise``, ``model``, ``method``, ``optim``,
``train``, ``log``); every key is a field of the dataclasses below, whose ``help`` metadata is
the single source of the recipe reference (``python -m jocor_plugin.run --help-config``).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from ..core.cli import read_yaml_mapping
from ..core.errors import UserError, did_you_mean
from .fidelity import fidelity_defaults
from ..noise.types import NOISE_TYPES, noise_type

__all__ = [
    "Config", "ConfigError", "DataConfig", "NoiseConfig", "ModelConfig", "MethodConfig",
    "OptimConfig", "TrainConfig", "LogConfig", "load_config", "apply_overrides", "apply_fidelity", "config_to_dict",
    "describe_config", "with_reference_table", "expand_path_variables", "SECTIONS",
]


class ConfigError(UserError, ValueError):
    """A recipe or override is invalid; the message says which key and what is allowed."""


def opt(default: Any, help: str) -> Any:
    """A recipe field with its one-line meaning (shown by ``--help-config``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    name: str = opt("mnist5k", "Built-in dataset (mnist5k, digits, fashion_mnist: idx files from "
                               "data.path or Debian's dataset-fashion-mnist), 'clothing1m' (a folder in "
                               "data.path) or a Hugging Face Hub dataset id (e.g. uoft-cs/cifar10). With "
                               "data.path and mnist5k/digits (whose data ships in a package), the name of "
                               "data.path's folder or file instead.")
    path: Optional[str] = opt(None, "Local copy instead of the hub: a save_to_disk folder, parquet "
                                    "file(s) or an image folder with one sub-folder per class.")
    config_name: Optional[str] = opt(None, "Hub dataset configuration name, if it has several.")
    train_split: str = opt("train", "Split used for training (noise is injected here).")
    test_split: str = opt("test", "Split used for test accuracy; split off train if absent.")
    validation_split: str = opt("validation", "Clean validation split, if the data has one: its accuracy "
                                              "is logged and picks the best checkpoint.")
    val_split: float = opt(0.0, "Noisy validation: hold out this fraction of the noisy training set "
                                "(stratified by noisy label, data.split_seed); its small-loss accuracy "
                                "(noisy_val_acc) picks the best checkpoint. 0: off.")
    image_column: Optional[str] = opt(None, "Image column; default: the first Image feature.")
    label_column: Optional[str] = opt(None, "Label column; default: 'label', else 'fine_label', "
                                            "else the first ClassLabel feature.")
    num_classes: Optional[int] = opt(None, "Number of classes; default: from the ClassLabel feature.")
    test_fraction: float = opt(0.2, "Fraction held out as test set when the data has no test split.")
    split_seed: int = opt(0, "Seed of the train/test split (fixed across training seeds).")
    split: Literal["stratified", "permutation"] = opt(
        "stratified", "Test split of data without one: 'stratified' per class (indices sorted), or "
                      "'permutation': one seeded permutation, the first part trains (in that order).")
    input_size: Optional[int] = opt(None, "Square input size; default: the backbone's data config.")
    mean: Optional[list[float]] = opt(None, "Normalisation mean; default: the backbone's data config.")
    std: Optional[list[float]] = opt(None, "Normalisation std; default: the backbone's data config.")
    interpolation: Optional[str] = opt(None, "Resize interpolation; default: the backbone's.")
    crop_pct: Optional[float] = opt(None, "Evaluation: resize to input_size / crop_pct, then centre-crop "
                                          "(0.875: 256 -> 224); default: the backbone's.")
    augment: bool = opt(False, "Train-time augmentation (timm's training transform). The paper "
                               "uses none for MNIST/CIFAR.")
    train_transform: Literal["timm", "paper"] = opt(
        "timm", "Augmentation with data.augment: 'timm' (create_transform: random-resized crop, flip, "
                "colour jitter) or 'paper' (Clothing1M: resize as evaluation, random crop, flip; streamed).")
    skip_missing: bool = opt(False, "Clothing1M folders: drop listed images that are missing on disk "
                                    "(with a warning) instead of failing.")
    skip_bad_images: bool = opt(False, "Leave out images that don't decode (truncated or non-image files; "
                                       "a warning says how many) instead of failing with the file's name.")
    in_memory: Optional[bool] = opt(None, "Hold the decoded images as one tensor on the device "
                                          "(default: yes for small datasets).")
    num_workers: int = opt(2, "DataLoader workers for streamed (not in-memory) datasets.")


@dataclass
class NoiseConfig:
    type: str = opt(
        "symmetric", "Injected label noise, a registered noise type (none, symmetric, pairflip, asymmetric, or "
                     "your own: jocor_plugin.noise.register_noise_type); 'none' for data whose labels are already "
                     "noisy (tau then comes from method.forget_rate, else is estimated: forget_rate=auto).")
    rate: float = opt(0.5, "Noise rate r in [0, 1) of the injected noise (recorded as 0 with noise.type=none: "
                           "nothing is injected).")
    seed: Optional[int] = opt(None, "Seed of the noisy labels; default: train.seed.")
    sampler: Literal["hashed", "authors"] = opt(
        "hashed", "'hashed': each noisy label a function of (seed, index, label); 'authors': one "
                  "numpy RandomState(noise.seed) drawing a multinomial per sample in order, as the "
                  "authors' noisify (the same labels for the same inputs).")
    dataset: Optional[str] = opt(None, "Class map for asymmetric noise (mnist, cifar10, cifar100, "
                                       "fashion_mnist); default: from data.name.")
    transition_matrix: Optional[str] = opt(None, "Asymmetric noise with your own class map: a file with "
                                                 "T[clean, noisy] (.npy, .json, .csv, .pt; rows sum to 1), "
                                                 "used as it is (noise.rate unused).")
    grouping: Literal["blocks", "superclass"] = opt(
        "blocks", "CIFAR-100 asymmetric groups: 'blocks' of 5 indices as the official code, or "
                  "the real 'superclass'es.")


@dataclass
class ModelConfig:
    name: str = opt("jocor_mlp", "Any timm model name (e.g. resnet18, convnext_atto) or the "
                                 "paper's jocor_mlp / jocor_cnn.")
    pretrained: bool = opt(False, "Load pretrained weights (from the hub, or model.pretrained_file).")
    pretrained_file: Optional[str] = opt(None, "Local weight file (.safetensors/.pth) for pretrained.")
    num_classes: Optional[int] = opt(None, "Classifier outputs; default: the dataset's classes.")
    in_chans: Optional[int] = opt(None, "Input channels; default: the dataset's channels.")
    kwargs: dict = opt({}, "Extra keyword arguments for timm.create_model (e.g. {drop_rate: 0.2}).")


@dataclass
class MethodConfig:
    name: str = opt("jocor", "Training method, by registered name (see --list-methods).")
    co_lambda: float = opt(0.9, "JoCoR's lambda: weight of the co-regularisation (KL) term.")
    forget_rate: Optional[Union[float, Literal["auto"]]] = opt(
        None, "Final forget rate tau in [0, 1); default: noise.rate (half of it for asymmetric noise, the "
              "mean flip rate of noise.transition_matrix), and 'auto' with noise.type=none; 'auto': the "
              "noise rate estimated before training (docs/noise_estimation.md).")
    num_gradual: int = opt(10, "T_k: epochs over which the forget rate ramps from 0 to tau.")
    exponent: float = opt(1.0, "c in the ramp tau * min((t / T_k)^c, 1).")
    forget_schedule: Literal["paper", "official"] = opt(
        "paper", "'paper': tau_t = tau*min(t/T_k, 1), t = 0-based epoch; 'official': the authors' "
                 "code, linspace(0, tau, T_k) starting at its first trained epoch.")
    selection: Literal["local", "global"] = opt(
        "local", "Small-loss selection per process ('local', as the paper's code) or over the batch of "
                 "all processes ('global': losses all-gathered, one threshold).")
    init_epoch: Optional[int] = opt(None, "Co-teaching+: epoch from which only disagreeing samples "
                                          "train; default 0 (MNIST), 20 (CIFAR-10), 5 (CIFAR-100).")
    transition_matrix: Optional[str] = opt(None, "F-correction: a file with T[clean, noisy] (.npy, .json, "
                                                 ".csv, .pt) to use instead of estimating it.")
    estimation_epochs: Optional[int] = opt(None, "Epochs of the standard-training stage that estimates "
                                                 "the noise: F-correction's T (default: train.epochs) or "
                                                 "forget_rate=auto (default: 5).")
    imports: list[str] = opt([], "Modules to import first: your own @register_method methods, "
                                 "@register_noise_type noise types or @register_data_source data "
                                 "(method.imports=my_pkg.my_methods).")
    kwargs: dict = opt({}, "Extra constructor arguments for the method.")


@dataclass
class OptimConfig:
    name: str = opt("adam", "Optimizer, by timm.optim.create_optimizer_v2 name.")
    lr: float = opt(1e-3, "Initial learning rate.")
    weight_decay: float = opt(0.0, "Weight decay.")
    betas: list[float] = opt([0.9, 0.999], "Adam betas at the start of training.")
    momentum: float = opt(0.9, "Momentum, for optimizers that take one (sgd, rmsprop, ...).")
    eps: Optional[float] = opt(None, "Optimizer epsilon; default: the optimizer's.")
    kwargs: dict = opt({}, "Extra keyword arguments for timm's create_optimizer_v2 (e.g. {nesterov: true}, "
                           "{layer_decay: 0.75}).")
    schedule: Literal["paper", "piecewise", "constant", "cosine", "tanh", "poly"] = opt(
        "paper", "'paper': lr linearly to 0 and beta1 -> optim.beta1_decayed from "
                 "optim.decay_start; 'piecewise': optim.lr_steps, each for optim.step_epochs; 'cosine', "
                 "'tanh', 'poly': timm's scheduler (create_scheduler_v2, per epoch, with optim.warmup_epochs "
                 "and optim.min_lr).")
    warmup_epochs: int = opt(0, "timm schedules: epochs of linear warm-up from optim.warmup_lr.")
    warmup_lr: float = opt(1e-5, "timm schedules: the lr warm-up starts from.")
    min_lr: float = opt(0.0, "timm schedules: the lr at the end.")
    decay_start: int = opt(80, "Epoch (0-based) at which the paper schedule starts decaying.")
    beta1_decayed: float = opt(0.1, "Adam beta1 from optim.decay_start on (paper schedule).")
    lr_steps: list[float] = opt([], "Piecewise schedule: the lr of each block of epochs.")
    step_epochs: int = opt(5, "Piecewise schedule: epochs per lr step.")


@dataclass
class TrainConfig:
    epochs: int = opt(200, "Number of training epochs.")
    batch_size: int = opt(128, "Per-process training batch size (per step: times grad_accum_steps per update).")
    eval_batch_size: int = opt(512, "Per-process evaluation batch size.")
    seed: int = opt(1, "Seed of initialisation, shuffling and (by default) the noisy labels.")
    output_dir: str = opt("outputs/{data.name}_{method.name}",
                          "Where config.yaml, results.json, checkpoints and the exported models go; "
                          "{section.key} is replaced by the recipe's value ('/' by '_') and $VARS expanded "
                          "(e.g. $WANDB_RUN_ID).")
    resume: Optional[str] = opt(None, "Checkpoint folder to continue from, or 'auto' for the "
                                      "latest one in output_dir.")
    overwrite: bool = opt(False, "Allow writing into an output_dir that holds a finished run.")
    resume_allow_changes: bool = opt(False, "Resume even though the recipe changes what is trained (data, "
                                            "noise, seeds, model, method, batch size, optimiser); each "
                                            "change and its epoch go to results.json (recipe_changes).")
    keep_checkpoints: int = opt(2, "How many of the latest epoch checkpoints to keep (0: none).")
    max_steps_per_epoch: Optional[int] = opt(None, "Cap on steps per epoch (the official code "
                                                   "stops after 401).")
    fidelity: Literal["paper", "authors_code"] = opt(
        "paper", "'paper', or 'authors_code': default every detail to the authors' code "
                 "(docs/fidelity.md); keys set explicitly still win.")
    first_epoch: int = opt(0, "Epoch counter of the first trained epoch: 1 as the authors' code, which "
                              "only evaluates at 0 and trains train.epochs - 1 epochs, the lr/beta1 plan "
                              "indexed by that counter.")
    eval_drop_last: bool = opt(False, "Drop the test set's last partial batch, as the authors' code "
                                      "(896 of 1,000 images scored at batch 128).")
    log_interval: int = opt(50, "Steps between reading the running loss from the device (and "
                                "checking for NaN and stop signals).")
    grad_accum_steps: int = opt(1, "Batches whose gradients are summed into one optimizer update "
                                   "(Accelerate's accumulate()); the selection stays per batch.")
    clip_grad: Optional[float] = opt(None, "Clip the gradients of both networks before each update: the "
                                           "norm (or each value, train.clip_mode) to this bound.")
    clip_mode: Literal["norm", "value"] = opt("norm", "With train.clip_grad: clip the global 'norm' or each 'value'.")
    compile: bool = opt(False, "torch.compile both networks (inductor; the first steps of each shape "
                               "compile). Faster steps on some hardware, not bit-identical to eager "
                               "(docs/performance.md).")
    nan_policy: Literal["stop", "skip"] = opt(
        "stop", "On a NaN/inf loss: 'stop' with the last good checkpoint, or 'skip' the step (weights "
                "and optimizer state stay as they were; docs/troubleshooting.md).")
    export_models: bool = opt(True, "Export each network as a timm-loadable safetensors folder.")
    label_issue_epochs: int = opt(10, "Keep per-sample selection, loss and agreement over the last N "
                                      "epochs to find mislabeled samples, saved to "
                                      "label_issue_stats.safetensors (0: off).")
    export_label_issues: bool = opt(False, "At the end, write the label-issue dataset and report "
                                           "(as python -m jocor_plugin.label_issues OUTPUT_DIR).")


@dataclass
class LogConfig:
    tracker: str = opt("none", "Experiment tracker: 'none' or any Accelerate supports (wandb, tensorboard, "
                               "mlflow, comet_ml, aim, ...; W&B works offline with WANDB_MODE=offline).")
    project: str = opt("jocor_plugin", "Tracker project name.")
    run_name: Optional[str] = opt(None, "Tracker run name; default: the output_dir's name.")
    entity: Optional[str] = opt(None, "W&B entity (team or user); default: yours.")
    group: Optional[str] = opt(None, "W&B group of the run; default: the sweep's or grid's name when run "
                                     "by python -m jocor_plugin.sweep / reproduce ($JOCOR_GROUP).")
    tags: list[str] = opt([], "W&B tags of the run.")
    notes: Optional[str] = opt(None, "W&B notes of the run.")
    progress_bar: Union[bool, Literal["auto"]] = opt(
        "auto", "Progress bar of each epoch (main process): 'auto' only on a terminal, so logs written to "
                "a file hold one line per epoch.")
    quiet: bool = opt(False, "Print only warnings, errors and the final line (no per-epoch lines).")
    print_config: bool = opt(False, "Print the resolved recipe at the start (it is always written to "
                                    "OUTPUT_DIR/config.yaml).")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # recipe keys the recipe file or an override set (they win over train.fidelity's defaults)
    explicit_keys = frozenset()  # type: frozenset[str]  (no annotation: not a dataclass field)

    @property
    def forget_rate(self) -> float:
        """tau as the recipe gives it: ``method.forget_rate``, else what the noise implies (the mean
        flip rate of noise.transition_matrix, or ``NoiseType.default_forget_rate``: the noise rate,
        half of it for asymmetric, 0 for none). 'auto' is no recipe value but a run's estimate: a run
        carries it (``Trainer.forget_rate``, results.json's ``forget_rate``)."""
        if self.method.forget_rate == "auto":
            raise ConfigError("method.forget_rate=auto is estimated by the run before training; read the "
                              "run's tau from its results.json ('forget_rate').")
        if self.method.forget_rate is not None:
            return self.method.forget_rate
        if self.noise.type == "asymmetric" and self.noise.transition_matrix is not None:
            return mean_flip_rate(self.noise.transition_matrix)
        # none: 0, only methods that never use tau get here (validate makes it 'auto' for the others)
        return noise_type(self.noise.type).default_forget_rate(self.noise.rate)


def forget_rate_source(cfg: Config) -> str:
    """Where tau comes from, for the run's log line."""
    if cfg.method.forget_rate == "auto":
        why = ("; with noise.type=none tau is estimated unless method.forget_rate gives it"
               if cfg.noise.type == "none" else "")
        return f"estimated from the training data (method.forget_rate=auto{why})"
    if cfg.method.forget_rate is not None:
        return "given (method.forget_rate)"
    if cfg.noise.type == "none":
        return f"unused by {cfg.method.name}"
    if cfg.noise.type == "asymmetric":
        return ("the mean flip rate of noise.transition_matrix" if cfg.noise.transition_matrix is not None
                else "half of noise.rate (asymmetric noise)")
    return "noise.rate"


def mean_flip_rate(path: str) -> float:
    """1 - mean(diag T) of a transition-matrix file: the expected noise rate with balanced classes."""
    import numpy as np

    return float(1.0 - np.mean(np.diag(_load_matrix(path))))


def _load_matrix(path: str) -> Any:
    from ..methods.fcorrection import load_transition_matrix  # late: methods import this module

    return load_transition_matrix(path).numpy()


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


# ----------------------------------------------------------------------------- type checking

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{' | '.join(_type_name(a) for a in args)} | null"
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))


def _check(tp: Any, value: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a ConfigError naming key, value and type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(inner[0], value, key)
        for option in inner:  # e.g. float | 'auto': the first type the value fits
            try:
                return _check(option, value, key)
            except ConfigError:
                pass
        words = [w for a in inner if typing.get_origin(a) is Literal for w in typing.get_args(a)]
        raise ConfigError(f"{key}={value!r} is invalid; expected {_type_name(tp)}."
                          f"{did_you_mean(value, words) if isinstance(value, str) else ''}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of "
                              f"{', '.join(map(repr, allowed))}.{did_you_mean(value, allowed)}")
        return value
    if origin is list:
        if isinstance(value, str) and typing.get_args(tp)[0] is str:
            value = [value]  # a single module name etc.
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} must be a list ({_type_name(tp)}), e.g. [0.9, 0.999].")
        return [_check(typing.get_args(tp)[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} must be a mapping, e.g. {{drop_rate: 0.1}}.")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads 8e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. data.name=1234 stays the string the user typed
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} has type {type(value).__name__}; expected "
                          f"{_type_name(tp)}.")
    return value


def _section_fields(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def _set(cfg: Config, key: str, value: Any) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        if not name and section in SECTIONS:
            raise ConfigError(f"'{key}' names a whole section; set its keys, e.g. {section}.<key>=...")
        raise ConfigError(f"Unknown recipe section '{section}' in '{key}'; sections are "
                          f"{', '.join(SECTIONS)}.{did_you_mean(section, SECTIONS)}")
    hints = _section_fields(section)
    if name not in hints:
        full = [f"{section}.{k}" for k in hints]
        raise ConfigError(f"Unknown recipe key '{key}'.{did_you_mean(key, full)} Keys of [{section}]: "
                          f"{', '.join(hints)}.")
    setattr(getattr(cfg, section), name, _check(hints[name], value, key))
    cfg.explicit_keys = cfg.explicit_keys | {key}


# ----------------------------------------------------------------------------- loading

PATH_KEYS = ("data.path", "model.pretrained_file", "noise.transition_matrix", "method.transition_matrix",
             "train.output_dir", "train.resume")
UNSET_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")


def expand_path_variables(cfg: "Config") -> None:
    """``$VAR`` / ``${VAR}`` in the path keys replaced from the environment, at run time (a sweep
    agent sets $WANDB_RUN_ID for the run); one that is not set is an error (a path with a literal
    '$NAME' folder is not what anyone meant)."""
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not isinstance(value, str) or "$" not in value:
            continue
        expanded = os.path.expandvars(value)
        unset = UNSET_VARIABLE.search(expanded)
        if unset:
            raise ConfigError(f"{key}={value!r}: the environment variable {unset.group(1).strip('{}')} is not "
                              f"set; export it, or write the path out.")
        setattr(getattr(cfg, section), name, expanded)

def _parse_override(raw: str, tp: Any) -> Any:
    """Type a command-line value by the schema: strings stay strings, the rest is YAML."""
    if raw.strip().lower() in ("null", "none", "~") and type(None) in typing.get_args(tp):
        return None
    union = typing.get_origin(tp) in (Union, types.UnionType)  # list[str]'s args are no union's options
    inner = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
    if inner[0] is str or typing.get_origin(inner[0]) is Literal:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # the type check below reports it


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply ``section.key=value`` strings, typed by the schema."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ConfigError(f"Override '{item}' must look like section.key=value "
                              f"(e.g. train.epochs=3).")
        key = key.strip()
        section, _, name = key.partition(".")
        tp = _section_fields(section).get(name, str) if section in SECTIONS else str
        _set(cfg, key, _parse_override(raw, tp))
    return cfg


RECIPE_ARG = "recipe"  # recipe=PATH among the overrides: how a W&B sweep (key=value only) names the recipe


def split_recipe(overrides: typing.Sequence[str]) -> tuple[Optional[str], list[str]]:
    """``recipe=PATH`` items (the last one wins) and the other overrides."""
    recipes = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == RECIPE_ARG]
    return (recipes[-1] if recipes else None), [o for o in overrides if o.partition("=")[0].strip() != RECIPE_ARG]


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a YAML recipe (optional), apply overrides and validate; raise ConfigError if invalid.
    A ``recipe=PATH`` override names the recipe (and wins over ``path``): sweeps pass it so."""
    named, overrides = split_recipe(overrides)
    path = named or path
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Recipe file '{path}' does not exist; pass a YAML file such as "
                              f"recipes/mnist5k_sym50.yaml.")
        raw = read_yaml_mapping(path, ConfigError, label=f"Recipe '{path}'", not_mapping=f"Recipe '{path}' must be "
                                f"a mapping of sections ({', '.join(SECTIONS)}).")
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(f"Section '{section}' in '{path}' must be a mapping of keys."
                                  if section in SECTIONS else
                                  f"Unknown recipe section '{section}' in '{path}'; sections are "
                                  f"{', '.join(SECTIONS)}.{did_you_mean(section, SECTIONS)}")
            for name, value in values.items():
                _set(cfg, f"{section}.{name}", value)
    apply_overrides(cfg, overrides)
    apply_fidelity(cfg)
    validate(cfg)
    return cfg


TIMM_SCHEDULES = ("cosine", "tanh", "poly")  # optim.schedule values that go to timm's scheduler factory


def apply_fidelity(cfg: Config) -> dict[str, Any]:
    """Set the defaults of ``train.fidelity`` on the keys not set explicitly; return them."""
    chosen = fidelity_defaults(cfg, set(cfg.explicit_keys))
    for key, value in chosen.items():
        section, _, name = key.partition(".")
        setattr(getattr(cfg, section), name, _check(_section_fields(section)[name], value, key))
    return chosen

def _one_of(key: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}."
                          f"{did_you_mean(value, allowed)}")


def trackers() -> list[str]:
    """'none' and every tracker Accelerate can log to (passed through to ``log_with``)."""
    from accelerate.utils import LoggerType

    return ["none", *(t.value for t in LoggerType if t.value != "all")]


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid; {allowed}.")


PACKAGED_DATASETS = ("mnist5k", "digits")  # built-ins whose data ships in a package (data.path replaces it)
PLACEHOLDER = re.compile(r"(?<!\$)\{(\w+)\.(\w+)\}")  # {method.name}, not ${VAR}


def _data_name(data: DataConfig) -> str:
    """The dataset's name: data.path's folder or file when a packaged built-in's name would
    otherwise title the user's own data."""
    if data.path is None or data.name not in PACKAGED_DATASETS:
        return data.name
    path = Path(data.path.rstrip("/\\")).expanduser()
    if any(c in path.name for c in "*?["):  # a glob of parquet files: the folder holding them
        path = path.parent
    return (path.stem if path.suffix else path.name) or data.name


def fill_placeholders(cfg: Config, text: str) -> str:
    """``{section.key}`` in ``text`` replaced by the recipe's value ('/' -> '_', e.g. a hub id)."""
    def value(match: re.Match) -> str:
        section, key = match.groups()
        if section not in SECTIONS or key not in _section_fields(section):
            raise ConfigError(f"train.output_dir={text!r}: {{{section}.{key}}} is not a recipe key.")
        return str(getattr(getattr(cfg, section), key)).replace("/", "_").replace("\\", "_")
    return PLACEHOLDER.sub(value, text)


def _check_method_arguments(method: MethodConfig, cls: type) -> None:
    """The method's constructor arguments as the run will build them (``Method.constructor_arguments``):
    method.kwargs it doesn't take (one line with the close ones), a kwarg whose type isn't the
    constructor's annotation, and the method's own ranges (``Method.check_arguments``)."""
    import inspect

    from ..methods import MethodArgumentError

    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [k for k in params if k != "self"]
        unknown = [k for k in method.kwargs if k not in accepted]
        if unknown:
            hints = " ".join(did_you_mean(k, accepted, n=2).strip() for k in unknown).strip()
            raise ConfigError(f"method.kwargs: method {method.name!r} takes no argument "
                              f"{', '.join(map(repr, unknown))}.{' ' + hints if hints else ''} It takes: "
                              f"{', '.join(accepted) or 'none'}.")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # a plugin's annotation that doesn't resolve: its types go unchecked
        hints = {}
    for key, value in method.kwargs.items():
        if key in hints:
            try:
                _check(hints[key], value, f"method.kwargs.{key}")
            except TypeError:  # an annotation the schema's checker doesn't know (e.g. a Protocol)
                pass
    arguments = cls.constructor_arguments(method)
    try:
        cls.check_arguments(cls.with_defaults(arguments))
    except MethodArgumentError as err:
        key = f"method.kwargs.{err.argument}" if err.argument in method.kwargs else f"method.{err.argument}"
        raise ConfigError(f"{key}={err.value!r} is invalid for method {method.name!r}; {err.allowed}.") from None
    except (ValueError, TypeError) as err:  # a plugin's own check, as plain exceptions
        raise ConfigError(f"method.kwargs: method {method.name!r} refuses its arguments: "
                          f"{' '.join(str(err).split())}") from None


def validate(cfg: Config) -> None:
    """Range checks that types alone can't express; fills in the defaults that depend on other keys
    (data.name from data.path, tau with noise.type=none, {section.key} in train.output_dir)."""
    from ..methods import list_methods, method_class  # late import: methods register themselves on import

    _require(0.0 <= cfg.noise.rate < 1.0, "noise.rate", cfg.noise.rate, "it must be in [0, 1)")
    if cfg.method.forget_rate not in (None, "auto"):
        _require(0.0 <= cfg.method.forget_rate < 1.0, "method.forget_rate", cfg.method.forget_rate,
                 "it must be in [0, 1): a forget rate of 1 would drop every sample")
    _require(0.0 <= cfg.method.co_lambda <= 1.0, "method.co_lambda", cfg.method.co_lambda,
             "it must be in [0, 1]")
    _require(cfg.method.num_gradual >= 1, "method.num_gradual", cfg.method.num_gradual, "use >= 1")
    _require(cfg.method.exponent > 0, "method.exponent", cfg.method.exponent, "use > 0")
    for module in cfg.method.imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"method.imports: cannot import {module!r} ({err}); is it installed or on "
                              f"PYTHONPATH?") from None
    _one_of("noise.type", cfg.noise.type, list(NOISE_TYPES))
    _one_of("log.tracker", cfg.log.tracker, trackers())
    methods = list_methods()
    if cfg.method.name not in methods:
        raise ConfigError(f"method.name={cfg.method.name!r} is not a registered method; choose one of "
                          f"{', '.join(methods)}.{did_you_mean(cfg.method.name, methods)}")
    from timm.optim import list_optimizers

    optimizers = list_optimizers()
    if cfg.optim.name.lower().removeprefix("lookahead_") not in optimizers:  # timm's lookahead_ wrapper
        raise ConfigError(f"optim.name={cfg.optim.name!r} is not one of timm's optimizers.{did_you_mean(cfg.optim.name.lower(), optimizers, n=3)}"
                          f" List them with: python -c \"import timm.optim; print(timm.optim.list_optimizers())\"")
    _check_method_arguments(cfg.method, method_class(cfg.method.name))
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "use a positive learning rate")
    _require(len(cfg.optim.betas) == 2, "optim.betas", cfg.optim.betas, "give two values [beta1, beta2]")
    _require(cfg.optim.schedule != "piecewise" or bool(cfg.optim.lr_steps), "optim.lr_steps",
             cfg.optim.lr_steps, "the piecewise schedule needs at least one lr")
    _require(cfg.optim.step_epochs >= 1, "optim.step_epochs", cfg.optim.step_epochs, "use >= 1")
    _require(cfg.optim.warmup_epochs >= 0, "optim.warmup_epochs", cfg.optim.warmup_epochs, "use >= 0")
    _require(cfg.optim.warmup_epochs == 0 or cfg.optim.schedule in TIMM_SCHEDULES, "optim.warmup_epochs",
             cfg.optim.warmup_epochs, f"warm-up comes with timm's schedules: set optim.schedule to one of "
                                      f"{', '.join(TIMM_SCHEDULES)}")
    if cfg.optim.eps is not None:
        _require(cfg.optim.eps > 0, "optim.eps", cfg.optim.eps, "use > 0")
    _require(cfg.train.grad_accum_steps >= 1, "train.grad_accum_steps", cfg.train.grad_accum_steps, "use >= 1")
    if cfg.train.clip_grad is not None:
        _require(cfg.train.clip_grad > 0, "train.clip_grad", cfg.train.clip_grad, "use > 0 (or null: no clipping)")
    _require(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "use >= 1")
    _require(0 <= cfg.train.first_epoch < cfg.train.epochs, "train.first_epoch", cfg.train.first_epoch,
             f"it must be in [0, train.epochs={cfg.train.epochs}) (at least one trained epoch)")
    _require(cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size, "use >= 1")
    _require(cfg.train.eval_batch_size >= 1, "train.eval_batch_size", cfg.train.eval_batch_size,
             "use >= 1")
    _require(cfg.train.keep_checkpoints >= 0, "train.keep_checkpoints", cfg.train.keep_checkpoints,
             "use >= 0")
    _require(cfg.train.log_interval >= 1, "train.log_interval", cfg.train.log_interval, "use >= 1")
    _require(cfg.train.label_issue_epochs >= 0, "train.label_issue_epochs", cfg.train.label_issue_epochs,
             "use >= 0 (0 turns the statistics off)")
    _require(not cfg.train.export_label_issues or cfg.train.label_issue_epochs >= 1,
             "train.export_label_issues", True, "it needs train.label_issue_epochs >= 1")
    _require(0.0 < cfg.data.test_fraction < 1.0, "data.test_fraction", cfg.data.test_fraction,
             "it must be in (0, 1)")
    _require(0.0 <= cfg.data.val_split < 1.0, "data.val_split", cfg.data.val_split,
             "it must be in [0, 1) (0 turns noisy validation off)")
    if cfg.data.crop_pct is not None:
        _require(0.0 < cfg.data.crop_pct <= 1.0, "data.crop_pct", cfg.data.crop_pct, "it must be in (0, 1]")
    _require(not (cfg.data.train_transform == "paper" and cfg.data.in_memory), "data.in_memory", True,
             "data.train_transform=paper crops from files as streamed; set data.in_memory=false")
    if cfg.data.num_classes is not None:
        _require(cfg.data.num_classes >= 2, "data.num_classes", cfg.data.num_classes, "use >= 2")
    if cfg.noise.transition_matrix is not None:
        _require(cfg.noise.type == "asymmetric", "noise.transition_matrix", cfg.noise.transition_matrix,
                 "a class map is for noise.type=asymmetric")
        try:
            _load_matrix(cfg.noise.transition_matrix)
        except UserError as err:
            raise ConfigError(f"noise.transition_matrix={cfg.noise.transition_matrix!r}: {err}") from None
    cfg.data.name = _data_name(cfg.data)
    if cfg.noise.type == "none":
        cfg.noise.rate = 0.0  # nothing is injected: config.yaml and results.json say so
    if cfg.noise.type == "none" and cfg.method.forget_rate is None and method_class(cfg.method.name).uses_forget_rate:
        # labels already noisy at an unknown rate: tau 0 would train on everything, so estimate it
        cfg.method.forget_rate = "auto"
    cfg.train.output_dir = fill_placeholders(cfg, cfg.train.output_dir)


# ----------------------------------------------------------------------------- reporting

def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(cfg)


def describe_config(markdown: bool = True) -> str:
    """Every key with its type, default and meaning, straight from the schema."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{section}.{f.name}", _type_name(hints[f.name]),
                         yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n...")
                         .removesuffix("..."),
                         f.metadata["help"]))
    if markdown:
        lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {t.replace('|', chr(92) + '|')} | `{d}` | {h} |" for k, t, d, h in rows]
        return "\n".join(lines)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {t}  (default: {d})\n{'':<{width}}  {h}" for k, t, d, h in rows)


REFERENCE_BLOCK = re.compile(r"(<!-- recipe-reference:start -->\n).*?(<!-- recipe-reference:end -->)", re.S)


def with_reference_table(markdown_text: str) -> str:
    """``markdown_text`` with the block between the recipe-reference markers regenerated, so the
    reference in docs/recipes.md is the schema's own listing (``make docs``)."""
    return REFERENCE_BLOCK.sub(lambda m: m.group(1) + describe_config(markdown=True) + "\n" + m.group(2),
                               markdown_text)
