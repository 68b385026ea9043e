"""A Label Studio project of a labelled job: ``tasks.json`` in Label Studio's task import format, with the
model's prediction on every task, and ``label_config.xml``, the labelling interface those predictions fit.

Each task is one item: ``data.image`` the picture a person looks at (a mask's task shows the source, with the
mask as a ``brushlabels`` region in Label Studio's own RLE), ``data.item`` the item's path in the job (how a
review comes back to it), ``data.job_id``. The prediction's ``choices`` result holds the label of record and
its score the model's confidence. Images are referred to as ``image_root`` followed by ``<job>/<path>``; the
default is Label Studio's local files with the results root as the document root.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from pydantic import Field

from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.organising.brush_rle import encode_brush_rle
from cliplabel_pipeline.core.organising.bundle import BundleFile, left_out
from cliplabel_pipeline.core.organising.coco import mask_array, source_size
from cliplabel_pipeline.core.reading.picture import ImageSkipped
from cliplabel_pipeline.core.values import JsonForm, LabelRecord, Provenance

DEFAULT_IMAGE_ROOT = "/data/local-files/?d="
TASKS, CONFIG = "tasks.json", "label_config.xml"
IMAGE, CHOICES, BRUSH, DECISION = "image", "label", "mask", "decision"  # the interface's tag names
REJECT = "reject"  # the decision choice that sends an item to quarantine at the next cleanup


def label_config(names: list[str]) -> str:
    """The labelling interface: the image, one choice of label, a brush for masks, and a reject choice."""
    choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in names)
    brush = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in names)
    return (f'<View>\n  <Image name="{IMAGE}" value="$image" zoom="true"/>\n  <Text name="item" value="$item"/>\n'
            f'  <Choices name="{CHOICES}" toName="{IMAGE}" choice="single" showInline="false">\n{choices}\n'
            f'  </Choices>\n  <BrushLabels name="{BRUSH}" toName="{IMAGE}">\n{brush}\n  </BrushLabels>\n'
            f'  <Choices name="{DECISION}" toName="{IMAGE}" choice="single">\n    <Choice value="{REJECT}"/>\n'
            f'  </Choices>\n</View>\n')


def model_version(provenance: Provenance) -> str:
    return f"cliplabel {provenance.model} bank {provenance.bank_version}"


def image_url(image_root: str, job: JobFolder, path: str) -> str:
    return image_root + quote(f"{job.id}/{path}", safe="/")


# A prediction in Label Studio's form, defined once: ``tasks.json`` writes it (``to_json``) and the ML backend's
# ``/predict`` answers it; the field order is the order of the keys Label Studio has always been sent.
@dataclass(frozen=True)
class Choices:
    choices: list[str]


@dataclass(frozen=True, kw_only=True)
class ChoicesResult:
    """The label of record, as the interface's single choice, scored with the model's confidence."""

    id: Literal["label"] = "label"
    from_name: Literal["label"] = CHOICES
    to_name: Literal["image"] = IMAGE
    type: Literal["choices"] = "choices"
    value: Choices
    score: float


@dataclass(frozen=True, kw_only=True)
class Brush:
    format: Literal["rle"] = "rle"
    rle: list[int]
    brushlabels: list[str]


@dataclass(frozen=True, kw_only=True)
class BrushResult:
    """A mask as a brush region over the source picture, in Label Studio's RLE."""

    id: Literal["mask"] = "mask"
    from_name: Literal["mask"] = BRUSH
    to_name: Literal["image"] = IMAGE
    type: Literal["brushlabels"] = "brushlabels"
    original_width: int
    original_height: int
    image_rotation: int = 0
    value: Brush
    score: float


@dataclass(frozen=True)
class Prediction(JsonForm):
    """The model's prediction for one task (no result: nothing to suggest, and Label Studio shows the task bare)."""

    model_version: str
    score: float
    result: list[Annotated[ChoicesResult | BrushResult, Field(discriminator="type")]] = field(default_factory=list)


def prediction(rec: LabelRecord, version: str, mask=None) -> Prediction:
    """The model's prediction for one item, as Label Studio takes it: a ``choices`` result with the label of
    record, and for a mask a ``brushlabels`` result with the mask over the source."""
    result: list[ChoicesResult | BrushResult] = [ChoicesResult(value=Choices([rec.label]), score=rec.confidence)]
    if mask is not None:
        h, w = mask.shape
        result.append(BrushResult(original_width=w, original_height=h, score=rec.confidence,
                                  value=Brush(rle=encode_brush_rle(mask), brushlabels=[rec.label])))
    return Prediction(version, rec.confidence, result)


def labelstudio_bundle(job: JobFolder, records: list[LabelRecord], provenance: Provenance,
                       image_root: str = DEFAULT_IMAGE_ROOT) -> list[BundleFile]:
    """``tasks.json`` and ``label_config.xml`` for ``records`` (in the order given; items a person rejected are
    left out). The names to choose from are every label of record and every top-k name of the items."""
    version = model_version(provenance)
    size = functools.cache(lambda: source_size(job))
    tasks = []
    for rec in (r for r in records if r.label is not None):
        mask = None
        if rec.kind == "mask":
            try:
                mask = mask_array(job, rec.path, size())
            except ImageSkipped as exc:
                left_out("labelstudio", rec.path, str(exc))
                continue
        shown = SOURCE_NAME if rec.kind == "mask" else rec.path
        tasks.append({"data": {"image": image_url(image_root, job, shown), "item": rec.path, "job_id": job.id,
                               "kind": rec.kind, "top1": rec.top1, "label_source": rec.label_source},
                      "predictions": [prediction(rec, version, mask).to_json()]})
    names = sorted({r.label for r in records if r.label} | {x.name for r in records for x in r.labels})
    return [BundleFile(TASKS, json.dumps(tasks, ensure_ascii=False).encode("utf-8")),
            BundleFile(CONFIG, label_config(names).encode("utf-8"))]
