"""``train.fidelity``: follow the paper (default) or every detail of the authors' code.

``authors_code`` only changes defaults: each recipe key below takes the authors' value unless the
recipe or an override sets it, so one key can be toggled back to measure what it does. Whose code:
the run's method's, ``Method.authors_code_defaults`` (DivideMix: its ``Train_CIFAR.py``), or when a
method has none, the JoCoR authors' (``AUTHORS_CODE_DEFAULTS``: JoCoR and the baselines of its
paper). The tables of differences, with the line of the authors' code each comes from, are in
docs/fidelity.md.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

__all__ = ["AUTHORS_CODE_DEFAULTS", "KEEP", "authors_code_table", "fidelity_defaults", "authors_code_caveat"]

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


def authors_code_table(cfg: Any) -> tuple[dict[str, Default], bool]:
    """(the ``authors_code`` table of the run's method, whether it is the method's own): its
    ``authors_code_defaults`` when it has them, else the JoCoR authors' ``AUTHORS_CODE_DEFAULTS``
    (also for a method name that isn't registered: the recipe check reports that)."""
    from ..methods import method_class

    try:
        own = getattr(method_class(cfg.method.name), "authors_code_defaults", None) or {}
    except KeyError:
        own = {}
    return (dict(own), True) if own else (AUTHORS_CODE_DEFAULTS, False)


DICT_KEYS = ("method.kwargs", "optim.kwargs", "model.kwargs")  # "<one of these>.<name>": one entry of the dict


def _split(key: str) -> tuple[str, str, Optional[str]]:
    """(section, name, entry): ``method.kwargs.warmup_epochs`` -> ("method", "kwargs", "warmup_epochs"),
    ``optim.lr`` -> ("optim", "lr", None)."""
    parent, _, entry = key.rpartition(".")
    if parent in DICT_KEYS:
        section, _, name = parent.partition(".")
        return section, name, entry
    section, _, name = key.partition(".")
    return section, name, None


def _assign(cfg: Any, key: str, value: Any) -> None:
    section, name, entry = _split(key)
    holder = getattr(cfg, section)
    setattr(holder, name, value if entry is None else {**getattr(holder, name), entry: value})


def _evaluate(cfg: Any, table: dict[str, Default], skip: Callable[[str], bool]) -> dict[str, Any]:
    """The table's values in its order, each function seeing the config with the values before it
    applied (so an entry can hold only where an earlier one did: DivideMix's lr only with its
    optimizer); skipped keys and KEEP / None values leave the config's value."""
    view, chosen = copy.deepcopy(cfg), {}
    for key, value in table.items():
        if skip(key):
            continue
        value = value(view) if callable(value) else value
        if value is KEEP or value is None:
            continue
        chosen[key] = value
        _assign(view, key, value)
    return chosen


def fidelity_defaults(cfg: Any, explicit: set[str], command_line: Optional[set[str]] = None) -> dict[str, Any]:
    """The (key, value) pairs ``cfg.train.fidelity`` sets: its defaults minus the keys in
    ``explicit`` (set by the recipe or an override, which win). ``<dict key>.<name>`` entries of a
    table (e.g. ``method.kwargs.warmup_epochs``) come back merged into the whole dict
    (``method.kwargs``), each entry unless the recipe's dict already has it.

    ``command_line``: when the caller knows which of ``explicit`` came from the command line, a
    method's own table (not the JoCoR authors', whose keys recipes leave out) yields only to those:
    a recipe written for another method (``recipes/cifar10.yaml`` is JoCoR's paper set-up) then
    doesn't keep its optimizer, model and epochs under ``method.name=dividemix
    train.fidelity=authors_code``; ``recipe.apply_fidelity`` passes the command line's keys. None:
    every explicit key wins."""
    if cfg.train.fidelity != "authors_code":
        return {}
    table, own = authors_code_table(cfg)
    winning = command_line if own and command_line is not None else explicit

    def skip(key: str) -> bool:
        section, name, entry = _split(key)
        if entry is not None:  # one entry of a dict: it yields to the same entry in the recipe's dict
            return entry in getattr(getattr(cfg, section), name)
        return key in winning

    chosen: dict[str, Any] = {}
    for key, value in _evaluate(cfg, table, skip).items():
        section, name, entry = _split(key)
        if entry is None:
            chosen[key] = value
        else:
            whole = f"{section}.{name}"
            chosen[whole] = {**chosen.get(whole, getattr(getattr(cfg, section), name)), entry: value}
    return chosen


def _current(cfg: Any, key: str) -> Any:
    section, name, entry = _split(key)
    value = getattr(getattr(cfg, section), name)
    return value if entry is None else value.get(entry, KEEP)


def authors_code_caveat(cfg: Any, owns_epochs: bool) -> Optional[str]:
    """What ``authors_code`` did and can't honour for the run's method, said once when the run
    starts (None: nothing).

    A method with a table of its own (DivideMix) is told which of its authors' values the run has
    and which keys the recipe or command line set otherwise (they win), or that its authors' code
    sets nothing for this data. The JoCoR table's details are those of the JoCoR authors' training
    loop: a method without a table of its own that trains its own epochs keeps only the noise,
    split and test details of it, while train.first_epoch still takes an epoch from it. (A test
    split smaller than one test batch, which ``train.eval_drop_last`` would drop whole, is refused
    by the trainer once the data is known.)"""
    if cfg.train.fidelity != "authors_code":
        return None
    table, own = authors_code_table(cfg)
    name = cfg.method.name
    if own:
        theirs = _evaluate(cfg, table, skip=lambda key: False)
        if not theirs:
            return (f"train.fidelity=authors_code: the authors' code of {name} sets nothing for data.name="
                    f"{cfg.data.name} (docs/fidelity.md), so the run is the recipe's.")
        kept = [f"{key}={_current(cfg, key)!r} (theirs: {value!r})" for key, value in theirs.items()
                if _current(cfg, key) != value]
        said = (f"train.fidelity=authors_code trains {name} as its authors' code (docs/fidelity.md): "
                + ", ".join(f"{key}={value!r}" for key, value in theirs.items() if _current(cfg, key) == value))
        return said + (f". Set explicitly, so kept: {', '.join(kept)}; set them on the command line to "
                       f"follow the authors." if kept else ".")
    if not owns_epochs:
        return None
    first, epochs = cfg.train.first_epoch, cfg.train.epochs
    shortened = (f", and train.first_epoch={first} leaves it {epochs - first} of train.epochs={epochs} epochs (its "
                 f"own schedule, e.g. a warm-up, counts from the first of them)") if first else ""
    return (f"train.fidelity=authors_code reproduces the training loop of the JoCoR authors' code "
            f"(docs/fidelity.md); {name} trains its own epochs, so only the noise, data split and test "
            f"details apply to it{shortened}. Use train.fidelity=paper to train {name} as its paper does.")
