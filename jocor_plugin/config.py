"""Typed recipes: YAML files plus dotted ``key=value`` overrides, validated before any work.

A recipe has one section per concern (``data``, ``noise``, ``model``, ``method``, ``optim``,
``train``, ``log``); every key is a field of the dataclasses below, whose ``help`` metadata is
the single source of the recipe reference (``python -m jocor_plugin.run --help-config``).
"""
from __future__ import annotations

import dataclasses
import importlib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import UserError, did_you_mean

__all__ = [
    "Config", "ConfigError", "DataConfig", "NoiseConfig", "ModelConfig", "MethodConfig",
    "OptimConfig", "TrainConfig", "LogConfig", "load_config", "apply_overrides", "config_to_dict",
    "describe_config", "with_reference_table", "SECTIONS",
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
                               "data.path or Debian's dataset-fashion-mnist) or a Hugging Face Hub "
                               "dataset id (e.g. uoft-cs/cifar10).")
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
    split_seed: int = opt(0, "Seed of the stratified train/test split (fixed across training seeds).")
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
    in_memory: Optional[bool] = opt(None, "Hold the decoded images as one tensor on the device "
                                          "(default: yes for small datasets).")
    num_workers: int = opt(2, "DataLoader workers for streamed (not in-memory) datasets.")


@dataclass
class NoiseConfig:
    type: Literal["none", "symmetric", "pairflip", "asymmetric"] = opt(
        "symmetric", "Injected label noise; 'none' for data whose labels are already noisy.")
    rate: float = opt(0.5, "Noise rate r in [0, 1).")
    seed: Optional[int] = opt(None, "Seed of the noisy labels; default: train.seed.")
    dataset: Optional[str] = opt(None, "Class map for asymmetric noise (mnist, cifar10, cifar100); "
                                       "default: guessed from data.name.")
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
        None, "Final forget rate tau in [0, 1); default: noise.rate (half of it for asymmetric noise); "
              "'auto': the noise rate estimated before training (docs/noise_estimation.md).")
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
    imports: list[str] = opt([], "Modules to import first, e.g. your own @register_method methods "
                                 "(method.imports=my_pkg.my_methods).")
    kwargs: dict = opt({}, "Extra constructor arguments for the method.")


@dataclass
class OptimConfig:
    name: str = opt("adam", "Optimizer, by timm.optim.create_optimizer_v2 name.")
    lr: float = opt(1e-3, "Initial learning rate.")
    weight_decay: float = opt(0.0, "Weight decay.")
    betas: list[float] = opt([0.9, 0.999], "Adam betas at the start of training.")
    schedule: Literal["paper", "piecewise", "constant"] = opt(
        "paper", "'paper': lr linearly to 0 and beta1 -> optim.beta1_decayed from "
                 "optim.decay_start; 'piecewise': optim.lr_steps, each for optim.step_epochs.")
    decay_start: int = opt(80, "Epoch (0-based) at which the paper schedule starts decaying.")
    beta1_decayed: float = opt(0.1, "Adam beta1 from optim.decay_start on (paper schedule).")
    lr_steps: list[float] = opt([], "Piecewise schedule: the lr of each block of epochs.")
    step_epochs: int = opt(5, "Piecewise schedule: epochs per lr step.")


@dataclass
class TrainConfig:
    epochs: int = opt(200, "Number of training epochs.")
    batch_size: int = opt(128, "Per-process training batch size.")
    eval_batch_size: int = opt(512, "Per-process evaluation batch size.")
    seed: int = opt(1, "Seed of initialisation, shuffling and (by default) the noisy labels.")
    output_dir: str = opt("outputs/run", "Where config.yaml, results.json, checkpoints and the "
                                         "exported models go ($VARS expanded, e.g. $WANDB_RUN_ID).")
    resume: Optional[str] = opt(None, "Checkpoint folder to continue from, or 'auto' for the "
                                      "latest one in output_dir.")
    overwrite: bool = opt(False, "Allow writing into an output_dir that holds a finished run.")
    keep_checkpoints: int = opt(2, "How many of the latest epoch checkpoints to keep (0: none).")
    max_steps_per_epoch: Optional[int] = opt(None, "Cap on steps per epoch (the official code "
                                                   "uses 400).")
    log_interval: int = opt(50, "Steps between reading the running loss from the device (and "
                                "checking for NaN and stop signals).")
    nan_policy: Literal["stop", "skip"] = opt(
        "stop", "On a NaN/inf loss: 'stop' with the last good checkpoint, or 'skip' the step's "
                "gradient.")
    export_models: bool = opt(True, "Export each network as a timm-loadable safetensors folder.")
    label_issue_epochs: int = opt(10, "Keep per-sample selection, loss and agreement over the last N "
                                      "epochs to find mislabeled samples, saved to "
                                      "label_issue_stats.safetensors (0: off).")
    export_label_issues: bool = opt(False, "At the end, write the label-issue dataset and report "
                                           "(as python -m jocor_plugin.label_issues OUTPUT_DIR).")


