"""Reading people's decisions back: a Label Studio JSON export, a COCO file edited in CVAT or FiftyOne, or
cliplabel's own review lines, each matched to the job's labelled items.

- Label Studio: each task comes back through ``data.item``; cancelled annotations are skipped and the newest
  of the rest wins; its ``label`` choice (or brush label) is the label, a ``decision`` choice ``reject`` rejects.
- COCO: each annotation is matched by its ``path`` (kept by tools that keep extra keys), else by the mask it
  overlaps most (intersection over union at least ``MIN_IOU``); its category is the label.
- Review lines: JSON objects with ``path``, ``decision`` (accept, correct, reject) and ``label`` (needed to
  correct), optionally ``reviewer``.

A label equal to the model's top-1 is an acceptance, another a correction. Entries that cannot be matched are
listed with the reason; a file that is none of these forms is one ``CliplabelError`` naming it, and nothing
has been changed.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.organising.labelstudio import (
    BRUSH,
    CHOICES,
    DECISION,
    REJECT,
)
from cliplabel_pipeline.core.reading.picture import ImageSkipped
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.values import DECISIONS, LabelRecord, Review

MIN_IOU = 0.5
MAX_LABEL_CHARS = 500
MAX_POLYGON_NUMBERS = 1_000_000  # coordinates in one annotation's polygons; a mask needs far fewer
FORMS = {"labelstudio": "a Label Studio JSON export", "coco": "a COCO file", "cliplabel": "cliplabel review lines"}


@dataclass(frozen=True)
class Unmatched:
    """An entry of the file that names no labelled item of the job, and why."""

    entry: str
    reason: str


@dataclass
class ReadReviews:
    form: str  # a key of FORMS
    reviews: list[Review] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)


class Malformed(ValueError):
    """The file is not one of the forms; its message says where."""


def read_review_file(name: str, data: bytes, job: JobFolder, records: list[LabelRecord],
                     reviewer: str | None = None) -> ReadReviews:
    """The reviews in ``data`` (the file ``name``), matched to ``records`` of ``job``. A rejection of the source
    is listed as not taken: ``source.png`` never goes to quarantine (the masks are cut from it)."""
    found = _read_review_file(name, data, job, {r.path: r for r in records}, reviewer)
    for review in [r for r in found.reviews if r.path == SOURCE_NAME and r.decision == "reject"]:
        found.reviews.remove(review)
        found.unmatched.append(Unmatched(f"{SOURCE_NAME} rejected", f"{SOURCE_NAME} never goes to quarantine (the "
                                         "masks are cut from it); reject its masks and cut-outs instead"))
    return found


def _read_review_file(name: str, data: bytes, job: JobFolder, by_path: dict[str, LabelRecord],
                      reviewer: str | None) -> ReadReviews:
    try:
        text = data.decode("utf-8-sig")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None  # JSON lines, or nothing we read
        if isinstance(doc, list) and all(isinstance(t, dict) and "data" in t for t in doc):
            return _labelstudio(doc, by_path, reviewer)
        if isinstance(doc, dict) and isinstance(doc.get("annotations"), list) and "images" in doc:
            return _coco(doc, job, by_path, reviewer)
        if isinstance(doc, list) and all(isinstance(t, dict) and "decision" in t for t in doc):
            return _lines(doc, by_path, reviewer)
        return _lines(_json_lines(text), by_path, reviewer)
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as exc:  # Malformed among them
        why = "nested too deep" if isinstance(exc, RecursionError) else f"no field {exc}" if isinstance(
            exc, KeyError) else " ".join(str(exc).split())[:160]
        raise CliplabelError(f"{shown(name)} is not {FORMS['labelstudio']}, {FORMS['coco']} or "
                             f"{FORMS['cliplabel']} ({why}); no review was taken") from None


def _json_lines(text: str) -> list[dict]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise Malformed(f"line {number} is not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise Malformed(f"line {number} is not a JSON object")
        row["_line"] = number
        rows.append(row)
    if not rows:
        raise Malformed("it holds no review")
    return rows


def _decision(label: str | None, rec: LabelRecord) -> str:
    return "accept" if label == rec.top1 else "correct"


def _lines(rows: list[dict], by_path: dict[str, LabelRecord], reviewer: str | None) -> ReadReviews:
    out = ReadReviews("cliplabel")
    for i, row in enumerate(rows, 1):
        where = f"line {row.get('_line', i)}"
        path, decision, label = row.get("path"), row.get("decision"), row.get("label")
        if not isinstance(path, str) or decision not in DECISIONS or (label is not None and not isinstance(label, str)):
            raise Malformed(f"{where}: a review line has a string path, a decision ({', '.join(DECISIONS)}) and "
                            f"a string label")
        if decision == "correct" and not label:
            raise Malformed(f"{where}: a correction needs the right label")
        if label is not None:
            label = _label(label, where)
        rec = by_path.get(path)
        if rec is None:
            out.unmatched.append(Unmatched(f"{where} ({shown(path)})", "no labelled item of the job has this path"))
            continue
        if decision == "accept":
            label = label or rec.label or rec.top1
        elif decision == "reject":
            label = None
        who = row.get("reviewer") if isinstance(row.get("reviewer"), str) else reviewer
        out.reviews.append(Review(path, decision, label, rec.top1, who, "cliplabel", _text(row.get("reviewed_at"))))
    return out


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _labelstudio(tasks: list[dict], by_path: dict[str, LabelRecord], reviewer: str | None) -> ReadReviews:
    out = ReadReviews("labelstudio")
    for i, task in enumerate(tasks, 1):
        data = task["data"]
        if not isinstance(data, dict):
            raise Malformed(f"task {i}: data is not an object")
        item = data.get("item")
        name = f"task {task.get('id', i)}"
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise Malformed(f"{name}: annotations is not a list of objects")
        if not isinstance(item, str) or item not in by_path:
            out.unmatched.append(Unmatched(name, f"data.item {shown(str(item))!r} is no labelled item of the job"
                                           if item is not None else "it has no data.item (not a task cliplabel "
                                                                    "exported)"))
            continue
        live = [a for a in annotations if not a.get("was_cancelled")]
        if not live:
            out.unmatched.append(Unmatched(name, "no annotation (cancelled ones are skipped)" if annotations
                                           else "no annotation yet"))
            continue
        newest = max(live, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""),
                                          a.get("id") if isinstance(a.get("id"), int) else 0))
        label, rejected = _ls_choice(newest.get("result") or [], name)
        rec = by_path[item]
        who = _ls_who(newest.get("completed_by")) or reviewer
        when = _text(newest.get("updated_at") or newest.get("created_at"))
        if rejected:
            out.reviews.append(Review(item, "reject", None, rec.top1, who, "labelstudio", when))
        elif label is None:
            out.unmatched.append(Unmatched(name, "its newest annotation chooses no label"))
        else:
            out.reviews.append(Review(item, _decision(label, rec), label, rec.top1, who, "labelstudio", when))
    return out


def _ls_choice(results: list, where: str) -> tuple[str | None, bool]:
    label, rejected = None, False
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise Malformed(f"{where}: an annotation's result is not a list of objects")
    for r in results:
        value = r.get("value") or {}
        if not isinstance(value, dict):
            raise Malformed(f"{where}: a result's value is not an object")
        choices, brushes = value.get("choices") or [], value.get("brushlabels") or []
        if not isinstance(choices, list) or not isinstance(brushes, list):
            raise Malformed(f"{where}: choices and brushlabels are lists of labels")
        if r.get("from_name") == DECISION and REJECT in choices:
            rejected = True
        elif r.get("type") == "choices" and r.get("from_name", CHOICES) == CHOICES and choices:
            label = _label(choices[0], where)
        elif r.get("type") == "brushlabels" and r.get("from_name", BRUSH) == BRUSH and brushes:
            label = label or _label(brushes[0], where)
    return label, rejected


def _label(value, where: str) -> str:
    """A person's label as given, checked: a string of printable text that fits on a line, as every export and
    ``classes.txt`` need it (a line break or a control character would split or break them)."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{where}: a label is a non-empty string, not {shown(repr(value))[:60]}")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise Malformed(f"{where}: the label {shown(repr(value))[:60]} holds a line break or a control character")
    if len(value) > MAX_LABEL_CHARS:
        raise Malformed(f"{where}: a label of {len(value):,} characters (at most {MAX_LABEL_CHARS})")
    return value.strip()


