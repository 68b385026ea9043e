"""An exclusive lock on an open file without waiting, through what the platform offers: ``flock`` where
``fcntl`` exists (POSIX), ``msvcrt.locking`` where it does not (Windows). Chosen once by ``lock_calls()``."""

from __future__ import annotations

import errno
import importlib
import os
from typing import NamedTuple

from cliplabel_pipeline.core.errors import CliplabelError

# msvcrt locks are mandatory: the byte locked lies far past the holder's line, which others read meanwhile.
# (Locking past the end of a file is allowed.)
_MSVCRT_BYTE = 1 << 30


class LockCalls(NamedTuple):
    name: str
    try_lock: object  # (fd) -> bool: True when taken, False when another holds it
    unlock: object  # (fd) -> None


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def lock_calls() -> LockCalls:
    """The platform's calls, by what it has; a one-line error on a system with neither."""
    fcntl, msvcrt = _module("fcntl"), _module("msvcrt")
    if fcntl is not None and hasattr(fcntl, "flock"):
        def try_flock(fd: int) -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        return LockCalls("flock", try_flock, lambda fd: fcntl.flock(fd, fcntl.LOCK_UN))
    if msvcrt is not None:
        def try_locking(fd: int) -> bool:
            os.lseek(fd, _MSVCRT_BYTE, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError as exc:
                if exc.errno in (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
                    return False
                raise

        def unlock(fd: int) -> None:
            os.lseek(fd, _MSVCRT_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

        return LockCalls("msvcrt", try_locking, unlock)

    def none(fd: int) -> bool:
        raise CliplabelError("this system offers no file lock (neither fcntl.flock nor msvcrt.locking): "
                             "a job cannot be kept to one writer here")

    return LockCalls("none", none, lambda fd: None)
