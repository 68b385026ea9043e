"""The stages of labelling a job, in the order the data flows:

    job folder -> items -> Embedded -> Labelled -> FilteredSets -> Grouped -> Exported -> JobResult

Each stage takes its parent's value, writes its own artefacts through the ``JobFolder`` and returns its own
value; none reads back past its parent. ``load_*`` rebuild a stage's value from its artefacts (the Dagster
assets pass values between runs that way). ``cliplabel job`` calls ``process_job``; each asset calls one stage.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import FilteredSets, split_by_confidence
from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.progress import Progress, counter, step
from cliplabel_pipeline.core.organising.bundle import BundleFile, write_bundle_folder, write_bundle_zip
from cliplabel_pipeline.core.organising.export import (
    EXPORT_FORMATS, FOLDER_FORMATS, build_manifest, csv_bytes, selected, write_asset_jsons, write_grouped_zip,
)
from cliplabel_pipeline.core.storage import guarded
from cliplabel_pipeline.core.storage.clock import now
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.core.storage.files import jsonl_bytes
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.hashing import MAX_HASHED_BYTES, stream_sha256
from cliplabel_pipeline.core.storage.job_rows import JobRows, ingest_job_rows, replace_job_rows
from cliplabel_pipeline.core.storage.schema import ASSETS, LABEL_STAGE, LABELS, RUNS
from cliplabel_pipeline.core.values import (
    BankSpec, Embedded, Groups, LabelRecord, LabelSettings, Performance, Provenance, Review, SkippedItem,
)

if TYPE_CHECKING:  # grouping, scoring and the report import what exports and cleanup never need
    from cliplabel_pipeline.core.reporting.metrics import JobMetrics

log = logging.getLogger(__name__)


@dataclass
class Labelled:
    """A job's label records, its skipped items, what they were made with, and the image embeddings."""

    job: JobFolder
    records: list[LabelRecord]
    skipped: list[SkippedItem]
    provenance: Provenance
    embedded: Embedded
    started: datetime = field(default_factory=now)

    @property
    def performance(self) -> Performance:
        return self.embedded.performance()

    def embeddings_by_path(self) -> dict[str, np.ndarray]:
        return dict(zip((i.path for i in self.embedded.items), self.embedded.embeddings))


@dataclass
class Grouped:
    labelled: Labelled
    groups: Groups


@dataclass(frozen=True)
class ExportFiles:
    """Where a job's exports lie."""

    csv: Path
    per_item_json: Path
    zip: Path
    manifest: Path

    @classmethod
    def of(cls, job: JobFolder) -> "ExportFiles":
        return cls(job.labels_csv, job.item_labels_dir, job.export_file("zip"), job.manifest_json)


@dataclass
class Exported:
    grouped: Grouped
    files: ExportFiles


@dataclass
class JobResult:
    """Everything ``cliplabel job`` produced for one job."""

    exported: Exported
    metrics: JobMetrics
    report: Path

    @property
    def labelled(self) -> Labelled:
        return self.exported.grouped.labelled

    @property
    def groups(self) -> Groups:
        return self.exported.grouped.groups


def embed_job(labeller, job: JobFolder, settings: LabelSettings = LabelSettings(),
              progress: Progress | None = None) -> Embedded:
    """Encode every readable item; writes the embeddings and ``skipped.jsonl``. Fails only when nothing
    at all could be read."""
    from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders
    from cliplabel_pipeline.core.reading.items import list_job_items, windows_note

    with job.lock():
        job.sweep_temps()  # what a run killed mid-write left behind (never a live writer's)
    items = list_job_items(job)
    if note := windows_note(items):
        log.warning("%s", note)
    total = len(items.items)
    if labeller.encoder.device.startswith("cuda"):  # source and masks decoded once, items built on the GPU
        from cliplabel_pipeline.core.encoding.gpu_input import embed_jobs_on_device

        advance = counter(progress, f"{job.id}: encoding", total)
        embedded = next(embed_jobs_on_device(labeller.encoder, [items]))
        advance(total)
    else:
        embedded = embed_images(labeller.encoder, job_loaders(items), settings.batch_size,
                                counter(progress, f"{job.id}: encoding", total))
    for entry in items.skipped:  # as the decoder logs what it skips: with -v, every skipped item is a line
        log.info("skipped %s: %s", entry.path, entry.reason)
    embedded.skipped = items.skipped + embedded.skipped
    with job.lock():
        if not embedded.items:
            job.write_skipped(embedded.skipped)
            raise CliplabelError(f"job {job.id}: nothing could be labelled ({len(embedded.skipped)} items skipped; "
                                 f"see {job.skipped_jsonl})")
        job.write_embedded(embedded)
    return embedded


