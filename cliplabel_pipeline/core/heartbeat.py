"""One-line heartbeats while a step runs: ``HB op=<8 hex> job=<id|none> dur=<s>s rss=<MB>MB gpu=<a>/<r>MB``."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable

import psutil


def _torch_if_loaded():
    """torch when this process has imported it; a process that never did holds no GPU memory, and commands that
    never encode (cleanup, restore, export) are not made to import it."""
    return sys.modules.get("torch")


def op_id(*parts: str) -> str:
    """Eight hex digits naming one step of one run."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]


def memory_fields() -> str:
    """``rss=<MB>MB gpu=<allocated>/<reserved>MB`` of this process now."""
    rss = psutil.Process().memory_info().rss // (1 << 20)
    torch = _torch_if_loaded()
    if torch is not None and torch.cuda.is_available():
        alloc, res = torch.cuda.memory_allocated() >> 20, torch.cuda.memory_reserved() >> 20
    else:
        alloc = res = 0
    return f"rss={rss}MB gpu={alloc}/{res}MB"


def heartbeat_line(op: str, job_id: str | None, seconds: float) -> str:
    return f"HB op={op} job={job_id or 'none'} dur={seconds:.2f}s {memory_fields()}"


def peak_rss_mb() -> int:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this process's own memory. (``ru_maxrss``
    would do too, were it not carried over from the parent through fork and exec.)
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    info = psutil.Process().memory_info()
    return int(getattr(info, "peak_wset", info.rss)) // (1 << 20)


def peak_memory_mb() -> dict:
    """Peak resident memory of this process and peak CUDA memory allocated, in MB."""
    torch = _torch_if_loaded()
    gpu = torch.cuda.max_memory_allocated() >> 20 if torch is not None and torch.cuda.is_available() else 0
    return {"peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": int(gpu)}


class Heartbeat:
    """Context manager emitting a heartbeat every ``interval`` seconds and once at the end."""

    def __init__(self, op: str, job_id: str | None, emit: Callable[[str], None], interval: float = 30.0):
        self.op, self.job_id, self.emit, self.interval = op, job_id, emit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit(heartbeat_line(self.op, self.job_id, time.perf_counter() - self.start))

    def __enter__(self) -> "Heartbeat":
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.emit(heartbeat_line(self.op, self.job_id, time.perf_counter() - self.start))