def _ls_who(person) -> str | None:
    if isinstance(person, dict):
        return _text(person.get("email")) or (str(person["id"]) if "id" in person else None)
    return str(person) if person is not None else None


def _coco(doc: dict, job: JobFolder, by_path: dict[str, LabelRecord], reviewer: str | None) -> ReadReviews:
    from cliplabel_pipeline.core.organising.bundle import needs
    from cliplabel_pipeline.core.organising.coco import mask_array, source_size

    out = ReadReviews("coco")
    cats = {c["id"]: _label(c["name"], f"category {c['id']!r}") for c in doc.get("categories") or []}
    images = {im["id"]: im for im in doc["images"]}
    masks: dict[str, np.ndarray] | None = None
    for i, ann in enumerate(doc["annotations"], 1):
        if not isinstance(ann, dict):
            raise Malformed(f"annotation {i} is not an object")
        name = f"annotation {ann.get('id', i)}"
        label = cats.get(ann.get("category_id"))
        if label is None:
            raise Malformed(f"{name}: category_id {ann.get('category_id')!r} is not among the categories")
        attributes = ann.get("attributes") if isinstance(ann.get("attributes"), dict) else {}
        path = ann.get("path") or attributes.get("path")
        if path not in by_path or by_path[path].kind != "mask":
            if masks is None:
                size = source_size(job)
                masks = {}
                for r in by_path.values():
                    if r.kind == "mask":
                        try:
                            masks[r.path] = mask_array(job, r.path, size)
                        except ImageSkipped:
                            continue
            path, iou = _overlapping(ann, images, masks, needs("pycocotools.mask", "coco", "reading a COCO file"),
                                     size)
            if path is None:
                out.unmatched.append(Unmatched(name, f"it overlaps no mask of the job (best intersection over "
                                                     f"union {iou:.2f}, {MIN_IOU} needed)"))
                continue
        rec = by_path[path]
        out.reviews.append(Review(path, _decision(label, rec), label, rec.top1, reviewer, "coco"))
    return out


