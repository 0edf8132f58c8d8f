"""Nothing lost: atomic checkpoints that continue a run exactly, and a graceful stop on signals.

A checkpoint folder ``checkpoints/epoch_EEEE[_step_SSSSSS]`` ("EEEE epochs and SSSSSS steps
done"; names sort chronologically) holds ``accelerator.save_state`` (both networks, optimizer,
RNG states of every process, sampler) plus our own ``trainer_state.json`` (next epoch, step,
results so far), the label-issue statistics ``sample_stats.safetensors`` and, for a checkpoint
inside an epoch, ``epoch_meter.safetensors``. Everything
is loaded without unpickling: JSON, safetensors, and Accelerate's ``weights_only`` loads.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from .engine import EpochMeter
from .errors import Interrupted, UserError
from .meters import CHECKPOINT_STATS_FILE as STATS_FILE, SampleStats

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "find_checkpoint", "GracefulStop"]

logger = logging.getLogger(__name__)
STATE_FILE, METER_FILE = "trainer_state.json", "epoch_meter.safetensors"


class TrainState:
    """Where training stands: the epoch in progress, steps done in it, and the finished records."""

    def __init__(self) -> None:
        self.epoch = 0
        self.step = 0
        self.records: list[dict[str, Any]] = []

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "step": self.step, "records": self.records})

    def load_json(self, text: str) -> None:
        state = json.loads(text)
        self.epoch, self.step, self.records = int(state["epoch"]), int(state["step"]), state["records"]


def checkpoint_name(state: TrainState) -> str:
    return f"epoch_{state.epoch:04d}" + (f"_step_{state.step:06d}" if state.step else "")


def save_checkpoint(accelerator: Accelerator, out: Path, state: TrainState, keep: int,
                    meter: Optional[EpochMeter] = None, stats: Optional[SampleStats] = None, *,
                    force: bool = False) -> Optional[Path]:
    """Write into a temporary folder, then rename: a checkpoint is either complete or absent.
    Keeps the ``keep`` newest; ``force`` writes one even with ``keep=0`` (an interrupted run's)."""
    if keep == 0 and not force:
        return None
    root = out / "checkpoints"
    final = root / checkpoint_name(state)
    tmp = root / f".tmp_{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    if stats is not None and state.step:
        stats.consolidate(accelerator)  # the partial epoch of every process, into the main one's
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(state.to_json())
        if meter is not None and state.step:
            save_file({k: v.contiguous() for k, v in meter.state_dict().items()}, str(tmp / METER_FILE))
        if stats is not None:  # label-issue statistics span epochs: in every checkpoint
            save_file({k: v.contiguous() for k, v in stats.state_dict().items()}, str(tmp / STATS_FILE))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("epoch_*"))[:-max(keep, 1)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


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
                    stats: Optional[SampleStats] = None) -> None:
    """Restore everything ``save_checkpoint`` wrote. Nothing is unpickled beyond tensors, numbers
    and arrays (``weights_only``), so a damaged or foreign file is refused with a clear error."""
    try:
        accelerator.load_state(str(path))
        state.load_json((path / STATE_FILE).read_text())
        if state.step:
            meter.load_state_dict(load_file(str(path / METER_FILE), device=str(meter.seen.device)))
        if stats is not None and (path / STATS_FILE).is_file():
            stats.load_state_dict(load_file(str(path / STATS_FILE), device=str(stats.seen.device)), accelerator)
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
    epoch end, if sooner) and save a checkpoint; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
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
