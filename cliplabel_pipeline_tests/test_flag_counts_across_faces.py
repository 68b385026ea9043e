"""One count of what is flagged, on every face: for any records (flags of either rule, records from before the
match score, reviews that accept, correct or reject), the filtered sets, ``metrics.json`` and the headline of the
report and the CLI, the Dagster metadata's counts and ``GET /readyz`` say the same numbers, and the words never
show a rule's count above the flagged total without saying why."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from cliplabel_pipeline.core.labelling.filtered import FlagCounts, count_flags, split_by_confidence
from cliplabel_pipeline.core.labelling.reviews import with_review
from cliplabel_pipeline.core.reporting.metrics import score_metrics
from cliplabel_pipeline.core.serving.tally import Tally
from cliplabel_pipeline.core.values import FLAG_RULES, LabelRecord, Review
from cliplabel_pipeline.service.schemas import LabelledCounts, labelled_counts

MIN_CONFIDENCE, MIN_MATCH = 0.25, 0.5


@st.composite
def a_record(draw, i: int) -> LabelRecord:
    confidence = draw(st.floats(0, 1))
    match = draw(st.none() | st.floats(0, 1))
    fired = (["confidence"] if confidence < MIN_CONFIDENCE else []) + (
        ["match"] if match is not None and match < MIN_MATCH else [])
    before_flagged_by = match is None and draw(st.booleans())  # an old record: its flag alone, no rules named
    path = f"objects/obj_{i:02d}.png"
    rec = LabelRecord(path=path, kind="object", labels=[], top1="red star", confidence=confidence, cosine=0.3,
                      margin=0.1, low_confidence=bool(fired), match=match,
                      flagged_by=[] if before_flagged_by else fired)
    decision = draw(st.sampled_from([None, None, "accept", "correct", "reject"]))
    if decision is None:
        return rec
    return with_review(rec, Review(path, decision, {"accept": "red star", "correct": "blue circle"}.get(decision),
                                   "red star", "ana"))


@st.composite
def records(draw) -> list[LabelRecord]:
    return [draw(a_record(i)) for i in range(draw(st.integers(0, 14)))]


@given(records(), st.integers(0, 14))
def test_every_face_counts_the_same_kept_and_flagged_and_by_which_rule(recs, cut):
    counts = count_flags(recs)
    sets = split_by_confidence(recs)
    assert sets.flag_counts == counts and sets.counts == counts.as_fields()

    scores = score_metrics(recs, MIN_CONFIDENCE)  # metrics.json, the report's and the CLI's headline
    assert scores.flags == counts and scores.headline() == counts.words()
    written = scores.to_json()
    assert (written["kept"], written["flagged"], written["flagged_by"], written["flagged_by_several"]) == (
        counts.kept, counts.flagged, counts.flagged_by, counts.flagged_by_several)

    tally = Tally()  # GET /readyz: the same records in two batches add up to the same counts
    tally.add(recs[:cut])
    tally.add(recs[cut:])
    assert tally.counts == counts
    answered = labelled_counts(tally.counts)
    assert isinstance(answered, LabelledCounts)
    assert answered.model_dump() == {"items": len(recs), "kept": counts.kept, "flagged": counts.flagged,
                                     "flagged_by": counts.flagged_by,
                                     "flagged_by_several": counts.flagged_by_several}


@given(records())
def test_a_persons_decision_decides_how_an_item_counts(recs):
    counts = count_flags(recs)
    sets = split_by_confidence(recs)
    kept, flagged = {r.path for r in sets.kept}, {f.path for f in sets.flagged}
    assert counts.kept + counts.flagged == counts.items == len(recs) and not kept & flagged
    assert counts.flagged == sum(r.low_confidence for r in recs)
    assert {r.path for r in recs if r.settled} <= kept  # accepted or corrected: kept, under no rule
    assert {r.path for r in recs if r.rejected} <= flagged and counts.flagged_by["review"] == sum(
        r.rejected for r in recs)
    for rule in ("confidence", "match"):  # a model rule counts the flagged items it flagged, never a settled one
        assert counts.flagged_by[rule] == sum(rule in f.rules for f in sets.flagged) <= counts.flagged
        assert counts.flagged_by[rule] == sum(rule in (r.flagged_by or ["confidence"])  # an old record: confidence
                                              for r in recs if r.low_confidence and not r.settled)


@given(records())
def test_the_rules_counts_agree_with_the_flagged_total(recs):
    counts = count_flags(recs)
    by_rule = sum(counts.flagged_by.values())
    assert all(0 <= n <= counts.flagged for n in counts.flagged_by.values())
    assert 0 <= counts.flagged_by_several <= counts.flagged
    # every flagged item is counted under one rule at least; the several-rule ones account for the rest
    assert counts.flagged <= by_rule <= counts.flagged + (len(FLAG_RULES) - 1) * counts.flagged_by_several
    assert (by_rule > counts.flagged) == (counts.flagged_by_several > 0)


def parse_words(words: str) -> tuple[int, int, dict[str, int], int | None, str | None]:
    m = re.fullmatch(r"(\d+) kept, (\d+) flagged(?: \((.*)\))?", words)
    assert m, words
    rules, several, how = {}, None, None
    if m[3]:
        named, _, overlap = m[3].partition("; ")
        rules = {rule: int(n) for n, rule in (part.split(" by ") for part in named.split(", "))}
        if overlap:
            n, how = overlap.split(" by ", 1)
            several = int(n)
    return int(m[1]), int(m[2]), rules, several, how


@given(records())
def test_the_words_never_show_a_part_larger_than_the_whole_unexplained(recs):
    counts = count_flags(recs)
    kept, flagged, rules, several, how = parse_words(counts.words())
    assert (kept, flagged) == (counts.kept, counts.flagged)
    assert rules == {rule: n for rule, n in counts.flagged_by.items() if n}  # every rule that flagged something
    assert all(n <= flagged for n in rules.values())
    if sum(rules.values()) > flagged:  # the overlap is said, in numbers that add up
        assert several == counts.flagged_by_several > 0
        if len(rules) == 2:
            assert how == "both" and sum(rules.values()) - several == flagged
        else:
            assert how == "more than one rule"
    else:
        assert several is None


def test_the_words_of_a_demo_like_job_and_of_reviews():
    assert FlagCounts(6, 3, {"confidence": 1, "match": 3}, 1).words() == \
        "6 kept, 3 flagged (1 by confidence, 3 by match; 1 by both)"
    assert FlagCounts(9, 0).words() == "9 kept, 0 flagged"
    assert FlagCounts(4, 3, {"confidence": 1, "match": 2, "review": 2}, 2).words() == \
        "4 kept, 3 flagged (1 by confidence, 2 by match, 2 by review; 2 by more than one rule)"
    assert FlagCounts(2, 1) + FlagCounts(1, 2, {"match": 2}) == FlagCounts(3, 3, {"match": 2})
