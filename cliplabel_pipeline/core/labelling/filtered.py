"""The confidence-filtered sets of a job: the items kept (their label stands) and the items flagged, each with
the rules that flagged it. Grouping groups the kept by label and clusters the flagged; cleanup quarantines the
flagged; both take the split from here, so it is made in one place.

The rules (``FLAG_RULES``): ``confidence`` (the softmax confidence below its threshold), ``match`` (the open-set
match below its threshold), ``review`` (a person rejected the item). A person's decision outranks the model: an
item a person accepted or corrected is always kept, one a person rejected always flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliplabel_pipeline.core.values import FLAG_RULES, LabelRecord


@dataclass(frozen=True)
class FlaggedItem:
    """A flagged item's record, and the rules that flagged it (in ``FLAG_RULES`` order)."""

    record: LabelRecord
    rules: tuple[str, ...]

    @property
    def path(self) -> str:
        return self.record.path


@dataclass(frozen=True)
class FilteredSets:
    """A job's items split by the flagging rules, each set in the order of ``labels.jsonl``."""

    kept: tuple[LabelRecord, ...]
    flagged: tuple[FlaggedItem, ...]

    @property
    def counts(self) -> dict[str, int]:
        """``kept``, ``flagged`` and ``flagged_by_<rule>`` for every rule (an item may be flagged by several)."""
        return {"kept": len(self.kept), "flagged": len(self.flagged),
                **{f"flagged_by_{rule}": sum(rule in f.rules for f in self.flagged) for rule in FLAG_RULES}}

    @property
    def flagged_records(self) -> list[LabelRecord]:
        return [f.record for f in self.flagged]


def split_by_confidence(records: list[LabelRecord], min_confidence: float | None = None,
                        min_match: float | None = None) -> FilteredSets:
    """``records`` split into kept and flagged.

    Without thresholds, by the flags each record carries (those of the run that labelled it, with the reviews
    laid over them: ``low_confidence`` and ``flagged_by``). With ``min_confidence`` (and ``min_match``, None: no
    match rule), by those thresholds instead, as a cleanup with its own thresholds asks; a record made before the
    match score existed (``match`` None) is never flagged by it."""
    kept, flagged = [], []
    for rec in records:
        rules = _rules(rec) if min_confidence is None else _rules_at(rec, min_confidence, min_match)
        if rules:
            flagged.append(FlaggedItem(rec, rules))
        else:
            kept.append(rec)
    return FilteredSets(tuple(kept), tuple(flagged))


def _rules(rec: LabelRecord) -> tuple[str, ...]:
    if not rec.low_confidence:
        return ()
    fired = set(rec.flagged_by)
    return tuple(rule for rule in FLAG_RULES if rule in fired) or ("confidence",)  # a record from before flagged_by


def _rules_at(rec: LabelRecord, min_confidence: float, min_match: float | None) -> tuple[str, ...]:
    if rec.settled:
        return ()
    fired = {"confidence"} if rec.confidence < min_confidence else set()
    if min_match is not None and rec.match is not None and rec.match < min_match:
        fired.add("match")
    if rec.rejected:
        fired.add("review")
    return tuple(rule for rule in FLAG_RULES if rule in fired)
