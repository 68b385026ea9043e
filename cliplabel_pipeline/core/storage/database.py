"""A DuckDB file: one writer at a time, many readers.

DuckDB allows one writing process per file. Every write takes a file lock beside the database, opens a short
connection inside one transaction, and closes; reads open read-only.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.schema import migrate

LOCK_TIMEOUT_S = 120  # how long a writer waits for another cliplabel writer (the file lock)


@contextmanager
def write_connection(db_path: Path, wait_s: float):
    """A read-write connection held under the database's file lock, inside one transaction.

    It is opened before the caller changes anything (a busy file is waited for, up to ``wait_s`` seconds, then
    a one-line error), so a job's files and its rows change together: the caller writes its files inside the
    block and the rows commit when it ends without error. ``wait_s`` is ``CLIPLABEL_DB_WAIT_S`` as the face read
    it (``Settings.waits``, carried by the ``JobFolder`` whose rows are written).
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(db_path) + ".lock", timeout=LOCK_TIMEOUT_S):
            con = _connect_waiting(db_path, wait_s)
            try:
                try:
                    migrate(con)
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


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The table's column names, in order."""
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def row_tuples(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> list[tuple]:
    """Rows as tuples in the table's column order (a column a row lacks is NULL)."""
    names = columns_of(con, table)
    return [tuple(row.get(n) for n in names) for row in rows]


SMALL_INSERT = 64


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[tuple]) -> None:
    """Bulk insert through a DataFrame: thousands of rows in milliseconds (``executemany`` takes seconds)."""
    if not rows:
        return
    if len(rows) <= SMALL_INSERT:  # a cleanup's or restore's few rows: no pandas to import (0.5 s)
        con.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        return
    names = columns_of(con, table)
    import pandas as pd  # only writers of many rows need it

    frame = pd.DataFrame(rows, columns=names).astype(object)  # keep None as NULL and ints as ints
    con.register("incoming", frame)
    con.execute(f"INSERT INTO {table} SELECT * FROM incoming")
    con.unregister("incoming")
