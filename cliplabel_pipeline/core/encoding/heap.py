"""The process heap between forward passes: the model's buffers kept, the rest handed back now and then.

glibc by default serves the forward pass's activations (up to 20 MB each for ViT-B/32 at batch 32) with
``mmap`` above a threshold it moves as blocks are freed, and gives freed memory at the heap's top back to the
system; so a forward pass could fault in ~450 MB of fresh pages every time (92,000-110,000 minor faults a
batch, measured), and whether it did changed from run to run. ``keep_buffers()`` (called when a model is
loaded) fixes the policy: ``mmap`` only above 32 MB, the heap's top kept up to 1 GB, so the activations are
reused from one batch to the next. ``settle()``, called once a batch, runs ``malloc_trim`` at most every
``TRIM_EVERY_S`` seconds, which returns the free pages that per-image buffers leave scattered over the heap
(without any trim RSS grew ~115 KB an image), at the price of one batch re-faulting its buffers;
``settle(force=True)`` trims at once, for the end of a job or an idle server.

Measured on ViT-B/32 at batch 32 (bf16, 2 cores), the encoder alone in a thread, fresh processes: 29.5-37.2
img/s and 1,400-110,000 faults a batch with glibc's defaults (by run), 36.4-36.5 img/s and 600-6,900 faults
with this policy. Off glibc (Windows, macOS, musl) nothing is changed. Measured before, with a trim every batch: a
*low* fixed mmap threshold also kept RSS flat but made every decoded image pay for fresh pages (64 KB:
decoding 1.0 -> 1.8 ms an image) or slowed the forward pass (1 MB); hence a threshold above the activations.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

TRIM_EVERY_S = 10.0
MMAP_THRESHOLD = 32 * 2**20  # above the largest activation of ViT-B/32 at batch 32 (20 MB)
TRIM_THRESHOLD = 2**30
_PARAMS = {"M_TRIM_THRESHOLD": (-1, TRIM_THRESHOLD), "M_MMAP_THRESHOLD": (-3, MMAP_THRESHOLD)}  # malloc.h

_lock = threading.Lock()
_last_trim = 0.0


@functools.cache
def _libc():
    """glibc, with the heap policy set once; None where the C library is another (Windows' CRT, macOS, musl).
    Asked of the system, not guessed from its name: only glibc answers ``CS_GNU_LIBC_VERSION``."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or no such name (musl, macOS)
        glibc = None
    if not glibc:
        log.debug("not glibc: the heap is left as it is")
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):
        log.debug("not glibc: the heap is left as it is")
        return None
    trim.argtypes, mallopt.argtypes = [ctypes.c_size_t], [ctypes.c_int, ctypes.c_int]
    for name, (param, value) in _PARAMS.items():
        if not mallopt(param, value):
            log.warning("glibc refused mallopt(%s, %d): forward passes may fault in fresh pages", name, value)
    return libc


def keep_buffers() -> None:
    """Set the heap policy (once a process; before the first forward pass)."""
    _libc()


def settle(now: float | None = None, force: bool = False) -> bool:
    """Once a batch: trim when ``TRIM_EVERY_S`` have passed since the last trim (at once with ``force``).
    True if it trimmed."""
    global _last_trim
    libc = _libc()
    if libc is None:
        return False
    now = time.monotonic() if now is None else now
    with _lock:
        if not force and now - _last_trim < TRIM_EVERY_S:
            return False
        _last_trim = now
    libc.malloc_trim(0)
    return True
