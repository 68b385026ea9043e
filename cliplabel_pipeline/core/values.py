"""The values that flow between stages, each defined once: label records, skipped items, the bank a job
asked for, provenance, groups, and per-call label settings.

Each is a dataclass (cheap to make: a job makes one record per item) whose file form comes from its fields
through pydantic (``JsonForm``): the field names and order here are the format users rely on
(``labels.jsonl``, ``provenance.json``), and the HTTP models, DuckDB rows and CSV columns are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BeforeValidator, Field, StrictBool, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as checked_dataclass

from cliplabel_pipeline.core.settings import BatchSize, Confidence, Match, Settings, TopK

_DEFAULTS = Settings()


class JsonForm:
    """A value's JSON form, from its fields: ``to_json`` a dict of plain JSON types (tuples as lists, nested
    values as dicts), ``from_json`` the value back, checked field by field (a ``ValueError`` naming the field)."""

    __slots__ = ()

    def to_json(self) -> dict:
        return _adapter(type(self)).dump_python(self, mode="json")

    @classmethod
    def from_json(cls, data: Any):
        try:
            return _adapter(cls).validate_python(data)
        except ValidationError as exc:  # one line per field, as a person reads it
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc'])) or cls.__name__}: "
                                       f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def _none_as(default):
    """A field whose ``null`` (in a file written before the field existed) reads as ``default``."""
    return BeforeValidator(lambda value: default() if value is None else value)


def _left_out_when_none():
    """A field written only when it has a value."""
    return Field(exclude_if=lambda value: value is None)


@checked_dataclass(frozen=True)
class LabelSettings:
    """Per-call scoring settings: labels kept per item, the two low-confidence thresholds (softmax confidence
    and open-set match), images per forward pass; each within the bounds of its ``Settings`` field (a
    ``pydantic.ValidationError`` otherwise)."""

    top_k: TopK = _DEFAULTS.top_k
    min_confidence: Confidence = _DEFAULTS.min_confidence
    batch_size: BatchSize = _DEFAULTS.batch_size
    min_match: Match = _DEFAULTS.min_match

    @classmethod
    def from_settings(cls, settings: Settings) -> "LabelSettings":
        return cls(settings.top_k, settings.min_confidence, settings.batch_size, settings.min_match)


@dataclass(frozen=True)
class ScoredLabel(JsonForm):
    name: str
    score: Confidence


FLAG_RULES = ("confidence", "match", "review")  # what flags an item: softmax confidence, open-set match, a rejection
FlagRule = Literal["confidence", "match", "review"]
MODEL, REVIEW = "model", "review"  # where an item's label of record comes from (``label_source``)
LabelSource = Literal["model", "review"]
Finite = Annotated[float, Field(allow_inf_nan=False)]
DECISIONS = ("accept", "correct", "reject")  # what a person may decide about an item
SETTLED = ("accept", "correct")  # decisions that settle an item: never flagged nor quarantined again


@dataclass
class LabelRecord(JsonForm):
    """One labelled item: a line of ``labels.jsonl``. ``flagged_by`` names the rules that fired: ``confidence``
    or ``match`` below its threshold (``match`` is None in records made before it existed), ``review`` when a
    person rejected the item. ``low_confidence`` is true when a rule fired and no person has accepted or
    corrected the item.

    ``label`` is the label of record: the one a person gave (``label_source`` ``review``, with the person's
    ``decision``), else the model's ``top1`` (``model``); None for an item a person rejected. The model's own
    ``top1``, scores and ``labels`` stay as the model gave them. ``scene_tags`` (the job's ``source`` only) is
    written last, and only when there are some."""

    path: str
    kind: str
    labels: list[ScoredLabel]
    top1: str
    confidence: Confidence  # a file's NaN, infinity or 5 is not a record cliplabel wrote
    cosine: Finite
    margin: Finite
    low_confidence: StrictBool
    match: Match | None = None
    flagged_by: Annotated[list[FlagRule], _none_as(list)] = field(default_factory=list)
    label: str | None = None  # None when made: the model's top-1 (see ``__post_init__``)
    label_source: Annotated[LabelSource, _none_as(lambda: MODEL)] = MODEL
    decision: str | None = None
    scene_tags: Annotated[list[ScoredLabel] | None, _left_out_when_none()] = None

    def __post_init__(self):
        if self.label is None and self.decision is None:
            self.label = self.top1

    @property
    def settled(self) -> bool:
        """A person accepted or corrected it: never flagged nor quarantined again."""
        return self.decision in SETTLED

    @property
    def rejected(self) -> bool:
        return self.decision == "reject"


def _one_of_decisions(value):
    if value not in DECISIONS:
        raise ValueError(f"decision {str(value)[:20]!r} is not one of {', '.join(DECISIONS)}")
    return value


@dataclass(frozen=True)
class Review(JsonForm):
    """What a person decided about one item: a line of ``reviews.jsonl`` and a row of DuckDB ``reviews``.

    ``decision`` is ``accept`` (the model's label is right), ``correct`` (``label`` is) or ``reject`` (the item is
    not a thing worth a label: quarantined by the next cleanup). ``label`` is the label the person accepted or
    gave (None for a rejection), ``model_label`` the model's top-1 they saw, ``source`` the file form it came in
    (``labelstudio``, ``coco``, ``cliplabel``)."""

    path: Annotated[str, BeforeValidator(str)]
    decision: Annotated[str, BeforeValidator(_one_of_decisions)]
    label: str | None
    model_label: str | None = None
    reviewer: str | None = None
    source: Annotated[str, _none_as(lambda: "cliplabel")] = "cliplabel"
    reviewed_at: str | None = None
    imported_at: str | None = None


@dataclass(frozen=True)
class SkippedItem(JsonForm):
    """An item that was not labelled, and the reason a person reads: a line of ``skipped.jsonl``."""

    path: str
    kind: str
    reason: str


@dataclass(frozen=True)
class BankSpec(JsonForm):
    """The concept bank a job asked for: the bundled bank (or the model's own), or a person's labels and
    templates. Recorded with every run, so a backfill relabels with the job's own choice."""

    labels: Annotated[tuple[str, ...], _none_as(tuple)] = ()
    labels_file: str | None = None
    templates_file: str | None = None

    @property
    def is_default(self) -> bool:
        return not (self.labels or self.labels_file or self.templates_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> "BankSpec":
        return cls(tuple(settings.labels), str(settings.labels_file) if settings.labels_file else None,
                   str(settings.templates_file) if settings.templates_file else None)


@dataclass(frozen=True)
class EncoderInfo:
    """Which weights made the image embeddings, on what device, in what precision."""

    model: str
    model_identity: str
    precision: str
    device: str


@dataclass(frozen=True)
class Provenance(JsonForm):
    """What a job's labels were made with: ``_cliplabel/provenance.json``, DuckDB ``runs``, ``manifest.json``."""

    model: str
    model_identity: str
    precision: str
    device: str
    bank_version: str
    templates_hash: str
    templates: tuple[str, ...]
    bank: Annotated[BankSpec, _none_as(BankSpec), Field(default_factory=BankSpec)]  # absent: the default bank
    top_k: int
    min_confidence: float
    min_match: float | None = None  # None: labelled before the match score existed
    calibration: Annotated[dict, _none_as(dict)] = field(default_factory=dict)  # the null-probe statistics ``match`` was computed with


@dataclass(frozen=True)
class Group(JsonForm):
    """Confident items sharing a top-1 label."""

    name: str
    items: list[str]
    kind: str = "label"


@dataclass(frozen=True)
class Cluster(JsonForm):
    """Low-confidence items clustered together, named after the concept nearest their centroid."""

    name: str
    cluster: int
    similarity: float
    items: list[str]


@dataclass
class Groups(JsonForm):
    """``groups.json``."""

    groups: list[Group] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)

    def all(self) -> list[Group | Cluster]:
        return [*self.groups, *self.clusters]


@dataclass(frozen=True)
class Performance(JsonForm):
    """How fast the images were encoded, and peak memory."""

    items_per_s: float
    seconds: float
    batch_seconds: tuple[float, ...] = ()
    peak_rss_mb: int = 0
    peak_gpu_mb: int = 0


@dataclass(frozen=True)
class EmbeddedItem(JsonForm):
    """One encoded item: its path in the job, its kind, and its object area in pixels (for scene tags)."""

    path: str
    kind: str
    area: int = 0


@dataclass
class Embedded:
    """Unit-norm embeddings ``[n, d]``, one ``EmbeddedItem`` per row, the skipped items, who encoded them
    and how fast."""

    items: list[EmbeddedItem]
    embeddings: np.ndarray
    skipped: list[SkippedItem]
    encoder: EncoderInfo
    batch_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return len(self.items) / self.seconds if self.seconds else 0.0

    def performance(self, peak: dict | None = None) -> Performance:
        return Performance(round(self.items_per_second, 3), round(self.seconds, 3), tuple(self.batch_seconds),
                           **(peak or {}))
