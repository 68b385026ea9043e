"""Zero-shot scores: one matrix product against the whole bank, then top-k per item.

``confidence`` is the softmax over all candidate concepts of ``logit_scale * cosine``, the definition of
Transformers' ``zero-shot-image-classification`` pipeline. ``cosine`` is the raw similarity of the top-1
concept; ``margin`` is top-1 confidence minus top-2 confidence; ``match`` is the open-set score of
``calibration.py``. An item is ``low_confidence`` when either score is below its threshold, and
``flagged_by`` names the rules that fired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliplabel_pipeline.core.values import LabelRecord, LabelSettings, ScoredLabel


@dataclass
class Scores:
    """Top-k results for a batch of items: arrays of shape ``[n, k]`` (indices into the bank)."""

    top_idx: np.ndarray
    top_conf: np.ndarray
    top_cos: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        if self.top_conf.shape[1] < 2:
            return self.top_conf[:, 0].copy()
        return self.top_conf[:, 0] - self.top_conf[:, 1]


def score_embeddings(image_emb: np.ndarray, text_emb: np.ndarray, logit_scale: float, top_k: int) -> Scores:
    """Cosines ``[n, N]`` of unit-norm fp32 embeddings, softmax confidences, and the ``top_k`` best, sorted."""
    cos = image_emb.astype(np.float32, copy=False) @ text_emb.T
    logits = cos * np.float32(logit_scale)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(max(top_k, 2), cos.shape[1])
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return Scores(idx, np.take_along_axis(probs, idx, axis=1), np.take_along_axis(cos, idx, axis=1))


def flags(confidence: float, match: float | None, settings: LabelSettings) -> list[str]:
    """The rules that flag an item: ``confidence`` and/or ``match`` below its threshold."""
    fired = ["confidence"] if confidence < settings.min_confidence else []
    return fired + (["match"] if match is not None and match < settings.min_match else [])


def scores_to_records(scores: Scores, match: np.ndarray, items: list[tuple[str, str]], names: tuple[str, ...],
                      settings: LabelSettings) -> list[LabelRecord]:
    """One ``LabelRecord`` per ``(path, kind)`` of ``items``, in the order of the scored rows."""
    margins, top_k = scores.margin, settings.top_k
    records = []
    for i, (path, kind) in enumerate(items):
        conf, m = round(float(scores.top_conf[i, 0]), 6), round(float(match[i]), 6)
        fired = flags(conf, m, settings)
        records.append(LabelRecord(
            path=path, kind=kind,
            labels=[ScoredLabel(names[j], round(float(s), 6))
                    for j, s in zip(scores.top_idx[i, :top_k], scores.top_conf[i, :top_k])],
            top1=names[scores.top_idx[i, 0]],
            confidence=conf,
            cosine=round(float(scores.top_cos[i, 0]), 6),
            margin=round(float(margins[i]), 6),
            low_confidence=bool(fired),
            match=m,
            flagged_by=fired,
        ))
    return records
