"""A job full of what segmentation output looks like in the wild, built from code (no binary blobs).

``EXPECTED`` says, for every item, whether the pipeline labels it or skips it and with which reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cliplabel_pipeline.toyworld.jobs import write_toy_job

LABELLED = "labelled"
# path -> "labelled" or a fragment of the skip reason
EXPECTED: dict[str, str] = {
    "source.png": LABELLED,
    "objects/obj_00.png": LABELLED,
    "objects/corrupt.png": "not an image",
    "objects/truncated.png": "corrupt or truncated",
    "objects/zero.png": "empty file",
    "objects/readme.png": "not an image",
    "objects/really_a_jpeg.png": LABELLED,
    "objects/no_extension": LABELLED,
    "objects/palette transparent.png": LABELLED,
    "objects/la.png": LABELLED,
    "objects/sixteen_bit.png": LABELLED,
    "objects/cmyk.jpg": LABELLED,
    "objects/exif_rotated.jpg": LABELLED,
    "objects/bomb.png": "decompression bomb",
    "objects/ÜBER ç 物体.PNG": LABELLED,
    "objects/nested/deeper/obj.WEBP": LABELLED,
    "objects/escape.png": "symbolic link",
    "objects/panorama.jpg": LABELLED,
    "masks/obj_00.png": LABELLED,
    "masks/other_size.png": "different aspect ratio",
    "masks/half_size.png": LABELLED,
    "masks/empty.png": "empty mask",
}


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def build_hostile_job(root: Path, job_id: str, outside: Path) -> Path:
    """A toy job (one red star) plus every hostile case of ``EXPECTED``; ``outside`` is a folder beside it."""
    job = write_toy_job(root, job_id, seed=11, labels=["red star"])
    obj = job / "objects"
    star = Image.open(obj / "obj_00.png")
    rgb = star.convert("RGB")
    (obj / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (obj / "truncated.png").write_bytes(_png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))[:400])
    (obj / "zero.png").write_bytes(b"")
    (obj / "readme.png").write_text("segmentation notes, not a picture\n")
    rgb.save(obj / "really_a_jpeg.png", format="JPEG")
    rgb.save(obj / "no_extension", format="PNG")
    star.convert("RGBA").quantize(colors=32).save(obj / "palette transparent.png")
    star.convert("LA").save(obj / "la.png")
    Image.fromarray((np.asarray(star.convert("L"), np.uint16) * 257)).save(obj / "sixteen_bit.png")
    rgb.convert("CMYK").save(obj / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    rgb.rotate(-90, expand=True).save(obj / "exif_rotated.jpg", exif=exif)
    Image.new("1", (12_000, 12_000)).save(obj / "bomb.png")
    rgb.save(obj / "ÜBER ç 物体.PNG")
    (obj / "nested" / "deeper").mkdir(parents=True)
    rgb.save(obj / "nested" / "deeper" / "obj.WEBP", format="WEBP")
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.png"
    rgb.save(secret)
    (obj / "escape.png").symlink_to(secret)
    Image.new("RGB", (40_000, 400), (90, 90, 90)).save(obj / "panorama.jpg")
    masks = job / "masks"
    Image.new("L", (50, 50), 255).save(masks / "other_size.png")
    full = Image.open(masks / "obj_00.png")
    full.resize((full.width // 2, full.height // 2), Image.NEAREST).save(masks / "half_size.png")
    Image.new("L", full.size, 0).save(masks / "empty.png")
    return job
