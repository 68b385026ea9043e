"""Throughput of cliplabel beside the image encoder alone and Transformers' zero-shot pipeline.

    python benchmarks/benchmark.py [--images 1000] [--big 10000] [--peer-images 4] [--workdir DIR]

Without downloadable weights it uses a full-size ViT-B/32 (``CLIPConfig()`` defaults) with random weights:
the same compute as the real model. Every measurement runs in a fresh child process, so peak RSS figures are
independent; compare the ratios printed by one run (the machine may be shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
BATCH = 32


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux ``clear_refs``), so a later reading covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        print("warning: cannot reset the peak RSS here; figures include model loading", file=sys.stderr)


def prepare(workdir: Path, n_images: int, n_big: int) -> dict:
    """A random-weight ViT-B/32 in Transformers format, and jobs of ``n_images`` and ``n_big`` object images."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from cliplabel_pipeline.core.concepts import load_bank
    from cliplabel_pipeline.toyworld.draw import LABELS, draw_sample
    from cliplabel_pipeline.toyworld.tokenizer import build_toy_tokenizer

    model_dir = workdir / "vit-b-32-random"
    if not (model_dir / "model.safetensors").is_file():
        torch.manual_seed(0)
        bank = load_bank()
        words = " ".join(list(bank.names) + list(bank.templates)).replace("{}", " ").replace(".", " . ").split()
        CLIPModel(CLIPConfig()).save_pretrained(model_dir)
        build_toy_tokenizer(words, 77).save_pretrained(model_dir)
        CLIPImageProcessor().save_pretrained(model_dir)
    pool = workdir / "pool"
    if not pool.is_dir():
        pool.mkdir(parents=True)
        rng = random.Random(0)
        for i in range(64):
            draw_sample(LABELS[i % len(LABELS)], 320, rng).save(pool / f"img_{i:02d}.jpg", quality=90)
    results = workdir / "results"
    for n in (n_images, n_big):
        job = results / f"bench-{n}"
        if (job / "objects").is_dir():
            continue
        (job / "objects").mkdir(parents=True)
        os.link(pool / "img_00.jpg", job / "source.png")
        files = sorted(pool.iterdir())
        for i in range(n - 1):
            os.link(files[i % len(files)], job / "objects" / f"obj_{i:05d}.jpg")
    return {"model": str(model_dir), "results": str(results)}


def encoder_alone(handle, workdir: Path, seconds: float) -> float:
    """Items/s of the image tower alone on already-preprocessed real images, fixed batch shape."""
    import numpy as np
    import torch

    from cliplabel_pipeline.core.encode import encode_images
    from cliplabel_pipeline.core.images import load_rgb, preprocess

    pool = sorted(Path(workdir, "pool").iterdir())[:BATCH]
    pixels = torch.from_numpy(np.stack([preprocess(load_rgb(p)[0], 224, 224, handle.mean, handle.std) for p in pool]))
    encode_images(handle, pixels, BATCH)  # warm-up: oneDNN plans for this shape
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        encode_images(handle, pixels, BATCH)
        n += BATCH
    return n / (time.perf_counter() - start)


