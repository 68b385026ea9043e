"""Where every millisecond of ``cliplabel job`` goes: per item, for each stage, beside the encoder alone.

    python benchmarks/stages.py [--items 400,10000] [--seconds 10] [--precision auto] [--workdir DIR]
                                [--decoding background,in-turn]

A full-size ViT-B/32 with random weights (``CLIPConfig()`` defaults: the real model's compute) labels jobs of
``--items`` items each against the whole bundled bank: one 320x240 toy source with its masks and cut-outs,
the masks and cut-outs repeated under new names until the job has that many items (each one decoded and
cropped as a new file is). In one process, for each job size:

- the encoder alone on preprocessed batches, measured before and after the job (this machine drifts);
- decoding and preprocessing alone, one thread, on a sample of the job's items: what each item costs;
- ``process_job`` end to end (with its DuckDB rows), timed stage by stage through the core's progress calls:
  encoding (the model, with decoding and preprocessing by the background processes ahead of it), scoring (and
  writing ``labels.jsonl`` and the rows), grouping, exporting, report;

and prints a table in milliseconds per item. ``--decoding background,in-turn`` labels each job twice, once as
cliplabel does (background decoding processes) and once with decoding in turn with the model (threads, as
where processes cannot start), for the difference in one run. "The model" is the time of the job's own batches
(normalised and encoded, as the pipeline times each), so the split holds however the machine drifts;
"outside the model" is everything else the job spent: what a faster encoder would leave behind. The ratio
to the encoder alone uses the mean of the measurements before and after the job, and moves with the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BATCH = 32


def write_job(root: Path, job_id: str, n_items: int) -> Path:
    """A toy job of ``n_items`` items: source, masks and cut-outs, the objects repeated under new names."""
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    job = write_toy_job(root, job_id, seed=27, n_objects=8, size=(320, 240))
    masks, objects = sorted((job / "masks").iterdir()), sorted((job / "objects").iterdir())
    have, copy = 1 + len(masks) + len(objects), 0
    while have < n_items:
        folder, originals = (job / "masks", masks) if copy % 2 == 0 else (job / "objects", objects)
        original = originals[(copy // 2) % len(originals)]
        os.link(original, folder / f"{original.stem}_{copy:05d}.png")
        have, copy = have + 1, copy + 1
    return job


def encoder_alone(handle, job: Path, seconds: float) -> float:
    """Items/s of the image tower alone on preprocessed batches of the job's own cut-outs."""
    import numpy as np

    from cliplabel_pipeline.core.encoding.decode_pool import crop_of
    from cliplabel_pipeline.core.encoding.encode import encode_images
    from cliplabel_pipeline.core.reading.images import load_picture, normalise_batch

    files = sorted((job / "objects").iterdir())
    crops = [crop_of(load_picture(files[i % len(files)])[0], "object", handle.image_size, handle.crop_size)
             for i in range(BATCH)]
    pixels = normalise_batch(np.stack(crops), handle.mean, handle.std)
    encode_images(handle, pixels, BATCH)  # warm-up: the kernels' plans for this shape
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        encode_images(handle, pixels, BATCH)
        n += BATCH
    return n / (time.perf_counter() - start)


def decode_and_preprocess(handle, job: Path, sample: int) -> tuple[float, float]:
    """Seconds per item, on one thread, to decode (a mask: read it and cut the source under it) and to
    preprocess (crop, pad, resize to the model's input) a sample of the job's items."""
    from cliplabel_pipeline.core.encoding.decode_pool import crop_of
    from cliplabel_pipeline.core.encoding.embedding import job_loaders
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.reading.items import list_job_items

    items = list_job_items(JobFolder.open(job.parent, job.name))
    jobs = list(job_loaders(items))
    picked = random.Random(0).sample(jobs, min(sample, len(jobs)))
    for _, loader in picked[:4]:  # the source's one decode, and first-call costs, out of the figures
        loader()
    decoded, decode_s = [], 0.0
    for item, loader in picked:
        t0 = time.perf_counter()
        img, _ = loader()
        decode_s += time.perf_counter() - t0
        decoded.append((item, img))
    t0 = time.perf_counter()
    for item, img in decoded:
        crop_of(img, item.kind, handle.image_size, handle.crop_size)
    return decode_s / len(picked), (time.perf_counter() - t0) / len(picked)


