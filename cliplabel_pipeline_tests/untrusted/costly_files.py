"""Files that are valid, or nearly, but costly: built here, in-process, from Pillow's own output or by hand.

Each builder writes one file (or folder) under a job's ``objects/`` or ``masks/`` and returns its path relative to
the job. Sizes sit at and just past each limit of ``core/reading``; the costly ones stay small on disk (a
progressive JPEG of a thousand scans is about 400 KB, a 20 GB file is sparse)."""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path

from PIL import Image

from cliplabel_pipeline_tests.hostile_images import png_chunk, png_header_only, write_flat_png


def jpeg_segments(data: bytes) -> list[bytes]:
    """A baseline or progressive JPEG cut into its marker segments (a scan keeps its entropy-coded data)."""
    out, i = [data[:2]], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append(data[i:i + 2])
            break
        j = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not a stuffed byte or a restart
            while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
                j += 1
        out.append(data[i:j])
        i = j
    return out


def progressive_jpeg(side: int | tuple[int, int], extra_scans: int, junk_after_table: bytes = b"",
                     colour=(120, 30, 200)) -> bytes:
    """A progressive JPEG (``side`` square, or ``(width, height)``) with its last refinement scan (and the
    Huffman table before it) repeated ``extra_scans`` times: libjpeg warns of a bogus progression and decodes
    every scan, each a full pass over the coefficients, for a few dozen bytes each. ``junk_after_table`` goes
    between the second scan's Huffman table and its scan header, where libjpeg skips it with a warning."""
    size = (side, side) if isinstance(side, int) else side
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", progressive=True, quality=90)
    segs = jpeg_segments(buf.getvalue())
    scans = [i for i, s in enumerate(segs) if s[1] == 0xDA]
    last = scans[-1]
    repeated = b"".join(segs[last - 1:last + 1]) if segs[last - 1][1] == 0xC4 else segs[last]
    if junk_after_table:
        table = next(i for i in range(scans[0] + 1, scans[1]) if segs[i][1] == 0xC4)
        segs[table] += junk_after_table
    return b"".join(segs[:last + 1]) + repeated * extra_scans + b"\xff\xd9"


def scans_of_pillow(side: int = 64) -> int:
    """How many scans Pillow writes in a progressive RGB JPEG (the base that ``extra_scans`` adds to)."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, "JPEG", progressive=True)
    return sum(s[1] == 0xDA for s in jpeg_segments(buf.getvalue()))


def png_chunk_total(data: bytes) -> int:
    pos, n = 8, 0
    while pos < len(data):
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
        n += 1
    return n


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header claims ``width`` x ``height``: its pixels end long before."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_split_idat(img: Image.Image, chunk: int) -> bytes:
    """``img`` as a PNG whose compressed pixels are cut into IDAT chunks of ``chunk`` bytes (valid PNG)."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    pos, head, idat = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        elif kind == b"IHDR":
            head = data[:pos + 12 + length]
        pos += 12 + length
    return head + b"".join(png_chunk(b"IDAT", idat[i:i + chunk]) for i in range(0, len(idat), chunk)) + \
        png_chunk(b"IEND", b"")


def png_with_chunks(img: Image.Image, n: int, kind: bytes = b"tEXt") -> bytes:
    """``img`` as a PNG with ``n`` small ancillary chunks of type ``kind`` before its pixels."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    ihdr_end = 8 + 12 + 13
    extra = png_chunk(kind, b"k\x00v") * n  # the same chunk n times: a reader still walks each
    return data[:ihdr_end] + extra + data[ihdr_end:]


def apng(frames: int, side: int = 32) -> bytes:
    """An animated PNG of ``frames`` frames (Pillow writes it; a reader wants only the first)."""
    images = [Image.new("RGB", (side, side), (i % 256, 80, 160)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "PNG", save_all=True, append_images=images[1:], default_image=False)
    return buf.getvalue()


def animated_webp(frames: int, side: int = 32) -> bytes:
    images = [Image.new("RGB", (side, side), (i % 256, 160, 80)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "WEBP", save_all=True, append_images=images[1:], lossless=True)
    return buf.getvalue()


def webp(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (30, 60, 90)).save(buf, "WEBP", quality=50)
    return buf.getvalue()


def webp_claiming(width: int, height: int) -> bytes:
    """A lossless WEBP header claiming ``width`` x ``height`` (each at most 16384), with no pixels after it."""
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def png_strip(height: int) -> bytes:
    """A PNG header of a 1-pixel-wide strip ``height`` rows tall: cheap pixels, Pillow's 8 bytes a row."""
    return png_header_only(1, height)


def sparse(path: Path, size: int, head: bytes = b"") -> None:
    """A file of ``size`` bytes that holds only ``head`` on disk (the rest a hole of zeros)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)


def flat_png(path: Path, width: int, height: int) -> None:
    write_flat_png(path, width, height, b"\x20\x90\x40", colour_type=2)


def deep_folders(top: Path, depth: int, name: str = "d") -> list[str]:
    """A chain of ``depth`` folders under ``top``, a small PNG in each; their paths relative to ``top``'s job."""
    img = io.BytesIO()
    Image.new("RGB", (24, 24), (200, 20, 20)).save(img, "PNG")
    made, folder = [], top
    for level in range(1, depth + 1):
        folder = folder / name
        folder.mkdir()
        (folder / f"at_{level}.png").write_bytes(img.getvalue())
        made.append(folder / f"at_{level}.png")
    return made


def remove_deep_folders(top: Path, name: str = "d") -> None:
    """Remove a chain :func:`deep_folders` made, deepest first, without recursion.

    ``shutil.rmtree`` (and so pytest's clean-up of old temporary folders) recurses once a level and
    fails past about a thousand levels.
    """
    chain = [top / name]
    while (chain[-1] / name).is_dir():
        chain.append(chain[-1] / name)
    for folder in reversed(chain):
        if folder.is_dir():
            for entry in folder.iterdir():
                if not entry.is_dir() or entry.is_symlink():
                    entry.unlink()
            folder.rmdir()


def unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def raw_deflate_bomb(side: int) -> bytes:
    """A grey PNG of ``side`` x ``side`` pixels, compressed about 1000:1 (zeros)."""
    raw = zlib.compress(b"\x00" * ((side + 1) * side), 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b"")


def mknod_char(path: Path) -> bool:
    """A character device (``/dev/null``'s numbers) at ``path``; False where this user may not make one."""
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))
        return True
    except (PermissionError, OSError):
        return False
