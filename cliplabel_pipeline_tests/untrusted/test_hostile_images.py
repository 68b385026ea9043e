"""Hostile image files: every one is labelled or skipped with a one-line reason, never a traceback, and
reading any image within the limits stays within a stated memory bound."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from cliplabel_pipeline.core.reading.images import (
    MAX_DECODE_BYTES,
    ImageSkipped,
    crop_source_under_mask,
    letterbox,
    load_picture,
    load_rgb,
    resize_and_crop,
)
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.toyworld.draw import draw_sample
from cliplabel_pipeline_tests import hostile_images as hostile

RED, BLUE = (220, 30, 30), (30, 60, 220)


def _turned(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[hostile.ORIENTATION] = orientation
    return exif


def _wide_red() -> Image.Image:
    """60 x 20: red on the left half, blue on the right (so a rotation shows in the pixels)."""
    img = Image.new("RGB", (60, 20), RED)
    img.paste(BLUE, (30, 0, 60, 20))
    return img


@pytest.mark.parametrize("case", sorted(hostile.UNWRITABLE_EXIF))
def test_exif_that_exif_transpose_rejects_is_still_applied(tmp_path, case):
    path = tmp_path / "photo.jpg"
    path.write_bytes(hostile.jpeg_exif_transpose_rejects(_wide_red(), case))
    with pytest.raises((AttributeError, TypeError, ValueError, struct.error)):  # hostile to Pillow's own helper...
        ImageOps.exif_transpose(Image.open(path))
    notes: list[str] = []
    img, area = load_rgb(path, notes)  # ...but its orientation (6: turn clockwise) is read and applied
    assert img.size == (20, 60) and area == 1200 and notes == []
    assert np.abs(np.asarray(img)[5, 10].astype(int) - RED).max() < 40  # the red half is now on top


@pytest.mark.parametrize("value,kind,count", [(b"\x00\x09", 3, 1), (b"\x00\x00", 3, 1), (b"abc\x00", 2, 4),
                                              (b"\xff\xff", 8, 1)])
def test_an_orientation_outside_1_to_8_is_labelled_as_stored_and_says_so(tmp_path, caplog, value, kind, count):
    path = tmp_path / "odd.jpg"
    path.write_bytes(hostile.jpeg_with_orientation(_wide_red(), value, kind, count))
    notes: list[str] = []
    with caplog.at_level(logging.WARNING):
        img, _ = load_rgb(path, notes)
    assert img.size == (60, 20)
    assert len(notes) == 1 and "not rotated" in notes[0] and "\n" not in notes[0]
    assert str(path) in caplog.text and "not rotated" in caplog.text


def test_a_phone_mpo_is_read_as_jpeg_from_its_first_picture(tmp_path):
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes(hostile.mpo(Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), BLUE)))
    assert Image.open(path).format == "MPO"
    img, area = load_rgb(path)
    assert img.size == (64, 48) and area == 64 * 48
    assert np.abs(np.asarray(img)[24, 32].astype(int) - RED).max() < 10


def _noise(w: int, h: int, mode: str = "RGB") -> Image.Image:
    arr = np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def _cases() -> dict[str, tuple[bytes, str]]:
    jpeg = hostile.encode(_noise(96, 64), "JPEG")
    png = hostile.encode(_noise(96, 64), "PNG")
    webp = hostile.encode(_noise(96, 64), "WEBP")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # IHDR's checksum
    return {
        "JPEG cut in its scan": (jpeg[: len(jpeg) // 2], "truncated"),
        "JPEG header only": (jpeg[:200], "truncated"),
        "PNG cut in its pixels": (png[: len(png) // 2], "truncated"),
        "WEBP cut short": (webp[: len(webp) // 2], "."),
        "PNG with a broken header checksum": (bytes(bad_crc), "."),
        "PNG of 0 x 5 pixels": (hostile.png_header_only(0, 5), "."),
        "PNG claiming 60000 x 60000": (hostile.png_header_only(60_000, 60_000), "decompression bomb"),
        "PNG strip of 1 x 60,000,000": (hostile.png_header_only(1, 60_000_000), "decompression bomb.*MB"),
        "GIF": (hostile.encode(_noise(8, 8), "GIF"), "not an image"),
        "BMP": (hostile.encode(_noise(8, 8), "BMP"), "not an image"),
        "text": (b"segmentation notes\n", "not an image"),
        "empty": (b"", "empty file"),
    }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_every_decoder_failure_is_a_skip_with_a_one_line_reason(tmp_path, name):
    content, reason = _cases()[name]
    path = tmp_path / "item.png"
    path.write_bytes(content)
    with pytest.raises(ImageSkipped, match=reason) as caught:
        pic, _ = load_picture(path)
        resize_and_crop(pic, 224, 224)  # a lazily failing decoder would fail here
    assert str(caught.value) and "\n" not in str(caught.value)


def test_damaged_files_of_every_format_are_labelled_or_skipped_never_raised():
    """Bytes overwritten, files cut short, junk spliced in: 400 mutants of JPEG, PNG, WEBP, MPO, as images,
    cut-outs and masks. Each either gives the model its 224 x 224 input or is skipped with a reason."""
    img = _noise(80, 60)
    seeds = [hostile.encode(img, "JPEG", exif=_turned(6)), hostile.encode(img, "PNG"),
             hostile.encode(img.convert("RGBA"), "WEBP"), hostile.mpo(img, img), hostile.encode(img.convert("P"), "PNG")]
    source = load_picture(io.BytesIO(seeds[1]), reduced=False)[0]
    outcomes = {"labelled": 0, "skipped": 0}
    for i, seed in enumerate(seeds):
        for data in hostile.mutants(seed, 80, seed=i):
            try:
                pic, _ = load_picture(io.BytesIO(data))
                assert resize_and_crop(pic, 224, 224).shape == letterbox(pic, 224).shape == (224, 224, 3)
                crop_source_under_mask(source, io.BytesIO(data))
                outcomes["labelled"] += 1
            except ImageSkipped as exc:
                assert str(exc) and "\n" not in str(exc)
                outcomes["skipped"] += 1
    assert outcomes["labelled"] > 50 and outcomes["skipped"] > 50  # both paths were exercised


def test_an_open_file_is_read_from_its_start_and_left_open(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(hostile.encode(_noise(40, 30), "JPEG"))
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        from_file, area = load_rgb(fh)
        assert not fh.closed
        fh.seek(0)
        assert fh.read(2) == b"\xff\xd8"
    assert area == 1200 and np.array_equal(np.asarray(from_file), np.asarray(load_rgb(path)[0]))
    assert load_picture(io.BytesIO(path.read_bytes()))[0].size == (40, 30)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_a_folder_and_a_dangling_link_are_skipped_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # nobody writes to it: opening it for reading would block for good
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    for name, reason in [("pipe.png", "not a regular file"), ("folder.png", "not a regular file"),
                         ("gone.png", "cannot open: No such file")]:
        with pytest.raises(ImageSkipped, match=reason):
            load_rgb(tmp_path / name)


def test_labelling_goes_on_past_every_hostile_item(labeller, tmp_path):
    """Good items among hostile ones are all labelled; the hostile ones are skipped with their reasons."""
    rng = random.Random(5)
    star, circle = draw_sample("red star", 224, rng), draw_sample("blue circle", 224, rng)
    files = {
        "star.png": hostile.encode(star, "PNG"),
        "exif.jpg": hostile.jpeg_exif_transpose_rejects(star.rotate(90, expand=True), "resolution stored as text"),
        "phone.jpg": hostile.mpo(circle, star),
        "cut.jpg": hostile.encode(star, "JPEG")[:900],
        "strip.png": hostile.png_header_only(1, 60_000_000),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    records, skipped = labeller.classify_paths(sorted(tmp_path.iterdir()), LabelSettings(top_k=1))
    top1 = {Path(r.path).name: r.top1 for r in records}
    assert top1 == {"star.png": "red star", "exif.jpg": "red star", "phone.jpg": "blue circle"}
    assert {Path(s.path).name for s in skipped} == {"cut.jpg", "strip.png"}


# Peak memory: each case runs in a fresh process, which resets its peak-RSS counter after importing and
# reports how far reading and preprocessing one image (both geometries) raised it.
PROBE = textwrap.dedent("""
    import json, sys
    from cliplabel_pipeline.core.reading.images import crop_source_under_mask, letterbox, load_picture, resize_and_crop

    def rss_mb(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

    source = load_picture(sys.argv[2], reduced=False)[0] if len(sys.argv) > 2 else None  # a job's, decoded once
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak so far becomes the present
    before = rss_mb("VmRSS")
    if source is None:
        pic, _ = load_picture(sys.argv[1])
        shapes = [resize_and_crop(pic, 224, 224).shape, letterbox(pic, 224).shape]
    else:
        shapes = [letterbox(crop_source_under_mask(source, sys.argv[1])[0], 224).shape]
    print(json.dumps({"extra_mb": rss_mb("VmHWM") - before, "shapes": [list(s) for s in shapes]}))
""")
BOUND_MB = (MAX_DECODE_BYTES + 100_000_000) / 2**20  # the decode budget plus the surviving region and tiles


def _peak_extra_mb(*paths: Path) -> float:
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's resettable peak-RSS counter")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(shape == [224, 224, 3] for shape in result["shapes"])
    return result["extra_mb"]


@pytest.mark.parametrize("length", [20_000, 90_000])
def test_a_one_pixel_wide_strip_is_not_scaled_to_224_times_its_length(tmp_path, length):
    """A 165-byte 1 x 20,000 PNG took 4.4 GB (scaled to 224 x 4,480,000 before the crop); 1 x 90,000 about 19."""
    path = hostile.write_flat_png(tmp_path / "strip.png", 1, length, b"\xc8\x1e\x1e", colour_type=2)
    assert path.stat().st_size < 1_000
    assert _peak_extra_mb(path) < 20


def _flat_jpeg(path: Path, size: tuple[int, int], **kw) -> Path:
    Image.new("RGB", size, RED).save(path, quality=90, **kw)
    return path


def _flat_webp(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, RED).save(path, lossless=True)
    return path


LARGE = {  # within MAX_PIXELS and the decode budget; each built without holding it (but the JPEGs)
    "1 x 30,000,000 RGBA strip": lambda d: hostile.write_flat_png(d / "tall.png", 1, 30_000_000, b"\xc8\x1e\x1e\xff", 6),
    "20,000,000 x 1 RGBA strip": lambda d: hostile.write_flat_png(d / "wide.png", 20_000_000, 1, b"\xc8\x1e\x1e\xff", 6),
    "9,400 x 9,400 RGBA": lambda d: hostile.write_flat_png(d / "flat.png", 9_400, 9_400, b"\xc8\x1e\x1e\x80", 6),
    "9,400 x 9,400 16-bit grey": lambda d: hostile.write_flat_png(d / "grey.png", 9_400, 9_400, b"\x9c\x40", 0, 16),
    "9,400 x 9,400 progressive JPEG": lambda d: _flat_jpeg(d / "prog.jpg", (9_400, 9_400), progressive=True),
    "9,400 x 9,400 JPEG turned by EXIF": lambda d: _flat_jpeg(d / "turn.jpg", (9_400, 9_400), exif=_turned(6)),
    "4,900 x 4,900 WEBP": lambda d: _flat_webp(d / "flat.webp", (4_900, 4_900)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(LARGE))
def test_reading_any_image_within_the_limits_stays_within_the_memory_bound(tmp_path, case):
    assert _peak_extra_mb(LARGE[case](tmp_path)) < BOUND_MB


@pytest.mark.slow
def test_a_mask_as_large_as_its_source_stays_within_the_memory_bound(tmp_path):
    source = hostile.write_flat_png(tmp_path / "source.png", 9_400, 9_400, b"\xc8\x1e\x1e", 2)
    mask = hostile.write_flat_png(tmp_path / "mask.png", 9_400, 9_400, b"\xff\x80", 4)  # grey + alpha
    assert _peak_extra_mb(mask, source) < BOUND_MB
