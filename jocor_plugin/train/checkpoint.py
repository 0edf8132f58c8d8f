"""Nothing lost: atomic checkpoints that continue a run exactly, and a graceful stop on signals.

A checkpoint folder ``checkpoints/epoch_EEEE[_step_SSSSSS]`` ("EEEE epochs and SSSSSS steps
done"; names sort chronologically) holds ``accelerator.save_state`` (both networks, optimizer,
RNG states of every process, sampler) plus our own ``trainer_state.json`` (next epoch, step,
results so far), the label-issue statistics ``sample_stats.safetensors``, the method's own state
``method_state.safetensors`` (``Method.state_dict``, when it has one) and, for a checkpoint
inside an epoch, ``epoch_meter.safetensors``. Everything
is loaded without unpickling: JSON, safetensors, and Accelerate's ``weights_only`` loads.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator, Optional

from accelerate import Accelerator
from accelerate.utils.constants import RNG_STATE_NAME
from safetensors.torch import load_file, save_file

from ..core.errors import Interrupted, UserError
from ..methods import Method
from ..models.timm_folder import make_readable
from .engine import EpochMeter
from .meters import CHECKPOINT_STATS_FILE as STATS_FILE, SampleStats

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "find_checkpoint", "verify_checkpoint",
           "checkpoint_recipe", "GracefulStop"]

logger = logging.getLogger(__name__)
STATE_FILE, METER_FILE = "trainer_state.json", "epoch_meter.safetensors"
RECIPE_FILE, MANIFEST_FILE = "recipe.json", "manifest.json"
METHOD_FILE = "method_state.safetensors"


class TrainState:
    """Where training stands: the epoch in progress, steps done in it, and the finished records."""

    def __init__(self) -> None:
        self.epoch = 0
        self.step = 0
        self.records: list[dict[str, Any]] = []
        # recipe keys changed on resume (train.resume_allow_changes): key, old, new, epoch
        self.recipe_changes: list[dict[str, Any]] = []

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "step": self.step, "records": self.records,
                           "recipe_changes": self.recipe_changes})

    def load_json(self, text: str) -> None:
        state = json.loads(text)
        self.epoch, self.step, self.records = int(state["epoch"]), int(state["step"]), state["records"]
        self.recipe_changes = list(state.get("recipe_changes", []))


def checkpoint_name(state: TrainState) -> str:
    return f"epoch_{state.epoch:04d}" + (f"_step_{state.step:06d}" if state.step else "")


def save_checkpoint(accelerator: Accelerator, out: Path, state: TrainState, keep: int,
                    meter: Optional[EpochMeter] = None, stats: Optional[SampleStats] = None, *,
                    force: bool = False, recipe: Optional[dict[str, Any]] = None,
                    stop: Optional["GracefulStop"] = None,
                    method_state: Optional[dict[str, Any]] = None) -> Optional[Path]:
    """Write into a temporary folder, then rename: a checkpoint is either complete or absent.
    Keeps the ``keep`` newest; ``force`` writes one even with ``keep=0`` (an interrupted run's).
    ``recipe`` (the resolved config) goes with it, so a resume can check it trains the same thing;
    ``method_state`` (``Method.state_dict()``, the same on every process) is saved when not empty;
    ``manifest.json`` holds every file's SHA-256, so a missing or changed file is found on resume.
    A failed write (disk full, read-only folder) removes the temporary folder and leaves the
    previous checkpoint as it was; a Ctrl-C while writing waits for the write to finish."""
    if keep == 0 and not force:
        return None
    root = out / "checkpoints"
    final = root / checkpoint_name(state)
    tmp = root / f".tmp_{final.name}"
    with (stop.saving() if stop is not None else contextlib.nullcontext()):
        try:
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            accelerator.wait_for_everyone()
            if stats is not None and state.step:
                stats.consolidate(accelerator)  # the partial epoch of every process, into the main one's
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()  # every process's random states are in tmp
            if accelerator.is_main_process:
                (tmp / STATE_FILE).write_text(state.to_json())
                if recipe is not None:
                    (tmp / RECIPE_FILE).write_text(json.dumps(recipe, indent=1, default=str))
                if meter is not None and state.step:
                    save_file({k: v.contiguous() for k, v in meter.state_dict().items()}, str(tmp / METER_FILE))
                if method_state:
                    save_file({k: v.contiguous() for k, v in method_state.items()}, str(tmp / METHOD_FILE))
                if stats is not None:  # label-issue statistics span epochs: in every checkpoint
                    save_file({k: v.contiguous() for k, v in stats.state_dict().items()}, str(tmp / STATS_FILE))
                for written in tmp.rglob("*.safetensors"):  # safetensors writes 0600: readable as any output
                    make_readable(written)
                write_manifest(tmp)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
                for old in sorted(root.glob("epoch_*"))[:-max(keep, 1)]:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as err:
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise checkpoint_write_error(root, final, err) from None
        except BaseException:
            if accelerator.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
    accelerator.wait_for_everyone()
    return final


def checkpoint_write_error(root: Path, final: Path, err: OSError) -> UserError:
    """One line for a checkpoint that could not be written, naming the one still there."""
    previous = sorted(p for p in root.glob("epoch_*") if p != final) if root.is_dir() else []
    kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
    if err.errno == errno.ENOSPC:
        fix = f"free space on the disk of {root} (or lower train.keep_checkpoints), then resume with train.resume=auto"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {root} writable (or choose another train.output_dir), then resume with train.resume=auto"
    else:
        fix = "fix the cause, then resume with train.resume=auto"
    return UserError(f"Could not write the checkpoint {final.name} to {root}: {err.strerror or err}; {kept}. "
                     f"{fix[0].upper()}{fix[1:]}.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {str(p.relative_to(folder)): _sha256(p) for p in files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def verify_checkpoint(path: Path, process_index: int = 0) -> None:
    """Refuse a checkpoint with a missing or changed file (``manifest.json``), and one whose random
    states this process can't read (Accelerate would only log that at info level and go on with
    other random numbers: a resume that isn't exact)."""
    def refuse(reason: str) -> UserError:
        return UserError(f"Could not load the checkpoint {path}: {reason}. Resume from an earlier one "
                         f"(train.resume=PATH of another checkpoints/epoch_NNNN folder), or start over with "
                         f"train.overwrite=true.")

    manifest_path = path / MANIFEST_FILE
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            raise refuse(f"{MANIFEST_FILE} is not valid JSON") from None
        missing = [name for name in manifest if not (path / name).is_file()]
        if missing:
            raise refuse(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        changed = [name for name, digest in manifest.items() if _sha256(path / name) != digest]
        if changed:
            raise refuse(f"{', '.join(changed)} changed after the checkpoint was written")
    else:  # written before manifests: check what we can
        logger.warning("%s has no %s (an older checkpoint): its files can't be checked for changes.",
                       path, MANIFEST_FILE)
    rng = path / f"{RNG_STATE_NAME}_{process_index}.pkl"
    if not rng.is_file():
        raise refuse(f"{rng.name} (the random states of process {process_index}) is missing")
    from accelerate.utils.other import load as accelerate_load

    try:
        states = accelerate_load(rng)  # weights_only, as Accelerate loads it
        ok = isinstance(states, dict) and {"random_state", "numpy_random_seed", "torch_manual_seed"} <= set(states)
    except Exception:
        ok = False
    if not ok:
        raise refuse(f"{rng.name} (the random states of process {process_index}) can't be read")


def checkpoint_recipe(path: Path) -> Optional[dict[str, Any]]:
    """The resolved recipe a checkpoint was trained with: its own copy, else (older checkpoints)
    its run folder's config.yaml; None if neither is there."""
    if (path / RECIPE_FILE).is_file():
        return json.loads((path / RECIPE_FILE).read_text())
    config = path.parent.parent / "config.yaml"
    if config.is_file():
        import yaml

        loaded = yaml.safe_load(config.read_text())
        return loaded if isinstance(loaded, dict) else None
    return None


def find_checkpoint(resume: Optional[str], out: Path) -> Optional[Path]:
    """``train.resume``: a checkpoint folder, or 'auto' for the newest in ``out/checkpoints``."""
    if resume is None:
        return None
    if resume == "auto":
        found = sorted((out / "checkpoints").glob("epoch_*"))
        if not found:
            raise UserError(f"train.resume=auto found no checkpoint in {out / 'checkpoints'}; start without "
                            f"train.resume, or point it at a checkpoint folder.")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"train.resume={resume!r} is not a checkpoint folder (no {STATE_FILE}); give a "
                        f"checkpoints/epoch_NNNN folder of an earlier run, or 'auto'.")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path, state: TrainState, meter: EpochMeter,
                    stats: Optional[SampleStats] = None, method: Optional[Method] = None) -> None:
    """Restore everything ``save_checkpoint`` wrote (``method``: its ``load_state_dict``, refused
    when it has state and the checkpoint none). Nothing is unpickled beyond tensors, numbers
    and arrays (``weights_only``), so a damaged or foreign file is refused with a clear error."""
    verify_checkpoint(path, accelerator.process_index)
    try:
        accelerator.load_state(str(path))
        state.load_json((path / STATE_FILE).read_text())
        if state.step:
            meter.load_state_dict(load_file(str(path / METER_FILE), device=str(meter.seen.device)))
        if stats is not None and (path / STATS_FILE).is_file():
            stats.load_state_dict(load_file(str(path / STATS_FILE), device=str(stats.seen.device)), accelerator)
        if method is not None and (path / METHOD_FILE).is_file():
            method.load_state_dict(load_file(str(path / METHOD_FILE), device=str(accelerator.device)))
        elif method is not None and method.state_dict():
            raise UserError(f"Could not load the checkpoint {path}: it holds no {METHOD_FILE}, the state of "
                            f"method {type(method).__name__} a resume needs. Start over with train.overwrite=true.")
    except UserError:
        raise
    except Exception as err:  # corrupt, truncated, tampered or another run's (shapes) files
        reason = ("it holds pickled objects other than tensors and numbers, refused because unpickling "
                  "them could run code" if isinstance(err, pickle.UnpicklingError)
                  else (str(err).strip().splitlines() or [type(err).__name__])[0][:300])
        raise UserError(f"Could not load the checkpoint {path}: {reason}. Resume from an earlier one "
                        f"(train.resume=PATH of another checkpoints/epoch_NNNN folder), or start over with "
                        f"train.overwrite=true.") from err


