"""The rows of single items of a job, taken out and put back: a quarantined item's ``labels`` and ``assets``
rows leave with it (kept in its cleanup journal) and come back with it on restore."""

from __future__ import annotations

from datetime import datetime

import duckdb

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage.database import columns_of, insert_rows


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
        names = columns_of(con, table)
        batch = []
        for path, by_table in rows.items():
            for row in by_table.get(table, []):
                if sorted(row) != sorted(names) or row.get("job_id") != job_id or row.get("path") != path:
                    raise CliplabelError(f"refusing a {table} row for {path!r}: not a row of this job's item")
                batch.append(tuple(row[n] for n in names))
        insert_rows(con, table, batch)
