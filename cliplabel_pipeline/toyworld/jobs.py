"""Synthetic segmentation jobs from the toy world, shaped like the segmentation service's output.

    <root>/<job_id>/source.png        several objects on a background
    <root>/<job_id>/masks/obj_NN.png  one binary mask per object, the size of source.png
    <root>/<job_id>/objects/obj_NN.png RGBA cut-out of each object, cropped to its box
    <root>/<job_id>/ground_truth.csv  path,label for every mask and object
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image

from cliplabel_pipeline.toyworld.draw import LABELS, draw_object, random_background


def _place_boxes(rng: random.Random, n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(200 * n):
        if len(boxes) == n:
            break
        side = rng.randint(min(width, height) // 5, min(width, height) // 2)
        w, h = side, int(side * rng.uniform(0.85, 1.15))
        x0, y0 = rng.randint(0, width - w), rng.randint(0, height - min(h, height))
        box = (x0, y0, x0 + w, min(height, y0 + h))
        if all(box[2] + 4 <= b[0] or b[2] + 4 <= box[0] or box[3] + 4 <= b[1] or b[3] + 4 <= box[1] for b in boxes):
            boxes.append(box)
    return boxes


def write_toy_job(root: Path, job_id: str, seed: int, n_objects: int = 4, size: tuple[int, int] = (256, 192),
                  labels: list[str] | None = None) -> Path:
    """Write one toy job under ``root``; ``labels`` picks the objects' labels (random when not given)."""
    rng = random.Random(seed)
    width, height = size
    job = Path(root) / job_id
    (job / "masks").mkdir(parents=True, exist_ok=True)
    (job / "objects").mkdir(parents=True, exist_ok=True)
    source = Image.new("RGB", size, random_background(rng))
    boxes = _place_boxes(rng, len(labels) if labels else n_objects, width, height)
    truth, cutouts = [], []
    for i, box in enumerate(boxes):
        label = labels[i] if labels else rng.choice(LABELS)
        mask = Image.new("L", size, 0)
        draw_object(source, mask, label, box, rng)
        name = f"obj_{i:02d}.png"
        mask.save(job / "masks" / name)
        truth += [(f"masks/{name}", label), (f"objects/{name}", label)]
        cutouts.append((name, box, mask))
    for name, box, mask in cutouts:  # boxes never overlap, so each cut-out holds one object
        cutout = source.crop(box).convert("RGBA")
        cutout.putalpha(mask.crop(box))
        cutout.save(job / "objects" / name)
    source.save(job / "source.png")
    with (job / "ground_truth.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(truth)
    return job


def write_toy_jobs(root: Path, n_jobs: int, seed: int = 0, prefix: str = "toy") -> list[str]:
    """Write ``n_jobs`` toy jobs named ``<prefix>-NNN``; returns their ids."""
    ids = []
    for i in range(n_jobs):
        job_id = f"{prefix}-{i:03d}"
        write_toy_job(root, job_id, seed=seed * 1000 + i)
        ids.append(job_id)
    return ids