def label_embedded(job: JobFolder, embedded: Embedded, index: ConceptIndex, bank: BankSpec,
                   settings: LabelSettings = LabelSettings(), db_path: Path | None = None,
                   run_id: str | None = None, spool_rows: bool = False,
                   reviews: list[Review] | None = None) -> Labelled:
    """Score the embeddings against the index; writes ``labels.jsonl``, the provenance and, with ``db_path``,
    the job's DuckDB rows: the database is opened first (a busy one is waited for), so the files and the rows
    change together or, when the database stays busy, neither does. With ``spool_rows`` (a worker host of a
    cluster) the rows are written last, beside the outputs, for ``ingest_lineage`` on the one writer's host.
    ``reviews`` (the job's ``reviews.jsonl`` when None) are laid over the model's labels: the label of record."""
    from cliplabel_pipeline.core.labelling.labels import assign_labels
    from cliplabel_pipeline.core.labelling.reviews import apply_reviews

    started = now()
    if reviews is None:
        reviews = job.read_reviews()
    records = apply_reviews(assign_labels(embedded, index, settings), reviews)  # decisions outlive runs
    enc = embedded.encoder
    provenance = Provenance(enc.model, enc.model_identity, enc.precision, enc.device, index.bank.version,
                            index.bank.templates_hash, index.bank.templates, bank, settings.top_k,
                            settings.min_confidence, settings.min_match, index.calibration.summary())
    labelled = Labelled(job, records, embedded.skipped, provenance, embedded, started)
    run_id = run_id or f"cli-{uuid.uuid4().hex[:12]}"
    # the files are written inside the transaction and renamed into place only once it has committed
    with job.lock(), job.staged(), write_connection(db_path, job.waits.db_s) if db_path and not spool_rows else nullcontext() as con:
        if con is not None:
            replace_job_rows(con, job_rows(run_id, labelled))
        job.write_labels(records)
        job.write_skipped(labelled.skipped)
        job.write_provenance(provenance)
    if spool_rows:
        job.write_lineage_rows(job_rows(run_id, labelled))
    return labelled


def job_rows(run_id: str, labelled: Labelled) -> JobRows:
    """The rows of a labelled job (items read for their digests), ready to write here or to ingest elsewhere."""
    job, prov = labelled.job, labelled.provenance
    assets = []
    for item, status, reason in ([(i, "labelled", None) for i in labelled.embedded.items]
                                 + [(s, "skipped", s.reason) for s in labelled.skipped]):
        sha, size = _item_digest(job, item.path, hashed=status == "labelled")  # a skipped file is never read
        assets.append(ASSETS.row(job_id=job.id, path=item.path, kind=item.kind, sha256=sha, bytes=size, status=status,
                                 skip_reason=reason, run_id=run_id))
    labels = [LABELS.row(r, prov, job_id=job.id, run_id=run_id) for r in labelled.records]
    run = RUNS.row(prov, labelled.performance, run_id=run_id, job_id=job.id, stage=LABEL_STAGE,
                   started_at=labelled.started, finished_at=now(), item_count=len(labelled.records))
    return JobRows(job.id, run_id, assets, labels, [run])


