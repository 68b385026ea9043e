"""The values that flow between stages, each defined once: label records, skipped items, the bank a job
asked for, provenance, groups, and per-call label settings.

Each has ``to_json``/``from_json`` for its file form; the file layout of a record is the one users rely on
(``labels.jsonl``), so the field names here are that format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cache

import numpy as np
from pydantic.dataclasses import dataclass as checked_dataclass

from cliplabel_pipeline.core.settings import BatchSize, Confidence, Match, Settings, TopK

_DEFAULTS = Settings()


def plain(value):
    """A value as JSON takes it: dataclasses as dicts of their fields, lists and tuples item by item, the rest
    as it is. ``dataclasses.asdict`` without its deep copy of every leaf, which made it 25 times slower on a
    label record: written three times an item (``labels.jsonl``, the per-item JSON, the ZIP)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is list or kind is tuple:
        return kind([v if type(v) in _LEAVES else plain(v) for v in value])
    if hasattr(kind, "__dataclass_fields__"):
        return {name: plain(getattr(value, name)) for name in _field_names(kind)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


_LEAVES = frozenset({str, int, float, bool, type(None)})


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


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
class ScoredLabel:
    name: str
    score: float


FLAG_RULES = ("confidence", "match", "review")  # what flags an item: softmax confidence, open-set match, a rejection
MODEL, REVIEW = "model", "review"  # where an item's label of record comes from (``label_source``)
DECISIONS = ("accept", "correct", "reject")  # what a person may decide about an item
SETTLED = ("accept", "correct")  # decisions that settle an item: never flagged nor quarantined again


@dataclass
class LabelRecord:
    """One labelled item: a line of ``labels.jsonl``. ``flagged_by`` names the rules that fired: ``confidence``
    or ``match`` below its threshold (``match`` is None in records made before it existed), ``review`` when a
    person rejected the item. ``low_confidence`` is true when a rule fired and no person has accepted or
    corrected the item.

    ``label`` is the label of record: the one a person gave (``label_source`` ``review``, with the person's
    ``decision``), else the model's ``top1`` (``model``); None for an item a person rejected. The model's own
    ``top1``, scores and ``labels`` stay as the model gave them."""

    path: str
    kind: str
    labels: list[ScoredLabel]
    top1: str
    confidence: float
    cosine: float
    margin: float
    low_confidence: bool
    scene_tags: list[ScoredLabel] | None = None
    match: float | None = None
    flagged_by: list[str] = field(default_factory=list)
    label: str | None = None  # None when made: the model's top-1 (see ``__post_init__``)
    label_source: str = MODEL
    decision: str | None = None

    def __post_init__(self):
        if self.label is None and self.decision is None:
            self.label = self.top1

    def to_json(self) -> dict:
        data = plain(self)
        tags = data.pop("scene_tags")
        if tags is not None:
            data["scene_tags"] = tags
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LabelRecord":
        tags = data.get("scene_tags")
        return cls(data["path"], data["kind"], [ScoredLabel(**x) for x in data["labels"]], data["top1"],
                   data["confidence"], data["cosine"], data["margin"], data["low_confidence"],
                   [ScoredLabel(**x) for x in tags] if tags is not None else None, data.get("match"),
                   list(data.get("flagged_by") or []), data.get("label"), data.get("label_source") or MODEL,
                   data.get("decision"))

    @property
    def settled(self) -> bool:
        """A person accepted or corrected it: never flagged nor quarantined again."""
        return self.decision in SETTLED

    @property
    def rejected(self) -> bool:
        return self.decision == "reject"


@dataclass(frozen=True)
class Review:
    """What a person decided about one item: a line of ``reviews.jsonl`` and a row of DuckDB ``reviews``.

    ``decision`` is ``accept`` (the model's label is right), ``correct`` (``label`` is) or ``reject`` (the item is
    not a thing worth a label: quarantined by the next cleanup). ``label`` is the label the person accepted or
    gave (None for a rejection), ``model_label`` the model's top-1 they saw, ``source`` the file form it came in
    (``labelstudio``, ``coco``, ``cliplabel``)."""

    path: str
    decision: str
    label: str | None
    model_label: str | None = None
    reviewer: str | None = None
    source: str = "cliplabel"
    reviewed_at: str | None = None
    imported_at: str | None = None

    def to_json(self) -> dict:
        return plain(self)

    @classmethod
    def from_json(cls, data: dict) -> "Review":
        if data["decision"] not in DECISIONS:
            raise ValueError(f"decision {str(data['decision'])[:20]!r} is not one of {', '.join(DECISIONS)}")
        return cls(str(data["path"]), data["decision"], data.get("label"), data.get("model_label"),
                   data.get("reviewer"), data.get("source") or "cliplabel", data.get("reviewed_at"),
                   data.get("imported_at"))


@dataclass(frozen=True)
class SkippedItem:
    """An item that was not labelled, and the reason a person reads: a line of ``skipped.jsonl``."""

    path: str
    kind: str
    reason: str

    def to_json(self) -> dict:
        return plain(self)

    @classmethod
    def from_json(cls, data: dict) -> "SkippedItem":
        return cls(data["path"], data["kind"], data["reason"])


@dataclass(frozen=True)
class BankSpec:
    """The concept bank a job asked for: the bundled bank (or the model's own), or a person's labels and
    templates. Recorded with every run, so a backfill relabels with the job's own choice."""

    labels: tuple[str, ...] = ()
    labels_file: str | None = None
    templates_file: str | None = None

    @property
    def is_default(self) -> bool:
        return not (self.labels or self.labels_file or self.templates_file)

    @classmethod
    def from_settings(cls, settings: Settings) -> "BankSpec":
        return cls(tuple(settings.labels), str(settings.labels_file) if settings.labels_file else None,
                   str(settings.templates_file) if settings.templates_file else None)

    def to_json(self) -> str:
        return json.dumps({"labels": list(self.labels), "labels_file": self.labels_file,
                           "templates_file": self.templates_file}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> "BankSpec":
        data = json.loads(text) if text else {}
        return cls(tuple(data.get("labels") or ()), data.get("labels_file"), data.get("templates_file"))


@dataclass(frozen=True)
class EncoderInfo:
    """Which weights made the image embeddings, on what device, in what precision."""

    model: str
    model_identity: str
    precision: str
    device: str


@dataclass(frozen=True)
class Provenance:
    """What a job's labels were made with: ``_cliplabel/provenance.json``, DuckDB ``runs``, ``manifest.json``."""

    model: str
    model_identity: str
    precision: str
    device: str
    bank_version: str
    templates_hash: str
    templates: tuple[str, ...]
    bank: BankSpec
    top_k: int
    min_confidence: float
    min_match: float | None = None  # None: labelled before the match score existed
    calibration: dict = field(default_factory=dict)  # the null-probe statistics ``match`` was computed with

    def to_json(self) -> dict:
        data = plain(self)
        data["templates"] = list(self.templates)
        data["bank"] = json.loads(self.bank.to_json())
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Provenance":
        bank = data.get("bank") or {}
        return cls(data["model"], data["model_identity"], data["precision"], data["device"],
                   data["bank_version"], data["templates_hash"], tuple(data["templates"]),
                   BankSpec(tuple(bank.get("labels") or ()), bank.get("labels_file"), bank.get("templates_file")),
                   data["top_k"], data["min_confidence"], data.get("min_match"), data.get("calibration") or {})


@dataclass(frozen=True)
class Group:
    """Confident items sharing a top-1 label."""

    name: str
    items: list[str]
    kind: str = "label"


@dataclass(frozen=True)
class Cluster:
    """Low-confidence items clustered together, named after the concept nearest their centroid."""

    name: str
    cluster: int
    similarity: float
    items: list[str]


@dataclass
class Groups:
    """``groups.json``."""

    groups: list[Group] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"groups": [plain(g) for g in self.groups], "clusters": [plain(c) for c in self.clusters]}

    @classmethod
    def from_json(cls, data: dict) -> "Groups":
        return cls([Group(**g) for g in data["groups"]], [Cluster(**c) for c in data["clusters"]])

    def all(self) -> list[Group | Cluster]:
        return [*self.groups, *self.clusters]


@dataclass(frozen=True)
class Performance:
    """How fast the images were encoded, and peak memory."""

    items_per_s: float
    seconds: float
    batch_seconds: tuple[float, ...] = ()
    peak_rss_mb: int = 0
    peak_gpu_mb: int = 0

    def to_json(self) -> dict:
        data = plain(self)
        data["batch_seconds"] = list(self.batch_seconds)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Performance":
        return cls(data["items_per_s"], data["seconds"], tuple(data.get("batch_seconds", ())),
                   data.get("peak_rss_mb", 0), data.get("peak_gpu_mb", 0))


@dataclass(frozen=True)
class EmbeddedItem:
    """One encoded item: its path in the job, its kind, and its object area in pixels (for scene tags)."""

    path: str
    kind: str
    area: int = 0

    def to_json(self) -> dict:
        return plain(self)

    @classmethod
    def from_json(cls, data: dict) -> "EmbeddedItem":
        return cls(data["path"], data["kind"], data.get("area", 0))


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
