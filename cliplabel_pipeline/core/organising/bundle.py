"""An export that is a folder (COCO, Hugging Face imagefolder, Label Studio): the files it holds, each either
bytes made now or a file of the job copied as it is, written into a folder or streamed into a ZIP.

Files of the job are read only as regular files inside it (never through a link); what cannot be read is left
out and said, never a broken reference.
"""

from __future__ import annotations

import io
import logging
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.storage import guarded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleFile:
    """One file of a folder export: ``name`` (relative, forward slashes) and either ``data`` or ``item``, the
    path of a job file copied byte for byte."""

    name: str
    data: bytes | None = None
    item: str | None = None

    def open(self, job: JobFolder) -> BinaryIO:
        return io.BytesIO(self.data) if self.item is None else job.open_item(self.item)


def write_bundle_folder(job: JobFolder, files: list[BundleFile], root: Path, prefix: str = "") -> None:
    """Every file of the bundle under ``root/prefix``, each written whole (temp file, then renamed), never
    through a link."""
    for f in files:
        with f.open(job) as src, guarded.atomic_writer(root, f"{prefix}/{f.name}" if prefix else f.name) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def write_bundle_zip(job: JobFolder, files: list[BundleFile], out: BinaryIO) -> None:
    """The bundle as a ZIP of the folder ``write_bundle_folder`` writes (names at the top level)."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            info = zipfile.ZipInfo(f.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if f.name.endswith(".png") else zipfile.ZIP_DEFLATED
            with f.open(job) as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def needs(module: str, extra: str, what: str):
    """``module`` imported, or a one-line error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CliplabelError(f"{what} needs {module.split('.')[0]}: pip install 'cliplabel_pipeline[{extra}]'") from None


def left_out(what: str, path: str, reason: str) -> None:
    log.warning("left out of the %s export: %s: %s", what, guarded.shown(path), reason)
