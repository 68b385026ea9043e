"""Metrics equal hand-computed values on a small fixed case."""

from __future__ import annotations

import math

import pytest

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.reporting.metrics import job_metrics, score_metrics, truth_metrics
from cliplabel_pipeline.core.values import LabelRecord, Performance, ScoredLabel


def rec(path, top1, conf, second="cat", cos=0.3):
    return LabelRecord(path, "object", [ScoredLabel(top1, conf), ScoredLabel(second, 1 - conf)], top1, conf, cos,
                       2 * conf - 1, conf < 0.5)


RECORDS = [rec("a", "cat", 0.9, "dog"), rec("b", "cat", 0.6, "dog"), rec("c", "dog", 0.8), rec("d", "dog", 0.2)]
TRUTH = {"a": "cat", "b": "dog", "c": "dog", "d": "cat"}


def test_truth_metrics_by_hand():
    m = truth_metrics(RECORDS, TRUTH)
    assert m.evaluated == 4
    assert m.accuracy == 0.5                   # a and c right
    assert m.top_k_accuracy == 1.0             # b has dog second, d has cat second
    assert (m.confusion_labels, m.confusion_matrix) == (["cat", "dog"], [[1, 1], [1, 1]])
    assert m.per_class["cat"] == {"precision": 0.5, "recall": 0.5, "support": 2}


def test_score_metrics_by_hand():
    m = score_metrics(RECORDS, min_confidence=0.5)
    assert m.confidence["mean"] == pytest.approx(0.625)
    assert m.confidence["p50"] == pytest.approx(0.7)
    assert m.share_at_or_above_threshold == 0.75
    flagged = sum(r.low_confidence for r in RECORDS)
    assert (m.kept, m.flagged) == (len(RECORDS) - flagged, flagged)
    assert m.headline().startswith(f"{len(RECORDS) - flagged} kept, {flagged} flagged")
    assert m.distinct_labels == 2 and m.label_entropy_bits == pytest.approx(1.0)
    assert m.label_counts == {"cat": 2, "dog": 2}


def test_without_ground_truth_there_are_only_score_metrics(tmp_path):
    m = job_metrics(RECORDS, JobFolder(tmp_path.parent, tmp_path.name), 0.5, Performance(1.0, 4.0))
    assert m.truth is None and m.scores.distinct_labels == 2 and m.performance.items_per_s == 1.0
    (tmp_path / "ground_truth.csv").write_text("path,label\na,cat\nb,dog\nc,dog\nd,cat\n")
    assert job_metrics(RECORDS, JobFolder(tmp_path.parent, tmp_path.name), 0.5, Performance(1.0, 4.0)).truth.accuracy == 0.5
    assert not math.isnan(m.scores.cosine["std"])


def test_the_headline_counts_what_each_rule_flagged():
    import dataclasses

    records = [dataclasses.replace(rec("a", "cat", 0.9), low_confidence=True, flagged_by=["match"]),
               dataclasses.replace(rec("b", "cat", 0.2), flagged_by=["confidence", "match"]),
               rec("c", "dog", 0.8)]
    assert score_metrics(records, 0.5).headline() == "1 kept, 2 flagged (1 by confidence, 2 by match; 1 by both)"
