"""One run per output folder: ``OUTPUT_DIR/.lock``, held for the run's life.

The lock is an ``fcntl.flock`` on the file (the kernel drops it when the process dies, however it
dies), and the file says who holds it (pid, host, start time) for the message a second run prints.
A file left with an owner but no flock is a stale lock (its process was killed): taken over with a
warning.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from .errors import UserError

__all__ = ["OutputLock", "FolderInUse", "LOCK_FILE"]

logger = logging.getLogger(__name__)
LOCK_FILE = ".lock"


class FolderInUse(UserError):
    """The folder's lock is held by a live process (the message names it)."""


def _owner(text: str) -> dict[str, Any]:
    try:
        owner = json.loads(text)
        return owner if isinstance(owner, dict) else {}
    except ValueError:
        return {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another run"
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"


class OutputLock:
    """``with OutputLock(out, key="train.output_dir"):`` the folder is this run's; a second run
    raises a one-line ``UserError`` (``FolderInUse``). The folder is created if needed, and removed
    again on release if the lock was all it ever held (a run refused before writing anything leaves
    no trace)."""

    def __init__(self, folder: Path, key: str = "train.output_dir", name: str = LOCK_FILE):
        self.folder, self.key = Path(folder), key
        self.path = self.folder / name  # another name: a lock of its own on the same folder (a job runner's)
        self._fd: Optional[int] = None
        self._created = False

    def acquire(self) -> "OutputLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.key}={str(self.folder)!r} is a file, not a folder; choose another "
                            f"{self.key}.")
        self._created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            while True:  # until the file we lock is the one at the path (a releasing run unlinks it)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = _owner(os.read(fd, 4096).decode(errors="replace"))
                    os.close(fd)
                    raise FolderInUse(f"{self.key}={str(self.folder)!r} is in use by another run "
                                    f"({_describe(owner)}); wait for it to finish, or choose another "
                                    f"{self.key}.") from None
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
                os.close(fd)
        except PermissionError as err:
            self._cleanup_folder()
            raise UserError(f"{self.key}={str(self.folder)!r} is not writable ({err.strerror}); choose "
                            f"a folder you can write to, or fix its permissions.") from None
        except OSError as err:
            self._cleanup_folder()
            raise UserError(f"{self.key}={str(self.folder)!r} can't be used: {err.strerror or err}; "
                            f"choose another {self.key}.") from None
        stale = _owner(os.read(fd, 4096).decode(errors="replace"))
        if stale:
            logger.warning("Took over the lock of %s in %s: its process is gone.", _describe(stale), self.folder)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding the flock: no one locks a file on its way out
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._cleanup_folder()

    def _cleanup_folder(self) -> None:
        if self._created:
            try:
                self.folder.rmdir()  # only if empty: nothing but our lock was ever there
            except OSError:
                pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
