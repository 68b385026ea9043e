"""What decoding one image may cost: refused by its structure before decoding, and a CPU-time cap on the rest.

Pixels alone do not bound a decoder's work. A progressive JPEG is decoded once per scan, so a 217 KB file of
a thousand repeated scans over 40 megapixels costs half a minute of CPU (measured: 0.7-0.8 ms a scan per
megapixel); a PNG of millions of one-byte chunks is read a chunk at a time; an animation holds many frames.
So before any pixel is decoded:

- a JPEG (and an MPO's first picture) is refused with more than ``MAX_JPEG_SCANS`` scans, or more than
  ``MAX_SCAN_MEGAPIXELS`` scans times megapixels (a 6000 x 4000 photo of 10 scans is 240; the limit allows
  2,000, about 1.5 s of one core);
- a PNG is refused with more than ``MAX_PNG_CHUNKS`` chunks (a 90-megapixel PNG written in 8 KB chunks has
  about 35,000);
- an image of more than ``MAX_FRAMES`` frames (APNG, animated WEBP, MPO) is refused; only the first is ever
  labelled.

What remains is decoded under ``DECODE_CPU_S`` seconds of the decoding thread's CPU time, checked each time the
decoder reads from the file (every ``DECODE_BLOCK`` bytes): past it, the item is skipped with that reason. CPU time,
not wall time, so a busy machine never skips a good image.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import BinaryIO

from cliplabel_pipeline.core.reading.picture import ImageSkipped

MAX_JPEG_SCANS = 64
MAX_SCAN_MEGAPIXELS = 2_000
MAX_PNG_CHUNKS = 100_000
MAX_FRAMES = 64
DECODE_CPU_S = 10.0
DECODE_BLOCK = 4096  # bytes a progressive JPEG's decoder gets per read (Pillow's 64 KB can hold 1,000 scans)


class CpuBudget:
    """``fp`` for a decoder: every ``read`` first checks the calling thread's CPU time since it was made."""

    def __init__(self, fp: BinaryIO, seconds: float | None = None):
        self._fp, self._start = fp, time.thread_time()
        self._seconds = DECODE_CPU_S if seconds is None else seconds

    def read(self, *args) -> bytes:
        if time.thread_time() - self._start > self._seconds:
            raise ImageSkipped(f"decoding took over {self._seconds:g} s of CPU time; skipped")
        return self._fp.read(*args)

    def __getattr__(self, name):  # seek, tell, fileno, name, ...
        return getattr(self._fp, name)


def check_structure(fp: BinaryIO, fmt: str, size: tuple[int, int], frames: int) -> None:
    """Raise ``ImageSkipped`` when the file's structure would make decoding it cost more than the limits."""
    if frames > MAX_FRAMES:
        raise ImageSkipped(f"{frames} frames, over the {MAX_FRAMES}-frame limit (only the first is labelled)")
    if fmt not in ("JPEG", "MPO", "PNG"):
        return
    with _bytes_of(fp) as data:
        if fmt == "PNG":
            chunks = png_chunk_count(data, MAX_PNG_CHUNKS + 1)
            if chunks > MAX_PNG_CHUNKS:
                raise ImageSkipped(f"PNG of over {MAX_PNG_CHUNKS:,} chunks, over the limit")
            return
        scans = jpeg_scan_count(data, MAX_JPEG_SCANS + 1)
    megapixels = size[0] * size[1] / 1e6
    if scans > MAX_JPEG_SCANS:
        raise ImageSkipped(f"progressive JPEG of over {MAX_JPEG_SCANS} scans, over the limit "
                           f"(each scan decodes the whole picture again)")
    if scans * megapixels > MAX_SCAN_MEGAPIXELS:
        raise ImageSkipped(f"progressive JPEG of {scans} scans over {megapixels:,.0f} megapixels: "
                           f"{scans * megapixels:,.0f} scan-megapixels, over the {MAX_SCAN_MEGAPIXELS:,} limit")


class _bytes_of:
    """The whole file as a buffer, without moving ``fp``'s position: a read-only map of a real file, else a
    copy of an in-memory one."""

    def __init__(self, fp: BinaryIO):
        self._fp, self._map = fp, None

    def __enter__(self):
        try:
            fd = self._fp.fileno()
            if os.fstat(fd).st_size == 0:
                return b""
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
            return self._map
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            pos = self._fp.tell()
            self._fp.seek(0)
            data = self._fp.read()
            self._fp.seek(pos)
            return data

    def __exit__(self, *exc):
        if self._map is not None:
            self._map.close()


_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # TEM, RSTn, SOI: markers without a length


def jpeg_scan_count(data, stop: int) -> int:
    """Start-of-scan markers of the first picture in ``data`` (up to its EOI), counting no further than
    ``stop``. Markers are found as libjpeg finds them: any bytes before a marker are skipped (libjpeg warns of
    "extraneous bytes" and goes on, so they cannot hide a scan), as are fill bytes, stuffed ``FF 00`` and restart
    markers inside entropy-coded data. ``find`` does the skipping, so the walk is one pass over the file in C."""
    n, pos, end = 0, 2, len(data)
    while n < stop:
        pos = data.find(b"\xff", pos)
        while 0 <= pos < end - 1 and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos < 0 or pos + 1 >= end:
            return n
        marker = data[pos + 1]
        if marker == 0x00 or marker in _STANDALONE:  # stuffed byte, or a marker without a length
            pos += 2
            continue
        if marker == 0xD9:  # EOI: the first picture ends (an MPO's others follow)
            return n
        if pos + 4 > end:
            return n
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        n += marker == 0xDA  # the scan's entropy-coded data is then skipped by the next find
    return n


def png_chunk_count(data, stop: int) -> int:
    """Chunks of the PNG in ``data`` up to IEND (or its end), counting no further than ``stop``."""
    n, pos, end = 0, 8, len(data)
    while pos + 8 <= end and n < stop:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8])
        n += 1
        if kind == b"IEND":
            break
        pos += 12 + length
    return n
