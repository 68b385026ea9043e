"""The DuckDB tables follow the values they hold: the same columns, in the same order, as files already written."""

from __future__ import annotations

import duckdb
import pytest

from cliplabel_pipeline.core.organising.export import EXPORT_FIELDS, csv_bytes
from cliplabel_pipeline.core.storage.runs import RecordedRun
from cliplabel_pipeline.core.storage.schema import LABELS, REVIEWS, RUNS, migrate
from cliplabel_pipeline.core.values import LabelRecord, Provenance, Review, ScoredLabel

COLUMNS = {
    "runs": "run_id job_id stage model model_identity precision bank_version templates_hash top_k min_confidence "
            "started_at finished_at item_count items_per_s bank_spec min_match calibration",
    "assets": "job_id path kind sha256 bytes status skip_reason run_id",
    "labels": "job_id path kind top1 confidence low_confidence labels_json model bank_version run_id match "
              "flagged_by label label_source",
    "reviews": "job_id path decision label model_label reviewer source reviewed_at imported_at",
}
OLDEST = """
CREATE TABLE runs (run_id VARCHAR, job_id VARCHAR, asset VARCHAR, model VARCHAR, model_identity VARCHAR,
    precision VARCHAR, bank_version VARCHAR, templates_hash VARCHAR, top_k INTEGER, min_confidence DOUBLE,
    started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, item_count INTEGER, items_per_s DOUBLE);
CREATE TABLE labels (job_id VARCHAR, path VARCHAR, kind VARCHAR, top1 VARCHAR, confidence DOUBLE,
    low_confidence BOOLEAN, labels_json VARCHAR, model VARCHAR, bank_version VARCHAR, run_id VARCHAR);
INSERT INTO runs (run_id, asset) VALUES ('r', 'job_label_assignments');
"""


@pytest.mark.parametrize("before", ["", OLDEST], ids=["new", "oldest"])
def test_a_database_new_or_of_the_oldest_version_has_every_column_in_order(before):
    con = duckdb.connect()
    if before:
        con.execute(before)
    migrate(con)
    migrate(con)  # twice: nothing more to do
    for table, names in COLUMNS.items():
        assert [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()] == names.split()
    types = dict(con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'labels'").fetchall())
    assert (types["confidence"], types["low_confidence"], types["match"], types["top1"]) == (
        "DOUBLE", "BOOLEAN", "DOUBLE", "VARCHAR")
    if before:
        assert con.execute("SELECT run_id, stage FROM runs").fetchall() == [("r", "label")]


def test_a_label_row_holds_the_record_s_fields_as_its_cells():
    rec = LabelRecord("masks/m.png", "mask", [ScoredLabel("blé", 0.5)], "blé", 0.5, 0.2, 0.1, True, match=0.3,
                      flagged_by=["confidence", "match"])
    prov = Provenance("toy", "id", "fp32", "cpu", "v1", "t", (), None, 3, 0.25)
    row = LABELS.row(rec, prov, job_id="j", run_id="r")
    assert list(row) == COLUMNS["labels"].split()
    assert row["labels_json"] == '[{"name": "bl\\u00e9", "score": 0.5}]'
    assert (row["flagged_by"], row["label"], row["match"], row["model"]) == ("confidence,match", "blé", 0.3, "toy")


def test_review_rows_and_the_recorded_run_are_made_of_their_values_fields():
    review = Review("p", "accept", "x")
    assert REVIEWS.row(review, job_id="j") == {"job_id": "j", **review.to_json()}
    recorded = {f: RecordedRun.__dataclass_fields__[f].type for f in RecordedRun.__dataclass_fields__}
    provenance = Provenance.__dataclass_fields__
    assert recorded and all(provenance[f].type == t for f, t in recorded.items())
    assert all(RUNS.column_of(Provenance, f) for f in recorded)


def test_the_csv_columns_are_fields_of_the_record_and_absent_values_are_empty():
    assert set(EXPORT_FIELDS) <= set(LabelRecord.__dataclass_fields__)
    rejected = LabelRecord("a,b.png", "mask", [], "x", 0.5, 0.1, 0.2, True, flagged_by=["review"], label=None,
                           label_source="review", decision="reject")
    assert csv_bytes([rejected]).decode().splitlines() == [
        ",".join(EXPORT_FIELDS), '"a,b.png",x,0.5,,True,review,,review']
