"""Decoding under a budget: files that are valid but costly are refused by their structure before decoding,
and what is decoded stops at a CPU-time cap."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cliplabel_pipeline.core.reading import budget
from cliplabel_pipeline.core.reading.images import load_picture
from cliplabel_pipeline.core.reading.picture import ImageSkipped


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's segments after SOI, each scan with its entropy-coded data."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        j = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:
            while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        out.append((marker, data[i:j]))
        i = j
    return out


def progressive_jpeg(side: int, repeats: int) -> bytes:
    """A valid progressive JPEG whose last scan (with its Huffman table) is repeated ``repeats`` more times."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (120, 80, 40)).save(buf, "JPEG", progressive=True, quality=90)
    segs = _segments(buf.getvalue())
    last = max(i for i, (m, _) in enumerate(segs) if m == 0xDA)
    tail = b"".join(s for _, s in segs[last - 1:last + 1]) if segs[last - 1][0] == 0xC4 else segs[last][1]
    return b"\xff\xd8" + b"".join(s for _, s in segs) + tail * repeats + b"\xff\xd9"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_chunks(n_idat: int) -> bytes:
    """A valid 64 x 64 grey PNG whose image data is split into ``n_idat`` chunks."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(64) for _ in range(64)))
    step = max(1, len(raw) // n_idat)
    parts = [raw[i:i + step] for i in range(0, len(raw), step)]
    parts += [b""] * (n_idat - len(parts))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0))
            + b"".join(_chunk(b"IDAT", p) for p in parts) + _chunk(b"IEND", b""))


def _cpu(fn):
    start = time.thread_time()
    try:
        fn()
        return time.thread_time() - start, None
    except ImageSkipped as exc:
        return time.thread_time() - start, str(exc)


def test_a_progressive_jpeg_of_many_repeated_scans_is_refused_before_decoding():
    ordinary = progressive_jpeg(2000, 0)
    assert budget.jpeg_scan_count(ordinary, 1000) == 10  # libjpeg's own progression
    assert _cpu(lambda: load_picture(io.BytesIO(ordinary)))[1] is None
    hostile = progressive_jpeg(2000, 1000)  # 60 KB, 4 megapixels: ~3 s of CPU to decode
    assert len(hostile) < 100_000 and budget.jpeg_scan_count(hostile, 10_000) == 1010
    seconds, reason = _cpu(lambda: load_picture(io.BytesIO(hostile)))
    assert reason and "over 64 scans" in reason and seconds < 0.2


def test_scans_times_megapixels_is_bounded_below_the_scan_limit():
    big = progressive_jpeg(6300, 50)  # 60 scans, within the scan limit, over 40 megapixels
    reason = _cpu(lambda: load_picture(io.BytesIO(big)))[1]
    assert reason and "scan-megapixels" in reason


def test_a_png_of_too_many_chunks_is_refused_and_one_of_a_few_is_read():
    assert _cpu(lambda: load_picture(io.BytesIO(png_of_chunks(50))))[1] is None
    many = png_of_chunks(budget.MAX_PNG_CHUNKS + 10)
    seconds, reason = _cpu(lambda: load_picture(io.BytesIO(many)))
    assert reason and "chunks" in reason and seconds < 2


def test_an_animation_of_too_many_frames_is_refused():
    frames = [Image.new("RGB", (32, 32), (3 * i, 0, 0)) for i in range(budget.MAX_FRAMES + 1)]
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], lossless=True)  # no frame merged
        reason = _cpu(lambda buf=buf: load_picture(io.BytesIO(buf.getvalue())))[1]
        assert reason and "frames" in reason, fmt


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decoding_stops_at_its_cpu_budget(monkeypatch, fmt):
    pixels = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    monkeypatch.setattr(budget, "DECODE_CPU_S", 0.002)
    reason = _cpu(lambda buf=buf: load_picture(io.BytesIO(buf.getvalue())))[1]
    assert reason == "decoding took over 0.002 s of CPU time; skipped"
    monkeypatch.setattr(budget, "DECODE_CPU_S", 10.0)
    assert _cpu(lambda: load_picture(io.BytesIO(buf.getvalue())))[1] is None
