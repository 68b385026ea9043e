"""The label of record: a person's decisions laid over the model's labels.

A review never changes what the model said (``top1``, scores, top-k); it sets ``label``, ``label_source`` and
``decision``, and whether the item still needs a person (``low_confidence``). Applying the same reviews again,
or to a new model's records, gives the same labels of record: a job relabelled keeps every decision.
"""

from __future__ import annotations

import dataclasses

from cliplabel_pipeline.core.values import MODEL, REVIEW, LabelRecord, Review


def latest_reviews(reviews: list[Review]) -> dict[str, Review]:
    """The newest review of each item (``reviews.jsonl`` is append-only: a later line wins)."""
    return {r.path: r for r in reviews}


def with_review(rec: LabelRecord, review: Review | None) -> LabelRecord:
    """``rec`` with ``review`` laid over it (None: as the model labelled it). An accepted or corrected item is no
    longer flagged; a rejected one is flagged by ``review`` and has no label."""
    model_flags = [f for f in rec.flagged_by if f != "review"]
    if review is None:
        return dataclasses.replace(rec, label=rec.top1, label_source=MODEL, decision=None, flagged_by=model_flags,
                                   low_confidence=bool(model_flags))
    if review.decision == "reject":
        return dataclasses.replace(rec, label=None, label_source=REVIEW, decision="reject",
                                   flagged_by=[*model_flags, "review"], low_confidence=True)
    return dataclasses.replace(rec, label=review.label or rec.top1, label_source=REVIEW, decision=review.decision,
                               flagged_by=model_flags, low_confidence=False)


def apply_reviews(records: list[LabelRecord], reviews: list[Review]) -> list[LabelRecord]:
    """Every record with its newest review (if any) laid over it, in order."""
    newest = latest_reviews(reviews)
    return [with_review(r, newest.get(r.path)) for r in records]
