"""A decoded image that hands out upright RGB regions of itself without converting or rotating the rest.

Decoding is the one full-size cost of an image; everything after it works on the region that survives,
a tile at a time: to RGB, EXIF rotation, and (for images over ``EXACT_PIXELS``) a box average first.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# Pillow warns (once per process, from a worker thread) when it decodes around damage: a corrupt EXIF block, a
# malformed MPO read as its base JPEG, a picture over its own pixel limit. cliplabel decodes such files on
# purpose and applies its own limits, so these lines tell a user nothing; a file that cannot be read is skipped
# with its reason. Filters set once here, not per call: `catch_warnings` is not thread-safe.
def quiet_pillow() -> None:
    """Pillow's damaged-file and bomb warnings silenced (idempotent: the same filter is never added twice)."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.(TiffImagePlugin|JpegImagePlugin|PngImagePlugin)")
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


quiet_pillow()

NEUTRAL_GREY = (128, 128, 128)
EXACT_PIXELS = 25_000_000  # up to this (a 6000 x 4000 photo) preprocessing is exactly CLIP's; above, reduced
EXACT_STEP = 64  # ... and shrinks at most 64 times: Pillow's filter table is 32 bytes per source pixel
REDUCING_GAP = 8  # a box-averaged region keeps >= 8 pixels per output pixel (within a level of CLIP: measured)
TILE_PIXELS = 1 << 20  # pixels converted at a time: 4 MB as RGBA, 8 MB as float for 16-bit
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I", "F")
ALPHA = ("RGBA", "LA", "PA")
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
             7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}  # EXIF orientation -> transposition


