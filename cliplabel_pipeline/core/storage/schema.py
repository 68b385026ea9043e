"""The DuckDB tables, their columns derived from the values they hold, and the migration of older files.

A column that holds a field of a value (``LabelRecord.top1``, ``Provenance.model``) takes the field's name and
a type from its annotation, and a row takes the field's value; so the tables follow the values, one definition
each. The order of the columns is the tables' order in files already written: a column added later comes last.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import duckdb

from cliplabel_pipeline.core.values import BankSpec, JsonForm, LabelRecord, Performance, Provenance, Review

_SQL_TYPES = {str: "VARCHAR", float: "DOUBLE", int: "INTEGER", bool: "BOOLEAN"}


def _same(value):
    return value


def _names_text(names: list[str]) -> str:
    return ",".join(names)


def _json_text(value) -> str:
    return json.dumps(value.to_json() if isinstance(value, JsonForm) else value, ensure_ascii=False)


def _labels_text(labels: list) -> str:
    return json.dumps([x.to_json() for x in labels])


@dataclass(frozen=True)
class Column:
    """A column: its name and DuckDB type; ``of`` and ``field`` name the value's field it holds (None: a cell the
    writer gives, such as ``job_id``), ``encode`` the cell of that field's value."""

    name: str
    sql_type: str = "VARCHAR"
    of: type | None = None
    field: str | None = None
    encode: Callable[[Any], Any] = _same


def value_columns(value_type: type, *names: str) -> tuple[Column, ...]:
    """Columns for fields of ``value_type``, under the fields' own names: a scalar as its SQL type, a list of
    names joined by commas, anything else as JSON text."""
    hints = typing.get_type_hints(value_type)
    return tuple(_value_column(value_type, name, hints[name]) for name in names)


def _plain(hint):
    """A ``Literal`` of names as ``str``, a list of them as ``list[str]``: what their column holds."""
    if typing.get_origin(hint) is typing.Literal and all(isinstance(a, str) for a in typing.get_args(hint)):
        return str
    if typing.get_origin(hint) is list and typing.get_args(hint):
        return list[_plain(typing.get_args(hint)[0])]
    return hint


def _value_column(value_type: type, name: str, hint) -> Column:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # ``float | None``: a nullable DOUBLE
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    hint = _plain(hint)
    if hint in _SQL_TYPES:
        return Column(name, _SQL_TYPES[hint], value_type, name)
    if typing.get_args(hint) == (str,):
        return Column(name, "VARCHAR", value_type, name, _names_text)
    return Column(name, "VARCHAR", value_type, name, _json_text)


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create(self) -> str:
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(f'{c.name} {c.sql_type}' for c in self.columns)})"

    def row(self, *values, **cells) -> dict:
        """A row ``{column: cell}``: each value's columns from its fields, the others from ``cells``."""
        of = {type(v): v for v in values}
        return {c.name: cells[c.name] if c.of is None else c.encode(getattr(of[c.of], c.field)) for c in self.columns}

    def column_of(self, value_type: type, field: str) -> Column:
        return next(c for c in self.columns if c.of is value_type and c.field == field)


RUNS = Table("runs", (
    Column("run_id"), Column("job_id"), Column("stage"),
    *value_columns(Provenance, "model", "model_identity", "precision", "bank_version", "templates_hash", "top_k",
                   "min_confidence"),
    Column("started_at", "TIMESTAMPTZ"), Column("finished_at", "TIMESTAMPTZ"), Column("item_count", "INTEGER"),
    *value_columns(Performance, "items_per_s"),
    Column("bank_spec", "VARCHAR", Provenance, "bank", _json_text),
    *value_columns(Provenance, "min_match", "calibration"),
))
ASSETS = Table("assets", (
    Column("job_id"), Column("path"), Column("kind"), Column("sha256"), Column("bytes", "BIGINT"),
    Column("status"), Column("skip_reason"), Column("run_id"),
))
LABELS = Table("labels", (
    Column("job_id"), *value_columns(LabelRecord, "path", "kind", "top1", "confidence", "low_confidence"),
    Column("labels_json", "VARCHAR", LabelRecord, "labels", _labels_text),
    *value_columns(Provenance, "model", "bank_version"), Column("run_id"),
    *value_columns(LabelRecord, "match", "flagged_by", "label", "label_source"),
))
REVIEWS = Table("reviews", (Column("job_id"), *value_columns(Review, *(f.name for f in fields(Review)))))
TABLES = (RUNS, ASSETS, LABELS, REVIEWS)

LABEL_STAGE = "label"  # the stage that writes a job's rows (``runs.stage``)


def bank_of(text: str | None) -> BankSpec:
    """The ``BankSpec`` of a ``runs.bank_spec`` cell (the default bank for a row written before it existed)."""
    return BankSpec.from_json(json.loads(text) if text else {})


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables; bring a database of an older version up to date (its missing columns added)."""
    for table in TABLES:
        con.execute(table.create())
    runs = set(_columns(con, "runs"))
    if "asset" in runs and "stage" not in runs:
        con.execute("ALTER TABLE runs RENAME COLUMN asset TO stage")
        con.execute(f"UPDATE runs SET stage = '{LABEL_STAGE}'")
    for table in TABLES:
        present = set(_columns(con, table.name))
        for column in table.columns:
            if column.name not in present:
                con.execute(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.sql_type}")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
