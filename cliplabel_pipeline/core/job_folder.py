"""A job folder as an object: its id validated once, every artefact's path a property, one typed reader
and one writer per artefact. Every file cliplabel writes, moves or reads inside a job goes through this class,
which never follows a symbolic link (``core/storage/guarded.py``): the job folder is untrusted input.

    <job>/source.png, masks/, objects/, ground_truth.csv     inputs (never modified)
    <job>/labels.jsonl, skipped.jsonl, groups.json           labels, skipped items, groups
    <job>/labels.csv, labels/<item>.json, manifest.json      exports
    <job>/export/<job>.<zip|csv|jsonl>                       downloadable exports
    <job>/metrics.json, report/                              metrics and the report
    <job>/_cliplabel/                                        embeddings, provenance, lineage rows (intermediate)
    <job>/quarantine/                                        items moved away by cleanup
    <job>/reviews.jsonl                                      what people decided (append-only; kept through
                                                             every run, cleanup and restore)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from cliplabel_pipeline.core.errors import CliplabelError, JobGone, UnknownJob
from cliplabel_pipeline.core.settings import Waits
from cliplabel_pipeline.core.storage import guarded, windows_names
from cliplabel_pipeline.core.storage.files import json_bytes, jsonl_bytes as _jsonl
from cliplabel_pipeline.core.storage.job_rows import JobRows
from cliplabel_pipeline.core.values import (
    Embedded, EmbeddedItem, EncoderInfo, Groups, LabelRecord, Provenance, Review, SkippedItem,
)

log = logging.getLogger(__name__)

SOURCE_NAME = "source.png"
INPUT_DIRS = {"masks": "mask", "objects": "object"}  # folder -> item kind
GROUND_TRUTH = "ground_truth.csv"
MAX_JOB_ID_BYTES = 200  # leaves room for "<job>.zip" and temp names within a 255-byte file name
DEFAULT_WAITS = Waits()  # the settings' defaults, for a job opened outside a face (a test, a benchmark)


def validate_job_id(job_id: str) -> str:
    """``job_id`` if it names a single folder on every system; refuses ``..``, separators, drive letters,
    absolute paths, and names Windows cannot hold (``CON``, ``a:b``, a trailing dot: ``windows_names``)."""
    bad = (not job_id or job_id in (".", "..") or "/" in job_id or "\\" in job_id
           or PurePosixPath(job_id).is_absolute() or PureWindowsPath(job_id).drive
           or not all(c.isprintable() for c in job_id))
    if bad:
        raise JobGone(f"invalid job id {guarded.shown(job_id)!r}: a job id is a single folder name "
                             "(no '..', separators, control characters or absolute paths)")
    if len(job_id.encode("utf-8", "surrogateescape")) > MAX_JOB_ID_BYTES:
        raise JobGone(f"invalid job id {guarded.shown(job_id[:40])}...: longer than {MAX_JOB_ID_BYTES} bytes")
    if problem := windows_names.name_problem(job_id):  # on every system: a results root moves between them
        raise JobGone(f"invalid job id {guarded.shown(job_id)!r}: {problem} (a job id must be a folder "
                             "name on every system, Windows included)")
    return job_id


def is_real_folder(path: Path) -> bool:
    """A folder, and no link to one (nor a Windows junction, which looks like a folder)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and not guarded.is_link(st)


