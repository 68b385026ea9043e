"""Throughput of cliplabel beside the image encoder alone and Transformers' zero-shot pipeline.

    python benchmarks/benchmark.py [--images 1000] [--big 10000] [--rounds 2] [--peer-images 2]
                                   [--seconds 10] [--no-int8] [--workdir DIR]

Without downloadable weights it uses a full-size ViT-B/32 (``CLIPConfig()`` defaults) with random weights:
the same compute as the real model. Every measurement runs in a fresh child process, so peak RSS figures are
independent; the encoder alone and end to end alternate inside one process, so their ratio is not skewed
by the drift of a shared machine. ``--big 0 --no-int8`` skips the slowest parts.
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
    from cliplabel_pipeline.toyworld.draw import LABELS, draw_sample
    from cliplabel_pipeline.toyworld.tokenizer import save_random_vit_b32

    model_dir = workdir / "vit-b-32-random"
    if not (model_dir / "model.safetensors").is_file():
        save_random_vit_b32(model_dir)
    pool = workdir / "pool"
    if not pool.is_dir():
        pool.mkdir(parents=True)
        rng = random.Random(0)
        for i in range(64):
            draw_sample(LABELS[i % len(LABELS)], 320, rng).save(pool / f"img_{i:02d}.jpg", quality=90)
    results = workdir / "results"
    for n in (n_images, n_big) if n_big else (n_images,):
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

    from cliplabel_pipeline.core.encoding.encode import encode_images
    from cliplabel_pipeline.core.reading.images import load_rgb, preprocess

    pool = sorted(Path(workdir, "pool").iterdir())[:BATCH]
    pixels = torch.from_numpy(np.stack([preprocess(load_rgb(p)[0], 224, 224, handle.mean, handle.std) for p in pool]))
    encode_images(handle, pixels, BATCH)  # warm-up: oneDNN plans for this shape
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        encode_images(handle, pixels, BATCH)
        n += BATCH
    return n / (time.perf_counter() - start)


def gemm_gflops(dtype, seconds: float = 3.0) -> float:
    """GFLOP/s of one ViT-B/32 MLP matmul (1,600 x 768 x 3,072) in ``dtype``: what the hardware allows."""
    import torch

    a, w = torch.randn(BATCH * 50, 768).to(dtype), torch.randn(3072, 768).to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(a, w)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        torch.nn.functional.linear(a, w)
        n += 1
    return n * 2 * a.shape[0] * 768 * 3072 / (time.perf_counter() - start) / 1e9


def _labeller(args, precision: str):
    from cliplabel_pipeline.core.labeller import Labeller
    from cliplabel_pipeline.core.settings import Settings

    return Labeller.load(Settings(model=args.model, device="cpu", precision=precision,
                                  cache_dir=Path(args.workdir, "text-cache")))


def label_once(labeller, args, round_: int) -> tuple[float, object]:
    """(b): label the job end to end and write its DuckDB rows; returns (items/s, embedded)."""
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.pipeline import label_job
    from cliplabel_pipeline.core.pipeline import record_run
    from cliplabel_pipeline.core.values import LabelSettings

    start = time.perf_counter()
    labelled = label_job(labeller, JobFolder.open(Path(args.results), f"bench-{args.n}"), LabelSettings(batch_size=BATCH))
    record_run(Path(args.workdir, f"bench-{args.precision}.duckdb"), f"bench-{args.n}-{round_}", labelled)
    return len(labelled.records) / (time.perf_counter() - start), labelled.embedded


def end_to_end(args) -> dict:
    """(a) and (b) alternated in one process, A B A B ... A, so both see the same machine.

    Each (b) is compared with the mean of the (a) just before and just after it: this shared machine drifts
    by up to 25% within a minute, and a single before/after pair misreads that drift as overhead.
    """
    from cliplabel_pipeline.core.heartbeat import peak_rss_mb

    labeller = _labeller(args, args.precision)
    assert labeller.index.cache_hit, "run the text step first"
    encoder, e2e = [encoder_alone(labeller.encoder, Path(args.workdir), args.seconds)], []
    out = {"precision": labeller.encoder.precision, "peak_rss_after_load_mb": peak_rss_mb()}
    for round_ in range(args.rounds):
        if round_ == 0:
            reset_peak_rss()  # from here on the peak is that of labelling itself
        rate, embedded = label_once(labeller, args, round_)
        if round_ == 0:
            out["peak_rss_mb"] = peak_rss_mb()
        e2e.append(rate)
        encoder.append(encoder_alone(labeller.encoder, Path(args.workdir), args.seconds))
    ratios = [b / ((encoder[i] + encoder[i + 1]) / 2) for i, b in enumerate(e2e)]
    return dict(out, items=len(embedded.items), items_per_s=sum(e2e) / len(e2e), rounds=e2e, encoder=encoder,
                encoder_items_per_s=sum(encoder) / len(encoder), ratios=ratios, ratio=sum(ratios) / len(ratios))


def top1_agreement(args) -> dict:
    """How far bf16 and int8 image embeddings move from fp32 on the full-size model, over the distinct images.

    Two measures: top-1 over the whole bank (the same text embeddings for all three, so only the image
    tower's precision differs), and self-retrieval: each image's embedding must stay nearest to its own
    fp32 embedding among all the images' fp32 embeddings. With random weights every image lands on much the
    same concept, so the first measure is weak; the second still is not: random-weight embeddings of
    different images are close, so small precision errors would already change the nearest one.
    """
    import numpy as np

    from cliplabel_pipeline.core.encoding.embedding import embed_images, path_loaders
    from cliplabel_pipeline.core.encoding.model import load_clip

    cache = Path(args.workdir, "text-cache")
    text = _labeller(args, "auto").index.text_emb
    pool = sorted(Path(args.workdir, "pool").iterdir())
    emb = {p: embed_images(load_clip(args.model, "cpu", p, cache_dir=cache), path_loaders(pool), BATCH).embeddings
           for p in ("fp32", "bf16", "int8")}
    ref, top1 = emb["fp32"], {p: (e @ text.T).argmax(axis=1) for p, e in emb.items()}
    between = ref @ ref.T
    out = {"images": len(pool), "distinct_fp32_top1": int(len(np.unique(top1["fp32"]))),
           "median_cos_between_images": float(np.median(between[~np.eye(len(pool), dtype=bool)]))}
    for p in ("bf16", "int8"):
        out[f"{p}_top1_agrees"] = float((top1[p] == top1["fp32"]).mean())
        out[f"{p}_self_retrieval"] = float(((emb[p] @ ref.T).argmax(axis=1) == np.arange(len(pool))).mean())
        out[f"{p}_min_cos_to_fp32"] = float((emb[p] * ref).sum(axis=1).min())
    return out


def child(mode: str, args) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    from cliplabel_pipeline.core.heartbeat import peak_rss_mb
    from cliplabel_pipeline.core.encoding.model import load_clip

    out: dict = {"mode": mode, "precision": args.precision}
    if mode == "encoder":
        handle = load_clip(args.model, "cpu", args.precision, cache_dir=Path(args.workdir, "text-cache"))
        out["items_per_s"] = encoder_alone(handle, Path(args.workdir), args.seconds)
        out["precision"] = handle.precision
        if handle.precision in ("fp32", "bf16"):
            out["gemm_gflops"] = gemm_gflops(handle.dtype)
    elif mode == "text":
        start = time.perf_counter()
        index = _labeller(args, args.precision).index
        bank = index.bank
        out.update(seconds=time.perf_counter() - start, cache_hit=index.cache_hit,
                   concepts=len(bank.names), prompts=len(bank.names) * len(bank.templates))
    elif mode == "e2e":
        out.update(end_to_end(args))
    elif mode == "agree":
        out.update(top1_agreement(args))
    elif mode == "peer":
        from PIL import Image
        from transformers import pipeline

        from cliplabel_pipeline.core.labelling.concepts import load_bank

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
           "--n", str(extra.get("n", 0)), "--rounds", str(extra.get("rounds", 1)), "--seconds", str(args.seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"benchmark step {mode} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rounded = {k: round(v, 2) if isinstance(v, float) else [round(x, 2) for x in v] if isinstance(v, list) else v
               for k, v in result.items()}
    print(f"  {mode:8s} {json.dumps(rounded)}", flush=True)
    return result


def report(args, text_cold, text_warm, enc, enc32, small, big, int8, agree, peer) -> None:
    p = enc["precision"]
    print("\nresults (items/s; ViT-B/32, random weights, CPU)")
    print(f"  (a) encoder alone, {p}:                 {small['encoder_items_per_s']:8.1f}  "
          f"(in the same process as (b), alternated with it)")
    print(f"  (b) end-to-end, {args.images} images, {p}:    {small['items_per_s']:8.1f}")
    print(f"  (c) transformers pipeline, full bank:     {peer['items_per_s']:8.3f}  ({peer['labels']} candidate labels)")
    print(f"  (b)/(a) = {small['ratio']:.2f} (rounds: {', '.join(f'{r:.2f}' for r in small['ratios'])})"
          f"   (b)/(c) = {small['items_per_s'] / peer['items_per_s']:.0f}x")
    print(f"  encoder alone, fresh processes: {p} {enc['items_per_s']:.1f}, fp32 {enc32['items_per_s']:.1f} "
          f"= {enc['items_per_s'] / enc32['items_per_s']:.2f}x; the hardware's {p}/fp32 matmul ratio here: "
          f"{enc['gemm_gflops']:.0f}/{enc32['gemm_gflops']:.0f} GFLOP/s = {enc['gemm_gflops'] / enc32['gemm_gflops']:.2f}x")
    if int8:
        print(f"  int8 (ONNX Runtime): encoder alone {int8['encoder_items_per_s']:.1f}, end-to-end "
              f"{int8['items_per_s']:.1f}, (b)/(a) = {int8['ratio']:.2f}; {int8['items_per_s'] / enc32['items_per_s']:.2f}x "
              f"fp32 encoder alone")
    if agree:
        print(f"  agreement with fp32 over {agree['images']} distinct images (median cosine between two images "
              f"{agree['median_cos_between_images']:.3f}; {agree['distinct_fp32_top1']} distinct top-1 concepts):")
        for p in ("bf16", "int8"):
            print(f"    {p}: top-1 over the bank {100 * agree[f'{p}_top1_agrees']:.1f}%, nearest to its own fp32 "
                  f"embedding {100 * agree[f'{p}_self_retrieval']:.1f}%, lowest cosine to fp32 "
                  f"{agree[f'{p}_min_cos_to_fp32']:.4f}")
    print(f"  concept bank: {text_cold['concepts']} concepts, {text_cold['prompts']} prompts encoded in "
          f"{text_cold['seconds']:.1f}s; second start-up (cache hit: {text_warm['cache_hit']}) {text_warm['seconds']:.1f}s")
    if big:
        print(f"  peak RSS while labelling: {small['peak_rss_mb']} MB at {args.images} images, {big['peak_rss_mb']} MB "
              f"at {args.big} ({100 * (big['peak_rss_mb'] / small['peak_rss_mb'] - 1):+.1f}%); after loading the "
              f"model: {small['peak_rss_after_load_mb']} MB")
        print(f"  end-to-end at {args.big} images: {big['items_per_s']:.1f} items/s, {big['ratio']:.2f} x (a)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10000, help="second job size, for peak RSS (0: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="(a)/(b) alternations on the first job")
    parser.add_argument("--peer-images", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each encoder-alone measurement")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 (ONNX Runtime) measurements")
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
    from cliplabel_pipeline.core.encoding.devices import cpu_has_native_bf16

    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"preparing model and images in {args.workdir} ...", flush=True)
    paths = prepare(args.workdir, args.images, args.big)
    args.model, args.results = paths["model"], paths["results"]
    for stale in list(Path(args.workdir, "text-cache").glob("*.npy")) + list(Path(args.workdir).glob("*.duckdb")):
        stale.unlink()
    print(f"cores {os.cpu_count()}, native bf16: {cpu_has_native_bf16()}, batch {BATCH}")
    text_cold = run_child("text", args)
    text_warm = run_child("text", args)
    enc = run_child("encoder", args)
    enc32 = run_child("encoder", args, precision="fp32")
    small = run_child("e2e", args, n=args.images, rounds=args.rounds)
    big = run_child("e2e", args, n=args.big) if args.big else None
    int8 = agree = None
    if not args.no_int8:
        int8 = run_child("e2e", args, n=args.images, precision="int8", rounds=args.rounds)
        agree = run_child("agree", args)
    peer = run_child("peer", args, n=args.peer_images)
    report(args, text_cold, text_warm, enc, enc32, small, big, int8, agree, peer)


if __name__ == "__main__":
    main()
