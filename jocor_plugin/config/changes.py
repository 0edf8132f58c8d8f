"""Resume with the recipe that was trained: which keys differ between a checkpoint's recipe and
the new one, and which of those change what is trained.

Everything that shapes the trained networks counts (data, noise, seeds, model, method and its
arguments, batch size, optimiser and its schedule); keys about where and how a run is written or
watched (output folder, checkpoints kept, logging, evaluation batch size, exports, trackers) don't.
``train.epochs`` may grow (a run extended), not shrink below the checkpoint's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Change", "recipe_changes", "format_changes", "IGNORED_KEYS"]

# keys that don't change what is trained (whole sections end in ".*")
IGNORED_KEYS = frozenset({
    "log.*", "data.num_workers",
    "train.output_dir", "train.resume", "train.resume_allow_changes", "train.overwrite",
    "train.keep_checkpoints", "train.log_interval", "train.eval_batch_size", "train.export_models",
    "train.export_label_issues", "train.eval_drop_last", "train.compile", "method.imports",
})


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new}


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or f"{key.split('.', 1)[0]}.*" in IGNORED_KEYS


def _flatten(recipe: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in recipe.items() if isinstance(values, Mapping)
            for key, value in values.items()}


def _same(a: Any, b: Any) -> bool:
    # YAML/JSON round trips turn tuples into lists and 1.0 into 1: compare as JSON
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str) or a == b


def recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                   defaults: Mapping[str, Any] | None = None) -> list[Change]:
    """The keys of ``new`` (a recipe as ``config_to_dict`` gives it) that change what is trained
    compared with ``old`` (the checkpoint's). A key the checkpoint's recipe lacks (added to the
    schema since) is read as its value in ``defaults``: new keys default to the old behaviour (the
    pinned records check that), so only a value set away from the default counts."""
    flat_defaults = _flatten(defaults or {})
    flat_old, flat_new = _flatten(old), _flatten(new)
    flat_old = {**{key: flat_defaults[key] for key in flat_new if key not in flat_old and key in flat_defaults},
                **flat_old}
    changes = []
    for key in sorted(set(flat_old) | set(flat_new), key=lambda k: (list(new).index(k.split(".")[0])
                                                                     if k.split(".")[0] in new else 99, k)):
        if _ignored(key):
            continue
        a, b = flat_old.get(key), flat_new.get(key)
        if _same(a, b):
            continue
        if key == "train.epochs" and isinstance(a, int) and isinstance(b, int) and b >= a:
            continue  # extending a run
        changes.append(Change(key, a, b))
    return changes


def format_changes(changes: list[Change]) -> str:
    """``noise.rate 0.5 -> 0.2, train.batch_size 128 -> 64``"""
    return ", ".join(f"{c.key} {json.dumps(c.old, default=str)} -> {json.dumps(c.new, default=str)}"
                     for c in changes)