class GracefulStop:
    """SIGTERM (preemption) or Ctrl-C asks training to stop at the next logging interval (or the
    epoch end, if sooner) and save a checkpoint; a second Ctrl-C aborts at once (one line, exit
    130), except while a checkpoint is being written: that write is finished first."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._saving = False
        self._abort = False

    def __call__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """A checkpoint write: a second Ctrl-C inside it aborts once it is complete, not halfway."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._abort:
            raise Interrupted("Aborted by a second Ctrl-C once the checkpoint being written was complete; "
                              "resume with the same command and train.resume=auto.", signal.SIGINT)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            if self._saving:
                self._abort = True
                logger.warning("Ctrl-C again: aborting as soon as the checkpoint being written is complete.")
                return
            raise Interrupted("Aborted by a second Ctrl-C, without saving a checkpoint; resume from the last "
                              "one with the same command and train.resume=auto.", signal.SIGINT)
        self.signal = signum
        logger.warning("Received %s: stopping at the next logging interval or epoch end, saving a checkpoint "
                       "(Ctrl-C again to abort without saving).", signal.Signals(signum).name)

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def interrupted(self, where: str, saved: Optional[Path]) -> Interrupted:
        """The error that ends a stopped run: where it stopped and how to continue."""
        name = signal.Signals(self.signal).name if self.signal else "request"
        if saved is None:
            return Interrupted(f"Stopped by {name} {where}, before training proper began; nothing to resume: "
                               f"run the same command again.", self.signal)
        return Interrupted(f"Stopped by {name} {where}; checkpoint saved to {saved}. Resume with the same "
                           f"command and train.resume=auto.", self.signal)