class ImageSkipped(Exception):
    """An item that cannot be labelled; ``str()`` is the reason a person reads."""


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def decoding():
    """Hostile bytes reach Pillow's decoders, which raise many types (OSError, SyntaxError, ValueError,
    struct.error, EOFError, IndexError, ...); each becomes a skip with its reason, never an aborted job."""
    try:
        yield
    except ImageSkipped:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageSkipped(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageSkipped("not an image (content is not JPEG, PNG or WEBP)") from None
    except MemoryError:
        raise ImageSkipped("not enough memory to decode it") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring: a decoder's error is this item's, not the job's
        raise ImageSkipped(f"corrupt or truncated image: {one_line(exc)}") from None


def to_rgb(img: Image.Image, peak: float | None = None) -> Image.Image:
    """8-bit RGB from any PIL mode; transparency composited on neutral grey, CMYK converted, 16-bit scaled
    to 8 bits when ``peak`` (the whole image's maximum; this tile's when None) is over 255."""
    if img.mode in SIXTEEN_BIT:
        arr = np.asarray(img, dtype=np.float64)
        peak = (arr.max() if arr.size else 0) if peak is None else peak
        scale = 255.0 / 65535.0 if peak > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, NEUTRAL_GREY + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def opaque_area(img: Image.Image) -> int:
    """Pixels that are not fully transparent, counted from the histogram (no copy of the image)."""
    total = img.width * img.height
    if img.mode in ALPHA:
        return total - img.histogram()[-256]
    if img.mode == "P" and "transparency" in img.info:
        hist, key = img.histogram(), img.info["transparency"]
        if isinstance(key, int):
            return total - hist[key]
        return sum(n for i, n in enumerate(hist) if i >= len(key) or key[i] > 0)
    return total


def tiles(box: tuple[int, int, int, int], factor: tuple[int, int] = (1, 1)):
    """``box`` cut into tiles of about ``TILE_PIXELS`` (whole rows when narrow), each starting on a multiple of
    ``factor`` from the box's corner so that box-averaging tile by tile equals averaging the whole."""
    (x0, y0, x1, y1), (fx, fy) = box, factor
    side = math.isqrt(TILE_PIXELS)
    tw = x1 - x0 if x1 - x0 <= side else max(fx, side // fx * fx)
    th = max(fy, TILE_PIXELS // max(1, tw) // fy * fy)
    for ty in range(y0, y1, th):
        for tx in range(x0, x1, tw):
            yield tx, ty, min(tx + tw, x1), min(ty + th, y1)


class Picture:
    """A decoded image as stored (its own mode, EXIF orientation not applied, a JPEG perhaps decoded reduced).

    ``size`` is the upright size in the file's pixels, ``notes`` what was tolerated while reading it.
    """

    def __init__(self, image: Image.Image, size: tuple[int, int] | None = None, orientation: int = 1,
                 notes: tuple[str, ...] = ()):
        self.image, self.orientation, self.notes = image, orientation, notes
        self.size = size or image.size
        self.peak = image.getextrema()[1] if image.mode in SIXTEEN_BIT else None
        self._area: int | None = None

    @classmethod
    def of(cls, img: Picture | Image.Image) -> Picture:
        """``img`` itself, or an upright PIL image wrapped without a copy."""
        return img if isinstance(img, Picture) else cls(img)

    @property
    def area(self) -> int:
        """Opaque pixels, in the file's pixels."""
        if self._area is None:
            with decoding():
                opaque = opaque_area(self.image)
            self._area = round(opaque * self.size[0] * self.size[1] / (self.image.width * self.image.height))
        return self._area

    @property
    def decoded_size(self) -> tuple[int, int]:
        """The upright size of the decoded image (the file's size unless decoded reduced)."""
        return self.image.size[::-1] if self.orientation >= 5 else self.image.size

    def _stored_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The box of the stored image that becomes the upright ``box`` once transposed."""
        x0, y0, x1, y1 = box
        w, h = self.image.size
        return {1: (x0, y0, x1, y1), 2: (w - x1, y0, w - x0, y1), 3: (w - x1, h - y1, w - x0, h - y0),
                4: (x0, h - y1, x1, h - y0), 5: (y0, x0, y1, x1), 6: (y0, h - x1, y1, h - x0),
                7: (w - y1, h - x1, w - y0, h - x0), 8: (w - y1, x0, w - y0, x1)}[self.orientation]

    def region(self, box: tuple[int, int, int, int], factor: tuple[int, int] = (1, 1)) -> Image.Image:
        """Upright RGB of ``box`` (decoded upright pixels), box-averaged by ``factor`` (x, y); converted and
        rotated a tile at a time, so nothing outside ``box`` and nothing full-size is made."""
        fx, fy = factor
        x0, y0, x1, y1 = box
        out = Image.new("RGB", (-(-(x1 - x0) // fx), -(-(y1 - y0) // fy)))
        with decoding():
            for tx0, ty0, tx1, ty1 in tiles(box, factor):
                tile = to_rgb(self.image.crop(self._stored_box((tx0, ty0, tx1, ty1))), self.peak)
                if self.orientation != 1:
                    tile = tile.transpose(TRANSPOSE[self.orientation])
                if factor != (1, 1):
                    tile = tile.reduce(factor)
                out.paste(tile, ((tx0 - x0) // fx, (ty0 - y0) // fy))
        return out

    def rgb(self) -> Image.Image:
        """The whole upright RGB image at decoded size: the decoded image itself when nothing needs converting."""
        if self.orientation == 1 and self.image.mode == "RGB":
            return self.image
        return self.region((0, 0, *self.decoded_size))

    def resized(self, out: tuple[int, int], box: tuple[float, float, float, float] | None = None) -> Image.Image:
        """The upright ``box`` (file pixels; all when None) scaled to ``out``, bicubic, converting only that region.

        The whole image is exactly ``rgb().resize(out, BICUBIC)``. A box is cut out with the filter's margin and
        resampled there: within a level or two of resizing everything and cropping (Pillow takes a box as
        32-bit floats). Over ``EXACT_PIXELS``, or shrinking more than ``EXACT_STEP`` times, the region is
        box-averaged to ``REDUCING_GAP`` pixels per output pixel first."""
        w, h = self.size
        dw, dh = self.decoded_size
        sx, sy = dw / w, dh / h  # decoded pixels per file pixel
        box = box or (0.0, 0.0, float(w), float(h))
        box = (max(0.0, box[0] * sx), max(0.0, box[1] * sy), min(float(dw), box[2] * sx), min(float(dh), box[3] * sy))
        step_x, step_y = (box[2] - box[0]) / out[0], (box[3] - box[1]) / out[1]
        factor = (1, 1)
        if w * h > EXACT_PIXELS or max(step_x, step_y) > EXACT_STEP:
            factor = (max(1, int(step_x / REDUCING_GAP)), max(1, int(step_y / REDUCING_GAP)))
        if factor == (1, 1) and box == (0.0, 0.0, float(dw), float(dh)):
            with decoding():
                return self.rgb().resize(out, Image.BICUBIC)
        mx, my = 2 * max(1.0, step_x) + 1, 2 * max(1.0, step_y) + 1  # bicubic support, plus one for rounding
        fx, fy = factor
        region = (max(0, int(box[0] - mx) // fx * fx), max(0, int(box[1] - my) // fy * fy),
                  min(dw, math.ceil(box[2] + mx)), min(dh, math.ceil(box[3] + my)))
        rgb = self.region(region, factor)
        inner = ((box[0] - region[0]) / fx, (box[1] - region[1]) / fy,
                 (box[2] - region[0]) / fx, (box[3] - region[1]) / fy)
        with decoding():
            return rgb.resize(out, Image.BICUBIC, box=inner)
