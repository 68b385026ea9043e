"""The file forms of the values: the lines users rely on, and files written by older versions read back."""

from __future__ import annotations

import json

import pytest

from cliplabel_pipeline.core.values import BankSpec, LabelRecord, Performance, Provenance, Review, ScoredLabel

OLD_LINE = ('{"path": "masks/a.png", "kind": "mask", "labels": [{"name": "x", "score": 0.5}], "top1": "x", '
            '"confidence": 0.5, "cosine": 0.1, "margin": 0.2, "low_confidence": false}')


def _line(value) -> str:
    return json.dumps(value.to_json(), ensure_ascii=False)


def test_a_record_s_line_has_its_fields_in_order_and_scene_tags_last_only_when_there_are_some():
    rec = LabelRecord("source.png", "source", [ScoredLabel("été", 0.5)], "été", 0.5, 0.3, 0.1, True, match=0.2,
                      flagged_by=["match"])
    assert _line(rec) == ('{"path": "source.png", "kind": "source", "labels": [{"name": "été", "score": 0.5}], '
                          '"top1": "été", "confidence": 0.5, "cosine": 0.3, "margin": 0.1, "low_confidence": true, '
                          '"match": 0.2, "flagged_by": ["match"], "label": "été", "label_source": "model", '
                          '"decision": null}')
    rec.scene_tags = [ScoredLabel("été", 0.7)]
    assert _line(rec).endswith('"decision": null, "scene_tags": [{"name": "été", "score": 0.7}]}')
    assert LabelRecord.from_json(json.loads(_line(rec))) == rec


def test_a_line_written_before_match_flags_and_reviews_existed_reads_with_their_defaults():
    rec = LabelRecord.from_json(json.loads(OLD_LINE))
    assert (rec.match, rec.flagged_by, rec.label, rec.label_source, rec.decision) == (None, [], "x", "model", None)
    nulls = LabelRecord.from_json({**json.loads(OLD_LINE), "flagged_by": None, "label_source": None})
    assert nulls == rec


def test_provenance_without_bank_or_calibration_reads_as_the_default_bank():
    prov = Provenance("toy", "id", "fp32", "cpu", "v", "t", ("a {}",), BankSpec(("été",)), 3, 0.25, 0.5, {"mu": 1.0})
    data = prov.to_json()
    assert data["templates"] == ["a {}"] and data["bank"] == {"labels": ["été"], "labels_file": None,
                                                              "templates_file": None}
    assert Provenance.from_json(data) == prov
    old = {k: v for k, v in data.items() if k not in ("bank", "min_match", "calibration")}
    assert Provenance.from_json(old).bank == BankSpec() and Provenance.from_json(old).calibration == {}


@pytest.mark.parametrize("data, words", [
    ({"path": "p", "decision": "maybe", "label": None}, "decision: decision 'maybe' is not one of accept, correct"),
    ({"path": "p", "label": None}, "decision: Field required"),
])
def test_a_bad_review_line_is_one_line_naming_the_field(data, words):
    with pytest.raises(ValueError, match=words) as caught:
        Review.from_json(data)
    assert "\n" not in str(caught.value)


def test_performance_of_an_older_metrics_file_reads_with_zero_peaks():
    assert Performance.from_json({"items_per_s": 1.0, "seconds": 2.0}) == Performance(1.0, 2.0)


@pytest.mark.parametrize("change, field", [
    ({"confidence": float("nan")}, "confidence"), ({"confidence": float("inf")}, "confidence"),
    ({"confidence": -5}, "confidence"), ({"match": float("-inf")}, "match"), ({"match": 1.5}, "match"),
    ({"cosine": float("nan")}, "cosine"), ({"labels": [{"name": "x", "score": 7}]}, "labels.0.score"),
    ({"low_confidence": "yes"}, "low_confidence"), ({"flagged_by": ["bogus-rule"]}, "flagged_by.0"),
    ({"label_source": "martian"}, "label_source")])
def test_a_line_with_scores_or_names_cliplabel_never_writes_is_refused_naming_the_field(change, field):
    """NaN, infinities and out-of-range scores would reach every export as invalid JSON and never be flagged."""
    with pytest.raises(ValueError) as refused:
        LabelRecord.from_json({**json.loads(OLD_LINE), **change})
    assert str(refused.value).startswith(f"{field}: ") and "\n" not in str(refused.value)


def test_a_label_of_megabytes_becomes_a_file_name_in_one_pass():
    from cliplabel_pipeline.core.organising.zip_names import MAX_NAME_BYTES, portable_name

    for name, end in (("x" * 30_000_000, "x"), ("é" * 5_000_000 + ".png", "é.png"), ("ab.c" * 1000, "ab.c")):
        cut = portable_name(name)
        assert len(cut.encode("utf-8")) <= MAX_NAME_BYTES and cut.endswith(end) and cut.startswith(name[:10])
