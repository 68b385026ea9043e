"""Quality metrics of a labelled job: against ``ground_truth.csv`` when there is one, from scores otherwise."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import FlagCounts, count_flags
from cliplabel_pipeline.core.values import LabelRecord, Performance


def read_ground_truth(job: JobFolder) -> dict[str, str] | None:
    """``{path: label}`` from ``ground_truth.csv`` (header ``path,label``), or None when there is none."""
    if not job.is_file(job.ground_truth):
        return None
    text = job.read_bytes(job.ground_truth).decode("utf-8", "replace")
    return {row["path"]: row["label"] for row in csv.DictReader(io.StringIO(text, newline="")) if row.get("path")}


@dataclass(frozen=True)
class TruthMetrics:
    """Against ``ground_truth.csv``: accuracy, top-k accuracy, per-class scores, confusion (rows truth)."""

    evaluated: int
    accuracy: float | None
    top_k_accuracy: float | None
    per_class: dict[str, dict]
    confusion_labels: list[str]
    confusion_matrix: list[list[int]]

    def to_json(self) -> dict:
        return {"evaluated": self.evaluated, "accuracy": self.accuracy, "top_k_accuracy": self.top_k_accuracy,
                "per_class": self.per_class,
                "confusion": {"labels": self.confusion_labels, "matrix": self.confusion_matrix}}


@dataclass(frozen=True)
class ScoreMetrics:
    """Without ground truth: how the scores are spread and how diverse the labels are; and the items kept and
    flagged (``flags``, the one count of ``count_flags``: the headline and every face read it)."""

    confidence: dict[str, float]
    cosine: dict[str, float]
    distinct_labels: int
    label_entropy_bits: float
    share_at_or_above_threshold: float | None  # of the confidence rule alone: the headline counts ``flags``
    label_counts: dict[str, int]
    match: dict[str, float]
    flags: FlagCounts

    @property
    def kept(self) -> int:
        return self.flags.kept

    @property
    def flagged(self) -> int:
        return self.flags.flagged

    @property
    def flagged_by(self) -> dict[str, int]:
        """The flagged items each rule flagged (an item flagged by two rules counts for both)."""
        return self.flags.flagged_by

    def to_json(self) -> dict:
        data = asdict(self)
        flags = data.pop("flags")
        return {**data, "flagged_by": flags["flagged_by"], "kept": flags["kept"], "flagged": flags["flagged"],
                "flagged_by_several": flags["flagged_by_several"]}

    def headline(self) -> str:
        """What a person reads first: kept and flagged, and by which rule (never one threshold alone)."""
        return self.flags.words()


PRECISION_TARGET = 0.95
GRID = tuple(round(0.05 * i, 2) for i in range(20))  # thresholds tried for the trade-off: 0.00 .. 0.95


@dataclass(frozen=True)
class ReviewMetrics:
    """How right the model was on the items people reviewed (an acceptance is right, a correction or a rejection
    wrong), and how precision and the share kept trade off as the two thresholds move, with the thresholds that
    keep ``precision_target`` on this data (None when none does)."""

    reviewed: int
    decisions: dict[str, int]
    accuracy: float | None
    top_k_accuracy: float | None
    by_kind: dict[str, dict]
    confusion_labels: list[str]
    confusion_matrix: list[list[int]]
    tradeoff: list[dict]
    precision_target: float
    suggested: dict | None

    def to_json(self) -> dict:
        data = asdict(self)
        data["confusion"] = {"labels": data.pop("confusion_labels"), "matrix": data.pop("confusion_matrix")}
        return data


def _kept(r: LabelRecord, min_confidence: float, min_match: float) -> bool:
    return r.confidence >= min_confidence and (r.match is None or r.match >= min_match)


def review_metrics(records: list[LabelRecord], target: float = PRECISION_TARGET) -> ReviewMetrics | None:
    """The ``review`` section of ``metrics.json``, or None when no item was reviewed."""
    reviewed = [r for r in records if r.decision]
    if not reviewed:
        return None
    right = {r.path: r.decision == "accept" or (r.decision == "correct" and r.label == r.top1) for r in reviewed}
    labelled = [r for r in reviewed if r.label is not None]
    truth = truth_metrics(labelled, {r.path: r.label for r in labelled}) if labelled else None
    by_kind = {}
    for kind in sorted({r.kind for r in reviewed}):
        mine = [r for r in reviewed if r.kind == kind]
        by_kind[kind] = {"reviewed": len(mine), "accuracy": round(sum(right[r.path] for r in mine) / len(mine), 6)}
    tradeoff, best = [], None
    for c in GRID:
        for m in GRID:
            kept = [r for r in reviewed if _kept(r, c, m)]
            precision = round(sum(right[r.path] for r in kept) / len(kept), 6) if kept else None
            point = {"min_confidence": c, "min_match": m, "kept_share": round(len(kept) / len(reviewed), 6),
                     "precision": precision}
            tradeoff.append(point)
            if precision is not None and precision >= target and (best is None or point["kept_share"] > best["kept_share"]):
                best = point
    return ReviewMetrics(
        reviewed=len(reviewed), decisions={d: sum(r.decision == d for r in reviewed) for d in ("accept", "correct", "reject")},
        accuracy=round(sum(right.values()) / len(reviewed), 6),
        top_k_accuracy=truth.top_k_accuracy if truth else None, by_kind=by_kind,
        confusion_labels=truth.confusion_labels if truth else [], confusion_matrix=truth.confusion_matrix if truth else [],
        tradeoff=tradeoff, precision_target=target, suggested=best)


@dataclass(frozen=True)
class JobMetrics:
    """``metrics.json`` of one job."""

    items: int
    threshold: float
    truth: TruthMetrics | None
    scores: ScoreMetrics
    performance: Performance
    match_threshold: float | None = None
    review: ReviewMetrics | None = None

    def to_json(self) -> dict:
        return {"items": self.items, "threshold": self.threshold, "match_threshold": self.match_threshold,
                "truth": self.truth.to_json() if self.truth else None,
                "scores": self.scores.to_json(), "performance": self.performance.to_json(),
                "review": self.review.to_json() if self.review else None}


def truth_metrics(records: list[LabelRecord], truth: dict[str, str]) -> TruthMetrics:
    """Accuracy, top-k accuracy, per-class precision and recall, confusion matrix (rows truth, cols predicted)."""
    pairs = [(truth[r.path], r.top1, [lab.name for lab in r.labels]) for r in records if r.path in truth]
    n = len(pairs)
    classes = sorted({t for t, _, _ in pairs} | {p for _, p, _ in pairs})
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), int)
    for t, p, _ in pairs:
        confusion[index[t], index[p]] += 1
    per_class = {}
    for c, i in index.items():
        tp, predicted, actual = confusion[i, i], confusion[:, i].sum(), confusion[i].sum()
        per_class[c] = {"precision": round(tp / predicted, 6) if predicted else None,
                        "recall": round(tp / actual, 6) if actual else None, "support": int(actual)}
    return TruthMetrics(
        evaluated=n,
        accuracy=round(sum(t == p for t, p, _ in pairs) / n, 6) if n else None,
        top_k_accuracy=round(sum(t in top for t, _, top in pairs) / n, 6) if n else None,
        per_class=per_class, confusion_labels=classes, confusion_matrix=confusion.tolist(),
    )


def _stats(a: np.ndarray) -> dict[str, float]:
    if not len(a):
        return {}
    p = np.percentile(a, [5, 25, 50, 75, 95])
    return {"mean": round(float(a.mean()), 6), "std": round(float(a.std()), 6),
            **{f"p{q}": round(float(v), 6) for q, v in zip((5, 25, 50, 75, 95), p)}}


def score_metrics(records: list[LabelRecord], min_confidence: float) -> ScoreMetrics:
    """Distribution of confidences, match scores and cosines, label diversity (distinct labels, entropy in
    bits), and the items kept and flagged, by which rule (``count_flags``)."""
    conf = np.array([r.confidence for r in records], float)
    match = np.array([r.match for r in records if r.match is not None], float)
    cos = np.array([r.cosine for r in records], float)
    counts = Counter(r.top1 for r in records)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
    return ScoreMetrics(
        confidence=_stats(conf), cosine=_stats(cos),
        distinct_labels=len(counts), label_entropy_bits=round(entropy, 6),
        share_at_or_above_threshold=round(float((conf >= min_confidence).mean()), 6) if len(conf) else None,
        label_counts=dict(counts.most_common()),
        match=_stats(match),
        flags=count_flags(records),
    )


def job_metrics(records: list[LabelRecord], job: JobFolder, min_confidence: float,
                performance: Performance, min_match: float | None = None) -> JobMetrics:
    """``metrics.json`` of one job: ``truth`` (or None), ``scores``, ``performance`` and ``review`` (or None).
    The labels people accepted or corrected count as ground truth beside ``ground_truth.csv`` (theirs win)."""
    truth = {**(read_ground_truth(job) or {}),
             **{r.path: r.label for r in records if r.settled and r.label is not None}}
    return JobMetrics(len(records), min_confidence, truth_metrics(records, truth) if truth else None,
                      score_metrics(records, min_confidence), performance, min_match, review_metrics(records))
