"""The confidence-filtered sets of a job: the items kept (their label stands) and the items flagged, each with
the rules that flagged it. Grouping groups the kept by label and clusters the flagged; cleanup quarantines the
flagged; both take the split from here, so it is made in one place.

The rules (``FLAG_RULES``): ``confidence`` (the softmax confidence below its threshold), ``match`` (the open-set
match below its threshold), ``review`` (a person rejected the item). A person's decision outranks the model: an
item a person accepted or corrected is always kept, one a person rejected always flagged.

``FlagCounts`` (``count_flags``, ``FilteredSets.flag_counts``) is the one count of what is flagged: the report,
``metrics.json``, the Dagster metadata, the CLI's summary and ``GET /readyz`` all read it. It counts as follows:

- every item is either kept or flagged, never both;
- an item a person accepted or corrected is kept, and counted under no rule (the model's rules may have fired on
  it: its record still says so, but a person's label stands);
- an item a person rejected is flagged, and counted under ``review`` and under each of the model's rules that
  fired on it too;
- a rule's count is how many of the flagged items it flagged, so it never exceeds the flagged total; an item
  two rules flagged counts under both, and the words say how many items that is ("1 by both").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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
class FlagCounts:
    """Items kept and flagged, and by which rule (see the module's docstring for how reviews count).

    ``flagged_by`` holds every rule of ``FLAG_RULES``: how many flagged items it flagged (each at most
    ``flagged``); ``flagged_by_several``: how many flagged items more than one rule flagged, which is why the
    rules' counts may add up to more than ``flagged``."""

    kept: int = 0
    flagged: int = 0
    flagged_by: dict[str, int] = field(default_factory=dict)  # a rule left out: 0
    flagged_by_several: int = 0

    def __post_init__(self):
        object.__setattr__(self, "flagged_by", {rule: self.flagged_by.get(rule, 0) for rule in FLAG_RULES})

    @property
    def items(self) -> int:
        return self.kept + self.flagged

    def __add__(self, other: "FlagCounts") -> "FlagCounts":
        return FlagCounts(self.kept + other.kept, self.flagged + other.flagged,
                          {rule: self.flagged_by[rule] + other.flagged_by[rule] for rule in FLAG_RULES},
                          self.flagged_by_several + other.flagged_by_several)

    def as_fields(self) -> dict[str, int]:
        """``kept``, ``flagged`` and ``flagged_by_<rule>`` for every rule: flat, as metadata holds them."""
        return {"kept": self.kept, "flagged": self.flagged,
                **{f"flagged_by_{rule}": n for rule, n in self.flagged_by.items()}}

    def words(self) -> str:
        """What a person reads first: "6 kept, 3 flagged (1 by confidence, 3 by match; 1 by both)". Only the
        rules that flagged something are named; the last part says how many items more than one rule flagged."""
        fired = [(rule, n) for rule, n in self.flagged_by.items() if n]
        rules = ", ".join(f"{n} by {rule}" for rule, n in fired)
        if self.flagged_by_several:
            rules += f"; {self.flagged_by_several} by {'both' if len(fired) == 2 else 'more than one rule'}"
        return f"{self.kept} kept, {self.flagged} flagged" + (f" ({rules})" if rules else "")


@dataclass(frozen=True)
class FilteredSets:
    """A job's items split by the flagging rules, each set in the order of ``labels.jsonl``."""

    kept: tuple[LabelRecord, ...]
    flagged: tuple[FlaggedItem, ...]

    @property
    def flag_counts(self) -> FlagCounts:
        """The counts of these sets: every face's count of what is flagged comes from here."""
        return FlagCounts(len(self.kept), len(self.flagged),
                          {rule: sum(rule in f.rules for f in self.flagged) for rule in FLAG_RULES},
                          sum(len(f.rules) > 1 for f in self.flagged))

    @property
    def counts(self) -> dict[str, int]:
        """``kept``, ``flagged`` and ``flagged_by_<rule>`` for every rule (an item may be flagged by several)."""
        return self.flag_counts.as_fields()

    @property
    def flagged_records(self) -> list[LabelRecord]:
        return [f.record for f in self.flagged]


def count_flags(records: Iterable[LabelRecord]) -> FlagCounts:
    """Items kept and flagged among ``records``, by the flags each carries (reviews laid over them)."""
    return split_by_confidence(list(records)).flag_counts


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
