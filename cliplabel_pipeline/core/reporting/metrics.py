"""Quality metrics of a labelled job: against ``ground_truth.csv`` when there is one, from scores otherwise."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
import numpy as np

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.values import LabelRecord, Performance


def read_ground_truth(job: JobFolder) -> dict[str, str] | None:
    """``{path: label}`` from ``ground_truth.csv`` (header ``path,label``), or None when there is none."""
    if not job.is_file(job.ground_truth):
        return None
    text = job.read_bytes(job.ground_truth).decode("utf-8", "replace")
    return {row["path"]: row["label"] for row in csv.DictReader(io.StringIO(text, newline="")) if row.get("path")}


def truth_metrics(records: list[LabelRecord], truth: dict[str, str]) -> dict:
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
    return {
        "evaluated": n,
        "accuracy": round(sum(t == p for t, p, _ in pairs) / n, 6) if n else None,
        "top_k_accuracy": round(sum(t in top for t, _, top in pairs) / n, 6) if n else None,
        "per_class": per_class,
        "confusion": {"labels": classes, "matrix": confusion.tolist()},
    }


def score_metrics(records: list[LabelRecord], min_confidence: float) -> dict:
    """Distribution of confidences and cosines, label diversity (distinct labels, entropy in bits)."""
    conf = np.array([r.confidence for r in records], float)
    cos = np.array([r.cosine for r in records], float)
    counts = Counter(r.top1 for r in records)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0

    def stats(a: np.ndarray) -> dict:
        if not len(a):
            return {}
        p = np.percentile(a, [5, 25, 50, 75, 95])
        return {"mean": round(float(a.mean()), 6), "std": round(float(a.std()), 6),
                **{f"p{q}": round(float(v), 6) for q, v in zip((5, 25, 50, 75, 95), p)}}

    return {
        "confidence": stats(conf), "cosine": stats(cos),
        "distinct_labels": len(counts), "label_entropy_bits": round(entropy, 6),
        "share_at_or_above_threshold": round(float((conf >= min_confidence).mean()), 6) if len(conf) else None,
        "label_counts": dict(counts.most_common()),
    }


def job_metrics(records: list[LabelRecord], job: JobFolder, min_confidence: float, performance: Performance) -> dict:
    """``metrics.json`` of one job: ``truth`` (or None), ``scores``, and ``performance``."""
    truth = read_ground_truth(job)
    return {
        "items": len(records),
        "threshold": min_confidence,
        "truth": truth_metrics(records, truth) if truth else None,
        "scores": score_metrics(records, min_confidence),
        "performance": performance.to_json(),
    }
