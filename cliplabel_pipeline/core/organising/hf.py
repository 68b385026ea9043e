"""A Hugging Face ``imagefolder`` of a labelled job: ``datasets.load_dataset("imagefolder", data_dir=DIR)`` loads
it offline, one row per labelled item. The image is what was classified (the source, the cut-out, the region of
the source under a mask, outside painted grey), as PNG; ``metadata.jsonl`` holds ``label``, ``score``,
``match``, ``kind``, ``path`` and ``label_source``; ``classes.txt`` lists the class names, one a line, so
``label`` casts to a ``ClassLabel(names_file=...)``.
"""

from __future__ import annotations

import functools
import io
import json

from PIL import Image

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.organising.bundle import BundleFile, left_out
from cliplabel_pipeline.core.organising.zip_names import UniqueNames, flat_item_name
from cliplabel_pipeline.core.reading.images import (
    crop_source_under_mask,
    load_rgb,
    open_image,
)
from cliplabel_pipeline.core.reading.picture import ImageSkipped
from cliplabel_pipeline.core.values import LabelRecord

METADATA, CLASSES, IMAGES = "metadata.jsonl", "classes.txt", "images"


def classified_image(job: JobFolder, rec: LabelRecord, source) -> Image.Image:
    """What the model saw of ``rec``: a mask as the region of ``source()`` under it, else the file upright."""
    try:
        fh = job.open_item(rec.path)
    except CliplabelError as exc:
        raise ImageSkipped(str(exc)) from None
    with fh:
        if rec.kind == "mask":
            return crop_source_under_mask(source(), fh)[0]
        img = open_image(fh)
    return img if img.mode in ("L", "LA", "RGB", "RGBA") else img.convert("RGBA" if "A" in img.getbands() else "RGB")


def hf_bundle(job: JobFolder, records: list[LabelRecord]) -> list[BundleFile]:
    """The imagefolder of ``records`` (items a person rejected are left out), in the order given."""
    @functools.cache
    def source():
        with job.open_item(SOURCE_NAME) as fh:
            return load_rgb(fh)[0]

    files, rows, names = [], [], UniqueNames()
    for rec in (r for r in records if r.label is not None):
        try:
            img = classified_image(job, rec, source)
        except (ImageSkipped, CliplabelError) as exc:
            left_out("hf", rec.path, str(exc))
            continue
        stem = flat_item_name(rec.path).rsplit(".", 1)[0]
        name = f"{IMAGES}/{names.take(IMAGES, stem + '.png')}"
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files.append(BundleFile(name, buf.getvalue()))
        rows.append({"file_name": name, "label": rec.label, "score": rec.confidence, "match": rec.match,
                     "kind": rec.kind, "path": rec.path, "label_source": rec.label_source, "top1": rec.top1})
    classes = sorted({r["label"] for r in rows})
    files.append(BundleFile(METADATA, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")))
    files.append(BundleFile(CLASSES, "".join(c + "\n" for c in classes).encode("utf-8")))
    return files
