"""Guarded file access by path, where folder descriptors do not exist (Windows: no ``O_NOFOLLOW``, no
``O_DIRECTORY``, and ``dir_fd`` raises ``NotImplementedError``).

The promises that can be kept by path are kept:

- every component on the way is ``lstat``-ed first: a symbolic link or a junction (any reparse point naming
  another path) is refused, or, where cliplabel keeps its own folder, replaced by a real folder;
- the resolved path is checked to be the expected one (inside the folder) before opening and after, and an
  opened file must be the very file at that path (same device and file id), so a read never returns bytes
  from outside, even when a link was swapped in between;
- writes go to a temp file created exclusively beside the target and are renamed over it (``os.replace``);
  temp files of dead writers are swept; a move never clobbers.

Weaker than ``guard_posix``: between the check and a path-based write, rename or delete, a folder on the way
can be swapped for a link, and that one call then acts outside (the check after it notices, too late). The
README says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import ntpath
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.guard_base import (
    MAX_WALK_DEPTH, NotRegularFile, cannot_write, is_dead_temp, is_link, kind_of, parts_of, shown, temp_name,
)

log = logging.getLogger(__name__)


def _flags() -> int:
    """Binary, not inherited by child processes (``O_NOINHERIT`` is Windows' ``O_CLOEXEC``)."""
    return getattr(os, "O_BINARY", 0) | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_CLOEXEC", 0)


def _parts(rel: str) -> tuple[str, ...]:
    """``parts_of``, and no component the host would read as more than one name (its separators, a drive, or
    on Windows a ``:`` that names an alternate data stream)."""
    parts = parts_of(rel)
    for p in parts:
        if any(s and s in p for s in (os.sep, os.altsep)) or (os.path is ntpath and ":" in p):
            raise CliplabelError(f"refusing path {shown(rel)!r}: {shown(p)!r} is not one file name on this system")
    return parts


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _check_real(path: str) -> None:
    """``path`` resolves to itself: no link or junction anywhere on the way."""
    if os.path.normcase(os.path.realpath(path)) != os.path.normcase(path):
        raise NotRegularFile(f"{shown(path)} leads elsewhere (a link or junction on the way); not used")


def _folder(root: Path, parts: tuple[str, ...], create: bool = False) -> str:
    """``root/<parts>`` checked to be real folders, no link on the way (made when ``create``; a link planted
    where a folder is made is replaced, its target untouched)."""
    st = _lstat(os.fspath(root))  # the folder itself: refused as guard_posix's open(O_NOFOLLOW | O_DIRECTORY) does
    if st is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(root))
    if is_link(st):
        raise OSError(errno.ELOOP, "a symbolic link, not followed", os.fspath(root))
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(root))
    path = os.path.realpath(root)
    for i, name in enumerate(parts):
        path, where = os.path.join(path, name), "/".join(parts[: i + 1])
        st = _lstat(path)
        if st is not None and is_link(st):
            if not create:
                raise NotRegularFile(f"{shown(where)} is a symbolic link, not a folder")
            log.warning("replaced a symbolic link planted at %s by a folder (its target was not touched)", shown(where))
            os.unlink(path)  # a link to a folder or a junction: the link itself goes
            st = None
        if st is None:
            if not create:
                raise FileNotFoundError(2, "No such file or directory", where)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o777)
            st = os.lstat(path)
        if is_link(st) or not stat.S_ISDIR(st.st_mode):
            raise NotRegularFile(f"{shown(where)} is {kind_of(st)}, not a folder")
    _check_real(path)
    return path


def _check_opened(fd: int, path: str, what: str) -> os.stat_result:
    """The file open on ``fd`` is the regular file at ``path``, reached without a link; else refused."""
    st, now = os.fstat(fd), _lstat(path)
    if now is None or is_link(now) or not os.path.samestat(st, now):
        raise NotRegularFile(f"{shown(what)} changed while it was opened (a link swapped in?); not used")
    _check_real(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"{shown(what)} is {kind_of(st)}, not a regular file")
    return st


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextmanager
def atomic_writer(root: Path, rel: str) -> Iterator[BinaryIO]:
    parts = _parts(rel)
    target = root.joinpath(*parts)
    try:
        folder = _folder(root, parts[:-1], create=True)
        path = os.path.join(folder, parts[-1])
        st = _lstat(path)
        if st is not None and is_link(st):
            os.unlink(path)  # a rename would replace a link; where it cannot (a junction), it goes first
        elif st is not None and not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"cannot write {shown(target)}: it is {kind_of(st)}, not a regular file")
        tmp = os.path.join(folder, temp_name(parts[-1]))
        tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _flags(), 0o666)
        try:
            with os.fdopen(tfd, "wb") as fh:
                _check_opened(tfd, tmp, target)
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            _check_real(folder)
            os.replace(tmp, path)
        except BaseException:
            _remove_quietly(tmp)
            raise
    except NotRegularFile:
        raise
    except OSError as exc:
        raise cannot_write(target, exc) from None


