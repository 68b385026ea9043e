"""From embeddings to label records, with scene tags for a job's ``source.png``.

Scene rule: when a job has objects (cut-outs in ``objects/``, else masks), each object contributes its
top-1 label with weight equal to its share of the total object area. A concept's scene score is
``0.5 * object_area_share + 0.5 * whole_image_confidence``; ``scene_tags`` lists every object label and
every whole-image top-k label with its scene score, highest first.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cliplabel_pipeline.core.embedding import Embedded
from cliplabel_pipeline.core.scoring import score_embeddings, scores_to_records

SCORE_CHUNK = 1024  # rows scored at once: bounds the [rows, concepts] matrix


def assign_labels(embedded: Embedded, names: tuple[str, ...], text_emb: np.ndarray, logit_scale: float,
                  top_k: int = 3, min_confidence: float = 0.25) -> list[dict]:
    """One record per embedded item: ``path``, ``kind``, ``labels``, ``top1``, ``confidence``, ``cosine``, ``margin``."""
    records: list[dict] = []
    for start in range(0, len(embedded.meta), SCORE_CHUNK):
        scores = score_embeddings(embedded.embeddings[start:start + SCORE_CHUNK], text_emb, logit_scale, top_k)
        for meta, rec in zip(embedded.meta[start:start + SCORE_CHUNK],
                             scores_to_records(scores, names, top_k, min_confidence)):
            records.append({"path": meta["path"], "kind": meta["kind"], **rec})
    add_scene_tags(records, embedded.meta)
    return records


def add_scene_tags(records: list[dict], metas: list[dict]) -> None:
    """Give the ``source`` record ``scene_tags`` from its objects' labels (see the module rule)."""
    source = next((r for r in records if r["kind"] == "source"), None)
    if source is None:
        return
    areas = {m["path"]: m.get("area", 0) for m in metas}
    parts = [r for r in records if r["kind"] == "object"] or [r for r in records if r["kind"] == "mask"]
    total = sum(areas.get(r["path"], 0) for r in parts)
    if not parts or total <= 0:
        return
    scene: dict[str, float] = defaultdict(float)
    for r in parts:
        scene[r["top1"]] += 0.5 * areas.get(r["path"], 0) / total
    for label in source["labels"]:
        scene[label["name"]] += 0.5 * label["score"]
    ranked = sorted(scene.items(), key=lambda kv: -kv[1])
    source["scene_tags"] = [{"name": n, "score": round(s, 6)} for n, s in ranked]
