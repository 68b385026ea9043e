"""Reading untrusted images safely, in bounded memory, and preprocessing them exactly as CLIP's processor does.

Rules:
- the format is recognised by content (JPEG, MPO - the multi-picture JPEG phones write -, PNG, WEBP); the
  extension is ignored; a source is a path or an already-open, seekable binary file (read, left open);
- an image is refused, before its pixels are decoded, when it has more than ``MAX_PIXELS`` pixels, decoding
  it would hold more than ``MAX_DECODE_BYTES`` (Pillow's 8 bytes a row count: a 1 x 50,000,000 strip), or its
  structure would make decoding cost more than ``budget.py`` allows (scans, chunks, frames); what is decoded
  is stopped past a CPU-time budget;
- EXIF orientation is applied; when it cannot be read or is not 1-8 the image is used as stored and a note
  says so (appended to ``notes``, and a warning in the log naming the file);
- every mode becomes 8-bit RGB; transparency is composited on neutral grey;
- memory: decoding is the one full-size cost (a JPEG over ``EXACT_PIXELS`` is decoded reduced, with
  ``draft``); then only the region that survives is converted and rotated (see ``picture.py``);
- CLIP's geometry equals Transformers' ``CLIPImageProcessor`` exactly up to ``EXACT_PIXELS`` and an
  ``EXACT_ASPECT`` ratio; beyond, the centre crop is placed before the resize and only the source region
  under it is resampled (box-averaged first when large): within a level or two of 255;
- a mask is classified as the region of ``source.png`` under it: the source cropped to the mask's bounding
  box, pixels outside the mask painted neutral grey (the same look as an RGBA cut-out); masks and cut-outs
  are letterboxed with a margin: scaled so the longer side and ``OBJECT_MARGIN`` of it on each side fit the
  model's input, centred on neutral grey, so an object shows its outline (a square is a square on grey, not
  a field of one colour, which is what a picture of nothing can be);
- anything that cannot be decoded raises ``ImageSkipped`` with a one-line reason; callers record it and go on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from cliplabel_pipeline.core.reading.budget import DECODE_BLOCK, CpuBudget, check_structure
from cliplabel_pipeline.core.reading.picture import (
    ALPHA,
    EXACT_PIXELS,
    NEUTRAL_GREY,
    SIXTEEN_BIT,
    TRANSPOSE,
    ImageSkipped,
    Picture,
    decoding,
    one_line,
    tiles,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}
OPENED_FORMATS = ("JPEG", "PNG", "WEBP")  # Pillow's JPEG opener reads MPO too
MAX_PIXELS = 90_000_000  # above this an image is treated as a decompression bomb
MAX_DECODE_BYTES = 400_000_000  # what decoding one image may hold at once (a 90 Mpx RGBA frame fits)
EXACT_ASPECT = 16  # exact CLIP geometry while the resized image is at most 16 crops long (3 MB at 224)
DRAFT_MIN_SIDE = 2048  # a JPEG decoded reduced keeps this many pixels on its short side (>= 6 x 336)
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}  # Pillow stores the rest in 4
HALF = 128  # a mask's level (or alpha) at or above this is on
OBJECT_MARGIN = 0.1  # grey a mask or cut-out is letterboxed with, each side, as a share of its longer side
_AT_LEAST_HALF = [0] * HALF + [255] * (256 - HALF)
_NONZERO = [0] + [255] * 255
Source = str | os.PathLike | BinaryIO


@contextlib.contextmanager
def _opened(src: Source):
    """A binary file for ``src``; a path is opened here (never waiting on a FIFO) and closed after."""
    if not isinstance(src, (str, os.PathLike)):
        yield src
        return
    try:
        # Windows has no O_NONBLOCK (and no FIFO in a folder to wait on), no O_CLOEXEC (O_NOINHERIT) and a text
        # mode that O_BINARY turns off.
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ImageSkipped(f"cannot open: {exc.strerror or one_line(exc)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageSkipped("not a regular file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)  # on Windows only a pipe has a blocking mode to set
        fp = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fp:
        yield fp


def _byte_size(fp: BinaryIO) -> int:
    try:
        return os.fstat(fp.fileno()).st_size
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError: an in-memory file
        size = fp.seek(0, os.SEEK_END)
        fp.seek(0)
        return size


def _orientation(img: Image.Image, notes: list[str]) -> int:
    """EXIF orientation 1-8, read without rewriting the EXIF block (``exif_transpose`` raises on some)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001 - a damaged EXIF block is metadata, not a reason to skip
        notes.append(f"EXIF block unreadable ({one_line(exc)}); labelled as stored, not rotated")
        return 1
    if value == 1 or value in TRANSPOSE:
        return int(value)
    notes.append(f"EXIF orientation {str(value)[:40]!r} is not one of 1-8; labelled as stored, not rotated")
    return 1