def _item_digest(job: JobFolder, path: str, hashed: bool) -> tuple[str | None, int | None]:
    """sha256 (when ``hashed`` and the file is at most ``MAX_HASHED_BYTES``) and size of a job's item, opened as
    a regular file inside the job; ``(None, None)`` otherwise."""
    try:
        fh = job.open_item(path)
    except CliplabelError:
        return None, None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        return (stream_sha256(fh, MAX_HASHED_BYTES) if hashed and size <= MAX_HASHED_BYTES else None), size


def record_run(db_path: Path, run_id: str, labelled: Labelled) -> None:
    """A labelled job's rows, replacing its previous rows, in one transaction."""
    with write_connection(db_path, labelled.job.waits.db_s) as con:
        replace_job_rows(con, job_rows(run_id, labelled))


def ingest_lineage(job: JobFolder, db_path: Path) -> JobRows:
    """The rows the labelling step wrote beside the job's outputs, into DuckDB (replacing the job's rows in one
    transaction, so a retry lands every item exactly once); returns them."""
    rows = job.read_lineage_rows()
    ingest_job_rows(db_path, rows, job.waits.db_s)
    return rows


def filter_labelled(labelled: Labelled) -> FilteredSets:
    """The kept and the flagged items, by the flags of the run that labelled them (writes nothing: the split is
    ``labels.jsonl``'s own, and follows it through cleanup, restore and reviews)."""
    return split_by_confidence(labelled.records)


def group_labelled(labelled: Labelled, index: ConceptIndex, filtered: FilteredSets | None = None) -> Grouped:
    """``groups.json``: the kept items of ``filtered`` by label, the flagged ones clustered and named
    (``filtered`` is ``filter_labelled(labelled)`` when not given)."""
    from cliplabel_pipeline.core.organising.grouping import group_items

    if filtered is None:
        filtered = filter_labelled(labelled)
    groups = group_items(filtered, labelled.embeddings_by_path(), index)
    with labelled.job.lock():
        labelled.job.write_groups(groups)
    return Grouped(labelled, groups)


def export_grouped(grouped: Grouped) -> Exported:
    """``labels.csv``, ``labels/<path>.json``, ``export/<job>.zip`` and ``manifest.json``."""
    lab, job = grouped.labelled, grouped.labelled.job
    manifest = build_manifest(job.id, lab.provenance, lab.records, lab.skipped, grouped.groups)
    files = ExportFiles.of(job)
    with job.lock(), job.writer(files.zip) as fh:
        _warn_left_out(write_grouped_zip(fh, job, grouped.groups, lab.records))
    with job.lock():
        job.write(files.csv, csv_bytes(lab.records))
        write_asset_jsons(job, lab.records)
        job.write_json(files.manifest, manifest)
    return Exported(grouped, files)


def _warn_left_out(left_out: list[SkippedItem]) -> None:
    for item in left_out:
        log.warning("left out of the ZIP: %s", item.reason)


def report_exported(exported: Exported) -> JobResult:
    """``metrics.json`` and ``report/report.md`` with its pictures."""
    from cliplabel_pipeline.core.heartbeat import peak_memory_mb
    from cliplabel_pipeline.core.reporting.metrics import job_metrics
    from cliplabel_pipeline.core.reporting.report import write_report

    lab, groups = exported.grouped.labelled, exported.grouped.groups
    perf = lab.embedded.performance(peak_memory_mb())
    metrics = job_metrics(lab.records, lab.job, lab.provenance.min_confidence, perf, lab.provenance.min_match)
    with lab.job.lock():
        lab.job.write_json(lab.job.metrics_json, metrics.to_json())
        result = JobResult(exported, metrics, write_report(lab.job, lab.records, metrics, groups))
        lab.job.mark_stale(None)  # every derived output now agrees with labels.jsonl
    return result


