"""Windows, as cliplabel can tell it, on Linux: what Windows' CPython lacks is hidden, and the calls it has
but cannot honour fail as they fail there.

- ``os.O_NOFOLLOW``, ``O_DIRECTORY``, ``O_CLOEXEC``, ``O_NONBLOCK``, ``pread``, ``pwrite``, ``confstr``,
  ``killpg``, ``getpgid``, ``nice``: gone;
- ``multiprocessing.get_context("fork" or "forkserver")`` raises ``ValueError``, as it does there (a pool of
  decoding processes would otherwise run on Linux, where nothing is hidden);
- a ``dir_fd`` (or ``src_dir_fd``/``dst_dir_fd``) passed to any call raises ``NotImplementedError``, a
  descriptor passed to ``listdir``/``scandir`` raises ``TypeError``; ``os.supports_dir_fd`` is empty;
- ``fcntl`` cannot be imported; ``msvcrt`` can, with ``locking`` (a stand-in on ``flock``, exclusive per
  open file as Windows' per handle);
- ``signal.SIGKILL`` and the other POSIX-only signals are gone; loading ``libc.so.6`` fails (no glibc).

``hide(set_attr, del_attr, set_item)`` takes pytest's ``monkeypatch`` calls (undone after the test) or plain
ones. Run as a script, it hides first and then runs ``cliplabel ARGS`` (``cli ARGS``, several commands
separated by ``;``) or imports every module of the package (``import-all``):
``python cliplabel_pipeline_tests/windows_like.py cli job J --results-root R ";" export J --format zip``.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import shutil
import signal
import sys
import types

# Not hidden: what the Linux builds of torch and Dagster call on their own POSIX paths (os.getuid, ...); on
# Windows their Windows builds take other paths. cliplabel itself must not need any of them.
HIDDEN_OS = ("O_NOFOLLOW", "O_DIRECTORY", "O_CLOEXEC", "O_NONBLOCK", "pread", "pwrite", "confstr", "killpg",
             "getpgid", "nice")
HIDDEN_SIGNALS = ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGSTOP", "SIGCONT")
DIR_FD_CALLS = ("open", "stat", "lstat", "mkdir", "unlink", "remove", "rmdir", "rename", "replace", "chmod",
                "utime", "access", "readlink", "symlink", "link", "chown")


def _no_dir_fd(call):
    @functools.wraps(call)
    def wrapped(*args, **kwargs):
        if any(kwargs.get(k) is not None for k in ("dir_fd", "src_dir_fd", "dst_dir_fd")):
            raise NotImplementedError(f"{call.__name__}: dir_fd unavailable on this platform")
        return call(*args, **kwargs)
    return wrapped


def _no_fd_listing(call):
    @functools.wraps(call)
    def wrapped(path=".", *args, **kwargs):
        if isinstance(path, int):
            raise TypeError(f"{call.__name__}: path should be string, bytes, os.PathLike or None, not int")
        return call(path, *args, **kwargs)
    return wrapped


def fake_msvcrt(flock=None) -> types.ModuleType:
    """``msvcrt.locking`` as a test stand-in on ``fcntl.flock`` (taken before ``fcntl`` is hidden)."""
    import fcntl

    flock = flock or fcntl.flock
    lock_nb, unlock = fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN
    mod = types.ModuleType("msvcrt")
    mod.LK_NBLCK, mod.LK_UNLCK, mod.LK_LOCK = 2, 0, 1

    def locking(fd: int, mode: int, nbytes: int) -> None:
        if mode == mod.LK_UNLCK:
            flock(fd, unlock)
            return
        try:
            flock(fd, lock_nb)
        except BlockingIOError:
            raise PermissionError(errno.EACCES, "Permission denied") from None

    mod.locking = locking
    return mod


def _spawn_only(get_context):
    @functools.wraps(get_context)
    def wrapped(method=None):
        if method in ("fork", "forkserver"):
            raise ValueError(f"cannot find context for {method!r}")
        return get_context(method)
    return wrapped


class _NoGlibc(ctypes.CDLL):
    def __init__(self, name, *args, **kwargs):
        if "libc.so" in str(name):  # (CDLL(None), the running program, stays: Linux builds of watchdog use it)
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        super().__init__(name, *args, **kwargs)


# Linux builds of dependencies that read what is hidden at their import, on paths their Windows builds never
# take: loaded before hiding. (Celery's worker pool; Celery does not support Windows workers anyway.)
LOADED_FIRST = ("billiard.compat", "celery.platforms")


def hide(set_attr=setattr, del_attr=delattr, set_item=None, signals: bool = True) -> None:
    """Make this process look like Windows to cliplabel (see the module's docstring). ``signals=False`` keeps
    the POSIX signals, for a pytest process whose own helpers (``Popen.kill``) need them."""
    set_item = set_item or (lambda mapping, key, value: mapping.__setitem__(key, value))
    for name in LOADED_FIRST:
        try:
            __import__(name)
        except ImportError:
            pass
    import getpass  # noqa: F401 - these two tell Windows by importing msvcrt; the process layer under the
    import subprocess  # noqa: F401 - stand-in stays Linux's (it is only there for cliplabel's lock)

    set_item(sys.modules, "msvcrt", fake_msvcrt())
    set_item(sys.modules, "fcntl", None)
    for name in HIDDEN_OS:
        if hasattr(os, name):
            del_attr(os, name)
    for name in HIDDEN_SIGNALS if signals else ():
        if hasattr(signal, name):
            del_attr(signal, name)
    for name in DIR_FD_CALLS:
        set_attr(os, name, _no_dir_fd(getattr(os, name)))
    for name in ("listdir", "scandir"):
        set_attr(os, name, _no_fd_listing(getattr(os, name)))
    set_attr(os, "supports_dir_fd", set())
    set_attr(os, "supports_fd", {os.stat})
    set_attr(os, "supports_follow_symlinks", {os.stat})
    set_attr(shutil, "_use_fd_functions", False)  # decided when shutil was imported, as on Windows
    set_attr(ctypes, "CDLL", _NoGlibc)
    import multiprocessing

    set_attr(multiprocessing, "get_context", _spawn_only(multiprocessing.get_context))


def _import_all() -> int:
    import importlib
    import pkgutil

    import cliplabel_pipeline

    names = [m.name for m in pkgutil.walk_packages(cliplabel_pipeline.__path__, "cliplabel_pipeline.")
             if not m.name.endswith(".__main__")]  # importing one runs the program
    for name in names:
        importlib.import_module(name)
    print(f"imported {len(names)} modules")
    return 0


def _cli(args: list[str]) -> int:
    """``cliplabel`` once per command, commands separated by ``;``; each one's exit code printed after it."""
    from cliplabel_pipeline.cli import main
    from cliplabel_pipeline.core.storage import guarded

    print(f"[windows-like] guarded access: {guarded.backend_name()}", flush=True)
    worst, command = 0, []
    for arg in [*args, ";"]:
        if arg != ";":
            command.append(arg)
            continue
        try:
            rc = main(command)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
        print(f"[windows-like] exit {rc}: cliplabel {' '.join(command[:2])}", flush=True)
        worst, command = worst or rc, []
    return worst


if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # this folder holds `dagster/` (tests), which would hide the real package
    hide()
    what, args = sys.argv[1], sys.argv[2:]
    if what == "import-all":
        sys.exit(_import_all())
    sys.exit(_cli(args))