def child(mode: str, args) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    from cliplabel_pipeline.core.heartbeat import peak_rss_mb
    from cliplabel_pipeline.core.labeller import Labeller
    from cliplabel_pipeline.core.model import load_clip
    from cliplabel_pipeline.core.stages import label_job, record_stage
    from cliplabel_pipeline.core.store import now

    out: dict = {"mode": mode, "precision": args.precision}
    if mode == "encoder":
        handle = load_clip(args.model, "cpu", args.precision)
        out["items_per_s"] = encoder_alone(handle, Path(args.workdir), args.seconds)
        out["precision"] = handle.precision
    elif mode == "text":
        start = time.perf_counter()
        labeller = Labeller.create(args.model, "cpu", args.precision, cache_dir=Path(args.workdir, "text-cache"))
        out.update(seconds=time.perf_counter() - start, cache_hit=labeller.text_cache_hit,
                   concepts=len(labeller.bank.names), prompts=len(labeller.bank.names) * len(labeller.bank.templates))
    elif mode == "e2e":
        labeller = Labeller.create(args.model, "cpu", args.precision, cache_dir=Path(args.workdir, "text-cache"),
                                   batch_size=BATCH)
        assert labeller.text_cache_hit, "run the text step first"
        before = encoder_alone(labeller.handle, Path(args.workdir), args.seconds)
        out["peak_rss_after_load_mb"] = peak_rss_mb()
        reset_peak_rss()  # from here on the peak is that of labelling itself
        start, started = time.perf_counter(), now()
        records, embedded = label_job(labeller, Path(args.results), f"bench-{args.n}")
        folder = Path(args.results, f"bench-{args.n}")
        record_stage(Path(args.workdir, "bench.duckdb"), f"bench-{args.n}", folder, records, embedded, labeller, started)
        seconds = time.perf_counter() - start
        peak = peak_rss_mb()
        after = encoder_alone(labeller.handle, Path(args.workdir), args.seconds)
        out.update(items=len(records), items_per_s=len(records) / seconds, encode_only_s=embedded.seconds,
                   precision=labeller.handle.precision, encoder_items_per_s=(before + after) / 2,
                   encoder_before=before, encoder_after=after, peak_rss_mb=peak)
    elif mode == "peer":
        from PIL import Image
        from transformers import pipeline

        from cliplabel_pipeline.core.concepts import load_bank

        handle = load_clip(args.model, "cpu", args.precision)
        pipe = pipeline("zero-shot-image-classification", model=args.model, device="cpu", dtype=handle.dtype)
        names = list(load_bank().names)
        images = [Image.open(p).convert("RGB") for p in sorted(Path(args.workdir, "pool").iterdir())[:args.n]]
        pipe(images[0], candidate_labels=names[:8])  # warm-up
        start = time.perf_counter()
        for img in images:
            pipe(img, candidate_labels=names)
        out.update(items=len(images), items_per_s=len(images) / (time.perf_counter() - start), labels=len(names))
    out.setdefault("peak_rss_mb", peak_rss_mb())
    return out


def run_child(mode: str, args, **extra) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--workdir", str(args.workdir), "--model", args.model,
           "--results", args.results, "--precision", extra.get("precision", "auto"),
           "--n", str(extra.get("n", 0)), "--seconds", str(args.seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark step {mode} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {mode:8s} {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()})}",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10000)
    parser.add_argument("--peer-images", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each encoder-alone measurement")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cliplabel-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    from cliplabel_pipeline.core.model import cpu_has_native_bf16

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"preparing model and images in {args.workdir} ...", flush=True)
    paths = prepare(args.workdir, args.images, args.big)
    args.model, args.results = paths["model"], paths["results"]
    for stale in Path(args.workdir, "text-cache").glob("*.npy"):
        stale.unlink()
    Path(args.workdir, "bench.duckdb").unlink(missing_ok=True)
    print(f"cores {os.cpu_count()}, native bf16: {cpu_has_native_bf16()}, batch {BATCH}")
    text_cold = run_child("text", args)
    text_warm = run_child("text", args)
    enc = run_child("encoder", args)
    enc32 = run_child("encoder", args, precision="fp32") if enc["precision"] != "fp32" else enc
    small = run_child("e2e", args, n=args.images)
    big = run_child("e2e", args, n=args.big)
    peer = run_child("peer", args, n=args.peer_images)
    encoder = small["encoder_items_per_s"]  # measured in the same process, before and after (b)
    print("\nresults (items/s; ViT-B/32, random weights, CPU)")
    print(f"  (a) encoder alone, {enc['precision']}:            {encoder:8.1f}  (same process as (b), before and after it)")
    print(f"      encoder alone, {enc['precision']} / fp32:     {enc['items_per_s']:8.1f} / {enc32['items_per_s']:.1f}  (fresh processes)")
    print(f"  (b) end-to-end, {args.images} images:         {small['items_per_s']:8.1f}")
    print(f"  (c) transformers pipeline, full bank:   {peer['items_per_s']:8.3f}  ({peer['labels']} candidate labels)")
    print(f"  (b)/(a) = {small['items_per_s'] / encoder:.2f}   (b)/(c) = {small['items_per_s'] / peer['items_per_s']:.0f}x"
          f"   {enc['precision']}/fp32 encoder = {enc['items_per_s'] / enc32['items_per_s']:.2f}x")
    print(f"  concept bank: {text_cold['concepts']} concepts, {text_cold['prompts']} prompts encoded in "
          f"{text_cold['seconds']:.1f}s; second start-up (cache hit: {text_warm['cache_hit']}) {text_warm['seconds']:.1f}s")
    print(f"  peak RSS while labelling: {small['peak_rss_mb']} MB at {args.images} images, {big['peak_rss_mb']} MB "
          f"at {args.big} ({100 * (big['peak_rss_mb'] / small['peak_rss_mb'] - 1):+.1f}%); after loading the model: "
          f"{small['peak_rss_after_load_mb']} MB")
    print(f"  end-to-end at {args.big} images: {big['items_per_s']:.1f} items/s")


if __name__ == "__main__":
    main()