class JobFolder:
    """One job under a results root. ``JobFolder.open`` checks that it exists. ``waits`` (``Settings.waits``, as
    the face read them) bound how long its lock and the writes of its rows wait for another process."""

    def __init__(self, results_root: Path, job_id: str, waits: Waits = DEFAULT_WAITS):
        self.id = validate_job_id(job_id)
        self.waits = waits
        # Resolved once, here: every path of the job is then absolute, whatever form the root was given in
        # (relative, through ``..``, through a link), and the same in every process that opens the job.
        self.results_root = Path(results_root).expanduser().resolve()
        self.path = self.results_root / job_id
        self._stage: contextlib.ExitStack | None = None

    @classmethod
    def open(cls, results_root: Path | None, job_id: str, waits: Waits = DEFAULT_WAITS) -> "JobFolder":
        """The existing folder of ``job_id``; a one-line error for a bad id, root or job."""
        if results_root is None:
            raise CliplabelError("no results root: pass --results-root or set CLIPLABEL_RESULTS_ROOT")
        job = cls(Path(results_root), job_id, waits)
        root = job.results_root
        if not root.is_dir():
            raise CliplabelError(f"results root {root} does not exist; set --results-root or CLIPLABEL_RESULTS_ROOT")
        if not is_real_folder(job.path):
            raise UnknownJob(f"unknown job {job_id!r}: no folder {job.path}")
        return job

    def __repr__(self) -> str:
        return f"JobFolder({str(self.path)!r})"

    # inputs
    @property
    def source(self) -> Path:
        return self.path / SOURCE_NAME

    @property
    def ground_truth(self) -> Path:
        return self.path / GROUND_TRUTH

    # artefacts
    @property
    def labels_jsonl(self) -> Path:
        return self.path / "labels.jsonl"

    @property
    def skipped_jsonl(self) -> Path:
        return self.path / "skipped.jsonl"

    @property
    def groups_json(self) -> Path:
        return self.path / "groups.json"

    @property
    def labels_csv(self) -> Path:
        return self.path / "labels.csv"

    @property
    def reviews_jsonl(self) -> Path:
        """What people decided about the job's items, one review a line, appended to, never rewritten."""
        return self.path / "reviews.jsonl"

    @property
    def item_labels_dir(self) -> Path:
        """``labels/``: one JSON per item, outside ``masks/`` and ``objects/``."""
        return self.path / "labels"

    @property
    def manifest_json(self) -> Path:
        return self.path / "manifest.json"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def export_file(self, fmt: str) -> Path:
        return self.export_dir / f"{self.id}.{fmt}"

    def export_folder(self, fmt: str, only: str = "all") -> Path:
        """Where a folder export (``coco``, ``hf``, ``labelstudio``) lies when no other place is asked for; the
        review queue (``only="flagged"``) beside the full export, never over it."""
        return self.export_dir / (f"{self.id}-{fmt}" if only == "all" else f"{self.id}-{fmt}-{only}")

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def report_md(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def work_dir(self) -> Path:
        return self.path / "_cliplabel"

    @property
    def embeddings_npy(self) -> Path:
        return self.work_dir / "embeddings.npy"

    @property
    def embedded_items_jsonl(self) -> Path:
        return self.work_dir / "items.jsonl"

    @property
    def encoding_json(self) -> Path:
        return self.work_dir / "encoding.json"

    @property
    def provenance_json(self) -> Path:
        return self.work_dir / "provenance.json"

    @property
    def lineage_rows_json(self) -> Path:
        """The job's DuckDB rows as the host that labelled it wrote them, for the one writer to ingest (clusters)."""
        return self.work_dir / "lineage_rows.json"

    @property
    def lock_file(self) -> Path:
        """Held while a process labels, cleans up or restores the job (``lock``)."""
        return self.work_dir / "job.lock"

    def lock(self):
        """``with job.lock():`` the job to this thread alone, across processes and hosts; re-entrant. Another
        holder is waited for up to ``waits.job_s`` (``CLIPLABEL_JOB_WAIT_S``), said once in the log, then one line."""
        return guarded.locked(self.path, self.rel(self.lock_file), self.waits.job_s, on_wait=lambda holder: log.warning(
            "job %s is busy in another cliplabel process (%s); waiting for it", self.id, holder or "unknown"))

    @property
    def quarantine_dir(self) -> Path:
        return self.path / "quarantine"

    @property
    def journal_dir(self) -> Path:
        """``quarantine/journal/``: one journal per cleanup, written before anything moves."""
        return self.quarantine_dir / "journal"

    def journal_file(self, action_id: str) -> Path:
        return self.journal_dir / f"{action_id}.json"

    def quarantined(self, action_id: str, rel: str) -> Path:
        """Where cleanup ``action_id`` keeps item ``rel``: each action its own folder, so nothing clashes."""
        return self.quarantine_dir / action_id / rel

    @property
    def output_dirs(self) -> tuple[Path, ...]:
        """cliplabel's own folders inside the job."""
        return (self.item_labels_dir, self.export_dir, self.report_dir, self.work_dir, self.quarantine_dir)

    @property
    def actions_json(self) -> Path:
        """How many cleanups and restores the job has seen (the sensor looks at a job again after each)."""
        return self.work_dir / "actions.json"

    @property
    def stale_json(self) -> Path:
        """Present when the outputs derived from ``labels.jsonl`` could not be rebuilt after a cleanup."""
        return self.work_dir / "stale.json"

    def item(self, rel: str) -> Path:
        """The file of item ``rel`` (a path relative to the job, forward slashes)."""
        return self.path / rel

    # guarded access: never through a link, never outside the job
    def rel(self, path: Path | str) -> str:
        """``path`` (inside the job, absolute or relative) as a relative path; refuses anything outside."""
        path = Path(path)
        if path.is_absolute():
            if not path.is_relative_to(self.path):
                raise CliplabelError(f"refusing {guarded.shown(path)}: it lies outside job {self.id!r}")
            path = path.relative_to(self.path)
        return "/".join(guarded.parts_of(path.as_posix()))

    def write(self, path: Path, data: bytes) -> Path:
        """Write ``data`` atomically to ``path`` inside the job, never through a link (inside ``staged``: written
        now, renamed into place when that block ends)."""
        if self._stage is None:
            return guarded.write_file(self.path, self.rel(path), data)
        self._stage.enter_context(self.writer(path)).write(data)
        return self.path / self.rel(path)

    def write_many(self, files: Iterable[tuple[Path, bytes]]) -> int:
        """``write`` for many files at once (batched: one flush to disk for all); returns how many."""
        if self._stage is not None:  # each renamed into place with the rest of the staged block
            files = list(files)
            for path, data in files:
                self.write(path, data)
            return len(files)
        return guarded.write_files(self.path, ((self.rel(path), data) for path, data in files))

    @contextlib.contextmanager
    def staged(self):
        """``with job.staged():`` every ``write`` in the block goes to a temp file (written and synced at once),
        and all are renamed into place when the block ends without error; none is otherwise. Wrap a database
        transaction in it so the files land only once their rows are committed."""
        with contextlib.ExitStack() as stack:
            self._stage = stack
            try:
                yield self
            finally:
                self._stage = None

    def writer(self, path: Path):
        """``with job.writer(path) as fh``: stream a file in; it appears whole when the block ends, or not at all."""
        return guarded.atomic_writer(self.path, self.rel(path))

    def write_json(self, path: Path, data) -> Path:
        return self.write(path, json_bytes(data))

    def open_item(self, rel: str):
        """Item ``rel`` opened for reading if it is a regular file inside the job; else ``NotRegularFile``."""
        return guarded.open_regular(self.path, self.rel(rel))

    def read_bytes(self, path: Path | str) -> bytes:
        return guarded.read_bytes(self.path, self.rel(path))

    def is_file(self, path: Path | str) -> bool:
        """True when ``path`` is a regular file of the job, reached without a link."""
        return guarded.exists_regular(self.path, self.rel(path))

    def remove(self, path: Path | str) -> None:
        """Delete a file of the job (a link itself, never what it points at)."""
        guarded.remove(self.path, self.rel(path))

    def files_under(self, folder: Path) -> list[str]:
        """Files under ``folder`` of the job (paths relative to it; hidden ones left out); links not followed.
        Walked with a stack, not recursion: the producer decides how deep the folders go."""
        base = self.path / self.rel(folder)
        if not is_real_folder(base):
            return []
        found, pending = [], [""]
        while pending:
            rel = pending.pop()
            try:
                entries = list(os.scandir(base / rel if rel else base))
            except OSError:
                continue  # unreadable, removed, or past the system's path length: nothing of ours lies there
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                sub = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    linked = guarded.is_link(entry.stat(follow_symlinks=False))  # a junction too
                except OSError:
                    continue
                if entry.is_dir(follow_symlinks=False) and not linked:
                    pending.append(sub)
                elif not entry.is_dir():  # as os.walk lists them: a link to a file is listed (and refused when
                    found.append(sub)     # read), a link to a folder is neither listed nor followed
        return sorted(found)

    def _read_json(self, path: Path):
        return json.loads(self.read_bytes(path).decode("utf-8"))

    def _read_jsonl(self, path: Path, parse=None) -> list:
        """The records of a JSON-lines file of the job, each through ``parse`` when given; a line that is not one
        (bad JSON, nested past Python's limit, a missing or mistyped field) is one line naming file and line."""
        out = []
        for number, line in enumerate(self.read_bytes(path).decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
                out.append(parse(value) if parse else value)
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                why = ("nested too deep" if isinstance(exc, RecursionError) else f"no field {exc}"
                       if isinstance(exc, KeyError) else " ".join(str(exc).split())[:80])
                raise CliplabelError(f"job {self.id!r}: line {number} of {path.name} is not a record cliplabel "
                                     f"wrote ({why}); it was changed outside cliplabel: run `cliplabel job "
                                     f"{self.id}` to write it anew") from None
        return out

    def sweep_temps(self) -> int:
        """Remove temp files left by a cliplabel process killed mid-write (never a running writer's)."""
        removed = guarded.sweep_temps(self.path, recursive=False)
        for folder in self.output_dirs:
            removed += guarded.sweep_temps(self.path, self.rel(folder))
        return removed

    # typed artefacts
    def action_count(self) -> int:
        try:
            return int(self._read_json(self.actions_json)["count"])
        except (CliplabelError, ValueError, KeyError, TypeError):
            return 0

    def count_action(self) -> None:
        self.write_json(self.actions_json, {"count": self.action_count() + 1})

    def stale_reason(self) -> str | None:
        """Why the derived outputs (groups, exports, report) are stale, or None when they agree with the labels."""
        try:
            return str(self._read_json(self.stale_json)["reason"]) if self.is_file(self.stale_json) else None
        except (CliplabelError, ValueError, KeyError, TypeError):
            return "unknown"

    def mark_stale(self, reason: str | None) -> None:
        if reason:
            self.write_json(self.stale_json, {"reason": reason})
        else:
            self.remove(self.stale_json)

    def has_labels(self) -> bool:
        return self.is_file(self.labels_jsonl)

    def read_labels(self) -> list[LabelRecord]:
        """The job's label records; one line for a file that lists an item twice (nothing is matched to a wrong
        item: rows and actions go by path)."""
        if not self.has_labels():
            raise CliplabelError(f"job {self.id!r} has no {self.labels_jsonl.name} yet: run `cliplabel job {self.id}`")
        records = self._read_jsonl(self.labels_jsonl, LabelRecord.from_json)
        self.check_unique_paths([r.path for r in records])
        return records

    def check_unique_paths(self, paths: list[str]) -> None:
        """Refuses a ``labels.jsonl`` that lists an item more than once, or a path that is not a plain path
        inside the job (``..``, ``//``, ``./``: cliplabel never writes one, and such aliases would hide a
        duplicate)."""
        first: dict[str, int] = {}
        for line, path in enumerate(paths, 1):
            if not isinstance(path, str) or path.startswith("/") or any(
                    p in ("", ".", "..") or "\x00" in p for p in path.split("/")):
                raise CliplabelError(f"job {self.id!r}: line {line} of {self.labels_jsonl.name} names "
                                     f"{guarded.shown(str(path))!r}, not a plain path inside the job; it was changed "
                                     f"outside cliplabel: run `cliplabel job {self.id}` to write it anew")
            if path in first:
                raise CliplabelError(f"job {self.id!r}: {self.labels_jsonl.name} lists {guarded.shown(path)!r} twice "
                                     f"(lines {first[path]} and {line}); it was changed outside cliplabel: run "
                                     f"`cliplabel job {self.id}` to write it anew")
            first[path] = line

    def write_labels(self, records: list[LabelRecord]) -> Path:
        return self.write(self.labels_jsonl, _jsonl(r.to_json() for r in records))

    def read_reviews(self) -> list[Review]:
        """Every review of the job, oldest first (none when there is no ``reviews.jsonl``)."""
        return self._read_jsonl(self.reviews_jsonl, Review.from_json) if self.is_file(self.reviews_jsonl) else []

    def reviews_version(self) -> str | None:
        """The SHA-256 of ``reviews.jsonl`` (None when there is none): it changes whenever reviews are added."""
        if not self.is_file(self.reviews_jsonl):
            return None
        return hashlib.sha256(self.read_bytes(self.reviews_jsonl)).hexdigest()

    def append_reviews(self, reviews: list[Review]) -> Path:
        """Add ``reviews`` after the job's earlier ones; the file is replaced whole (atomically), so a crash
        leaves the earlier reviews as they were, never half a line."""
        before = self.read_bytes(self.reviews_jsonl) if self.is_file(self.reviews_jsonl) else b""
        if before and not before.endswith(b"\n"):
            before += b"\n"
        return self.write(self.reviews_jsonl, before + _jsonl(r.to_json() for r in reviews))

    def read_skipped(self, path: Path | None = None) -> list[SkippedItem]:
        path = path or self.skipped_jsonl
        return [SkippedItem.from_json(r) for r in self._read_jsonl(path)] if self.is_file(path) else []

    def write_skipped(self, skipped: list[SkippedItem], path: Path | None = None) -> Path:
        return self.write(path or self.skipped_jsonl, _jsonl(s.to_json() for s in skipped))

    @property
    def encoded_skipped_jsonl(self) -> Path:
        """What the encoding stage skipped, kept with the embeddings; ``skipped.jsonl`` itself lands with the
        labels and their rows (``label_embedded``), so it never lists what DuckDB does not."""
        return self.work_dir / "skipped.jsonl"

    def read_groups(self) -> Groups:
        if not self.is_file(self.groups_json):
            raise CliplabelError(f"job {self.id!r} has no {self.groups_json.name}: run `cliplabel job {self.id}` first")
        return Groups.from_json(self._read_json(self.groups_json))

    def write_groups(self, groups: Groups) -> Path:
        return self.write_json(self.groups_json, groups.to_json())

    def read_provenance(self) -> Provenance:
        return Provenance.from_json(self._read_json(self.provenance_json))

    def write_provenance(self, provenance: Provenance) -> Path:
        return self.write_json(self.provenance_json, provenance.to_json())

    def read_lineage_rows(self) -> JobRows:
        if not self.is_file(self.lineage_rows_json):
            raise CliplabelError(f"job {self.id!r} has no {self.lineage_rows_json.name}: its labelling step has not run")
        return JobRows.from_json(self._read_json(self.lineage_rows_json))

    def write_lineage_rows(self, rows: JobRows) -> Path:
        return self.write(self.lineage_rows_json, json.dumps(rows.to_json(), ensure_ascii=False).encode("utf-8"))

    def write_embedded(self, embedded: Embedded) -> Path:
        """Embeddings (``.npy``), their items, encoder, timings and skipped items; returns the ``.npy``."""
        buf = io.BytesIO()
        np.save(buf, embedded.embeddings)
        self.write(self.embeddings_npy, buf.getvalue())
        self.write(self.embedded_items_jsonl, _jsonl(i.to_json() for i in embedded.items))
        self.write_json(self.encoding_json, {"encoder": embedded.encoder.__dict__, "seconds": embedded.seconds,
                                             "batch_seconds": embedded.batch_seconds})
        self.write_skipped(embedded.skipped, self.encoded_skipped_jsonl)
        return self.embeddings_npy

    def read_embedded(self) -> Embedded:
        if not self.is_file(self.embeddings_npy):
            raise CliplabelError(f"job {self.id!r} has no embeddings yet: run `cliplabel job {self.id}`")
        info = self._read_json(self.encoding_json)
        items = [EmbeddedItem.from_json(r) for r in self._read_jsonl(self.embedded_items_jsonl)]
        with self.open_item(self.rel(self.embeddings_npy)) as fh:
            embeddings = np.load(fh, allow_pickle=False)
        skipped = self.read_skipped(self.encoded_skipped_jsonl if self.is_file(self.encoded_skipped_jsonl) else None)
        return Embedded(items, embeddings, skipped, EncoderInfo(**info["encoder"]),
                        info["batch_seconds"], info["seconds"])

