"""COCO instance segmentation of a labelled job: ``annotations.json`` (one image, the job's ``source.png``; one
annotation per labelled mask, its mask as compressed RLE), ``results.json`` (the model's predictions as a COCO
results list, for ``COCO.loadRes`` and ``COCOeval``) and the source image at its ``file_name``.

Masks are encoded with pycocotools (the ``coco`` extra), so every tool that decodes COCO RLE gets back the very
pixels cliplabel classified: the mask turned upright and brought to the source's size as the mask rule does.
"""

from __future__ import annotations

import json

import numpy as np

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.organising.bundle import BundleFile, left_out, needs
from cliplabel_pipeline.core.reading.images import load_picture, mask_on_source
from cliplabel_pipeline.core.reading.picture import ImageSkipped
from cliplabel_pipeline.core.values import LabelRecord, Provenance

ANNOTATIONS, RESULTS = "annotations.json", "results.json"
IMAGE_ID = 1


def source_size(job: JobFolder) -> tuple[int, int]:
    """``(width, height)`` of the upright ``source.png``; one line when it cannot be read."""
    try:
        with job.open_item(SOURCE_NAME) as fh:
            return load_picture(fh, reduced=False)[0].size
    except (CliplabelError, ImageSkipped) as exc:
        raise CliplabelError(f"job {job.id!r}: {SOURCE_NAME} cannot be read ({exc}); masks lie on it") from None


def mask_array(job: JobFolder, path: str, size: tuple[int, int]) -> np.ndarray:
    """Mask ``path`` as a bool ``[h, w]`` array over the source; ``ImageSkipped`` with the reason."""
    try:
        fh = job.open_item(path)
    except CliplabelError as exc:
        raise ImageSkipped(str(exc)) from None
    with fh:
        return mask_on_source(fh, size)


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a bool mask, ``counts`` as a string (as COCO's JSON files hold it)."""
    mask_util = needs("pycocotools.mask", "coco", "COCO's mask encoding")
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def category_ids(records: list[LabelRecord]) -> dict[str, int]:
    """Every label the exported masks use, the model's top-1 included (the results refer to it), from 1."""
    names = sorted({r.label for r in records} | {r.top1 for r in records})
    return {name: i for i, name in enumerate(names, 1)}


def coco_bundle(job: JobFolder, records: list[LabelRecord], provenance: Provenance) -> list[BundleFile]:
    """The COCO export of ``records`` (their masks; items a person rejected are left out)."""
    masks = [r for r in records if r.kind == "mask" and r.label is not None]
    width, height = source_size(job)
    cats = category_ids(masks)
    annotations, results = [], []
    mask_util = needs("pycocotools.mask", "coco", "the coco export")
    for rec in masks:
        try:
            mask = mask_array(job, rec.path, (width, height))
        except ImageSkipped as exc:
            left_out("coco", rec.path, str(exc))
            continue
        rle = encode_mask(mask)
        coded = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        area, bbox = int(mask_util.area(coded)), [float(x) for x in mask_util.toBbox(coded)]
        annotations.append({
            "id": len(annotations) + 1, "image_id": IMAGE_ID, "category_id": cats[rec.label], "segmentation": rle,
            "area": area, "bbox": bbox, "iscrowd": 0,
            "score": rec.confidence, "match": rec.match, "top1": rec.top1, "label_source": rec.label_source,
            "top_k": [{"name": x.name, "score": x.score} for x in rec.labels], "path": rec.path,
        })
        results.append({"image_id": IMAGE_ID, "category_id": cats[rec.top1], "segmentation": rle,
                        "score": rec.confidence, "path": rec.path})
    doc = {
        "info": {"description": f"cliplabel labels of job {job.id}", "version": provenance.bank_version,
                 "contributor": "cliplabel", "model": provenance.model},
        "licenses": [],
        "images": [{"id": IMAGE_ID, "file_name": SOURCE_NAME, "width": width, "height": height, "job_id": job.id}],
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in cats.items()],
    }
    return [BundleFile(ANNOTATIONS, _json(doc)), BundleFile(RESULTS, _json(results)),
            BundleFile(SOURCE_NAME, item=SOURCE_NAME)]


def _json(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8")