def _decode_bytes(img: Image.Image, file_size: tuple[int, int]) -> int:
    """What decoding ``img`` holds at its peak (each measured): the frame with Pillow's 8 bytes a row; a PNG's two
    raw rows; four frames for WEBP (libwebp's canvases and Pillow's copy); a progressive JPEG's coefficients."""
    w, h = img.size
    frame = w * h * _BYTES_PER_PIXEL.get(img.mode, 4) + 8 * h
    if img.format == "WEBP":
        return 4 * frame
    if img.format == "PNG":
        rawmode = str(img.tile[0][3]) if img.tile else ""
        frame += 2 * w * len(img.getbands()) * (2 if "16" in rawmode else 1)
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * len(img.getbands())
        hmax, vmax = max(c[1] for c in layers), max(c[2] for c in layers)
        frame += sum(2 * file_size[0] * file_size[1] * c[1] * c[2] // (hmax * vmax) for c in layers)
    return frame


def _bomb_words(size: tuple[int, int] | None) -> str:
    """Why an image over ``MAX_PIXELS`` is refused, its size named where its header could be read."""
    at = f"{size[0]}x{size[1]} pixels is" if size else "its size is"
    return f"decompression bomb: {at} over the {MAX_PIXELS:,} limit"


def header_size(fp) -> tuple[int, int] | None:
    """Width and height from the header of ``fp``, read by its format's own opener, which (unlike ``Image.open``)
    applies no pixel limit; nothing is decoded. None when no opener reads it."""
    try:
        fp.seek(0)
        prefix = fp.read(16)
        for fmt in OPENED_FORMATS:
            if fmt not in Image.OPEN:
                Image.init()
            factory, accept = Image.OPEN[fmt]
            if accept is None or accept(prefix) is True:
                fp.seek(0)
                return factory(fp, "").size
    except Exception:  # noqa: BLE001 - a header that fails now only loses the size from the message
        return None
    return None


def _decode(src: Source, notes: list[str] | None, reduced: bool) -> Picture:
    """``src`` decoded once (a JPEG over ``EXACT_PIXELS`` decoded reduced when ``reduced``)."""
    found: list[str] = []
    with _opened(src) as fp, decoding():
        if _byte_size(fp) == 0:
            raise ImageSkipped("empty file (0 bytes)")
        # Pillow's JPEG opener reads MPO too; every read the decoder makes checks its CPU time (budget.py)
        try:
            img = Image.open(CpuBudget(fp), formats=OPENED_FORMATS)
        except Image.DecompressionBombError:  # over Pillow's own limit (2 x 89 Mpx): said in our words, not its
            raise ImageSkipped(_bomb_words(header_size(fp))) from None
        if img.format not in SUPPORTED_FORMATS:
            raise ImageSkipped(f"unsupported image format {img.format} (JPEG, PNG or WEBP expected)")
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageSkipped(f"image has no pixels ({w}x{h})")
        if w * h > MAX_PIXELS:
            raise ImageSkipped(_bomb_words((w, h)))
        check_structure(fp, img.format, (w, h), getattr(img, "n_frames", 1))
        if img.info.get("progressive"):  # the CPU budget is checked between blocks, and each scan is small
            img.decodermaxblock = DECODE_BLOCK
        scale = next((s for s in (8, 4, 2) if min(w, h) // s >= DRAFT_MIN_SIDE), 1)
        if reduced and img.format in ("JPEG", "MPO") and w * h > EXACT_PIXELS and scale > 1:
            img.draft(None, (w // scale, h // scale))
        if (cost := _decode_bytes(img, (w, h))) > MAX_DECODE_BYTES:
            raise ImageSkipped(f"decompression bomb: decoding this {w}x{h} {img.format} would take "
                               f"{cost / 1e6:,.0f} MB, over the {MAX_DECODE_BYTES / 1e6:,.0f} MB limit")
        img.load()  # then a new image on the same pixels lets the decoder's buffers and the file go
        orientation = _orientation(img, found)  # after loading: a PNG's EXIF may follow its pixels
        pic = Picture(img._new(img.im), (h, w) if orientation >= 5 else (w, h), orientation, tuple(found))
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else getattr(src, "name", None)
    name = name if isinstance(name, (str, bytes)) else "an image file"  # an fd-opened file is named by number
    for note in found:
        log.warning("%s: %s", name, note)
    if notes is not None:
        notes.extend(found)
    return pic


def load_picture(src: Source, notes: list[str] | None = None, reduced: bool = True) -> tuple[Picture, int]:
    """``src`` decoded once, as a ``Picture`` that converts only the regions asked of it, and its opaque area in
    pixels. Raises ``ImageSkipped`` with the reason. A JPEG over ``EXACT_PIXELS`` is decoded reduced unless
    ``reduced`` is False (a source that masks are cut from). What was tolerated (EXIF) goes to ``notes``."""
    pic = _decode(src, notes, reduced)
    if pic.area == 0:
        raise ImageSkipped("fully transparent cut-out")
    return pic, pic.area


def load_rgb(src: Source, notes: list[str] | None = None) -> tuple[Image.Image, int]:
    """The whole image, upright RGB at full size, and its object area in pixels (opaque pixels of a cut-out)."""
    pic, area = load_picture(src, notes, reduced=False)
    return pic.rgb(), area


def open_image(src: Source, notes: list[str] | None = None) -> Image.Image:
    """``src`` decoded upright at full size, in its own mode."""
    pic = _decode(src, notes, reduced=False)
    return pic.image.transpose(TRANSPOSE[pic.orientation]) if pic.orientation != 1 else pic.image


def _uses_alpha(img: Image.Image) -> bool:
    """Whether a mask's alpha channel says where it is on (some pixel is not opaque); read without a copy."""
    if img.mode in ALPHA:
        return img.getextrema()[-1][0] < 255
    if img.mode == "P" and "transparency" in img.info:
        hist, key = img.histogram(), img.info["transparency"]
        if isinstance(key, int):
            return hist[key] > 0
        return any(n and i < len(key) and key[i] < 255 for i, n in enumerate(hist))
    return False


def _inside_tile(tile: Image.Image, alpha: bool) -> Image.Image:
    if alpha:
        return (tile.convert("RGBA") if tile.mode == "P" else tile).getchannel("A").point(_AT_LEAST_HALF)
    if tile.mode in SIXTEEN_BIT:
        try:
            return tile.convert("L").point(_NONZERO)  # Pillow clips to 0..255: non-zero stays non-zero
        except ValueError:  # a byte order Pillow cannot convert
            return Image.fromarray((np.asarray(tile) > 0).astype(np.uint8) * 255, "L")
    return (tile if tile.mode == "L" else tile.convert("L")).point(_AT_LEAST_HALF)


def _mask_inside(img: Image.Image) -> Image.Image:
    """``L`` image, 255 where the mask is on: the alpha channel where one is used, else brighter than
    mid-grey (non-zero for 16-bit masks). Built a tile at a time: one byte a pixel beside the decoded mask."""
    alpha = _uses_alpha(img)
    inside = Image.new("L", img.size)
    for box in tiles((0, 0, *img.size)):
        inside.paste(_inside_tile(img.crop(box), alpha), box[:2])
    return inside


def mask_inside_array(img: Image.Image) -> np.ndarray:
    """``_mask_inside(img)`` as a bool array ``[h, w]``: an 8-bit grey mask, or one whose alpha is used and is
    its own band (LA, RGBA), thresholded in one vectorised step; any other form through ``_mask_inside``."""
    alpha = _uses_alpha(img)
    if img.mode == "L" and not alpha:
        return np.asarray(img) >= HALF
    if alpha and img.mode in ("LA", "RGBA"):
        return np.asarray(img.getchannel("A")) >= HALF
    return np.asarray(_mask_inside(img)) != 0


def upright_mask(inside: Image.Image, orientation: int, source_size: tuple[int, int]) -> Image.Image:
    """A mask's ``L`` inside image turned upright and brought to the source's size (nearest), or the reason
    it cannot be (a different aspect ratio)."""
    if orientation != 1:
        inside = inside.transpose(TRANSPOSE[orientation])
    if inside.size != source_size:
        (sw, sh), (mw, mh) = source_size, inside.size
        if abs(mw / mh - sw / sh) > 0.01:
            raise ImageSkipped(f"mask is {mw}x{mh} but source.png is {sw}x{sh} (different aspect ratio)")
        inside = inside.resize(source_size, Image.NEAREST)
    return inside


def mask_on_source(mask_src: Source, source_size: tuple[int, int]) -> np.ndarray:
    """The mask as a bool array ``[h, w]`` over the upright source of ``source_size`` (``(w, h)``): turned upright
    and scaled (nearest) as the mask rule does; ``ImageSkipped`` for a mask that cannot lie on the source."""
    mask = _decode(mask_src, None, reduced=False)
    with decoding():
        inside = upright_mask(_mask_inside(mask.image), mask.orientation, source_size)
    return np.asarray(inside) != 0


def crop_source_under_mask(source: Picture | Image.Image, mask_src: Source,
                           notes: list[str] | None = None) -> tuple[Image.Image, int]:
    """The region of ``source`` under the mask as RGB, cropped to its bounding box, outside painted grey; and
    the mask's area in source pixels. Only the box is converted; a box over ``EXACT_PIXELS`` is box-averaged
    down on the way (it is only ever shown small)."""
    source = Picture.of(source)
    mask = _decode(mask_src, notes, reduced=False)
    orientation = mask.orientation
    with decoding():
        inside = _mask_inside(mask.image)
        del mask  # the decoded mask goes; its one-byte form stays
        inside = upright_mask(inside, orientation, source.size)
        box = inside.getbbox()
        if box is None:
            raise ImageSkipped("empty mask (no foreground pixels)")
        area = inside.histogram()[255]
        f = max(1, math.ceil(math.sqrt((box[2] - box[0]) * (box[3] - box[1]) / EXACT_PIXELS)))
        region = source.region(box, (f, f))
        inside = inside.reduce(f, box) if f > 1 else inside.crop(box)
        region.paste(NEUTRAL_GREY, mask=inside.point(_AT_LEAST_HALF[::-1]))
    return region, int(area)


def resize_and_crop(img: Picture | Image.Image, size: int, crop: int) -> np.ndarray:
    """CLIP's geometry: shortest side to ``size`` (bicubic), centre crop; uint8 ``[crop, crop, 3]``.

    Exactly ``CLIPImageProcessor``'s pixels for images up to ``EXACT_PIXELS`` whose resized form is at most
    ``EXACT_ASPECT`` crops long. Beyond, the crop is placed first and only the source region under it is
    resampled (within a level or two), so a ``1 x N`` image never becomes ``224 x 224·N``.
    """
    pic = Picture.of(img)
    w, h = pic.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    if top < 0 or left < 0:
        raise ImageSkipped(f"image of {w}x{h} is too small to crop to {crop}")
    if w * h <= EXACT_PIXELS and new_long <= EXACT_ASPECT * size:
        rgb = pic.rgb()
        with decoding():
            if (new_w, new_h) != (w, h):
                rgb = rgb.resize((new_w, new_h), Image.BICUBIC)
            return np.asarray(rgb.crop((left, top, left + crop, top + crop)))
    sx, sy = w / new_w, h / new_h
    return np.asarray(pic.resized((crop, crop), (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)))


def letterbox(img: Picture | Image.Image, side: int, margin: float = 0.0) -> np.ndarray:
    """``img`` scaled (bicubic) so its longer side and ``margin`` of it on each side are ``side``, centred on a
    neutral grey square; uint8."""
    pic = Picture.of(img)
    w, h = pic.size
    scale = side / (max(w, h) * (1 + 2 * margin))
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("RGB", (side, side), NEUTRAL_GREY)
    canvas.paste(pic.resized((new_w, new_h)), ((side - new_w) // 2, (side - new_h) // 2))
    return np.asarray(canvas)


def normalise_batch(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[n, H, W, 3]`` to CLIP-normalised float32 ``[n, 3, H, W]``, in one vectorised pass.

    ``(x / 255 - mean) / std`` computed as ``x * (1 / (255 std)) - mean / std`` in place: 4 ms a batch of 32
    at 224 px against 14 ms for the three-step form. The labelling loop calls it once a batch, after
    decoding, so the decoders only ever produce uint8 crops.
    """
    import torch  # only encoding needs it: reading stays light for the commands that never encode

    if not pixels.flags.writeable:  # decoded straight from an image buffer; torch wants its own
        pixels = pixels.copy()
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    return x.mul_(scale).sub_(shift)


def preprocess(img: Picture | Image.Image, size: int, crop: int, mean, std) -> np.ndarray:
    """CLIP preprocessing of an RGB image: shortest side to ``size`` (bicubic), centre crop, mean/std.

    Returns float32 ``[3, crop, crop]``; equals Transformers' ``CLIPImageProcessor`` output.
    """
    return normalise_batch(resize_and_crop(img, size, crop)[None], mean, std)[0].numpy()
