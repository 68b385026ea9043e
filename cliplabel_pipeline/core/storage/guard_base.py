"""What both ways of guarded file access share (``guarded.py`` picks the way): the error, the path rules,
what counts as a link, temp-file names and whether their writer still runs."""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
from pathlib import PurePosixPath

import psutil

from cliplabel_pipeline.core.errors import CliplabelError

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"
TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
MAX_WALK_DEPTH = 64  # cliplabel's own folders never go deeper (items stop at 32 levels); the rest is not ours


class NotRegularFile(CliplabelError):
    """A path that is not a regular file inside the folder; ``str()`` is the reason a person reads."""


FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # a full disk, or the user's quota spent


def cannot_write(target: str | os.PathLike, exc: OSError) -> CliplabelError:
    """The one line for a write that failed: the file, the system's reason, and what to do about it."""
    fix = "free some space and run it again" if exc.errno in FULL else "is the folder writable?"
    return CliplabelError(f"cannot write {shown(target)}: {exc.strerror or exc} ({fix})")


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


_NAME_SURROGATE = 0x20000000  # IsReparseTagNameSurrogate: a reparse point naming another path (link, junction)


def is_link(st: os.stat_result) -> bool:
    """True for a symbolic link, and on Windows for a reparse point that names another path: a junction too,
    which ``lstat`` reports as a folder. Either leads out of the folder it sits in. (A cloud placeholder, also a
    reparse point, names no path and is a file like any other.)"""
    if stat.S_ISLNK(st.st_mode):
        return True
    if not getattr(st, "st_file_attributes", 0) & stat.FILE_ATTRIBUTE_REPARSE_POINT:
        return False
    tag = getattr(st, "st_reparse_tag", None)
    return tag is None or bool(tag & _NAME_SURROGATE)


def kind_of(st: os.stat_result) -> str:
    if is_link(st):
        return "a symbolic link"
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(st.st_mode):
            return name
    return "a regular file"


def temp_name(name: str) -> str:
    """The temp file a writer of ``name`` writes first: unique per writer, recognisable by ``TEMP``."""
    return f".{name[:180]}.{HOST}-{os.getpid()}.{os.urandom(4).hex()}.tmp"


def is_dead_temp(name: str, st: os.stat_result) -> bool:
    """True for a temp file of this host whose writer no longer runs (a process killed mid-write)."""
    m = TEMP.match(name)
    return bool(m) and stat.S_ISREG(st.st_mode) and m["host"] == HOST and not alive(int(m["pid"]))


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs, asked the way the platform offers (``os.kill(pid, 0)`` would end the
    process on Windows, where signal 0 is no probe)."""
    return pid == os.getpid() or psutil.pid_exists(pid)
