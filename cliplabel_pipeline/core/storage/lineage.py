"""Lineage and metadata in DuckDB: one file, one writer at a time, idempotent per job.

DuckDB allows one writing process per file. Every write here takes a file lock beside the database,
opens a short connection, replaces the job's rows in one transaction, and closes. Reads open read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from filelock import FileLock, Timeout

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.storage.job_rows import JobRows
from cliplabel_pipeline.core.values import BankSpec

if TYPE_CHECKING:
    from cliplabel_pipeline.core.pipeline import Labelled

LOCK_TIMEOUT_S = 120  # how long a writer waits for another cliplabel writer (the file lock)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR, job_id VARCHAR, stage VARCHAR, model VARCHAR, model_identity VARCHAR,
    precision VARCHAR, bank_version VARCHAR, templates_hash VARCHAR, top_k INTEGER, min_confidence DOUBLE,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, item_count INTEGER, items_per_s DOUBLE, bank_spec VARCHAR,
    min_match DOUBLE, calibration VARCHAR);
CREATE TABLE IF NOT EXISTS assets (
    job_id VARCHAR, path VARCHAR, kind VARCHAR, sha256 VARCHAR, bytes BIGINT, status VARCHAR,
    skip_reason VARCHAR, run_id VARCHAR);
CREATE TABLE IF NOT EXISTS labels (
    job_id VARCHAR, path VARCHAR, kind VARCHAR, top1 VARCHAR, confidence DOUBLE, low_confidence BOOLEAN,
    labels_json VARCHAR, model VARCHAR, bank_version VARCHAR, run_id VARCHAR, match DOUBLE, flagged_by VARCHAR,
    label VARCHAR, label_source VARCHAR);
CREATE TABLE IF NOT EXISTS reviews (
    job_id VARCHAR, path VARCHAR, decision VARCHAR, label VARCHAR, model_label VARCHAR, reviewer VARCHAR,
    source VARCHAR, reviewed_at VARCHAR, imported_at VARCHAR);
"""


LABEL_STAGE = "label"  # the stage that writes a job's rows (``runs.stage``)


def now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def write_connection(db_path: Path, wait_s: float | None = None):
    """A read-write connection held under the database's file lock, inside one transaction.

    It is opened before the caller changes anything (a busy file is waited for, up to ``wait_s`` seconds, then
    a one-line error), so a job's files and its rows change together: the caller writes its files inside the
    block and the rows commit when it ends without error. ``wait_s`` defaults to ``CLIPLABEL_DB_WAIT_S``.
    """
    db_path = Path(db_path)
    wait_s = Settings.from_env().db_wait_s if wait_s is None else wait_s
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(db_path) + ".lock", timeout=LOCK_TIMEOUT_S):
            con = _connect_waiting(db_path, wait_s)
            try:
                try:
                    _migrate(con)
                    con.execute("BEGIN TRANSACTION")
                except duckdb.Error as exc:
                    raise _unwritable(db_path, exc) from None
                try:
                    yield con
                except BaseException:
                    _rollback_quietly(con)  # the caller's error is the one to report, not a failed rollback
                    raise
                try:
                    con.execute("COMMIT")
                except duckdb.Error as exc:  # a full disk, a read-only file system: nothing was written
                    _rollback_quietly(con)
                    raise _unwritable(db_path, exc) from None
            finally:
                with contextlib.suppress(duckdb.Error):
                    con.close()
    except Timeout:
        raise CliplabelError(f"DuckDB file {db_path} stayed locked for {LOCK_TIMEOUT_S}s by another writer; "
                             f"wait for it or remove a stale {db_path}.lock") from None


def _rollback_quietly(con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _unwritable(db_path: Path, exc: Exception) -> CliplabelError:
    return CliplabelError(f"cannot write to DuckDB file {db_path}: {' '.join(str(exc).split())[:200]} "
                          f"(its transaction was rolled back: free space or fix the file system, then run again)")


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables; bring a database of an older version up to date."""
    con.execute(SCHEMA)
    columns = {r[0] for r in con.execute("DESCRIBE runs").fetchall()}
    if "asset" in columns and "stage" not in columns:
        con.execute("ALTER TABLE runs RENAME COLUMN asset TO stage")
        con.execute(f"UPDATE runs SET stage = '{LABEL_STAGE}'")
    con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS bank_spec VARCHAR")
    con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS min_match DOUBLE")
    con.execute("ALTER TABLE runs ADD COLUMN IF NOT EXISTS calibration VARCHAR")
    con.execute("ALTER TABLE labels ADD COLUMN IF NOT EXISTS match DOUBLE")
    con.execute("ALTER TABLE labels ADD COLUMN IF NOT EXISTS flagged_by VARCHAR")
    con.execute("ALTER TABLE labels ADD COLUMN IF NOT EXISTS label VARCHAR")
    con.execute("ALTER TABLE labels ADD COLUMN IF NOT EXISTS label_source VARCHAR")


def _connect_waiting(db_path: Path, wait_s: float) -> duckdb.DuckDBPyConnection:
    """A read-write connection; while another process holds the file, retried until ``wait_s`` has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=False)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise _unopenable(db_path, exc) from None
            if time.monotonic() >= deadline:
                raise CliplabelError(f"cannot open DuckDB file {db_path}: another process holds it (waited {wait_s:g}s; "
                                     f"CLIPLABEL_DB_WAIT_S): "
                                     f"{str(exc).splitlines()[0]}; close other connections to it and run again"
                                     ) from None
            time.sleep(0.25)


