"""Images uploaded over the network: limits checked on the header before a pixel is decoded.

``check_upload`` reads only the header: the format is recognised by content (never by name or declared
type), and the size in bytes and pixels is held to the service's limits. What it refuses raises
``UploadTooLarge`` or ``UnsupportedUpload``, each with a one-line reason; the faces map them to their own
answers (HTTP 413 and 415).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.reading.images import OPENED_FORMATS, SUPPORTED_FORMATS, header_size
from cliplabel_pipeline.core.reading.picture import one_line
from cliplabel_pipeline.core.storage.guarded import shown


class UploadTooLarge(CliplabelError):
    """An upload over a limit in bytes, pixels or files."""


class UnsupportedUpload(CliplabelError):
    """An upload whose content is not an image format cliplabel reads."""


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_pixels: int
    max_files: int


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it (for display only) and its bytes."""

    filename: str
    data: bytes


def check_upload(upload: Upload, limits: UploadLimits) -> str:
    """The image format of ``upload`` (``JPEG``, ``PNG``, ...), read from its header; raises when refused."""
    name = shown(upload.filename)[:120] or "the upload"
    if len(upload.data) > limits.max_bytes:
        raise UploadTooLarge(f"{name}: {len(upload.data):,} bytes is over the {limits.max_bytes:,}-byte limit")
    if not upload.data:
        raise UnsupportedUpload(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(upload.data), formats=OPENED_FORMATS) as img:
            fmt, (w, h) = img.format, img.size
    except Image.DecompressionBombError:  # over Pillow's own limit: the size read from the header, our words
        size = header_size(io.BytesIO(upload.data))
        at = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels is" if size else "its size is"
        raise UploadTooLarge(f"{name}: {at} over the {limits.max_pixels:,}-pixel limit") from None
    except UnidentifiedImageError:
        raise UnsupportedUpload(f"{name}: not a JPEG, PNG or WEBP image (checked by content)") from None
    except Exception as exc:  # noqa: BLE001 - a damaged header is the upload's fault: refuse it with the reason
        raise UnsupportedUpload(f"{name}: unreadable image header ({one_line(exc)})") from None
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedUpload(f"{name}: {fmt} is not supported (JPEG, PNG or WEBP expected)")
    if w * h > limits.max_pixels:
        raise UploadTooLarge(f"{name}: {w}x{h} = {w * h:,} pixels is over the {limits.max_pixels:,}-pixel limit")
    return fmt


def check_uploads(uploads: list[Upload], limits: UploadLimits) -> None:
    """``check_upload`` on each, after the count; the first refusal raises."""
    if not uploads:
        raise UnsupportedUpload("no image uploaded: send one or more files in the form field 'files'")
    if len(uploads) > limits.max_files:
        raise UploadTooLarge(f"{len(uploads)} files in one request is over the {limits.max_files}-file limit")
    for upload in uploads:
        check_upload(upload, limits)
