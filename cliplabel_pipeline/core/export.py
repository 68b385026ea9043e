"""Exports of a labelled job: CSV, per-asset JSON, a grouped ZIP, and a provenance manifest.

Per-asset JSON files go to ``<job>/labels/<path>.json``, outside ``masks/`` and ``objects/``, so the
segmentation output stays exactly as it was.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from cliplabel_pipeline.core.outputs import write_atomic

EXPORT_FIELDS = ("path", "top1", "confidence")


def csv_bytes(records: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for rec in records:
        writer.writerow([rec["path"], rec["top1"], rec["confidence"]])
    return buf.getvalue().encode("utf-8")


def write_labels_csv(path: Path, records: list[dict]) -> Path:
    """CSV with header ``path,top1,confidence``, one row per labelled item."""
    return write_atomic(path, csv_bytes(records))


def write_asset_jsons(job_dir: Path, records: list[dict]) -> Path:
    """One ``labels/<item path>.json`` per item with its labels and confidence; returns the folder."""
    folder = Path(job_dir) / "labels"
    for rec in records:
        write_atomic(folder / f"{rec['path']}.json", json.dumps(rec, ensure_ascii=False, indent=1).encode())
    return folder


def safe_folder_name(name: str) -> str:
    """A group name usable as one folder name in any OS ("hot dog" stays, "a/b" becomes "a_b")."""
    cleaned = re.sub(r"[\\/:*?\"<>|\x00-\x1f]", "_", name).strip(" .")
    return cleaned or "_"


def write_grouped_zip(path: Path, job_dir: Path, groups: dict) -> Path:
    """ZIP with ``<group>/<file>`` entries; files are streamed from disk, never all held in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    used: set[str] = set()
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        entries = [(g["name"], g["items"]) for g in groups["groups"]]
        entries += [(f"low-confidence/{safe_folder_name(c['name'])}-{c['cluster']}", c["items"]) for c in groups["clusters"]]
        for name, items in entries:
            folder = name if name.startswith("low-confidence/") else safe_folder_name(name)
            for item in items:
                arc = f"{folder}/{item.replace('/', '__')}"
                if arc not in used:
                    used.add(arc)
                    zf.write(Path(job_dir) / item, arc)
    tmp.replace(path)
    return path


def build_manifest(job_id: str, provenance: dict, records: list[dict], skipped: list[dict], groups: dict | None) -> dict:
    low = sum(r["low_confidence"] for r in records)
    return {
        "job_id": job_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance,
        "counts": {"labelled": len(records), "confident": len(records) - low, "low_confidence": low,
                   "skipped": len(skipped), "groups": len(groups["groups"]) if groups else 0,
                   "clusters": len(groups["clusters"]) if groups else 0},
    }


def write_manifest(path: Path, manifest: dict) -> Path:
    return write_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