def _overlapping(ann: dict, images: dict, masks: dict[str, np.ndarray], mask_util,
                 size: tuple[int, int]) -> tuple[str | None, float]:
    """The job's mask ``ann`` overlaps most, and by how much. Only a mask drawn on the job's own source can
    match, so one of another size is never decoded: what a file says of its size costs nothing here."""
    image = images.get(ann.get("image_id"))
    seg = ann.get("segmentation")
    if image is None or not seg:
        return None, 0.0
    h, w = image.get("height"), image.get("width")
    if (w, h) != tuple(size) or (isinstance(seg, dict) and seg.get("size") != [h, w]):
        return None, 0.0  # drawn on a picture of another size: it cannot be one of this job's masks
    if isinstance(seg, list) and sum(len(p) if isinstance(p, list) else 1 for p in seg) > MAX_POLYGON_NUMBERS:
        raise Malformed(f"annotation {ann.get('id')!r}: a polygon of over {MAX_POLYGON_NUMBERS:,} numbers")
    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = mask_util.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    theirs = mask_util.decode(rle).astype(bool)
    best, best_iou = None, 0.0
    for path, mask in masks.items():
        if mask.shape != theirs.shape:
            continue
        union = np.logical_or(mask, theirs).sum()
        iou = float(np.logical_and(mask, theirs).sum() / union) if union else 0.0
        if iou > best_iou:
            best, best_iou = path, iou
    return (best, best_iou) if best_iou >= MIN_IOU else (None, best_iou)
