"""Cache files of numpy arrays that are checked before use: written atomically with a checksum of every
array, read without pickles, and removed with one warning when they fail a check (so they are rebuilt)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.guarded import atomic_writer

log = logging.getLogger(__name__)

MAX_CACHE_BYTES = 1 << 28  # 256 MB unpacked: far above any bank, far below a zip bomb
Arrays = dict[str, np.ndarray]


def checksum(arrays: Arrays) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, except the ``checksum`` entry itself."""
    digest = hashlib.sha256()
    for name in sorted(k for k in arrays if k != "checksum"):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def write_npz(path: Path, *, max_bytes: int | None = None, **arrays: np.ndarray) -> bool:
    """Write ``arrays`` and their checksum to ``path`` atomically (a temporary file beside it, then a rename),
    then, given ``max_bytes`` (``CLIPLABEL_CACHE_MAX_MB``), keep the folder's cache files of its kind within it
    (``evict_lru``).

    A cache that cannot be written is not an error: one warning, False, and the caller goes on without it.
    """
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path.parent.resolve(), path.name) as fh:  # the umask's mode, a temp file renamed
            np.savez(fh, checksum=np.array(checksum(arrays)), **arrays)
    except (OSError, CliplabelError) as exc:
        log.warning("could not write the cache file %s (%s); going on without it", path,
                    getattr(exc, "strerror", None) or exc)
        return False
    if max_bytes is not None:
        evict_lru(path, max_bytes)
    return True


def evict_lru(kept: Path, max_bytes: int) -> list[Path]:
    """Remove the least recently used cache files of ``kept``'s kind (same folder, same prefix before the first
    ``-``, same suffix) until they hold at most ``max_bytes``; ``kept`` itself always stays. A read marks a file
    used (``read_npz`` touches it). Returns what was removed."""
    prefix, suffix = kept.name.split("-", 1)[0] + "-", kept.suffix
    files = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(kept.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    files.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
    total, removed = sum(size for _, size, _ in files), []
    for _, size, path in sorted(files):  # oldest use first
        if total <= max_bytes:
            break
        if path.name == kept.name:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
        total -= size
    if removed:
        log.info("cache %s: removed %d least recently used files (over %d MB)", kept.parent, len(removed),
                 max_bytes // 1_000_000)
    return removed


def _load(fh) -> Arrays:
    data = np.load(fh, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise TypeError("not an npz archive")
    with data:
        if sum(info.file_size for info in data.zip.infolist()) > MAX_CACHE_BYTES:
            raise ValueError(f"over {MAX_CACHE_BYTES >> 20} MB unpacked")
        return {name: data[name] for name in data.files}


def read_npz(path: Path, problem: Callable[[Arrays], str | None]) -> Arrays | None:
    """The arrays of the cache file at ``path`` when it is readable, its checksum matches and ``problem``
    finds nothing wrong; None when there is no file. A file that fails is removed, with one warning line
    naming it and why, so it is rebuilt and never used."""
    inode = None
    try:
        with open(path, "rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            arrays = _load(fh)
    except (FileNotFoundError, NotADirectoryError):  # no file (or no folder) there yet
        return None
    except Exception as exc:  # noqa: BLE001 - empty, truncated, not an archive, object arrays: numpy and zipfile
        why = f"unreadable: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"  # raise many types
    else:
        if "checksum" not in arrays:
            why = "no checksum"
        elif str(arrays["checksum"]) != checksum(arrays):
            why = "checksum mismatch"
        else:
            why = problem(arrays)
    if why is None:
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to be evicted
        return arrays
    log.warning("cache file %s is unusable (%s); removed, it will be rebuilt", path, why)
    with contextlib.suppress(OSError):
        if inode is not None and os.stat(path).st_ino == inode:  # not a good file another process just wrote
            os.unlink(path)
    return None
