"""Image reading and CLIP preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from cliplabel_pipeline.core.reading.images import (
    NEUTRAL_GREY, ImageSkipped, crop_source_under_mask, load_rgb, open_image, preprocess,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def _noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (224, 224), (300, 1000), (97, 53)])
def test_preprocess_equals_transformers_clip_image_processor(size):
    img = _noise(*size, seed=sum(size))
    ours = preprocess(img, 224, 224, MEAN, STD)
    theirs = CLIPImageProcessor()(images=img, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("name,fmt", [("photo.png", "JPEG"), ("noext", "PNG"), ("UPPER.JPG", "JPEG"),
                                      ("pic.jpg", "WEBP")])
def test_format_is_recognised_by_content_not_extension(tmp_path, name, fmt):
    path = tmp_path / name
    _noise(40, 30).save(path, format=fmt)
    img, area = load_rgb(path)
    assert img.size == (40, 30) and img.mode == "RGB" and area == 1200


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    assert open_image(path).size == (20, 60)


def test_transparent_cutout_composites_on_neutral_grey_not_black(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.putpixel((5, 5), (255, 0, 0, 255))
    path = tmp_path / "cut.png"
    img.save(path)
    rgb, area = load_rgb(path)
    assert rgb.getpixel((0, 0)) == NEUTRAL_GREY
    assert rgb.getpixel((5, 5)) == (255, 0, 0)
    assert area == 1


@pytest.mark.parametrize("mode", ["P", "LA", "I;16", "CMYK", "L", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = Image.new("RGB", (16, 16), (200, 100, 50))
    if mode == "I;16":
        img = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    elif mode == "LA":
        img = Image.new("LA", (16, 16), (200, 255))
    else:
        img = base.convert(mode)
    path = tmp_path / "img"
    img.save(path, format="JPEG" if mode == "CMYK" else "PNG")
    rgb, _ = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (16, 16)
    if mode == "I;16":  # 16-bit is scaled to 8 bits, not clipped to white
        assert rgb.getpixel((0, 0)) == (155, 155, 155)


def test_palette_with_transparency_is_composited(tmp_path):
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    path = tmp_path / "pal.png"
    img.save(path, transparency=0)
    rgb, area = load_rgb(path)
    assert rgb.getpixel((0, 0)) == NEUTRAL_GREY and rgb.getpixel((1, 1)) == (255, 0, 0) and area == 1


def _png_bytes():
    buf = io.BytesIO()
    _noise(64, 64).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
    (_png_bytes()[:300], "truncated"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not an image"),
])
def test_unreadable_files_are_skipped_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageSkipped, match=reason):
        load_rgb(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(path)  # 144 Mpx, a few KB on disk
    with pytest.raises(ImageSkipped, match="decompression bomb"):
        load_rgb(path)


def test_mask_is_classified_as_the_source_region_under_it(tmp_path):
    source = Image.new("RGB", (100, 80), (0, 0, 255))
    source.paste((255, 0, 0), (20, 30, 40, 50))  # a red block
    mask = Image.new("L", (100, 80), 0)
    mask.paste(255, (20, 30, 40, 40))  # covers the top half of the block only
    path = tmp_path / "m.png"
    mask.save(path)
    region, area = crop_source_under_mask(source, path)
    assert area == 200
    assert region.size == (20, 10)  # the mask's bounding box
    assert (np.asarray(region) == (255, 0, 0)).all()  # the source's pixels, not a white silhouette


def test_pixels_outside_the_mask_are_neutral_grey(tmp_path):
    source = Image.new("RGB", (50, 50), (0, 0, 255))
    mask = Image.new("L", (50, 50), 0)
    mask.paste(255, (10, 10, 20, 20))
    mask.putpixel((30, 30), 255)  # a stray pixel widens the box
    mask.save(tmp_path / "m.png")
    region = np.asarray(crop_source_under_mask(source, tmp_path / "m.png")[0])
    assert region.shape == (21, 21, 3)
    assert (region[:10, :10] == (0, 0, 255)).all() and (region[15, 15] == NEUTRAL_GREY).all()


def test_letterbox_keeps_the_whole_object_and_stays_small_for_a_panorama():
    from cliplabel_pipeline.core.reading.images import letterbox

    strip = Image.new("RGB", (40_000, 400), (255, 0, 0))
    box = letterbox(strip, 224)
    assert box.shape == (224, 224, 3)
    assert (box[112, :] == (255, 0, 0)).all()  # the full width is kept
    assert (box[0, 0] == NEUTRAL_GREY).all() and (box[111, 0] == (255, 0, 0)).all()


@pytest.mark.parametrize("kind", ["mask", "object"])
def test_a_mask_or_cut_out_shows_its_outline_on_a_grey_margin(tmp_path, kind):
    """A square cut to its box is one colour edge to edge, which is what a flat picture of nothing is; the model
    sees it with OBJECT_MARGIN of grey on every side, as the toy model was trained to see objects."""
    from cliplabel_pipeline.core.encoding.decode_pool import crop_of
    from cliplabel_pipeline.core.reading.images import OBJECT_MARGIN

    square = Image.new("RGB", (90, 90), (140, 40, 170))
    crop = crop_of(square, kind, 224, 224)
    edge = round(224 * OBJECT_MARGIN / (1 + 2 * OBJECT_MARGIN))  # 19 px of grey each side
    assert (crop[:edge - 1] == NEUTRAL_GREY).all() and (crop[:, -(edge - 1):] == NEUTRAL_GREY).all()
    assert (crop[edge + 2:-edge - 2, edge + 2:-edge - 2] == (140, 40, 170)).all()
    photo = crop_of(square, "source", 224, 224)  # a photo keeps CLIP's own geometry: no margin
    assert (photo == (140, 40, 170)).all()


def test_empty_mask_and_mismatched_mask_are_skipped(tmp_path):
    source = Image.new("RGB", (100, 80))
    Image.new("L", (100, 80), 0).save(tmp_path / "empty.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "other.png")
    with pytest.raises(ImageSkipped, match="empty mask"):
        crop_source_under_mask(source, tmp_path / "empty.png")
    with pytest.raises(ImageSkipped, match="different aspect ratio"):
        crop_source_under_mask(source, tmp_path / "other.png")


def test_the_batched_pipeline_path_equals_transformers_too():
    from cliplabel_pipeline.core.reading.images import normalise_batch, resize_and_crop

    images = [_noise(320, 240, seed=1), _noise(200, 500, seed=2)]
    ours = normalise_batch(np.stack([resize_and_crop(i, 224, 224) for i in images]), MEAN, STD).numpy()
    theirs = CLIPImageProcessor()(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("name, data, size", [
    ("under Pillow's limit", None, (12_000, 12_000)),
    ("PNG over Pillow's limit", "png", (20_000, 20_000)),
    ("JPEG over Pillow's limit", "jpeg", (20_000, 20_000)),
])
def test_every_bomb_is_said_in_the_project_s_words(tmp_path, name, data, size):
    """docs/security.md promises `decompression bomb: WxH pixels is over the 90,000,000 limit`, whichever limit
    (ours, or Pillow's own at 2 x 89 Mpx) stopped it first."""
    from cliplabel_pipeline_tests.hostile_images import png_header_only

    path = tmp_path / "bomb.png"
    if data is None:
        Image.new("1", size).save(path)
    else:
        path.write_bytes(png_header_only(*size) if data == "png" else _jpeg_claiming(*size))
    with pytest.raises(ImageSkipped) as caught:
        load_rgb(path)
    assert str(caught.value) == f"decompression bomb: {size[0]}x{size[1]} pixels is over the 90,000,000 limit"