def write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """``atomic_writer`` for each file in turn (the batched form needs folder descriptors); returns how many."""
    written = 0
    for rel, data in files:
        with atomic_writer(root, rel) as fh:
            fh.write(data)
        written += 1
    return written


def open_regular(root: Path, rel: str) -> BinaryIO:
    parts = _parts(rel)
    try:
        path = os.path.join(_folder(root, parts[:-1]), parts[-1])
        st = _lstat(path)
        if st is None:
            raise FileNotFoundError(2, "No such file or directory", path)
        if is_link(st):
            raise NotRegularFile(f"{shown(rel)} is a symbolic link (only regular files inside the job are read)")
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{shown(rel)} is {kind_of(st)}, not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _flags())
    except NotRegularFile:
        raise
    except FileNotFoundError:
        raise NotRegularFile(f"{shown(rel)} does not exist (removed while cliplabel ran?)") from None
    except OSError as exc:
        raise NotRegularFile(f"{shown(rel)} cannot be opened: {exc.strerror or exc}") from None
    try:
        _check_opened(fd, path, rel)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def move(root: Path, src: str, dst: str) -> None:
    sp, dp = _parts(src), _parts(dst)
    sfolder, dfolder = _folder(root, sp[:-1]), _folder(root, dp[:-1], create=True)
    spath, dpath = os.path.join(sfolder, sp[-1]), os.path.join(dfolder, dp[-1])
    st = _lstat(spath)
    if st is None or is_link(st) or not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"{shown(src)} is {'missing' if st is None else kind_of(st)}, not moved")
    if _lstat(dpath) is not None:
        raise CliplabelError(f"refusing to move {shown(src)} onto existing {shown(dst)}")
    _check_real(sfolder)
    _check_real(dfolder)
    os.rename(spath, dpath)  # on Windows a rename never replaces an existing file


def remove(root: Path, rel: str, missing_ok: bool = True) -> None:
    parts = _parts(rel)
    try:
        folder = _folder(root, parts[:-1])
        _check_real(folder)
        os.unlink(os.path.join(folder, parts[-1]))  # a link itself (a junction too), never what it points at
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_empty_folders(root: Path, rel: str) -> None:
    try:
        top = _folder(root, _parts(rel))
        for parent, name, st in _walk(top, bottom_up=True):
            if stat.S_ISDIR(st.st_mode) and not is_link(st):
                with contextlib.suppress(OSError, NotRegularFile):
                    _check_real(parent)
                    os.rmdir(os.path.join(parent, name))
        _check_real(top)
        os.rmdir(top)
    except (OSError, NotRegularFile):
        pass  # not empty, or gone: nothing to do


def _walk(top: str, bottom_up: bool = False) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(parent, name, lstat)`` of every entry under ``top``, never into a link or junction, to
    ``MAX_WALK_DEPTH`` levels; a folder before its entries, or after them with ``bottom_up``. Iterative."""
    stack: list[tuple[str, Iterator[str], tuple[str, str, os.stat_result] | None]] = [(top, iter(os.listdir(top)), None)]
    while stack:
        parent, names, folder = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            if folder is not None and bottom_up:
                yield folder
            continue
        st = _lstat(os.path.join(parent, name))
        if st is None:
            continue
        if is_link(st) or not stat.S_ISDIR(st.st_mode):
            yield parent, name, st
            continue
        if not bottom_up:
            yield parent, name, st
        if len(stack) > MAX_WALK_DEPTH:
            continue
        sub = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            stack.append((sub, iter(os.listdir(sub)), (parent, name, st)))


def sweep_temps(root: Path, rel: str = "", recursive: bool = True) -> int:
    removed = 0
    try:
        top = _folder(root, _parts(rel) if rel else ())
        entries = _walk(top) if recursive else (
            (top, n, st) for n in os.listdir(top) if (st := _lstat(os.path.join(top, n))) is not None)
        for parent, name, st in entries:
            if is_dead_temp(name, st):
                with contextlib.suppress(NotRegularFile):
                    _check_real(parent)
                    _remove_quietly(os.path.join(parent, name))
                    removed += 1
    except (OSError, NotRegularFile):
        pass  # absent, or not a folder: nothing of ours to sweep
    return removed


def open_lock_file(root: Path, rel: str) -> int:
    """The lock file ``root/rel`` opened read-write (made if missing; a link planted there replaced)."""
    parts = _parts(rel)
    path = os.path.join(_folder(root, parts[:-1], create=True), parts[-1])
    st = _lstat(path)
    if st is not None and is_link(st):
        log.warning("replaced a symbolic link planted at %s by a lock file (its target was not touched)",
                    shown(root / rel))
        os.unlink(path)
    elif st is not None and not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"the lock file {shown(root / rel)} is not a regular file")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _flags(), 0o666)
    except OSError as exc:
        raise CliplabelError(f"cannot open the lock file {shown(root / rel)}: {exc.strerror or exc}") from None
    try:
        _check_opened(fd, path, root / rel)
    except BaseException:
        os.close(fd)
        raise
    return fd
