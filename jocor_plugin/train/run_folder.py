"""One run, one recipe per output folder: the lock held for the run's life, the resume check of the
recipe against the checkpoint's, and the moment a run starts writing (only once every check passed,
so a refused or failed run leaves an earlier run's files as they were)."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from ..config.changes import format_changes, recipe_changes
from ..config import Config, config_to_dict
from ..core.errors import UserError
from ..core.lock import OutputLock
from .checkpoint import TrainState, checkpoint_recipe, verify_checkpoint

__all__ = ["read_results", "lock_output_dir", "check_resume", "record_changes", "start_writing"]

logger = logging.getLogger(__name__)

# what a run writes that a fresh start (train.overwrite=true) must not mix with an earlier run's
RUN_FILES = ("checkpoints", "results.json", "transition_matrix.json", "noise_estimate.json", "best")


def read_results(out: Path) -> Optional[dict[str, Any]]:
    """``out/results.json`` (None if absent); a corrupt one is a one-line error."""
    results = out / "results.json"
    if not results.is_file():
        return None
    try:
        loaded = json.loads(results.read_text())
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        return loaded
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{results} is not valid JSON ({str(err).splitlines()[0][:80]}): the run there was "
                        f"cut off while writing it, or it was edited. Continue it with train.resume=auto, replace "
                        f"it with train.overwrite=true, or choose another train.output_dir.") from None


@contextlib.contextmanager
def lock_output_dir(out: Path, main_process: bool = True) -> Iterator[None]:
    """The folder is this run's until it ends (the main process holds the lock)."""
    if not main_process:
        yield
        return
    with OutputLock(out):
        yield


def check_resume(checkpoint: Path, recipe: dict[str, Any], allow_changes: bool,
                 process_index: int = 0) -> list[dict[str, Any]]:
    """Verify the checkpoint's files and compare its recipe with ``recipe``: a change to what is
    trained is refused in one line naming each key, unless ``allow_changes``; then the changes are
    returned (to record)."""
    verify_checkpoint(checkpoint, process_index)
    old = checkpoint_recipe(checkpoint)
    if old is None:
        logger.warning("%s holds no recipe to compare with (an older checkpoint): resuming unchecked.", checkpoint)
        return []
    changes = recipe_changes(old, recipe, defaults=config_to_dict(Config()))
    if not changes:
        return []
    if not allow_changes:
        raise UserError(f"Resuming {checkpoint} with a recipe that changes what is trained: {format_changes(changes)}. "
                        f"Use the checkpoint's recipe (its run's config.yaml), start a new train.output_dir, or set "
                        f"train.resume_allow_changes=true to continue with the changes (recorded in results.json).")
    logger.warning("Resuming with recipe changes (train.resume_allow_changes=true): %s.", format_changes(changes))
    return [change.as_dict() for change in changes]


def record_changes(state: TrainState, changes: list[dict[str, Any]]) -> None:
    """Add resume-time ``changes`` to the run's history, with the epoch (0-based, as the records'
    ``epoch``) and step they took effect at."""
    state.recipe_changes.extend({**change, "epoch": state.epoch, "step": state.step} for change in changes)


def start_writing(out: Path, recipe: dict[str, Any], fresh: bool) -> None:
    """Every check passed: the run takes the folder. A fresh start clears an earlier run's
    checkpoints and results (train.overwrite=true), so the two never mix."""
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in RUN_FILES:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    (out / "config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