@dataclass
class LogConfig:
    tracker: Literal["none", "wandb", "tensorboard"] = opt(
        "none", "Experiment tracker (W&B works offline with WANDB_MODE=offline).")
    project: str = opt("jocor_plugin", "Tracker project name.")
    run_name: Optional[str] = opt(None, "Tracker run name; default: the output_dir's name.")
    progress_bar: bool = opt(True, "Show a progress bar (main process only).")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # set by the run once method.forget_rate=auto is estimated (a plain attribute, not a recipe key)
    estimated_forget_rate = None

    @property
    def forget_rate(self) -> float:
        """tau: the recipe's value (or its estimate for 'auto'), else the injected noise rate (half
        of it for asymmetric)."""
        if self.method.forget_rate == "auto":
            if self.estimated_forget_rate is None:
                raise UserError("method.forget_rate=auto has not been estimated yet; the run estimates "
                                "it before training (jocor_plugin.estimate.estimate_forget_rate).")
            return self.estimated_forget_rate
        if self.method.forget_rate is not None:
            return self.method.forget_rate
        if self.noise.type == "none":
            return 0.0
        return self.noise.rate / 2 if self.noise.type == "asymmetric" else self.noise.rate


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


# ----------------------------------------------------------------------------- loading

def _parse_override(raw: str, tp: Any) -> Any:
    """Type a command-line value by the schema: strings stay strings, the rest is YAML."""
    if raw.strip().lower() in ("null", "none", "~") and type(None) in typing.get_args(tp):
        return None
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
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


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a YAML recipe (optional), apply overrides and validate; raise ConfigError if invalid."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Recipe file '{path}' does not exist; pass a YAML file such as "
                              f"recipes/mnist5k_sym50.yaml.")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"Recipe '{path}' is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"Recipe '{path}' must be a mapping of sections ({', '.join(SECTIONS)}).")
        for section, values in raw.items():
            if not isinstance(values, dict):
                raise ConfigError(f"Section '{section}' in '{path}' must be a mapping of keys."
                                  if section in SECTIONS else
                                  f"Unknown recipe section '{section}' in '{path}'; sections are "
                                  f"{', '.join(SECTIONS)}.{did_you_mean(section, SECTIONS)}")
            for name, value in values.items():
                _set(cfg, f"{section}.{name}", value)
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid; {allowed}.")


def validate(cfg: Config) -> None:
    """Range checks that types alone can't express."""
    from .methods import list_methods  # late import: methods register themselves on import

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
    methods = list_methods()
    if cfg.method.name not in methods:
        raise ConfigError(f"method.name={cfg.method.name!r} is not a registered method; choose one of "
                          f"{', '.join(methods)}.{did_you_mean(cfg.method.name, methods)}")
    _require(cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "use a positive learning rate")
    _require(len(cfg.optim.betas) == 2, "optim.betas", cfg.optim.betas, "give two values [beta1, beta2]")
    _require(cfg.optim.schedule != "piecewise" or bool(cfg.optim.lr_steps), "optim.lr_steps",
             cfg.optim.lr_steps, "the piecewise schedule needs at least one lr")
    _require(cfg.optim.step_epochs >= 1, "optim.step_epochs", cfg.optim.step_epochs, "use >= 1")
    _require(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "use >= 1")
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
    README's reference is the schema's own listing (``make docs``)."""
    return REFERENCE_BLOCK.sub(lambda m: m.group(1) + describe_config(markdown=True) + "\n" + m.group(2),
                               markdown_text)
