"""Exports of a labelled job: CSV, per-item JSON, a grouped ZIP, and a provenance manifest.

Per-item JSON files go to ``<job>/labels/<path>.json``, outside ``masks/`` and ``objects/``, so the
segmentation output stays exactly as it was.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.values import Groups, LabelRecord, Provenance, SkippedItem

EXPORT_FORMATS = ("zip", "csv", "jsonl")
EXPORT_FIELDS = ("path", "top1", "confidence")
LOW_CONFIDENCE_FOLDER = "low-confidence"


def csv_bytes(records: list[LabelRecord]) -> bytes:
    """CSV with header ``path,top1,confidence``, one row per labelled item."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for rec in records:
        writer.writerow([rec.path, rec.top1, rec.confidence])
    return buf.getvalue().encode("utf-8")


def write_asset_jsons(job: JobFolder, records: list[LabelRecord]) -> Path:
    """One ``labels/<item path>.json`` per item with its labels and confidence; returns the folder."""
    for rec in records:
        job.write_json(job.item_labels_dir / f"{rec.path}.json", rec.to_json())
    return job.item_labels_dir


def safe_folder_name(name: str) -> str:
    """A group name usable as one folder name in any OS ("hot dog" stays, "a/b" becomes "a_b")."""
    cleaned = re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", name).strip(" .")
    return cleaned or "_"


def write_grouped_zip(path: Path, job: JobFolder, groups: Groups) -> Path:
    """ZIP with ``<group>/<file>`` entries; files are streamed from disk, never all held in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    entries = [(safe_folder_name(g.name), g.items) for g in groups.groups]
    entries += [(f"{LOW_CONFIDENCE_FOLDER}/{safe_folder_name(c.name)}-{c.cluster}", c.items) for c in groups.clusters]
    used: set[str] = set()
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for folder, items in entries:
                for item in items:
                    arc = f"{folder}/{item.replace('/', '__')}"
                    if arc not in used:
                        used.add(arc)
                        zf.write(job.item(item), arc)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


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


