"""Loading a recipe: YAML files plus dotted ``key=value`` overrides, each value checked against the
schema's type (``schema``), then validated before any work: ranges, registered names, the method's
own arguments, and the defaults that depend on other keys.

About 400 lines in one module: every rule a recipe is checked by is here, in one ``validate``, so
what a run refuses (and the one line it says) is read in one place.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from ..core.cli import read_yaml_mapping
from ..core.errors import UserError, did_you_mean
from ..noise.transition_file import load_transition_matrix
from ..noise.types import NOISE_TYPES
from .fidelity import fidelity_defaults
from .schema import SECTIONS, Config, ConfigError, DataConfig, MethodConfig, type_name

__all__ = ["load_config", "apply_overrides", "apply_fidelity", "config_to_dict", "expand_path_variables", "validate"]


# ----------------------------------------------------------------------------- type checking

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
        raise ConfigError(f"{key}={value!r} is invalid; expected {type_name(tp)}."
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
            raise ConfigError(f"{key}={value!r} must be a list ({type_name(tp)}), e.g. [0.9, 0.999].")
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
                          f"{type_name(tp)}.")
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
    if section == "method" and name not in hints and name.isidentifier():
        # a method's own argument (method.lambda_u=0): kept in method.kwargs and checked against the
        # method's constructor by validate, once the method (maybe set later) is known
        cfg.method.kwargs = {**cfg.method.kwargs, name: value}
        cfg.explicit_keys = cfg.explicit_keys | {key}
        return
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
        # a method's own argument is typed by the method's constructor (validate), so parsed as YAML here
        tp = _section_fields(section).get(name, Any if section == "method" else str) if section in SECTIONS else str
        _set(cfg, key, _parse_override(raw, tp))
        cfg.command_line_keys = cfg.command_line_keys | {key}
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
    chosen = fidelity_defaults(cfg, set(cfg.explicit_keys), set(cfg.command_line_keys))
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
    a ``method.<argument>`` it doesn't take (one line with the close ones), one whose type isn't the
    constructor's annotation, and the method's own ranges (``Method.check_arguments``). Its own
    arguments are kept in ``method.kwargs`` (where older recipes wrote them, which still works)."""
    import inspect

    from ..methods import MethodArgumentError

    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [k for k in params if k != "self"]
        unknown = [k for k in method.kwargs if k not in accepted]
        if unknown:
            shared = [f.name for f in dataclasses.fields(MethodConfig) if f.name != "kwargs"]  # typos of these too
            candidates = list(dict.fromkeys(accepted + shared))
            close = [c for k in unknown for c in difflib.get_close_matches(k, candidates, n=2)]
            hints = f"Did you mean {', '.join(repr(f'method.{c}') for c in dict.fromkeys(close))}?" if close else ""
            raise ConfigError(f"method.{unknown[0]}: method {method.name!r} takes no argument "
                              f"{', '.join(map(repr, unknown))}.{' ' + hints if hints else ''} Its arguments: "
                              f"{', '.join(accepted) or 'none'} (python -m jocor_plugin.run --list-methods).")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # a plugin's annotation that doesn't resolve: its types go unchecked
        hints = {}
    for key, value in method.kwargs.items():
        if key in hints:
            try:
                _check(hints[key], value, f"method.{key}")
            except TypeError:  # an annotation the schema's checker doesn't know (e.g. a Protocol)
                pass
    arguments = cls.constructor_arguments(method)
    try:
        cls.check_arguments(cls.with_defaults(arguments))
    except MethodArgumentError as err:
        raise ConfigError(f"method.{err.argument}={err.value!r} is invalid for method {method.name!r}; "
                          f"{err.allowed}.") from None
    except (ValueError, TypeError) as err:  # a plugin's own check, as plain exceptions
        raise ConfigError(f"method {method.name!r} refuses its arguments: "
                          f"{' '.join(str(err).split())}") from None


# the pip package of each tracker Accelerate supports (its LoggerType value is the import name)
TRACKER_PACKAGES = {"comet_ml": "comet-ml"}
TRACKER_EXTRAS = {"tensorboard": "jocor_plugin[tensorboard]"}  # pyproject.toml's optional dependencies


def _check_tracker_installed(tracker: str) -> None:
    """Accelerate drops a tracker whose package is missing with a debug line only: the run would
    log nothing and exit 0. Refuse it before any work instead."""
    if tracker == "none":
        return
    import accelerate.tracking
    from accelerate.utils import LoggerType

    if LoggerType(tracker) in accelerate.tracking.get_available_trackers():
        return
    package = TRACKER_PACKAGES.get(tracker, tracker)
    extra = f" (or pip install '{TRACKER_EXTRAS[tracker]}')" if tracker in TRACKER_EXTRAS else ""
    raise ConfigError(f"log.tracker={tracker!r}: the {package} package is not installed, so nothing would be "
                      f"logged; pip install {package}{extra}, or set log.tracker=none.")


def _check_model_name(name: str) -> None:
    """A model.name timm resolves from its own registry must be in it, checked before any data is
    loaded. Names with a source (hf-hub:..., local-dir:...) are not timm's to list; a pretrained
    tag (resnet18.a1_in1k) is checked by its architecture, as timm.is_model does."""
    import timm

    from ..models import paper_nets  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)

    if ":" in name or timm.is_model(name):
        return
    arch = name.split(".", 1)[0]
    raise ConfigError(f"model.name={name!r} is not a timm model.{did_you_mean(arch, timm.list_models(), n=3)} "
                      f"List them with: python -c \"import timm; print(timm.list_models('*{arch[:4]}*'))\"")


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
    _check_tracker_installed(cfg.log.tracker)
    _check_model_name(cfg.model.name)  # after method.imports: a plugin may register its own timm models
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
            load_transition_matrix(cfg.noise.transition_matrix)
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


