"""Pictures from outside the toy world, for measuring whether labelling knows when it does not know.

Each family is something the toy model never saw: random noise, blurred noise, colour gradients, a background
with nothing drawn on it, and toy shapes in colours outside ``COLOURS``. ``OTHER_SHAPES`` (known colours, shapes
never drawn) is kept apart: it is reported, but it is the hardest case for a model that knows only colour and
shape, and it is not part of the targets. ``write_outside_job`` lays any of them out as a job.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cliplabel_pipeline.toyworld.draw import COLOURS, SHAPES, draw_object, random_background

Painter = Callable[[random.Random, tuple[int, int]], tuple[Image.Image, str]]
UNSEEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "orange": (245, 135, 20), "pink": (250, 150, 205), "cyan": (30, 215, 225), "brown": (115, 70, 35),
    "white": (250, 250, 250), "black": (12, 12, 12), "teal": (20, 130, 125),
}  # each far from every colour of ``COLOURS`` (a dark yellow would still be yellow)


def _rng_np(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.randrange(1 << 31))


def noise(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    w, h = size
    g = _rng_np(rng)
    if rng.random() < 0.5:
        a = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        a = np.clip(g.normal(rng.uniform(60, 200), rng.uniform(20, 70), (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a), "noise"


def blurred_noise(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    img, _ = noise(rng, size)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 8))), "blurred noise"


def gradient(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    w, h = size
    c0, c1 = (np.array([rng.randrange(256) for _ in range(3)], float) for _ in range(2))
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    if rng.random() < 0.7:
        a = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(a) + y * math.sin(a)
    else:  # radial
        t = np.hypot(x - rng.random() * w / max(w, h), y - rng.random() * h / max(w, h))
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    a = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return Image.fromarray(a.astype(np.uint8)), "gradient"


def nothing_drawn(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    """The toy world's own backgrounds, with nothing on them (a little grain, as a photo would have)."""
    w, h = size
    base = np.array(random_background(rng), float)
    a = base + _rng_np(rng).normal(0, rng.uniform(0, 6), (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "nothing drawn"


def unseen_colour(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    colour = rng.choice(sorted(UNSEEN_COLOURS))
    return _shape_on_background(rng, size, f"{colour} {rng.choice(SHAPES)}", UNSEEN_COLOURS[colour])


def _shape_on_background(rng, size, label, rgb) -> tuple[Image.Image, str]:
    w, h = size
    img = Image.new("RGB", size, random_background(rng))
    side = int(min(w, h) * rng.uniform(0.45, 0.95))
    x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
    draw_object(img, None, label, (x0, y0, x0 + side, y0 + side), rng, rgb=rgb)
    return img, label


def other_shape(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str]:
    w, h = size
    img = Image.new("RGB", size, random_background(rng))
    colour = rng.choice(sorted(COLOURS))
    fill, draw = COLOURS[colour], ImageDraw.Draw(img)
    kind = rng.choice(["cross", "ring", "hexagon", "stripes"])
    m = min(w, h)
    cx, cy, r = w / 2, h / 2, m * rng.uniform(0.3, 0.45)
    if kind == "cross":
        draw.rectangle((cx - r / 4, cy - r, cx + r / 4, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=fill)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r / 5)))
    elif kind == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, fill=fill)
    else:
        for i in range(-h, w, max(6, m // 6)):
            draw.line((i, 0, i + h, h), fill=fill, width=max(2, m // 20))
    return img, f"{colour} {kind}"


FAMILIES: dict[str, Painter] = {
    "noise": noise, "blurred noise": blurred_noise, "gradient": gradient, "nothing drawn": nothing_drawn,
    "unseen colour": unseen_colour,
}
OTHER_SHAPES: dict[str, Painter] = {"other shape": other_shape}


def write_outside_job(root: Path, job_id: str, seed: int, family: str, n_objects: int = 4,
                      size: tuple[int, int] = (256, 192)) -> Path:
    """A job whose source and every object come from ``family``: each object is its own picture, pasted into
    the source under a rectangular mask, as a segmentation service would cut it out."""
    painter = {**FAMILIES, **OTHER_SHAPES}[family]
    rng = random.Random(seed)
    job = Path(root) / job_id
    (job / "masks").mkdir(parents=True, exist_ok=True)
    (job / "objects").mkdir(parents=True, exist_ok=True)
    source, _ = painter(rng, size)
    w, h = size
    for i in range(n_objects):
        side = rng.randint(min(w, h) // 4, min(w, h) // 2)
        x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
        piece, _ = painter(rng, (side, side))
        source.paste(piece, (x0, y0))
        mask = Image.new("L", size, 0)
        mask.paste(255, (x0, y0, x0 + side, y0 + side))
        mask.save(job / "masks" / f"obj_{i:02d}.png")
        cutout = piece.convert("RGBA")
        cutout.save(job / "objects" / f"obj_{i:02d}.png")
    source.save(job / "source.png")
    return job
