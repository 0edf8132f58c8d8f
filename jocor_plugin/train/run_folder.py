"""The run folder: one run, one recipe per ``train.output_dir``.

``RunFolder`` owns the folder for the run's life: it is checked once (``RunFolder.for_recipe``:
refuses to overwrite an earlier run unless asked to), locked by the main process (``lock``), its
``results.json`` read one way (``results``: a corrupt file is a one-line error), a resumed
checkpoint's recipe compared with the new one (``check_resume``), and it is written to only once
every check has passed (``start_writing``), so a refused or failed run leaves an earlier run's files
as they were.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from ..config import Config, config_to_dict, expand_path_variables
from ..config.changes import format_changes, recipe_changes
from ..core.errors import UserError
from ..core.lock import OutputLock
from ..core.results import RESULTS_FILE, read_results
from .checkpoint import TrainState, checkpoint_recipe, verify_checkpoint

__all__ = ["RunFolder", "record_changes"]

logger = logging.getLogger(__name__)

# what a run writes that a fresh start (train.overwrite=true) must not mix with an earlier run's
RUN_FILES = ("checkpoints", RESULTS_FILE, "transition_matrix.json", "noise_estimate.json", "best", "curves.png")
CONFIG_FILE = "config.yaml"


class RunFolder:
    """One run's output folder (``path``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_recipe(cls, cfg: Config) -> "RunFolder":
        """``train.output_dir``, checked: not a file, and no earlier run in it unless the recipe says
        what to do with it (``train.overwrite`` / ``train.resume``)."""
        # e.g. train.output_dir=outputs/sweep/$WANDB_RUN_ID: one folder per run of a W&B sweep agent
        expand_path_variables(cfg)  # and data.path, model.pretrained_file, ...: an unset one is an error
        folder = cls(Path(cfg.train.output_dir))
        if folder.path.exists() and not folder.path.is_dir():
            raise UserError(f"train.output_dir={str(folder.path)!r} is a file, not a folder; choose another "
                            f"train.output_dir.")
        # a corrupt results.json is one line (unless it is to be replaced or continued from its checkpoints)
        earlier = folder.results() if cfg.train.resume is None and not cfg.train.overwrite else None
        if earlier is not None:
            finished = earlier.get("finished", False)
            what = "a finished run" if finished else "an unfinished run"
            fix = "train.overwrite=true to replace it" + ("" if finished else ", or train.resume=auto to continue it")
            raise UserError(f"train.output_dir={str(folder.path)!r} already holds {what}; choose another "
                            f"train.output_dir, or set {fix}.")
        return folder

    def results(self) -> Optional[dict[str, Any]]:
        """``results.json`` (None if absent); a corrupt one is a one-line error."""
        if not (self.path / RESULTS_FILE).is_file():
            return None
        return read_results(self.path, strict=True)

    @contextlib.contextmanager
    def lock(self, main_process: bool = True) -> Iterator[None]:
        """The folder is this run's until it ends (the main process holds the lock)."""
        if not main_process:
            yield
            return
        with OutputLock(self.path):
            yield

    def check_resume(self, checkpoint: Path, recipe: dict[str, Any], allow_changes: bool,
                     process_index: int = 0) -> list[dict[str, Any]]:
        """Verify the checkpoint's files and compare its recipe with ``recipe``: a change to what is
        trained is refused in one line naming each key, unless ``allow_changes``; then the changes
        are returned (to record)."""
        verify_checkpoint(checkpoint, process_index)
        old = checkpoint_recipe(checkpoint)
        if old is None:
            logger.warning("%s holds no recipe to compare with (an older checkpoint): resuming unchecked.",
                           checkpoint)
            return []
        changes = recipe_changes(old, recipe, defaults=config_to_dict(Config()))
        if not changes:
            return []
        if not allow_changes:
            raise UserError(f"Resuming {checkpoint} with a recipe that changes what is trained: "
                            f"{format_changes(changes)}. Use the checkpoint's recipe (its run's config.yaml), start "
                            f"a new train.output_dir, or set train.resume_allow_changes=true to continue with the "
                            f"changes (recorded in results.json).")
        logger.warning("Resuming with recipe changes (train.resume_allow_changes=true): %s.", format_changes(changes))
        return [change.as_dict() for change in changes]

    def start_writing(self, recipe: dict[str, Any], fresh: bool) -> None:
        """Every check passed: the run takes the folder. A fresh start clears an earlier run's
        checkpoints and results (train.overwrite=true), so the two never mix."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            for name in RUN_FILES:
                path = self.path / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        (self.path / CONFIG_FILE).write_text(yaml.safe_dump(recipe, sort_keys=False))


def record_changes(state: TrainState, changes: list[dict[str, Any]]) -> None:
    """Add resume-time ``changes`` to the run's history, with the epoch (0-based, as the records'
    ``epoch``) and step they took effect at."""
    state.recipe_changes.extend({**change, "epoch": state.epoch, "step": state.step} for change in changes)
