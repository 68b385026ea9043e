"""Uploads are judged by their header: format by content, bytes, pixels, count, each refusal one line."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cliplabel_pipeline.core.reading.uploads import (
    UnsupportedUpload, Upload, UploadLimits, UploadTooLarge, check_upload, check_uploads,
)

LIMITS = UploadLimits(max_bytes=50_000, max_pixels=10_000, max_files=3)


def _image(fmt: str, size=(50, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, name", [("PNG", "a.jpg"), ("JPEG", "a.png"), ("WEBP", "noext")])
def test_supported_formats_are_recognised_by_content_not_name(fmt, name):
    assert check_upload(Upload(name, _image(fmt)), LIMITS) == fmt


@pytest.mark.parametrize("data, words", [(b"", "empty file"), (b"%PDF-1.7 ...", "not a JPEG, PNG or WEBP"),
                                         (_image("GIF"), "not a JPEG, PNG or WEBP"),
                                         (_image("BMP"), "not a JPEG, PNG or WEBP")])
def test_other_content_is_unsupported(data, words):
    with pytest.raises(UnsupportedUpload, match=words):
        check_upload(Upload("x.png", data), LIMITS)


def test_pixels_are_counted_from_the_header_before_decoding():
    with pytest.raises(UploadTooLarge, match=r"x.png: 200x100 = 20,000 pixels is over the 10,000-pixel limit"):
        check_upload(Upload("x.png", _image("PNG", (200, 100))), LIMITS)


def test_bytes_and_file_counts_have_limits():
    with pytest.raises(UploadTooLarge, match="over the 50,000-byte limit"):
        check_upload(Upload("x.png", b"\x89PNG" + b"0" * 60_000), LIMITS)
    with pytest.raises(UploadTooLarge, match="4 files in one request"):
        check_uploads([Upload(f"{i}.png", _image("PNG")) for i in range(4)], LIMITS)
    with pytest.raises(UnsupportedUpload, match="no image uploaded"):
        check_uploads([], LIMITS)


def test_a_control_character_in_a_file_name_is_escaped_in_the_reason():
    with pytest.raises(UnsupportedUpload) as err:
        check_upload(Upload("evil\x1b[31m.png", b"nope"), LIMITS)
    assert "\x1b" not in str(err.value) and "\\x1b" in str(err.value)
