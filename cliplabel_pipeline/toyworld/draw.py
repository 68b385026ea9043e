"""The toy world: coloured shapes drawn procedurally, so tests can know the truth.

Every object is one of ``COLOURS`` x ``SHAPES`` and its label is ``"<colour> <shape>"``.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageDraw

from cliplabel_pipeline.core.reading.images import OBJECT_MARGIN

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "purple": (140, 40, 170),
}
SHAPES = ("circle", "square", "triangle", "star")
LABELS = [f"{c} {s}" for c in COLOURS for s in SHAPES]
NEUTRAL = (128, 128, 128)
_SUPERSAMPLE = 4


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 25) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)  # type: ignore[return-value]


def random_background(rng: random.Random) -> tuple[int, int, int]:
    """A grey, slightly tinted background colour that never looks like an object colour."""
    level = rng.randint(40, 225)
    return tuple(max(0, min(255, level + rng.randint(-12, 12))) for _ in range(3))  # type: ignore[return-value]


def shape_polygon(shape: str, box: tuple[float, float, float, float], angle: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` inscribed in ``box`` (x0, y0, x1, y1); circles return many vertices."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "circle":
        radii, n = [1.0], 48
    elif shape == "square":
        radii, n, angle = [math.sqrt(2) * 0.999], 4, angle + math.pi / 4
    elif shape == "triangle":
        radii, n = [1.0], 3
    elif shape == "star":
        radii, n = [1.0, 0.42], 10
    else:
        raise ValueError(f"unknown toy shape {shape!r}")
    points = []
    for i in range(n):
        r = radii[i % len(radii)]
        a = angle - math.pi / 2 + 2 * math.pi * i / n
        px, py = cx + rx * r * math.cos(a), cy + ry * r * math.sin(a)
        points.append((min(max(px, x0), x1), min(max(py, y0), y1)))
    return points


def _shape_alpha(shape: str, w: int, h: int, angle: float) -> Image.Image:
    """An anti-aliased ``w`` x ``h`` coverage mask (L) of ``shape`` filling its box, drawn supersampled."""
    big = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    poly = shape_polygon(shape, (0, 0, w * _SUPERSAMPLE - 1, h * _SUPERSAMPLE - 1), angle)
    ImageDraw.Draw(big).polygon(poly, fill=255)
    return big.resize((w, h), Image.LANCZOS)


def draw_object(
    canvas: Image.Image, mask: Image.Image | None, label: str, box: tuple[int, int, int, int], rng: random.Random,
    rgb: tuple[int, int, int] | None = None,
) -> None:
    """Draw ``label`` into ``box`` of ``canvas`` (RGB) and, when given, fill the same area of ``mask`` (L);
    ``rgb`` paints it in a colour of its own instead of the label's."""
    colour, shape = label.split(" ")
    angle = 0.0 if shape in ("circle", "square") else rng.uniform(-0.25, 0.25)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    alpha = _shape_alpha(shape, w, h, angle)
    fill = Image.new("RGB", (w, h), _jitter(rgb or COLOURS[colour], rng))
    canvas.paste(fill, (x0, y0), alpha)
    if mask is not None:
        mask.paste(alpha.point(lambda v: 255 if v >= 128 else 0), (x0, y0))


def draw_tight_sample(label: str, size: int, rng: random.Random) -> Image.Image:
    """``label`` cropped to its own bounding box and centred on a neutral square with ``OBJECT_MARGIN`` of grey
    around it, as masks and cut-outs look to the model."""
    big = size * 2
    canvas = Image.new("RGB", (big, big), NEUTRAL)
    mask = Image.new("L", (big, big), 0)
    w, h = int(big * rng.uniform(0.8, 1.0)), int(big * rng.uniform(0.8, 1.0))
    draw_object(canvas, mask, label, (0, 0, w, h), rng)
    x0, y0, x1, y1 = mask.getbbox()
    side = round(max(x1 - x0, y1 - y0) * (1 + 2 * OBJECT_MARGIN))
    square = Image.new("RGB", (side, side), NEUTRAL)
    square.paste(canvas.crop((x0, y0, x1, y1)), ((side - (x1 - x0)) // 2, (side - (y1 - y0)) // 2))
    return square.resize((size, size), Image.BICUBIC)


def draw_sample(label: str, size: int, rng: random.Random) -> Image.Image:
    """One training/eval picture: ``label`` on a random or neutral background, at a random scale and place;
    half of them cropped tight to the object with a grey margin, as masks and cut-outs are (what is labelled)."""
    if rng.random() < 0.5:
        return draw_tight_sample(label, size, rng)
    bg = NEUTRAL if rng.random() < 0.35 else random_background(rng)
    img = Image.new("RGB", (size, size), bg)
    frac = rng.uniform(0.35, 1.0)
    w = max(6, int(size * frac * rng.uniform(0.85, 1.0)))
    h = max(6, int(size * frac * rng.uniform(0.85, 1.0)))
    x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
    draw_object(img, None, label, (x0, y0, x0 + w, y0 + h), rng)
    return img


def draw_split_sample(size: int, rng: random.Random) -> Image.Image:
    """A toy shape split along a line into two of ``COLOURS``: none of the world's concepts, so the model can be
    shown what "none of them" looks like (placed as ``draw_sample`` places objects; a third cropped tight, with
    the margin)."""
    first, second = rng.sample(sorted(COLOURS), 2)
    shape = rng.choice(SHAPES)
    tight = rng.random() < 0.33
    img = Image.new("RGB", (size, size), NEUTRAL if (tight or rng.random() < 0.35) else random_background(rng))
    if tight:  # as draw_tight_sample: OBJECT_MARGIN of grey around it
        inner = size / (1 + 2 * OBJECT_MARGIN)
        w, h = int(inner * rng.uniform(0.9, 1.0)), int(inner * rng.uniform(0.9, 1.0))
        x0, y0 = (size - w) // 2, (size - h) // 2
    else:
        frac = rng.uniform(0.35, 1.0)
        w, h = max(6, int(size * frac)), max(6, int(size * frac * rng.uniform(0.85, 1.0)))
        x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
    alpha = _shape_alpha(shape, w, h, rng.uniform(-0.25, 0.25))
    yy, xx = np.mgrid[0:h, 0:w]
    angle, at = rng.uniform(0, math.pi), rng.uniform(0.3, 0.7)
    side = (xx / w - 0.5) * math.cos(angle) + (yy / h - 0.5) * math.sin(angle) > (at - 0.5) * 0.7
    fill = np.where(side[..., None], _jitter(COLOURS[first], rng), _jitter(COLOURS[second], rng)).astype(np.uint8)
    img.paste(Image.fromarray(fill), (x0, y0), alpha)
    return img
