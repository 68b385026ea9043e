"""The confidence-filtered sets: which items are kept, which flagged, and by which rule."""

from __future__ import annotations

import pytest

from cliplabel_pipeline.core.labelling.filtered import split_by_confidence
from cliplabel_pipeline.core.labelling.reviews import with_review
from cliplabel_pipeline.core.values import LabelRecord, Review


def record(path: str, confidence: float, match: float | None, flagged_by: list[str]) -> LabelRecord:
    return LabelRecord(path=path, kind="object", labels=[], top1="red star", confidence=confidence, cosine=0.3,
                       margin=0.1, low_confidence=bool(flagged_by), match=match, flagged_by=flagged_by)


def review(path: str, decision: str) -> Review:
    return Review(path=path, decision=decision, label="blue circle" if decision == "correct" else None,
                  model_label="red star", reviewer="ann")


RECORDS = [record("objects/a.png", 0.9, 0.8, []), record("objects/b.png", 0.1, 0.8, ["confidence"]),
           record("objects/c.png", 0.9, 0.2, ["match"]), record("objects/d.png", 0.1, 0.2, ["confidence", "match"])]


def test_the_records_own_flags_split_them_and_name_each_rule():
    sets = split_by_confidence(RECORDS)
    assert [r.path for r in sets.kept] == ["objects/a.png"]
    assert [(f.path, f.rules) for f in sets.flagged] == [
        ("objects/b.png", ("confidence",)), ("objects/c.png", ("match",)), ("objects/d.png", ("confidence", "match"))]
    assert sets.counts == {"kept": 1, "flagged": 3, "flagged_by_confidence": 2, "flagged_by_match": 2,
                           "flagged_by_review": 0}


@pytest.mark.parametrize(("min_confidence", "min_match", "flagged"), [
    (0.05, 0.1, []),
    (0.5, None, ["objects/b.png", "objects/d.png"]),  # no match rule
    (0.05, 0.5, ["objects/c.png", "objects/d.png"]),
    (0.95, 0.9, ["objects/a.png", "objects/b.png", "objects/c.png", "objects/d.png"]),
])
def test_thresholds_of_a_cleanup_replace_the_records_flags(min_confidence, min_match, flagged):
    sets = split_by_confidence(RECORDS, min_confidence, min_match)
    assert [f.path for f in sets.flagged] == flagged
    assert len(sets.kept) + len(sets.flagged) == len(RECORDS)


@pytest.mark.parametrize("thresholds", [(), (0.95, 0.9)])
def test_a_persons_decision_outranks_the_rules(thresholds):
    accepted = with_review(RECORDS[1], review("objects/b.png", "accept"))
    corrected = with_review(RECORDS[3], review("objects/d.png", "correct"))
    rejected = with_review(RECORDS[0], review("objects/a.png", "reject"))
    sets = split_by_confidence([accepted, corrected, rejected], *thresholds)
    assert [r.path for r in sets.kept] == ["objects/b.png", "objects/d.png"]
    assert [f.path for f in sets.flagged] == ["objects/a.png"] and "review" in sets.flagged[0].rules


def test_the_labelling_thresholds_give_the_records_own_split():
    """The records' flags were made at 0.25 and 0.5: the same thresholds split them the same way."""
    made = [record(p, c, m, (["confidence"] if c < 0.25 else []) + (["match"] if m < 0.5 else []))
            for p, c, m in [("objects/a.png", 0.3, 0.6), ("objects/b.png", 0.2, 0.6), ("objects/c.png", 0.3, 0.4)]]
    assert split_by_confidence(made) == split_by_confidence(made, 0.25, 0.5)
