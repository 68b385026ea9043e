"""CLIP's geometry computed crop-first from the decoded file equals Transformers' ``CLIPImageProcessor`` on the
upright RGB image: exactly for ordinary images, within a level or two of 255 for extreme or huge ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from transformers import CLIPImageProcessor

from cliplabel_pipeline.core.reading.images import (
    crop_source_under_mask,
    letterbox,
    load_picture,
    resize_and_crop,
)
from cliplabel_pipeline.core.reading.picture import to_rgb
from cliplabel_pipeline_tests import hostile_images as hostile

PROCESSOR = CLIPImageProcessor(do_rescale=False, do_normalize=False)  # its uint8 geometry, before mean/std


def _clip_pixels(img: Image.Image) -> np.ndarray:
    return PROCESSOR(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


def _textured(w: int, h: int, seed: int) -> Image.Image:
    """Gradients plus noise, with an alpha channel: detail at every scale, nothing flat."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 7 + yy * 3) % 256, (xx * 2) % 256, (yy * 5) % 256, 64 + (xx + yy) % 192], -1)
    arr = arr + np.random.default_rng(seed).integers(-40, 40, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def _file(img: Image.Image, orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[hostile.ORIENTATION] = orientation
    return hostile.encode(img, fmt, exif=exif)


def _upright_rgb(data: bytes) -> Image.Image:
    """What every image reader agrees on: the file decoded, EXIF applied, converted to RGB at full size."""
    return to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))


def _as(img: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    return img.convert("RGB").quantize(64) if mode == "P" else img.convert(mode)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "I;16"])
def test_ordinary_images_equal_clip_processor_exactly_in_every_mode_and_orientation(mode, orientation):
    size = (131 + 17 * orientation, 97 + 23 * len(mode))
    data = _file(_as(_textured(*size, seed=orientation), mode), orientation)
    pic, _ = load_picture(io.BytesIO(data))
    np.testing.assert_array_equal(resize_and_crop(pic, 224, 224), _clip_pixels(_upright_rgb(data)))


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_letterbox_is_the_whole_image_resized_as_before(orientation):
    data = _file(_textured(300, 120, seed=3), orientation)
    upright = _upright_rgb(data)
    w, h = upright.size
    scale = 224 / max(w, h)
    expected = Image.new("RGB", (224, 224), (128, 128, 128))
    resized = upright.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    expected.paste(resized, ((224 - resized.width) // 2, (224 - resized.height) // 2))
    np.testing.assert_array_equal(letterbox(load_picture(io.BytesIO(data))[0], 224), np.asarray(expected))


@pytest.mark.parametrize("size,orientation", [((7, 1500), 1), ((1500, 9), 1), ((20, 4000), 6), ((4000, 30), 8),
                                              ((3, 900), 3)])
def test_extreme_aspect_ratios_are_within_two_levels_of_clip_processor(size, orientation):
    data = _file(_textured(*size, seed=size[0]), orientation)
    ours = resize_and_crop(load_picture(io.BytesIO(data))[0], 224, 224).astype(int)
    diff = np.abs(ours - _clip_pixels(_upright_rgb(data)))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_a_mask_is_cut_from_the_upright_source_in_every_orientation():
    for orientation in range(1, 9):
        data = _file(_textured(90, 60, seed=orientation).convert("RGB"), orientation)
        source, _ = load_picture(io.BytesIO(data), reduced=False)
        w, h = source.size
        mask = Image.new("L", (w, h), 0)
        mask.paste(255, (w // 4, h // 3, w // 2, h // 2))
        region, area = crop_source_under_mask(source, io.BytesIO(hostile.encode(mask, "PNG")))
        box = (w // 4, h // 3, w // 2, h // 2)
        assert area == (box[2] - box[0]) * (box[3] - box[1])
        np.testing.assert_array_equal(np.asarray(region), np.asarray(_upright_rgb(data).crop(box)))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_huge_image_decoded_reduced_is_within_a_few_levels_of_clip_processor(fmt):
    """7,000 x 5,000 (35 Mpx, over EXACT_PIXELS): a JPEG is decoded at 1/4 scale, a PNG box-averaged."""
    data = hostile.encode(_textured(7_000, 5_000, seed=1).convert("RGB"), fmt, quality=95)
    pic, _ = load_picture(io.BytesIO(data))
    diff = np.abs(resize_and_crop(pic, 224, 224).astype(int) - _clip_pixels(_upright_rgb(data)))
    assert diff.max() <= 2 and diff.mean() < 0.3