def label_job(labeller, job: JobFolder, settings: LabelSettings = LabelSettings(),
              progress: Progress | None = None, db_path: Path | None = None) -> Labelled:
    """Embed and label one job (``labels.jsonl``, ``skipped.jsonl``, and its rows when ``db_path`` is given)."""
    embedded = embed_job(labeller, job, settings, progress)
    return label_embedded(job, embedded, labeller.index, labeller.bank_spec, settings, db_path)


def process_job(labeller, job: JobFolder, settings: LabelSettings = LabelSettings(), db_path: Path | None = None,
                progress: Progress | None = None) -> JobResult:
    """Every stage for one job, in order (and its DuckDB rows when ``db_path`` is given). From the labels on,
    the job is locked: a cleanup or restore of it in another process waits, and sees every output agree."""
    embedded = embed_job(labeller, job, settings, progress)
    with job.lock():
        with step(progress, f"{job.id}: scoring"):
            labelled = label_embedded(job, embedded, labeller.index, labeller.bank_spec, settings, db_path)
        with step(progress, f"{job.id}: grouping"):
            grouped = group_labelled(labelled, labeller.index, filter_labelled(labelled))
        with step(progress, f"{job.id}: exporting"):
            exported = export_grouped(grouped)
        with step(progress, f"{job.id}: report"):
            return report_exported(exported)


# Values rebuilt from artefacts (for a stage run apart from its parent, as Dagster assets are).
def load_labelled(job: JobFolder) -> Labelled:
    return Labelled(job, job.read_labels(), job.read_skipped(), job.read_provenance(), job.read_embedded())


def load_filtered(job: JobFolder) -> FilteredSets:
    return split_by_confidence(job.read_labels())


def load_grouped(job: JobFolder) -> Grouped:
    return Grouped(load_labelled(job), job.read_groups())


def load_exported(job: JobFolder) -> Exported:
    return Exported(load_grouped(job), ExportFiles.of(job))


def export_format(job: JobFolder, fmt: str, out: Path | None = None, only: str = "all",
                  image_root: str | None = None) -> Path:
    """One export of a labelled job; returns its path. ``zip`` (grouped files), ``csv`` or ``jsonl`` are a file;
    ``coco``, ``hf`` and ``labelstudio`` a folder (see ``export_bundle``). ``only="flagged"`` holds just the
    review queue, least sure first.

    Written to ``out`` when given (a file, or a folder: a file export goes into it under its own name, a folder
    export fills it), else to ``<job>/export/<job>.<fmt>`` or ``<job>/export/<job>-<fmt>/`` (the review queue
    to ``<job>/export/<job>-<fmt>-flagged/``). Never onto the
    job's inputs or anything but a regular file.
    """
    fmt = _check_format(fmt)
    if fmt in FOLDER_FORMATS:
        return _export_folder(job, fmt, out, export_bundle(job, fmt, only, image_root), only)
    with export_destination(job, fmt, out) as (fh, path):
        write_export(job, fmt, fh, only)
    return path


def export_bundle(job: JobFolder, fmt: str, only: str = "all", image_root: str | None = None) -> list[BundleFile]:
    """The files of a folder export: ``coco`` (``annotations.json``, ``results.json``, the source), ``hf`` (an
    imagefolder: ``metadata.jsonl``, ``classes.txt``, the images classified) or ``labelstudio`` (``tasks.json``,
    ``label_config.xml``; images referred to by ``image_root`` + ``<job>/<path>``)."""
    records = selected(job.read_labels(), only)
    if fmt == "coco":
        from cliplabel_pipeline.core.organising.coco import coco_bundle

        return coco_bundle(job, records, job.read_provenance())
    if fmt == "hf":
        from cliplabel_pipeline.core.organising.hf import hf_bundle

        return hf_bundle(job, records)
    from cliplabel_pipeline.core.organising.labelstudio import DEFAULT_IMAGE_ROOT, labelstudio_bundle

    return labelstudio_bundle(job, records, job.read_provenance(), image_root or DEFAULT_IMAGE_ROOT)


