"""Guarded file access through folder descriptors (POSIX: ``O_NOFOLLOW``, ``O_DIRECTORY``, ``dir_fd``).

Every folder on the way to a file is opened relative to its parent with ``O_NOFOLLOW`` (a descriptor per
step), so a link planted anywhere in the path, even one swapped in between two calls, is never followed out
of the folder. Used only where the system has these calls (``usable()``; ``guarded.py`` asks), importable
anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.guard_base import (
    MAX_WALK_DEPTH, NotRegularFile, cannot_write, is_dead_temp, kind_of, parts_of, shown, temp_name,
)

log = logging.getLogger(__name__)

_FLAGS = ("O_NOFOLLOW", "O_DIRECTORY", "O_CLOEXEC", "O_NONBLOCK")
_DIR_FD_CALLS = ("open", "stat", "mkdir", "unlink", "rmdir", "rename")


def usable() -> bool:
    """Whether this system can open a path relative to a folder without following links (POSIX can)."""
    return (all(hasattr(os, flag) for flag in _FLAGS)
            and all(getattr(os, call) in os.supports_dir_fd for call in _DIR_FD_CALLS)
            and os.listdir in os.supports_fd)


_OK = usable()
_DIR = os.O_RDONLY | (os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC if _OK else 0)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _step(fd: int, name: str, create: bool, where: str) -> int:
    """Open folder ``name`` under ``fd`` without following a link; create it, or replace a planted link."""
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        st = _lstat(fd, name)
        if not (create and st is not None and stat.S_ISLNK(st.st_mode)):
            if st is not None and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotRegularFile(f"{shown(where)} is {kind_of(st)}, not a folder") from None
            raise
        log.warning("replaced a symbolic link planted at %s by a folder (its target was not touched)", shown(where))
        os.unlink(name, dir_fd=fd)
    try:
        os.mkdir(name, 0o777, dir_fd=fd)
    except FileExistsError:
        pass
    return os.open(name, _DIR, dir_fd=fd)


@contextmanager
def folder_fd(root: Path, parts: tuple[str, ...], create: bool = False) -> Iterator[int]:
    """A descriptor of ``root/<parts>``, each step opened without following links (made when ``create``)."""
    if not _OK:  # every call here starts with this one: none runs without O_NOFOLLOW
        raise RuntimeError("guard_posix needs O_NOFOLLOW, O_DIRECTORY and dir_fd; use guarded, which picks")
    fd = os.open(root, _DIR)
    try:
        for i, name in enumerate(parts):
            nxt = _step(fd, name, create, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(root: Path, rel: str) -> Iterator[BinaryIO]:
    parts = parts_of(rel)
    target = root.joinpath(*parts)
    try:
        with folder_fd(root, parts[:-1], create=True) as fd:
            name = parts[-1]
            st = _lstat(fd, name)
            if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise NotRegularFile(f"cannot write {shown(target)}: it is {kind_of(st)}, not a regular file")
            tmp = temp_name(name)
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
            try:
                with os.fdopen(tfd, "wb") as fh:
                    yield fh
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                _unlink_quietly(fd, tmp)
                raise
    except NotRegularFile:
        raise
    except OSError as exc:
        raise cannot_write(target, exc) from None


FOLDERS_AT_ONCE = 64  # folder descriptors ``write_files`` holds open at a time


def write_files(root: Path, files: Iterable[tuple[str, bytes]]) -> int:
    """``atomic_writer`` for many small files, batched: each folder opened once, every temp file written, all of
    them flushed to disk by one ``os.sync`` (a fsync each where there is none), then each renamed over its
    target. The same guarantees as one at a time (exclusive temp files, no link followed, a target that is not
    a regular file refused); on an error the files not yet renamed are left as they were. Returns how many."""
    batch: list[tuple[int, str, str]] = []  # (folder descriptor, temp name, name)
    written = 0
    target = root
    with contextlib.ExitStack() as folders:
        fds: dict[tuple[str, ...], int] = {}
        try:
            for rel, data in files:
                parts = parts_of(rel)
                target = root.joinpath(*parts)
                if parts[:-1] not in fds:
                    if len(fds) >= FOLDERS_AT_ONCE:
                        written += _land(batch)
                        folders.close()
                        fds.clear()
                    fds[parts[:-1]] = folders.enter_context(folder_fd(root, parts[:-1], create=True))
                fd, name = fds[parts[:-1]], parts[-1]
                st = _lstat(fd, name)
                if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise NotRegularFile(f"cannot write {shown(target)}: it is {kind_of(st)}, not a regular file")
                tmp = temp_name(name)
                tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                              dir_fd=fd)
                batch.append((fd, tmp, name))
                with os.fdopen(tfd, "wb") as fh:
                    fh.write(data)
                    if not _SYNC_ALL:
                        fh.flush()
                        os.fsync(fh.fileno())
            written += _land(batch)
        except BaseException as exc:
            for fd, tmp, _ in batch:
                _unlink_quietly(fd, tmp)
            if isinstance(exc, OSError) and not isinstance(exc, NotRegularFile):
                raise cannot_write(target, exc) from None
            raise
    return written


_SYNC_ALL = hasattr(os, "sync")


def _land(batch: list[tuple[int, str, str]]) -> int:
    """Flush the batch's temp files to disk (once for all), then rename each over its target; empties it."""
    if batch and _SYNC_ALL:
        os.sync()
    for fd, tmp, name in batch:  # on an error the caller removes the temp files (those renamed are gone)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    landed = len(batch)
    batch.clear()
    return landed


