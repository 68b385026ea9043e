"""File access inside an untrusted folder that never follows a symbolic link.

A job folder is written by another service, and cliplabel often runs as root. Every folder on the way to a
file is opened relative to its parent with ``O_NOFOLLOW`` (a file descriptor per step), so a link planted
anywhere in the path, even one swapped in between two calls, is never followed out of the folder:

- ``write_file`` writes a temp file with ``O_EXCL | O_NOFOLLOW`` and renames it over the target (a rename
  replaces a link, never writes through it); a link planted where cliplabel keeps its own folder is
  replaced by a real folder, with a warning, and its target is left untouched;
- ``open_regular`` opens a file for reading only when it is a regular file (never a FIFO, a device or a
  link), without blocking;
- ``move``, ``remove`` and ``scan`` work the same way.

Temp files are named ``.<name>.<host>-<pid>.<random>.tmp``: unique per writer, and ``sweep_temps`` removes
those whose writer died (a process killed mid-write) without touching a live writer's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


class NotRegularFile(CliplabelError):
    """A path that is not a regular file inside the folder; ``str()`` is the reason a person reads."""


def shown(text: str | os.PathLike) -> str:
    """``text`` safe to print: control, bidi and undecodable characters escaped (``\\x1b``, ``\\u202e``)."""
    out = []
    for ch in str(text):
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def parts_of(rel: str | PurePosixPath) -> tuple[str, ...]:
    """The components of a relative path; refuses absolute paths, ``..`` and empty components."""
    text = str(rel)
    parts = tuple(text.split("/"))
    if not text or text.startswith("/") or any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise CliplabelError(f"refusing path {shown(text)!r}: not a plain path inside the folder")
    return parts


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "a regular file"


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
                raise NotRegularFile(f"{shown(where)} is {_kind(st.st_mode)}, not a folder") from None
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
    fd = os.open(root, _DIR)
    try:
        for i, name in enumerate(parts):
            nxt = _step(fd, name, create, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def write_file(root: Path, rel: str, data: bytes) -> Path:
    """Write ``data`` to ``root/rel`` atomically (temp file, fsync, rename) without following any link.

    The file gets the process umask's mode, as any file a program creates. Returns ``root/rel``.
    """
    with atomic_writer(root, rel) as fh:
        fh.write(data)
    return root.joinpath(*parts_of(rel))


@contextmanager
def atomic_writer(root: Path, rel: str) -> Iterator[BinaryIO]:
    """A file to write ``root/rel`` through: a temp file beside it, renamed over it when the block ends
    without error and removed otherwise. Folders are made and links never followed, as in ``write_file``."""
    parts = parts_of(rel)
    target = root.joinpath(*parts)
    try:
        with folder_fd(root, parts[:-1], create=True) as fd:
            name = parts[-1]
            st = _lstat(fd, name)
            if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise NotRegularFile(f"cannot write {shown(target)}: it is {_kind(st.st_mode)}, not a regular file")
            tmp = f".{name[:180]}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.tmp"
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
        raise CliplabelError(f"cannot write {shown(target)}: {exc.strerror or exc} "
                             f"(is the folder writable?)") from None


def _unlink_quietly(fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=fd)
    except OSError:
        pass


def open_regular(root: Path, rel: str) -> BinaryIO:
    """``root/rel`` opened for reading, only if it is a regular file reached without a link.

    Raises ``NotRegularFile`` (a FIFO, device, folder, link, or a missing file) with the reason; never blocks.
    """
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
        raise NotRegularFile(f"{shown(rel)} is {_kind(st.st_mode)}, not a regular file")
    return os.fdopen(ffd, "rb")


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
    sp, dp = parts_of(src), parts_of(dst)
    with folder_fd(root, sp[:-1]) as sfd, folder_fd(root, dp[:-1], create=True) as dfd:
        st = _lstat(sfd, sp[-1])
        if st is None or not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{shown(src)} is {'missing' if st is None else _kind(st.st_mode)}, not moved")
        if _lstat(dfd, dp[-1]) is not None:
            raise CliplabelError(f"refusing to move {shown(src)} onto existing {shown(dst)}")
        os.rename(sp[-1], dp[-1], src_dir_fd=sfd, dst_dir_fd=dfd)


def remove(root: Path, rel: str, missing_ok: bool = True) -> None:
    """Delete ``root/rel`` (a file or a link itself, never what a link points at)."""
    parts = parts_of(rel)
    try:
        with folder_fd(root, parts[:-1]) as fd:
            os.unlink(parts[-1], dir_fd=fd)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_empty_folders(root: Path, rel: str) -> None:
    """Remove ``root/rel`` and the empty folders under it, deepest first; never follows a link."""
    try:
        with folder_fd(root, parts_of(rel)) as fd:
            _prune(fd)
        with folder_fd(root, parts_of(rel)[:-1]) as parent:
            os.rmdir(parts_of(rel)[-1], dir_fd=parent)
    except (OSError, NotRegularFile):
        pass  # not empty, or gone: nothing to do


def _prune(fd: int) -> None:
    """Remove the empty folders under ``fd``, deepest first."""
    for parent, name, st in _walk(fd, bottom_up=True):
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent)


MAX_WALK_DEPTH = 64  # cliplabel's own folders never go deeper (items stop at 32 levels); the rest is not ours


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
    """Remove temp files in ``root/rel`` left by a writer of this host that no longer runs; returns how many."""
    removed = 0
    try:
        with folder_fd(root, parts_of(rel) if rel else ()) as fd:
            removed = _sweep(fd, recursive)
    except (OSError, NotRegularFile):
        pass  # absent, or not a folder: nothing of ours to sweep
    return removed


def _sweep(fd: int, recursive: bool) -> int:
    removed = 0
    entries = _walk(fd) if recursive else ((fd, n, st) for n in os.listdir(fd) if (st := _lstat(fd, n)) is not None)
    for parent, name, st in entries:
        m = _TEMP.match(name)
        if m and stat.S_ISREG(st.st_mode) and m["host"] == _HOST and not _alive(int(m["pid"])):
            _unlink_quietly(parent, name)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    fd = _open_lock_file(root, rel)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while not _try_lock(fd):
            if not told and on_wait is not None:
                on_wait(_holder(fd))
                told = True
            if time.monotonic() >= deadline:
                raise CliplabelError(f"{shown(root)} is busy: another cliplabel process ({_holder(fd) or 'unknown'}) "
                                     f"has held it for over {wait_s:g}s; try again when it has finished")
            time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also when the process is killed


def _open_lock_file(root: Path, rel: str) -> int:
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


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(fd: int) -> str:
    try:
        return shown(os.pread(fd, 200, 0).decode("utf-8", "replace").strip())
    except OSError:
        return ""
