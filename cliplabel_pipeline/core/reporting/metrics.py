"""Quality metrics of a labelled job: against ``ground_truth.csv`` when there is one, from scores otherwise."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.values import FLAG_RULES, LabelRecord, Performance


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
    """Without ground truth: how the scores are spread and how diverse the labels are."""

    confidence: dict[str, float]
    cosine: dict[str, float]
    distinct_labels: int
    label_entropy_bits: float
    share_at_or_above_threshold: float | None
    label_counts: dict[str, int]
    match: dict[str, float]
    flagged_by: dict[str, int]  # items each rule flagged (an item flagged by both counts for both)
    kept: int = 0  # items no rule flagged
    flagged: int = 0  # items flagged by either rule (``low_confidence``)

    def to_json(self) -> dict:
        return asdict(self)

    def headline(self) -> str:
        """What a person reads first: kept and flagged, and by which rule (never one threshold alone)."""
        rules = ", ".join(f"{n} by {rule}" for rule, n in self.flagged_by.items() if n)  # an item may count twice
        return f"{self.kept} kept, {self.flagged} flagged" + (f" ({rules})" if rules else "")


@dataclass(frozen=True)
class JobMetrics:
    """``metrics.json`` of one job."""

    items: int
    threshold: float
    truth: TruthMetrics | None
    scores: ScoreMetrics
    performance: Performance
    match_threshold: float | None = None

    def to_json(self) -> dict:
        return {"items": self.items, "threshold": self.threshold, "match_threshold": self.match_threshold,
                "truth": self.truth.to_json() if self.truth else None,
                "scores": self.scores.to_json(), "performance": self.performance.to_json()}


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
    bits), and how many items each rule flagged."""
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
        flagged_by={rule: sum(rule in r.flagged_by for r in records) for rule in FLAG_RULES},
        kept=sum(not r.low_confidence for r in records), flagged=sum(r.low_confidence for r in records),
    )


def job_metrics(records: list[LabelRecord], job: JobFolder, min_confidence: float,
                performance: Performance, min_match: float | None = None) -> JobMetrics:
    """``metrics.json`` of one job: ``truth`` (or None), ``scores``, and ``performance``."""
    truth = read_ground_truth(job)
    return JobMetrics(len(records), min_confidence, truth_metrics(records, truth) if truth else None,
                      score_metrics(records, min_confidence), performance, min_match)