def _connect(db_path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.IOException as exc:
        raise _unopenable(db_path, exc) from None


def _unopenable(db_path: Path, exc: Exception) -> CliplabelError:
    return CliplabelError(f"cannot open DuckDB file {db_path}: {str(exc).splitlines()[0]} "
                          f"(another process holds it, or it is not a DuckDB file: move it aside)")


def query(db_path: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of a read-only query; an absent database has no rows."""
    if not Path(db_path).is_file():
        return []
    con = _connect(Path(db_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    except (duckdb.CatalogException, duckdb.BinderException):
        return []
    finally:
        con.close()


MAX_HASHED_BYTES = 1_000_000_000  # as ``reading.items.MAX_FILE_BYTES``: an item larger than this is never labelled


def stream_sha256(fh, limit: int | None = None) -> str | None:
    """sha256 of what is left in ``fh``; None, having read no more than ``limit`` bytes, when there is more."""
    digest, total = hashlib.sha256(), 0
    for block in iter(lambda: fh.read(1 << 20), b""):
        total += len(block)
        if limit is not None and total > limit:
            return None
        digest.update(block)
    return digest.hexdigest()


def record_run(db_path: Path, run_id: str, labelled: "Labelled") -> None:
    """A labelled job's rows, replacing its previous rows, in one transaction (see ``write_run``)."""
    with write_connection(db_path) as con:
        write_run(con, run_id, labelled)


def write_run(con: duckdb.DuckDBPyConnection, run_id: str, labelled: "Labelled") -> None:
    """``assets`` (one per item, labelled or skipped), ``labels`` and one ``runs`` row, replacing the job's."""
    replace_job_rows(con, job_rows(run_id, labelled))


def ingest_job_rows(db_path: Path, rows: JobRows) -> None:
    """Rows a worker host wrote for a job, replacing the job's rows in one transaction: ingesting the same rows
    again (a retried step) leaves every item exactly once."""
    with write_connection(db_path) as con:
        replace_job_rows(con, rows)


def job_rows(run_id: str, labelled: "Labelled") -> JobRows:
    """The rows of a labelled job (items read for their digests), ready to write here or to ingest elsewhere."""
    job, prov = labelled.job, labelled.provenance
    assets = []
    for path, kind, status, reason in ([(i.path, i.kind, "labelled", None) for i in labelled.embedded.items]
                                       + [(s.path, s.kind, "skipped", s.reason) for s in labelled.skipped]):
        sha, size = _item_digest(job, path, hashed=status == "labelled")  # a skipped file is never read
        assets.append({"job_id": job.id, "path": path, "kind": kind, "sha256": sha, "bytes": size, "status": status,
                       "skip_reason": reason, "run_id": run_id})
    labels = [{"job_id": job.id, "path": r.path, "kind": r.kind, "top1": r.top1, "confidence": r.confidence,
               "low_confidence": r.low_confidence,
               "labels_json": json.dumps([{"name": x.name, "score": x.score} for x in r.labels]),
               "model": prov.model, "bank_version": prov.bank_version, "run_id": run_id, "match": r.match,
               "flagged_by": ",".join(r.flagged_by), "label": r.label, "label_source": r.label_source}
              for r in labelled.records]
    run = {"run_id": run_id, "job_id": job.id, "stage": LABEL_STAGE, "model": prov.model,
           "model_identity": prov.model_identity, "precision": prov.precision, "bank_version": prov.bank_version,
           "templates_hash": prov.templates_hash, "top_k": prov.top_k, "min_confidence": prov.min_confidence,
           "started_at": labelled.started, "finished_at": now(), "item_count": len(labelled.records),
           "items_per_s": labelled.performance.items_per_s, "bank_spec": prov.bank.to_json(),
           "min_match": prov.min_match, "calibration": json.dumps(prov.calibration)}
    return JobRows(job.id, run_id, assets, labels, [run])


def replace_job_rows(con: duckdb.DuckDBPyConnection, rows: JobRows) -> None:
    """The job's ``assets`` and ``labels`` rows replaced by ``rows``'; its ``runs`` row of that run replaced."""
    con.execute("DELETE FROM assets WHERE job_id = ?", [rows.job_id])
    _insert(con, "assets", _ordered(con, "assets", rows.assets))
    con.execute("DELETE FROM labels WHERE job_id = ?", [rows.job_id])
    _insert(con, "labels", _ordered(con, "labels", rows.labels))
    con.execute("DELETE FROM runs WHERE run_id = ? AND job_id = ? AND stage = ?", [rows.run_id, rows.job_id, LABEL_STAGE])
    _insert(con, "runs", _ordered(con, "runs", rows.runs))


def _ordered(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> list[tuple]:
    """Rows as tuples in the table's column order (a column a row lacks is NULL)."""
    names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    return [tuple(row.get(n) for n in names) for row in rows]


def _item_digest(job, path: str, hashed: bool) -> tuple[str | None, int | None]:
    """sha256 (when ``hashed`` and the file is at most ``MAX_HASHED_BYTES``) and size of a job's item, opened as
    a regular file inside the job; ``(None, None)`` otherwise."""
    try:
        fh = job.open_item(path)
    except CliplabelError:
        return None, None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        return (stream_sha256(fh, MAX_HASHED_BYTES) if hashed and size <= MAX_HASHED_BYTES else None), size


SMALL_INSERT = 64


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """Bulk insert through a DataFrame: thousands of rows in milliseconds (``executemany`` takes seconds)."""
    if not rows:
        return
    if len(rows) <= SMALL_INSERT:  # a cleanup's or restore's few rows: no pandas to import (0.5 s)
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        return
    names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
    import pandas as pd  # only writers of many rows need it

    frame = pd.DataFrame(rows, columns=names).astype(object)  # keep None as NULL and ints as ints
    con.register("incoming", frame)
    con.execute(f"INSERT INTO {table} SELECT * FROM incoming")
    con.unregister("incoming")


@dataclass(frozen=True)
class RecordedRun:
    """What a job's latest labelling run was made with, and what it asked for."""

    model: str
    model_identity: str
    bank_version: str
    templates_hash: str
    bank: BankSpec
    top_k: int
    min_confidence: float
    min_match: float | None = None  # None: labelled before the match score existed


def latest_runs(db_path: Path) -> dict[str, RecordedRun]:
    """For each job, its latest labelling run (a database written before ``min_match`` existed reads too)."""
    columns = {r[0] for r in query(db_path, "DESCRIBE runs")}
    rows = query(db_path, f"""
        SELECT job_id, model, model_identity, bank_version, templates_hash, bank_spec, top_k, min_confidence,
               {"min_match" if "min_match" in columns else "NULL"}
        FROM runs WHERE stage = '{LABEL_STAGE}'
        QUALIFY row_number() OVER (PARTITION BY job_id ORDER BY finished_at DESC) = 1""")
    return {r[0]: RecordedRun(r[1], r[2], r[3], r[4], BankSpec.from_json(r[5]), r[6], r[7], r[8]) for r in rows}


def insert_reviews(con: duckdb.DuckDBPyConnection, job_id: str, reviews: list) -> None:
    """Append ``reviews`` (``Review`` values) to the ``reviews`` table: never replaced, as ``reviews.jsonl``."""
    rows = [{"job_id": job_id, **r.to_json()} for r in reviews]
    _insert(con, "reviews", _ordered(con, "reviews", rows))


def update_label_of_record(con: duckdb.DuckDBPyConnection, job_id: str, records: list) -> None:
    """The ``labels`` rows of ``records`` (``LabelRecord`` values) given their label of record and flags."""
    con.executemany("UPDATE labels SET label = ?, label_source = ?, low_confidence = ?, flagged_by = ? "
                    "WHERE job_id = ? AND path = ?",
                    [(r.label, r.label_source, r.low_confidence, ",".join(r.flagged_by), job_id, r.path)
                     for r in records])


ITEM_TABLES = ("labels", "assets")


def item_rows(con: duckdb.DuckDBPyConnection, job_id: str, paths: list[str]) -> dict[str, dict[str, list[dict]]]:
    """The ``labels`` and ``assets`` rows of ``paths`` of one job, ``{path: {table: [row as a dict]}}``."""
    taken: dict[str, dict[str, list[dict]]] = {p: {t: [] for t in ITEM_TABLES} for p in paths}
    for table in ITEM_TABLES:
        cur = con.execute(f"SELECT * FROM {table} WHERE job_id = ? AND list_contains(?, path)", [job_id, paths])
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            record = dict(zip(names, row))
            taken[record["path"]][table].append({k: _jsonable(v) for k, v in record.items()})
    return taken


def _jsonable(value):
    return value.isoformat() if isinstance(value, datetime) else value


def delete_item_rows(con: duckdb.DuckDBPyConnection, job_id: str, paths: list[str]) -> None:
    """Delete the ``labels`` and ``assets`` rows of ``paths`` of one job."""
    for table in ITEM_TABLES:
        con.execute(f"DELETE FROM {table} WHERE job_id = ? AND list_contains(?, path)", [job_id, paths])


def insert_item_rows(con: duckdb.DuckDBPyConnection, job_id: str, rows: dict[str, dict[str, list[dict]]]) -> None:
    """Put back rows of ``item_rows`` (replacing rows of the same paths); a row whose columns are not the
    table's is refused."""
    delete_item_rows(con, job_id, list(rows))
    for table in ITEM_TABLES:
        names = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        batch = []
        for path, by_table in rows.items():
            for row in by_table.get(table, []):
                if sorted(row) != sorted(names) or row.get("job_id") != job_id or row.get("path") != path:
                    raise CliplabelError(f"refusing a {table} row for {path!r}: not a row of this job's item")
                batch.append(tuple(row[n] for n in names))
        _insert(con, table, batch)
