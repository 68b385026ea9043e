"""Exports of a labelled job: CSV, per-item JSON, a grouped ZIP, and a provenance manifest.

Per-item JSON files go to ``<job>/labels/<path>.json``, outside ``masks/`` and ``objects/``, so the
segmentation output stays exactly as it was.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.organising.zip_names import UniqueNames, flat_item_name, portable_name
from cliplabel_pipeline.core.storage.files import json_bytes, jsonl_bytes
from cliplabel_pipeline.core.values import Groups, LabelRecord, Provenance, SkippedItem

FILE_FORMATS = ("zip", "csv", "jsonl")  # one file each
FOLDER_FORMATS = ("coco", "hf", "labelstudio")  # a folder each, opened as it is by the tool it is named after
EXPORT_FORMATS = FILE_FORMATS + FOLDER_FORMATS
FOLDER_FORMAT_NEEDS = {"coco": "pycocotools"}  # the module a folder export needs (from the extra of its name)
ONLY_CHOICES = ("all", "flagged")  # every labelled item, or the review queue (flagged items, least sure first)
EXPORT_FIELDS = ("path", "top1", "confidence", "match", "low_confidence", "flagged_by", "label", "label_source")
LOW_CONFIDENCE_FOLDER = "low-confidence"


def installed_folder_formats() -> list[str]:
    """The folder formats this installation can write (``coco`` needs the ``coco`` extra)."""
    import importlib.util

    return [f for f in FOLDER_FORMATS if f not in FOLDER_FORMAT_NEEDS or importlib.util.find_spec(FOLDER_FORMAT_NEEDS[f])]


def csv_bytes(records: list[LabelRecord]) -> bytes:
    """CSV with header ``EXPORT_FIELDS``, one row per labelled item (``flagged_by`` joined with ``+``; ``label``
    empty for an item a person rejected)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for rec in records:
        writer.writerow([rec.path, rec.top1, rec.confidence, "" if rec.match is None else rec.match,
                         rec.low_confidence, "+".join(rec.flagged_by), rec.label or "", rec.label_source])
    return buf.getvalue().encode("utf-8")


def review_queue(records: list[LabelRecord]) -> list[LabelRecord]:
    """The items a person should look at, least sure first: flagged and not yet settled by a person, by
    confidence, then match, then path."""
    flagged = [r for r in records if r.low_confidence and not r.rejected]
    return sorted(flagged, key=lambda r: (r.confidence, 2.0 if r.match is None else r.match, r.path))


def selected(records: list[LabelRecord], only: str = "all") -> list[LabelRecord]:
    """The records an export holds: every one (in file order), or ``flagged``: the review queue."""
    if only not in ONLY_CHOICES:
        raise CliplabelError(f"unknown selection {only!r}: use {', '.join(ONLY_CHOICES)}")
    return review_queue(records) if only == "flagged" else records


def write_asset_jsons(job: JobFolder, records: list[LabelRecord]) -> Path:
    """One ``labels/<item path>.json`` per item with its labels and confidence, and no file for an item that
    is no longer labelled (quarantined, or gone since); returns the folder."""
    wanted = {f"{rec.path}.json" for rec in records}
    for rel in job.files_under(job.item_labels_dir):
        if rel not in wanted:
            job.remove(job.item_labels_dir / rel)
    job.write_many((job.item_labels_dir / f"{rec.path}.json", json_bytes(rec.to_json())) for rec in records)
    return job.item_labels_dir


def write_grouped_zip(out: BinaryIO, job: JobFolder, groups: Groups, records: list[LabelRecord]) -> list[SkippedItem]:
    """A ZIP with ``labels.jsonl``, ``labels.csv`` and ``<group>/<item>`` entries streamed from disk, into ``out``.

    Entry names are portable and unique (``zip_names``). An item is read only as a regular file inside the job;
    one that is not any more is left out and returned with its reason (also listed in the ZIP's
    ``skipped.jsonl``)."""
    left_out: list[SkippedItem] = []
    names = UniqueNames()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(job.labels_jsonl.name, jsonl_bytes(r.to_json() for r in records))
        zf.writestr(job.labels_csv.name, csv_bytes(records))
        entries = [(portable_name(g.name), g.items) for g in groups.groups]
        entries += [(f"{LOW_CONFIDENCE_FOLDER}/{portable_name(f'{c.name}-{c.cluster}')}", c.items)
                    for c in groups.clusters]
        for folder, items in entries:
            for item in items:
                try:
                    fh = job.open_item(item)
                except CliplabelError as exc:
                    left_out.append(SkippedItem(item, "", str(exc)))
                    continue
                with fh:
                    _add_file(zf, f"{folder}/{names.take(folder, flat_item_name(item))}", fh)
        if left_out:
            zf.writestr(job.skipped_jsonl.name, jsonl_bytes(s.to_json() for s in left_out))
    return left_out


def _add_file(zf: zipfile.ZipFile, arcname: str, fh: BinaryIO) -> None:
    mtime = time.localtime(max(os.fstat(fh.fileno()).st_mtime, 315532800))  # ZIP dates start in 1980
    info = zipfile.ZipInfo(arcname, date_time=mtime[:6])
    info.external_attr = 0o644 << 16
    with zf.open(info, "w") as entry:
        shutil.copyfileobj(fh, entry, 1 << 20)


def build_manifest(job_id: str, provenance: Provenance, records: list[LabelRecord], skipped: list[SkippedItem],
                   groups: Groups | None) -> dict:
    """``manifest.json``: provenance, counts and when the export was made."""
    low = sum(r.low_confidence for r in records)
    return {
        "job_id": job_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance.to_json(),
        "counts": {"labelled": len(records), "confident": len(records) - low, "low_confidence": low,
                   "skipped": len(skipped), "groups": len(groups.groups) if groups else 0,
                   "clusters": len(groups.clusters) if groups else 0},
    }