class StageClock:
    """A core ``Progress`` that notes when each stage starts and ends."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        name = stage.split(": ", 1)[-1]
        if done == 0 and name not in self.started:
            self.started[name] = time.perf_counter()
        elif total is not None and done >= total and name not in self.seconds:
            self.seconds[name] = time.perf_counter() - self.started[name]


def measure(labeller, root: Path, n_items: int, seconds: float, db_path: Path, decoding: str) -> dict:
    from cliplabel_pipeline.core.encoding import embedding
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.pipeline import process_job
    from cliplabel_pipeline.core.values import LabelSettings

    job = root / f"stages-{n_items}"
    if not job.is_dir():
        write_job(root, job.name, n_items)
    background_pool = embedding.background_pool
    if decoding == "in-turn":  # as where no process can be started: each batch decoded by threads, then encoded
        embedding.background_pool = lambda workers, start=True: None
    handle = labeller.encoder
    decode_s, preprocess_s = decode_and_preprocess(handle, job, 256)
    before = encoder_alone(handle, job, seconds)
    clock = StageClock()
    start = time.perf_counter()
    try:
        done = process_job(labeller, JobFolder.open(root, job.name), LabelSettings(batch_size=BATCH), db_path, clock)
    finally:
        embedding.background_pool = background_pool
    total = time.perf_counter() - start
    after = encoder_alone(handle, job, seconds)
    items = len(done.labelled.records)
    model_s = items / ((before + after) / 2)
    me = psutil.Process()
    pool = background_pool(1)  # the process's own pool, as the job used it (its processes by pid)
    decoders = [psutil.Process(pid) for pid in (getattr(pool, "_processes", None) or {})]
    return {"items": items, "decoding": decoding, "encoder": (before, after), "decode": decode_s, "preprocess": preprocess_s,
            "stages": clock.seconds, "total": total, "alone": model_s,
            "model": sum(done.labelled.embedded.batch_seconds), "rss_mb": me.memory_info().rss / 2**20,
            "decoders_rss_mb": sum(p.memory_info().rss for p in decoders) / 2**20}


def table(results: list[dict]) -> list[str]:
    ms = lambda seconds, n: f"{1000 * seconds / n:.2f}"  # noqa: E731
    head = "| ms per item | " + " | ".join(f"{r['items']:,} items, {r['decoding']}" for r in results) + " |"
    lines = [head, "|---|" + "---|" * len(results)]

    def row(name: str, values: list[str]) -> None:
        lines.append(f"| {name} | " + " | ".join(values) + " |")

    row("encoder alone (before / after the job), img/s",
        [f"{r['encoder'][0]:.1f} / {r['encoder'][1]:.1f}" for r in results])
    row("decode, one thread (a mask: read it, cut the source under it)", [ms(r["decode"], 1) for r in results])
    row("preprocess, one thread (crop, pad, resize)", [ms(r["preprocess"], 1) for r in results])
    row("encoding stage (the model, fed by the background decoding processes)",
        [ms(r["stages"].get("encoding", 0), r["items"]) for r in results])
    row("  of which the model (the job's batches: normalise, encode)", [ms(r["model"], r["items"]) for r in results])
    row("  of which waiting for decoded items (not hidden by the model)",
        [ms(r["stages"].get("encoding", 0) - r["model"], r["items"]) for r in results])
    for stage in ("scoring", "grouping", "exporting", "report"):
        row(stage, [ms(r["stages"].get(stage, 0), r["items"]) for r in results])
    row("end to end", [ms(r["total"], r["items"]) for r in results])
    row("**outside the model** (end to end less the model's batches)",
        [f"**{ms(r['total'] - r['model'], r['items'])}**" for r in results])
    row("end to end / encoder alone (mean of before and after)",
        [f"{r['alone'] / r['total']:.2f} x" for r in results])
    row("RSS after the job, MB: this process / the decoding processes",
        [f"{r['rss_mb']:.0f} / {r['decoders_rss_mb']:.0f}" for r in results])
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="400,10000", help="job sizes, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each encoder-alone measurement")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workdir", type=Path, help="keep the model, the bank's cache and the jobs here")
    ap.add_argument("--decoding", default="background",
                    help="comma-separated: background (as cliplabel decodes on the CPU), in-turn (threads, then the model)")
    args = ap.parse_args()
    sizes = [int(n) for n in args.items.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        from cliplabel_pipeline.core.labeller import Labeller
        from cliplabel_pipeline.core.settings import Settings
        from cliplabel_pipeline.toyworld.tokenizer import save_random_vit_b32

        model_dir = work / "vit-b-32-random"
        if not (model_dir / "model.safetensors").is_file():
            save_random_vit_b32(model_dir)
        start = time.perf_counter()
        labeller = Labeller.load(Settings(model=str(model_dir), device="cpu", precision=args.precision,
                                          cache_dir=work / "text-cache"))
        print(f"model loaded, bank of {len(labeller.index.names):,} concepts ready in "
              f"{time.perf_counter() - start:.1f}s ({labeller.encoder.precision}, {os.cpu_count()} cores)",
              file=sys.stderr)
        root = work / "results"
        root.mkdir(exist_ok=True)
        results = []
        for n in sizes:
            for decoding in args.decoding.split(","):
                results.append(measure(labeller, root, n, args.seconds, work / f"stages-{n}.duckdb", decoding))
                print(f"{n} items, decoding {decoding}: done", file=sys.stderr)
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
