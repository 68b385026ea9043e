"""From embeddings to label records, with scene tags for a job's ``source.png``.

Scene rule, from evidence: when a job has objects (cut-outs in ``objects/``, else masks), each object whose
``match`` passes its threshold contributes its top-1 label with weight equal to its share of the total object
area. A concept's scene score is ``0.5 * object_area_share + 0.5 * whole_image_confidence``. A whole-image
top-k label counts only when an object supports it or the whole image itself passes the match rule, so a
label of the whole picture that nothing in it bears out is never a tag. ``scene_tags`` lists what is left,
highest score first.
"""

from __future__ import annotations

from collections import defaultdict

from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.labelling.scoring import score_embeddings, scores_to_records
from cliplabel_pipeline.core.values import Embedded, EmbeddedItem, LabelRecord, LabelSettings, ScoredLabel

SCORE_CHUNK = 1024  # rows scored at once: bounds the [rows, concepts] matrix


def assign_labels(embedded: Embedded, index: ConceptIndex, settings: LabelSettings) -> list[LabelRecord]:
    """One record per embedded item, in order; the source gets scene tags."""
    records: list[LabelRecord] = []
    for start in range(0, len(embedded.items), SCORE_CHUNK):
        chunk = embedded.items[start:start + SCORE_CHUNK]
        emb = embedded.embeddings[start:start + SCORE_CHUNK]
        scores = score_embeddings(emb, index.text_emb, index.logit_scale, settings.top_k)
        match = index.calibration.match(scores.top_idx, scores.top_cos, emb)
        records += scores_to_records(scores, match, [(i.path, i.kind) for i in chunk], index.names, settings)
    add_scene_tags(records, embedded.items)
    return records


def _passes_match(record: LabelRecord) -> bool:
    return "match" not in record.flagged_by


def add_scene_tags(records: list[LabelRecord], items: list[EmbeddedItem]) -> None:
    """Give the ``source`` record ``scene_tags`` from its objects' labels (see the module rule)."""
    source = next((r for r in records if r.kind == "source"), None)
    if source is None:
        return
    areas = {i.path: i.area for i in items}
    parts = [r for r in records if r.kind == "object"] or [r for r in records if r.kind == "mask"]
    total = sum(areas.get(r.path, 0) for r in parts)
    if not parts or total <= 0:
        return
    scene: dict[str, float] = defaultdict(float)
    for r in parts:
        if _passes_match(r):
            scene[r.top1] += 0.5 * areas.get(r.path, 0) / total
    supported = set(scene)
    for label in source.labels:
        if label.name in supported or _passes_match(source):
            scene[label.name] += 0.5 * label.score
    ranked = sorted(scene.items(), key=lambda kv: -kv[1])
    source.scene_tags = [ScoredLabel(n, round(s, 6)) for n, s in ranked]