def _unlink_quietly(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except OSError:
        pass


def open_regular(root: Path, rel: str) -> BinaryIO:
    parts = parts_of(rel)
    try:
        with folder_fd(root, parts[:-1]) as fd:
            ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except NotRegularFile:
        raise
    except FileNotFoundError:
        raise NotRegularFile(f"{shown(rel)} does not exist (removed while cliplabel ran?)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(f"{shown(rel)} is a symbolic link (only regular files inside the job are read)") from None
        raise NotRegularFile(f"{shown(rel)} cannot be opened: {exc.strerror or exc}") from None
    st = os.fstat(ffd)
    if not stat.S_ISREG(st.st_mode):
        os.close(ffd)
        raise NotRegularFile(f"{shown(rel)} is {kind_of(st)}, not a regular file")
    return os.fdopen(ffd, "rb")


def move(root: Path, src: str, dst: str) -> None:
    sp, dp = parts_of(src), parts_of(dst)
    with folder_fd(root, sp[:-1]) as sfd, folder_fd(root, dp[:-1], create=True) as dfd:
        st = _lstat(sfd, sp[-1])
        if st is None or not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{shown(src)} is {'missing' if st is None else kind_of(st)}, not moved")
        if _lstat(dfd, dp[-1]) is not None:
            raise CliplabelError(f"refusing to move {shown(src)} onto existing {shown(dst)}")
        os.rename(sp[-1], dp[-1], src_dir_fd=sfd, dst_dir_fd=dfd)


def remove(root: Path, rel: str, missing_ok: bool = True) -> None:
    parts = parts_of(rel)
    try:
        with folder_fd(root, parts[:-1]) as fd:
            os.unlink(parts[-1], dir_fd=fd)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_empty_folders(root: Path, rel: str) -> None:
    try:
        with folder_fd(root, parts_of(rel)) as fd:
            for parent, name, st in _walk(fd, bottom_up=True):
                if stat.S_ISDIR(st.st_mode):
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=parent)
        with folder_fd(root, parts_of(rel)[:-1]) as parent:
            os.rmdir(parts_of(rel)[-1], dir_fd=parent)
    except (OSError, NotRegularFile):
        pass  # not empty, or gone: nothing to do


def _walk(fd: int, bottom_up: bool = False) -> Iterator[tuple[int, str, os.stat_result]]:
    """``(parent_fd, name, lstat)`` of every entry under ``fd``, never through a link, to ``MAX_WALK_DEPTH``
    levels; a folder comes before its entries, or after them with ``bottom_up``. Iterative: a producer decides
    how deep the folders go, and recursion would fail on a deep one."""
    stack: list[tuple[int, Iterator[str], tuple[int, str, os.stat_result] | None]] = [(fd, iter(os.listdir(fd)), None)]
    try:
        while stack:
            parent, names, folder = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if parent != fd:
                    os.close(parent)
                if folder is not None and bottom_up:
                    yield folder
                continue
            st = _lstat(parent, name)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                yield parent, name, st
                continue
            if not bottom_up:
                yield parent, name, st
            if len(stack) > MAX_WALK_DEPTH:
                continue
            try:
                sub = os.open(name, _DIR, dir_fd=parent)
            except OSError:
                continue
            try:
                stack.append((sub, iter(os.listdir(sub)), (parent, name, st)))
            except OSError:
                os.close(sub)
    finally:
        for parent, _, _ in stack:
            if parent != fd:
                os.close(parent)


def sweep_temps(root: Path, rel: str = "", recursive: bool = True) -> int:
    removed = 0
    try:
        with folder_fd(root, parts_of(rel) if rel else ()) as fd:
            entries = _walk(fd) if recursive else (
                (fd, n, st) for n in os.listdir(fd) if (st := _lstat(fd, n)) is not None)
            for parent, name, st in entries:
                if is_dead_temp(name, st):
                    _unlink_quietly(parent, name)
                    removed += 1
    except (OSError, NotRegularFile):
        pass  # absent, or not a folder: nothing of ours to sweep
    return removed


def open_lock_file(root: Path, rel: str) -> int:
    """The lock file ``root/rel`` opened read-write (made if missing; a link planted there replaced)."""
    parts = parts_of(rel)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    with folder_fd(root, parts[:-1], create=True) as dfd:
        try:
            fd = os.open(parts[-1], flags, 0o666, dir_fd=dfd)
        except OSError as exc:
            st = _lstat(dfd, parts[-1])
            if exc.errno != errno.ELOOP or st is None or not stat.S_ISLNK(st.st_mode):
                raise CliplabelError(f"cannot open the lock file {shown(root / rel)}: {exc.strerror or exc}") from None
            log.warning("replaced a symbolic link planted at %s by a lock file (its target was not touched)",
                        shown(root / rel))
            os.unlink(parts[-1], dir_fd=dfd)
            fd = os.open(parts[-1], flags | os.O_EXCL, 0o666, dir_fd=dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(f"the lock file {shown(root / rel)} is not a regular file")
    return fd
