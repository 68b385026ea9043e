"""The stages after labelling, each reading the previous stage's files and writing its own.

The Dagster assets call one stage each; ``cliplabel job`` calls them all in order.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from cliplabel_pipeline.core.artifacts import load_embedded, save_embedded, work_dir
from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.export import (
    build_manifest, write_asset_jsons, write_grouped_zip, write_labels_csv, write_manifest,
)
from cliplabel_pipeline.core.grouping import group_items
from cliplabel_pipeline.core.heartbeat import peak_memory_mb
from cliplabel_pipeline.core.jobs import job_dir, list_job_items
from cliplabel_pipeline.core.labeller import Labeller
from cliplabel_pipeline.core.metrics import job_metrics
from cliplabel_pipeline.core.outputs import LABELS_FILE, SKIPPED_FILE, read_jsonl, write_atomic, write_jsonl
from cliplabel_pipeline.core.report import write_report
from cliplabel_pipeline.core.store import now, write_job_assets, write_job_labels

GROUPS_FILE = "groups.json"


def provenance(labeller: Labeller) -> dict:
    """What the labels were made with: model, precision, bank version, templates, thresholds."""
    h, bank = labeller.handle, labeller.bank
    return {"model": h.name, "model_identity": h.identity, "precision": h.precision, "device": h.device,
            "bank_version": bank.version, "templates_hash": bank.templates_hash, "templates": list(bank.templates),
            "top_k": labeller.top_k, "min_confidence": labeller.min_confidence}


def read_labels(folder: Path) -> list[dict]:
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        raise CliplabelError(f"job {Path(folder).name!r} has no {LABELS_FILE} yet: run `cliplabel job {Path(folder).name}`")
    return read_jsonl(path)


def embed_stage(labeller: Labeller, folder: Path, job_id: str, progress=None):
    """Embed every readable item; writes ``_cliplabel/embeddings.npy`` and ``skipped.jsonl``.

    ``progress(done, total)`` is called after each batch when given.
    """
    manifest = list_job_items(folder, job_id)
    total = len(manifest.items)
    embedded = labeller.embed_job(manifest, (lambda done: progress(done, total)) if progress else None)
    if not embedded.meta:
        raise CliplabelError(f"job {job_id}: nothing could be labelled ({len(embedded.skipped)} items skipped; "
                             f"see {Path(folder) / SKIPPED_FILE})")
    save_embedded(folder, embedded)
    return embedded


def label_stage(labeller: Labeller, folder: Path):
    """Score the saved embeddings; writes ``labels.jsonl`` and ``_cliplabel/provenance.json``.

    Returns ``(records, embedded)``.
    """
    embedded = load_embedded(folder)
    records = labeller.label_embedded(embedded)
    write_jsonl(Path(folder) / LABELS_FILE, records)
    write_atomic(work_dir(folder) / "provenance.json", json.dumps(provenance(labeller)).encode())
    return records, embedded


def split_stage(folder: Path) -> tuple[list[dict], list[dict]]:
    """``_cliplabel/confident.jsonl`` and ``low_confidence.jsonl``."""
    records = read_labels(folder)
    confident = [r for r in records if not r["low_confidence"]]
    low = [r for r in records if r["low_confidence"]]
    write_jsonl(work_dir(folder) / "confident.jsonl", confident)
    write_jsonl(work_dir(folder) / "low_confidence.jsonl", low)
    return confident, low


def group_stage(labeller: Labeller, folder: Path) -> dict:
    """``groups.json``: confident items by top-1, low-confidence items clustered and named."""
    embedded = load_embedded(folder)
    by_path = dict(zip((m["path"] for m in embedded.meta), embedded.embeddings))
    groups = group_items(read_labels(folder), by_path, labeller.text_emb, labeller.bank.names)
    write_atomic(Path(folder) / GROUPS_FILE, json.dumps(groups, indent=1, ensure_ascii=False).encode())
    return groups


def read_provenance(folder: Path) -> dict:
    return json.loads((work_dir(folder) / "provenance.json").read_text())


def export_stage(folder: Path, job_id: str) -> dict[str, Path]:
    """``labels.csv``, ``labels/<path>.json``, ``export/<job>.zip`` and ``manifest.json``."""
    records = read_labels(folder)
    groups = json.loads((Path(folder) / GROUPS_FILE).read_text())
    skipped = read_jsonl(Path(folder) / SKIPPED_FILE)
    manifest = build_manifest(job_id, read_provenance(folder), records, skipped, groups)
    return {
        "csv": write_labels_csv(Path(folder) / "labels.csv", records),
        "per_item_json": write_asset_jsons(folder, records),
        "zip": write_grouped_zip(Path(folder) / "export" / f"{job_id}.zip", folder, groups),
        "manifest": write_manifest(Path(folder) / "manifest.json", manifest),
    }


EXPORT_FORMATS = ("zip", "csv", "jsonl")


def export_format(folder: Path, fmt: str, out: Path | None = None) -> Path:
    """One export of a labelled job: ``zip`` (grouped files), ``csv`` or ``jsonl``; returns its path."""
    folder = Path(folder)
    records = read_labels(folder)
    out = Path(out) if out else folder / "export" / f"{folder.name}.{fmt}"
    if fmt == "csv":
        return write_labels_csv(out, records)
    if fmt == "jsonl":
        return write_jsonl(out, records)
    if fmt == "zip":
        groups_path = folder / GROUPS_FILE
        if not groups_path.is_file():
            raise CliplabelError(f"job {folder.name!r} has no {GROUPS_FILE}: run `cliplabel job {folder.name}` first")
        return write_grouped_zip(out, folder, json.loads(groups_path.read_text()))
    raise CliplabelError(f"unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")


def report_stage(folder: Path) -> tuple[dict, Path]:
    """``metrics.json`` and ``report/report.md`` with its pictures."""
    records = read_labels(folder)
    embedded = load_embedded(folder)
    perf = {"items_per_s": round(embedded.items_per_second, 3), "batch_seconds": embedded.batch_seconds,
            "seconds": round(embedded.seconds, 3), **peak_memory_mb()}
    metrics = job_metrics(records, folder, read_provenance(folder)["min_confidence"], perf)
    write_atomic(Path(folder) / "metrics.json", json.dumps(metrics, indent=1).encode())
    report = write_report(folder, records, metrics, json.loads((Path(folder) / GROUPS_FILE).read_text()))
    return metrics, report


def label_job(labeller: Labeller, results_root: Path, job_id: str, progress=None):
    """Embed and label one job (``labels.jsonl``, ``skipped.jsonl``); returns ``(records, embedded)``."""
    folder = job_dir(results_root, job_id)
    embed_stage(labeller, folder, job_id, progress)
    return label_stage(labeller, folder)


def record_stage(db_path: Path, run_id: str, folder: Path, records: list[dict], embedded, labeller: Labeller,
                 started) -> None:
    """The job's ``assets``, ``labels`` and ``runs`` rows in DuckDB (replacing the job's previous rows)."""
    job_id = Path(folder).name
    write_job_assets(db_path, job_id, run_id, folder, embedded.meta, embedded.skipped)
    write_job_labels(db_path, job_id, run_id, records, {
        **provenance(labeller), "asset": "job_label_assignments", "started_at": started, "finished_at": now(),
        "items_per_s": round(embedded.items_per_second, 3)})


def process_job(labeller: Labeller, results_root: Path, job_id: str, db_path: Path | None = None,
                progress=None) -> dict:
    """Every stage for one job, in order (DuckDB rows too when ``db_path`` is given)."""
    folder = job_dir(results_root, job_id)
    started = now()
    records, embedded = label_job(labeller, results_root, job_id, progress)
    if db_path:
        record_stage(db_path, f"cli-{uuid.uuid4().hex[:12]}", folder, records, embedded, labeller, started)
    split_stage(folder)
    groups = group_stage(labeller, folder)
    exports = export_stage(folder, job_id)
    metrics, report = report_stage(folder)
    return {"embedded": embedded, "records": records, "groups": groups, "exports": exports,
            "metrics": metrics, "report": report, "folder": folder}
