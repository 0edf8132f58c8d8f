"""The recipe's schema: one dataclass per section (``data``, ``noise``, ``model``, ``method``,
``optim``, ``train``, ``log``); every key is a field whose ``help`` metadata is the single source of
the recipe reference (``python -m jocor_plugin.run --help-config``, docs/recipes.md).
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from ..core.errors import UserError
from ..noise.transition_file import load_transition_matrix
from ..noise.types import noise_type

__all__ = ["Config", "ConfigError", "DataConfig", "NoiseConfig", "ModelConfig", "MethodConfig", "OptimConfig",
           "TrainConfig", "LogConfig", "SECTIONS", "forget_rate_source", "mean_flip_rate", "type_name"]


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
                                                 "the noise: F-correction's T (default: train.epochs); for "
                                                 "forget_rate=auto the most epochs (default: 30), its stage "
                                                 "stopping once its held-out noisy accuracy stops rising.")
    imports: list[str] = opt([], "Modules to import first: your own @register_method methods, "
                                 "@register_noise_type noise types or @register_data_source data "
                                 "(method.imports=my_pkg.my_methods).")
    kwargs: dict = opt({}, "The method's own constructor arguments; write each as method.<argument>=value "
                               "(e.g. method.lambda_u=0; --list-methods lists them), which lands here.")


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
                                      "epochs (only those are gathered) to find mislabeled samples, saved to "
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
    # those of them the command line set (a method's own authors_code preset yields only to these)
    command_line_keys = frozenset()  # type: frozenset[str]

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
    return load_transition_matrix(path).numpy()


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{' | '.join(type_name(a) for a in args)} | null"
    if origin is list:
        return f"list[{type_name(typing.get_args(tp)[0])}]"
    return getattr(tp, "__name__", str(tp))
