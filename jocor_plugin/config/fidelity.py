"""``train.fidelity``: follow the paper (default) or every detail of the authors' JoCoR code.

``authors_code`` only changes defaults: each recipe key below takes the authors' value unless the
recipe or an override sets it, so one key can be toggled back to measure what it does. The table
of differences, with the line of the authors' code each comes from, is docs/fidelity.md.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

__all__ = ["AUTHORS_CODE_DEFAULTS", "fidelity_defaults", "authors_code_caveat"]

# key -> the authors' value, or a function of the config for values that follow another key
# (returning KEEP where the authors' code has no other value than the recipe's)
Default = Union[Any, Callable[[Any], Any]]
KEEP = object()


def _decay_start(cfg: Any) -> Any:
    """main.py:109: CIFAR-100 decays from epoch 100 whatever --epoch_decay_start says; the rest from
    the recipe's (80, as the paper)."""
    name = str(cfg.data.name or "").lower().replace("-", "").replace("_", "")
    return 100 if "cifar100" in name else KEEP

AUTHORS_CODE_DEFAULTS: dict[str, Default] = {
    "train.first_epoch": 1,                  # main.py: epoch 0 only evaluates, training is 1..N-1
    "method.forget_schedule": "official",    # jocor.py: linspace(0, tau^c, T_k)[epoch]
    "train.max_steps_per_epoch": 401,        # jocor.py: `if i > num_iter_per_epoch: break`, 400 + 1
    "train.eval_batch_size": lambda cfg: cfg.train.batch_size,  # main.py: one batch_size, 128
    "train.eval_drop_last": True,            # main.py: test_loader(drop_last=True)
    "noise.sampler": "authors",              # utils.py multiclass_noisify: one RandomState, row by row
    "noise.seed": 0,                         # mnist.py: random_state=0 whatever --seed
    "data.split": "permutation",             # the comparison's split of a data set without a test split
    "optim.decay_start": _decay_start,       # main.py:109: 100 on CIFAR-100
}


def fidelity_defaults(cfg: Any, explicit: set[str]) -> dict[str, Any]:
    """The (key, value) pairs ``cfg.train.fidelity`` sets: its defaults minus the keys in
    ``explicit`` (set by the recipe or an override, which win)."""
    if cfg.train.fidelity != "authors_code":
        return {}
    chosen = {key: value(cfg) if callable(value) else value
              for key, value in AUTHORS_CODE_DEFAULTS.items() if key not in explicit}
    return {key: value for key, value in chosen.items() if value is not KEEP}


def authors_code_caveat(cfg: Any, owns_epochs: bool) -> Optional[str]:
    """What ``authors_code`` can't honour for the run's method, said once when the run starts (None:
    nothing). Its details are those of the JoCoR authors' training loop; a method that trains its own
    epochs (e.g. DivideMix) keeps only the noise, split and test details, while train.first_epoch
    still takes an epoch from it. (A test split smaller than one test batch, which
    ``train.eval_drop_last`` would drop whole, is refused by the trainer once the data is known.)"""
    if cfg.train.fidelity != "authors_code" or not owns_epochs:
        return None
    first, epochs = cfg.train.first_epoch, cfg.train.epochs
    shortened = (f", and train.first_epoch={first} leaves it {epochs - first} of train.epochs={epochs} epochs (its "
                 f"own schedule, e.g. a warm-up, counts from the first of them)") if first else ""
    return (f"train.fidelity=authors_code reproduces the training loop of the JoCoR authors' code "
            f"(docs/fidelity.md); {cfg.method.name} trains its own epochs, so only the noise, data split and test "
            f"details apply to it{shortened}. Use train.fidelity=paper to train {cfg.method.name} as its paper does.")
