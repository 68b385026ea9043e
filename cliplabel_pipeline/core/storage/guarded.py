"""File access inside an untrusted folder that never follows a symbolic link.

A job folder is written by another service, and cliplabel often runs as root. So every write, read, move and
delete inside a job goes through here:

- ``write_file`` / ``atomic_writer`` write a temp file created exclusively and rename it over the target (a
  rename replaces a link, never writes through it); a link planted where cliplabel keeps its own folder is
  replaced by a real folder, with a warning, and its target is left untouched;
- ``open_regular`` opens a file for reading only when it is a regular file (never a FIFO, a device or a
  link), without blocking;
- ``move``, ``remove``, ``remove_empty_folders`` and ``sweep_temps`` work the same way; ``locked`` holds a
  lock file that lives with the folder.

Two ways do it, chosen once by what the system offers (never by its name): ``guard_posix`` opens every folder
on the way relative to its parent's descriptor with ``O_NOFOLLOW`` (a link swapped in between two calls is
never followed); where those calls are missing (Windows), ``guard_portable`` checks each path by ``lstat`` and
its resolved form before and after each call (weaker: see its docstring and the README).

Temp files are named ``.<name>.<host>-<pid>.<random>.tmp``: unique per writer, and ``sweep_temps`` removes
those whose writer died (a process killed mid-write) without touching a live writer's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.guard_base import (  # noqa: F401 - the names callers use from here
    HOST as _HOST, MAX_WALK_DEPTH, NotRegularFile, is_link, parts_of, shown,
)
from cliplabel_pipeline.core.storage import guard_portable, guard_posix
from cliplabel_pipeline.core.storage.guard_lock import lock_calls

log = logging.getLogger(__name__)



def choose_backend():
    """``guard_posix`` where the system has folder descriptors, else ``guard_portable``; with the lock calls."""
    return (guard_posix if guard_posix.usable() else guard_portable), lock_calls()


_backend, _locks = choose_backend()


def backend_name() -> str:
    """``posix`` or ``portable``, and how jobs are locked (``flock``, ``msvcrt``): what ``cliplabel`` runs on."""
    return f"{_backend.__name__.rsplit('_', 1)[-1]} ({_locks.name} locks)"


def write_file(root: Path, rel: str, data: bytes) -> Path:
    """Write ``data`` to ``root/rel`` atomically (temp file, fsync, rename) without following any link.

    The file gets the process umask's mode, as any file a program creates. Returns ``root/rel``.
    """
    with atomic_writer(root, rel) as fh:
        fh.write(data)
    return root.joinpath(*parts_of(rel))


def write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """``write_file`` for each ``(rel, data)``, batched where the system allows (folders opened once, one flush
    to disk for all before the renames): for the thousands of small per-item files of an export. Returns
    how many were written."""
    return _backend.write_files(root, files)


def atomic_writer(root: Path, rel: str):
    """A file to write ``root/rel`` through: a temp file beside it, renamed over it when the block ends
    without error and removed otherwise. Folders are made and links never followed, as in ``write_file``."""
    return _backend.atomic_writer(root, rel)


def open_regular(root: Path, rel: str) -> BinaryIO:
    """``root/rel`` opened for reading, only if it is a regular file reached without a link.

    Raises ``NotRegularFile`` (a FIFO, device, folder, link, or a missing file) with the reason; never blocks.
    """
    return _backend.open_regular(root, rel)


def read_bytes(root: Path, rel: str) -> bytes:
    with open_regular(root, rel) as fh:
        return fh.read()


def exists_regular(root: Path, rel: str) -> bool:
    """True when ``root/rel`` is a regular file reached without following a link."""
    try:
        open_regular(root, rel).close()
        return True
    except (NotRegularFile, CliplabelError):
        return False


def move(root: Path, src: str, dst: str) -> None:
    """Rename the regular file ``root/src`` to ``root/dst`` (folders made); refuses links and clobbering."""
    _backend.move(root, src, dst)


def remove(root: Path, rel: str, missing_ok: bool = True) -> None:
    """Delete ``root/rel`` (a file or a link itself, never what a link points at)."""
    _backend.remove(root, rel, missing_ok)


def remove_empty_folders(root: Path, rel: str) -> None:
    """Remove ``root/rel`` and the empty folders under it, deepest first; never follows a link."""
    _backend.remove_empty_folders(root, rel)


def sweep_temps(root: Path, rel: str = "", recursive: bool = True) -> int:
    """Remove temp files in ``root/rel`` left by a writer of this host that no longer runs; returns how many."""
    return _backend.sweep_temps(root, rel, recursive)


# A lock that lives with the folder: cross-process (and across hosts where the file system honours flock, as
# NFSv4 and most cluster file systems do); re-entrant within a thread, exclusive between threads and processes.
_held = threading.local()
LOCK_POLL_S = 0.2


@contextmanager
def locked(root: Path, rel: str, wait_s: float, on_wait=None) -> Iterator[None]:
    """Hold the exclusive lock file ``root/rel`` for the block (made if missing, never through a link).

    Another holder is waited for up to ``wait_s`` seconds (``on_wait(holder)`` called once when the lock is
    busy, ``holder`` being what the holder wrote: host and pid), then a one-line ``CliplabelError``.
    """
    key = (os.fspath(root), rel)
    held = getattr(_held, "keys", None)
    if held is None:
        held = _held.keys = {}
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    fd = _own_lock_file(root, rel)
    locks = _locks
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while not locks.try_lock(fd):
            if not told and on_wait is not None:
                on_wait(_holder(fd))
                told = True
            if time.monotonic() >= deadline:
                raise CliplabelError(f"{shown(root)} is busy: another cliplabel process ({_holder(fd) or 'unknown'}) "
                                     f"has held it for over {wait_s:g}s; try again when it has finished")
            time.sleep(LOCK_POLL_S)
        try:
            try:  # who holds it, for a waiting process's line; the lock itself is held either way
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
            except OSError as exc:  # a full disk: the work's first write says so, naming its file
                log.debug("could not note the holder in %s: %s", shown(root / rel), exc.strerror or exc)
            held[key] = 1
            yield
        finally:
            held.pop(key, None)
            try:
                locks.unlock(fd)  # Windows asks for it before the close; elsewhere the close alone would do
            except OSError:
                pass
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also when the process is killed


def _own_lock_file(root: Path, rel: str) -> int:
    """The lock file opened, with no other name: a hard link planted there names a file elsewhere (outside the
    job, perhaps), which the holder's line would overwrite; it is unlinked (its other names keep the file) and
    the lock file made anew."""
    fd = _backend.open_lock_file(root, rel)
    if os.fstat(fd).st_nlink <= 1:
        return fd
    os.close(fd)
    log.warning("replaced a hard link planted at %s by a lock file (the file it names was not touched)",
                shown(root / rel))
    _backend.remove(root, rel)
    fd = _backend.open_lock_file(root, rel)
    if os.fstat(fd).st_nlink > 1:
        os.close(fd)
        raise NotRegularFile(f"the lock file {shown(root / rel)} is linked again as it is made; not used")
    return fd


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return shown(os.read(fd, 200).decode("utf-8", "replace").strip())
    except OSError:
        return ""
