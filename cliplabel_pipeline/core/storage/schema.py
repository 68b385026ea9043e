"""The DuckDB tables, and the migration of a database written by an older version."""

from __future__ import annotations

import duckdb

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


def migrate(con: duckdb.DuckDBPyConnection) -> None:
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
