"""Errors a user can fix from the recipe or the command line: reported as one clear line."""
from __future__ import annotations

import difflib
import signal
from typing import Iterable, Optional

__all__ = ["UserError", "DataError", "ModelError", "Interrupted", "did_you_mean", "one_line"]


class UserError(Exception):
    """Bad input (recipe, data, model); the message names the problem and the fix."""


class DataError(UserError, ValueError):
    """The dataset is missing, unreachable or malformed."""


class ModelError(UserError, ValueError):
    """The backbone or its weights can't be built or loaded."""


class Interrupted(UserError):
    """Training stopped on a signal (after saving a checkpoint, where there was one to save)."""

    def __init__(self, message: str, signum: Optional[int]):
        super().__init__(message)
        self.exit_code = 128 + (signum or signal.SIGINT)  # the shell's convention: 130 Ctrl-C, 143 SIGTERM


def did_you_mean(word: object, options: Iterable[object], n: int = 1, cutoff: float = 0.6) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` to a mistyped ``word`` (up to ``n``
    of them), or '' when none is close: the tail of every 'unknown name' error."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=n, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def one_line(err: UserError) -> str:
    """``err``'s message. One raised in a DataLoader worker (e.g. an image file that doesn't decode,
    streamed) comes back from torch with the worker's traceback in it: its last line holds the
    original message."""
    text = str(err)
    if "\nOriginal Traceback" not in text:
        return text
    return text.rstrip().splitlines()[-1].split(": ", 1)[-1]
