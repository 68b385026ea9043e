"""Hostile image files built from code: damaged EXIF, phone MPOs, truncations, huge flat strips, mutants.

Each builder returns bytes (or writes a path when the file is large), so a test can drop them anywhere.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image

ORIENTATION = 0x0112


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _tiff(entries: list[tuple[int, int, int, bytes]], tail: bytes = b"") -> bytes:
    """A big-endian TIFF block with one IFD of ``(tag, type, count, 4-byte value)`` entries."""
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0) + tail


def jpeg_with_exif(img: Image.Image, tiff: bytes) -> bytes:
    """``img`` as a JPEG whose APP1 EXIF segment is ``tiff``, byte for byte."""
    payload = b"Exif\x00\x00" + tiff
    data = encode(img, "JPEG", quality=95)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


# Orientation 6 (rotate to display) beside a tag Pillow's ``exif_transpose`` cannot write back: it raises
# AttributeError, TypeError or struct.error after transposing, where the issue saw jobs end.
UNWRITABLE_EXIF = {
    "description stored as a rational": (0x010E, 5, 1, b"\x00\x00\x00\x00"),
    "resolution stored as text": (0x011A, 2, 1, b"\x00\x00\x00\x00"),
    "resolution stored as -1": (0x011A, 6, 1, b"\xff\xff\xff\xff"),
}


def jpeg_exif_transpose_rejects(img: Image.Image, case: str) -> bytes:
    orientation = (ORIENTATION, 3, 1, struct.pack(">HH", 6, 0))
    return jpeg_with_exif(img, _tiff([orientation, UNWRITABLE_EXIF[case]], tail=b"\x00" * 16))


def jpeg_with_orientation(img: Image.Image, value: bytes, kind: int = 3, count: int = 1) -> bytes:
    """A JPEG whose orientation entry holds ``value`` as type ``kind`` (3 short, 2 text, 8 signed short)."""
    return jpeg_with_exif(img, _tiff([(ORIENTATION, kind, count, value.ljust(4, b"\x00"))]))


def mpo(first: Image.Image, second: Image.Image) -> bytes:
    """A two-picture MPO, as phones write for portrait or 3D shots."""
    return encode(first, "MPO", save_all=True, append_images=[second])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, colour_type: int = 2) -> bytes:
    """A PNG that claims ``width`` x ``height`` and holds no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def write_flat_png(path: Path, width: int, height: int, pixel: bytes, colour_type: int,
                   bit_depth: int = 8) -> Path:
    """A one-colour PNG of any size, written row by row without ever holding the image (KB on disk)."""
    row = b"\x00" + pixel * width
    rows_per_block = max(1, (1 << 22) // len(row))
    squeeze = zlib.compressobj(9)
    with open(path, "wb") as fh:
        ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
        fh.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr))
        done = 0
        while done < height:
            n = min(rows_per_block, height - done)
            fh.write(png_chunk(b"IDAT", squeeze.compress(row * n)))
            done += n
        fh.write(png_chunk(b"IDAT", squeeze.flush()) + png_chunk(b"IEND", b""))
    return path


def mutants(data: bytes, n: int, seed: int) -> list[bytes]:
    """``n`` damaged copies of ``data``: bytes overwritten, cut short, or junk spliced in."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        buf = bytearray(data)
        how = rng.choice(["flip", "flip", "cut", "splice"])
        if how == "flip":
            for _ in range(rng.randint(1, 12)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif how == "cut":
            del buf[rng.randrange(1, len(buf)):]
        else:
            at = rng.randrange(len(buf))
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        out.append(bytes(buf))
    return out