def _export_folder(job: JobFolder, fmt: str, out: Path | None, files: list[BundleFile], only: str) -> Path:
    if out is None:
        folder = job.export_folder(fmt, only)
        wanted = {f.name for f in files}
        with job.lock():
            for rel in job.files_under(folder):  # a file of an earlier export that this one does not hold
                if rel not in wanted:
                    job.remove(folder / rel)
            write_bundle_folder(job, files, job.path, job.rel(folder))
        return folder
    rel, target = export_place(job, Path(out))
    if rel is not None:  # under the job's own export folder: through its guarded access, links never followed
        with job.lock():
            write_bundle_folder(job, files, job.path, rel)
        return target
    if target.exists() and not target.is_dir():
        raise CliplabelError(f"the {fmt} export is a folder, and {shown(out)} is a file: name a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliplabelError(f"cannot make the folder {shown(out)}: {exc.strerror or exc}") from None
    write_bundle_folder(job, files, target)
    return target


def write_export(job: JobFolder, fmt: str, fh, only: str = "all", image_root: str | None = None) -> None:
    """The ``fmt`` export of a labelled job into the binary stream ``fh`` (a file, or standard output); a folder
    export as a ZIP of that folder."""
    fmt = _check_format(fmt)
    if fmt in FOLDER_FORMATS:
        write_bundle_zip(job, export_bundle(job, fmt, only, image_root), fh)
        return
    records = selected(job.read_labels(), only)
    if fmt == "zip":
        if only != "all":
            raise CliplabelError("the zip export holds every group; for the review queue use csv, jsonl, coco, hf "
                                 "or labelstudio")
        if job.stale_reason():
            raise CliplabelError(f"the groups of job {job.id!r} are stale ({job.stale_reason()}): "
                                 f"run `cliplabel job {job.id}` to rebuild them, then export")
        _warn_left_out(write_grouped_zip(fh, job, job.read_groups(), records))
    else:
        fh.write(csv_bytes(records) if fmt == "csv" else jsonl_bytes(r.to_json() for r in records))


def _check_format(fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise CliplabelError(f"unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")
    return fmt


@contextmanager
def export_destination(job: JobFolder, fmt: str, out: Path | None):
    """``(file, path)`` to write an export through; the file appears whole when the block ends, or not at all."""
    if out is None:
        with job.writer(job.export_file(fmt)) as fh:
            yield fh, job.export_file(fmt)
        return
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / job.export_file(fmt).name
    rel, target = export_place(job, out)
    if rel is not None:  # under the job's own export folder: through its guarded access, links never followed
        with job.writer(job.path / rel) as fh:
            yield fh, target
        return
    target = target.parent.resolve() / target.name
    with guarded.atomic_writer(target.parent, target.name) as fh:
        yield fh, target


def export_place(job: JobFolder, out: Path) -> tuple[str | None, Path]:
    """Where ``-o out`` puts an export of ``job``: ``(path inside the job, absolute path)`` under the job's own
    export folder, else ``(None, absolute path)`` anywhere outside the results root. Every other place under the
    results root is refused, by the path as given and by where its links lead: those folders are the
    segmentation service's jobs, this one's and the others' (inputs, labels, quarantine), not an export's."""
    given = Path(os.path.abspath(out))
    root = job.path.parent
    if given.is_relative_to(job.export_dir):
        return "/".join(given.relative_to(job.path).parts), given
    for place in (given, given.resolve()):
        if place.is_relative_to(root) or place.is_relative_to(root.resolve()):
            inside = place.is_relative_to(job.path) or place.is_relative_to(job.path.resolve())
            where = f"inside job {job.id!r}" if inside else f"inside the results root {shown(root)}, among its jobs"
            raise CliplabelError(f"refusing to write the export to {shown(out)}: it lies {where} (write it under "
                                 f"{shown(job.export_dir)} or outside the results root)")
    return None, given
