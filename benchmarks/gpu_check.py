"""The CUDA path checked and measured on a GPU machine in one run: `make gpu-check` (benchmarks/gpu_check.sh).

    python benchmarks/gpu_check.py [--out DIR] [--dry] [--objects 10000] [--photos 2000] [--budget-s 420]

Runs the CUDA tests of the core (pytest -m gpu and the GPU input path's own tests), then measures, on a
full-size ViT-B/32 with random weights (``CLIPConfig()`` defaults: the real model's compute) in fp16: the
encoder alone, decoding alone, the GPU preprocessing alone, end to end (job folder to embeddings) on one job of
``--objects`` cut-outs with their masks and a 640x480 source, and on ``--photos`` jobs of one 4032x3024 JPEG
source; the concept bank encoded cold; and the per-file path on part of the object job. Every stage has a time
box and the whole run a budget; ``figures.json`` is rewritten after each stage, so a cut-off run keeps what it
measured. ``--dry`` runs everything but the CUDA parts on the CPU with small sizes. Writes ``gpu-check.log``
and ``figures.json`` to ``--out`` (default ``$OUT``, else ``gpu-check-out``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"encoder_img_s": 15000, "end_to_end_items_s": 6000, "end_to_end_vs_encoder": 0.5, "bank_cold_s": 5.0}


class StageTimeout(Exception):
    pass


class Check:
    """The log, the figures and the clock of one run."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.deadline = out, time.monotonic() + budget_s
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = (out / "gpu-check.log").open("w")
        self.figures: dict = {"command": " ".join([sys.executable, *sys.argv]), "stages": {}}

    def say(self, *parts) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] " + " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def save(self) -> None:
        tmp = self.out / "figures.json.tmp"
        tmp.write_text(json.dumps(self.figures, indent=1, default=str))
        os.replace(tmp, self.out / "figures.json")

    def stage(self, name: str, limit_s: float, run, *args):
        """``run(*args)`` (a dict of figures) within ``limit_s`` and what is left of the budget; recorded."""
        left = self.deadline - time.monotonic()
        if left < 5:
            self.say(f"{name}: skipped, the run's budget is spent")
            self.figures["stages"][name] = {"status": "skipped: budget spent"}
            self.save()
            return None
        limit = max(1, int(min(limit_s, left)))
        self.say(f"{name}: start (time box {limit} s)")
        t0 = time.perf_counter()

        def expire(*_):
            raise StageTimeout(f"over its {limit} s time box")
        signal.signal(signal.SIGALRM, expire)
        signal.alarm(limit)
        try:
            figures = run(*args) or {}
            figures["status"] = "ok"
        except StageTimeout as exc:
            figures = {"status": f"timed out: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a stage's failure is reported and the next stage runs
            import traceback
            figures = {"status": f"failed: {type(exc).__name__}: {exc}"}
            self.say(traceback.format_exc())
        finally:
            signal.alarm(0)
        figures["seconds"] = round(time.perf_counter() - t0, 2)
        self.figures["stages"][name] = figures
        self.say(f"{name}: {json.dumps(figures, default=str)}")
        self.save()
        return figures


# ---- the data, made on the machine (its cores, cheaply) ----

def _write_masks(args) -> int:
    """Masks ``start..stop`` of the object job (ellipses and boxes at random), each with its tight cut-out."""
    import numpy as np
    from PIL import Image, ImageDraw

    job, start, stop, seed = args
    source = Image.open(job / "source.png").convert("RGB")
    rng = np.random.default_rng(seed)
    for i in range(start, stop):
        w, h = (int(v) for v in rng.integers(24, 200, 2))
        x, y = int(rng.integers(0, 640 - w)), int(rng.integers(0, 480 - h))
        mask = Image.new("L", (640, 480), 0)
        draw = ImageDraw.Draw(mask)
        (draw.ellipse if i % 2 else draw.rectangle)((x, y, x + w - 1, y + h - 1), fill=255)
        name = f"obj_{i:05d}.png"
        mask.save(job / "masks" / name, compress_level=1)
        box = mask.getbbox()
        cutout = source.crop(box).convert("RGBA")
        cutout.putalpha(mask.crop(box))
        cutout.save(job / "objects" / name, compress_level=1)
    return stop - start


def _photo(args) -> bytes:
    import numpy as np
    from PIL import Image, ImageDraw

    seed, size = args
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, (h // 64, w // 64, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)  # smooth, like a photo, and quick to make
    draw = ImageDraw.Draw(img)
    for _ in range(20):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        draw.ellipse((x, y, x + w // 8, y + h // 8), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_data(work: Path, objects: int, photos: int, photo_size: tuple[int, int], cores: int) -> dict:
    import numpy as np
    from PIL import Image

    job = work / "results" / "objects-job"
    (job / "masks").mkdir(parents=True)
    (job / "objects").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    src = np.stack([(xx // 3 + yy // 5) % 256, (xx * yy // 97) % 256, (yy // 2) % 256], -1)
    Image.fromarray((src + rng.integers(0, 30, src.shape)).clip(0, 255).astype(np.uint8)).save(job / "source.png")
    step = max(1, objects // (cores * 4))
    with Pool(cores) as pool:
        pool.map(_write_masks, [(job, s, min(objects, s + step), s) for s in range(0, objects, step)])
        distinct = pool.map(_photo, [(s, photo_size) for s in range(min(32, photos))])
    for i in range(photos):
        folder = work / "results" / f"photo-{i:05d}"
        folder.mkdir()
        (folder / "source.png").write_bytes(distinct[i % len(distinct)])  # a JPEG, named as a job's source
    return {"objects": objects, "object_job_files": 2 * objects + 1, "photos": photos, "photo_size": photo_size,
            "photo_mb": round(np.mean([len(d) for d in distinct]) / 1e6, 2)}


def make_model(work: Path, dry: bool) -> Path:
    from cliplabel_pipeline.core.labelling.concepts import load_bank
    from cliplabel_pipeline.toyworld.tokenizer import save_random_vit_b32

    model_dir = save_random_vit_b32(work / "vit-b-32-random")
    bank = load_bank()
    if dry:  # a bank of 10 concepts, so the cold encoding stays short on a CPU
        (model_dir / "concepts.txt").write_text("\n".join(list(bank.names)[:10]) + "\n")
    return {"model_dir": str(model_dir), "bank_concepts": 10 if dry else len(bank.names)}


# ---- the measurements ----

def run_tests(dry: bool) -> dict:
    files = ["cliplabel_pipeline_tests/core/encoding/test_cuda.py", "cliplabel_pipeline_tests/core/encoding/test_gpu_input.py"]
    cmd = [sys.executable, *(["-S"] if sys.flags.no_site else []), "-m", "pytest", *files, "-p", "no:cacheprovider",
           "-rfEs", "--tb=line"]  # pyproject adds -q; one more would drop the summary line
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=170)
    lines = (done.stdout + done.stderr).strip().splitlines()
    # pytest's last line is its summary ("N passed, M failed ... in Ss"); -rfE lists each failure by name
    summary = next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                                  or "error" in ln)), "")
    failures = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return {"returncode": done.returncode, "summary": summary, "failures": failures, "tail": lines[-15:]}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoder_alone(handle, batch: int, seconds: float) -> dict:
    import torch

    x = torch.randn(batch, 3, handle.crop_size, handle.crop_size, device=handle.device).to(handle.dtype)
    with torch.inference_mode():
        for _ in range(3):
            handle.model.get_image_features(pixel_values=x)
        _sync(handle.device)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            handle.model.get_image_features(pixel_values=x)
            n += batch
            if n % (batch * 4) == 0:
                _sync(handle.device)
        _sync(handle.device)
    dt = time.perf_counter() - t0
    return {"batch": batch, "images": n, "img_s": round(n / dt, 1), "precision": handle.precision}


def decoding_alone(manifest, photos, cores: int) -> dict:
    """Decoding with nothing else, by ``cores`` threads and by ``cores`` processes (``decode_pool``, the pool the
    GPU path uses; started and warmed before the clock): the masks into their boxes, and the photo sources
    into their own crops (as the CPU path makes them)."""
    from cliplabel_pipeline.core.encoding.decode_pool import decode_masks, decode_pool, decode_source
    from cliplabel_pipeline.core.encoding.gpu_input import MASK_TASK

    job, masks = manifest.job, [i.path for i in manifest.items if i.kind == "mask"]
    runs = [masks[k:k + MASK_TASK] for k in range(0, len(masks), MASK_TASK)]
    some = photos[:max(cores * 8, 1)]
    out = {"cores": cores, "masks": len(masks), "photos": len(some)}
    for mode in ("threads", "processes"):
        pool = decode_pool(cores, processes=mode == "processes")
        try:
            t0 = time.perf_counter()
            list(pool.map(decode_masks, [job] * cores, [[m] for m in masks[:cores]], [[None]] * cores,
                          [(640, 480)] * cores))
            out[f"{mode}_start_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            list(pool.map(decode_masks, [job] * len(runs), runs, [[None] * len(r) for r in runs],
                          [(640, 480)] * len(runs)))
            out[f"{mode}_masks_s"] = round(len(masks) / (time.perf_counter() - t0), 1)
            t0 = time.perf_counter()
            list(pool.map(decode_source, [m.job for m in some], ["source.png"] * len(some), [False] * len(some),
                          [224] * len(some), [224] * len(some)))
            out[f"{mode}_photos_s"] = round(len(some) / (time.perf_counter() - t0), 1)
        finally:
            pool.shutdown()
    out["masks_s"], out["photos_s"] = out["processes_masks_s"], out["processes_photos_s"]
    return out


def preprocessing_alone(handle, manifest, device: str, cores: int, limit: int) -> dict:
    """The masks' crops built on the device from masks already there (decoding and the model left out)."""
    import numpy as np
    import torch

    from cliplabel_pipeline.core.encoding.decode_pool import decode_masks, decode_source
    from cliplabel_pipeline.core.encoding.device_crops import Boxes, build_crops
    from cliplabel_pipeline.core.reading.images import OBJECT_MARGIN
    from cliplabel_pipeline.core.encoding.gpu_input import MASK_CHUNK

    job, masks = manifest.job, [i.path for i in manifest.items if i.kind == "mask"][:limit]
    cuts = [c for c in decode_masks(job, masks, [None] * len(masks), (640, 480)) if not isinstance(c, str)]
    source = torch.from_numpy(decode_source(job, "source.png", True, 224, 224).rgb.copy()).to(device)
    chunks = []
    for k in range(0, len(cuts), MASK_CHUNK):
        part = cuts[k:k + MASK_CHUNK]
        levels = np.zeros((len(part), max(c.inside.shape[0] for c in part), max(c.inside.shape[1] for c in part)),
                          np.uint8)
        for j, c in enumerate(part):
            levels[j, :c.inside.shape[0], :c.inside.shape[1]] = c.inside * np.uint8(255)
        boxes = torch.tensor([c.box for c in part], device=device)
        chunks.append((boxes, torch.from_numpy(levels).to(device)))
    with torch.inference_mode():
        def once():
            for boxes, levels in chunks:
                build_crops(source, Boxes(boxes, boxes[:, 2:] - boxes[:, :2]), levels, True, handle.crop_size,
                            handle.image_size, handle.mean, handle.std, handle.dtype, levels_at_box=True,
                            margin=OBJECT_MARGIN)
            _sync(device)
        once()
        t0, rounds = time.perf_counter(), 0
        while rounds < 3 and time.perf_counter() - t0 < 3:
            once()
            rounds += 1
        dt = time.perf_counter() - t0
    return {"crops": len(cuts) * rounds, "crops_s": round(len(cuts) * rounds / dt, 1)}


def end_to_end(handle, manifests, label: str, processes: bool = True) -> dict:
    """Job folders to embeddings by the GPU input path (``embed_jobs_on_device``), its decoding pool started
    inside the clock."""
    from cliplabel_pipeline.core.encoding.gpu_input import choose_batch_size, embed_jobs_on_device

    t0 = time.perf_counter()
    items = skipped = 0
    for embedded in embed_jobs_on_device(handle, manifests, processes=processes):
        items += len(embedded.items)
        skipped += len(embedded.skipped)
    _sync(handle.device)
    dt = time.perf_counter() - t0
    return {"what": label, "decoding": "processes" if processes else "threads", "jobs": len(manifests),
            "items": items, "skipped": skipped,
            "items_s": round((items + skipped) / dt, 1), "batch": choose_batch_size(handle.device)}


def per_file_path(handle, manifest, n: int) -> dict:
    """The per-file loader (``embed_images`` over ``job_loaders``) on the first ``n`` items, for comparison."""
    from dataclasses import replace

    from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders

    part = replace(manifest, items=manifest.items[:n])
    t0 = time.perf_counter()
    embedded = embed_images(handle, job_loaders(part), 256 if handle.device.startswith("cuda") else 32)
    dt = time.perf_counter() - t0
    return {"items": len(embedded.items), "items_s": round(len(part.items) / dt, 1)}


def bank_cold(handle, work: Path) -> dict:
    from cliplabel_pipeline.core.labelling.concepts import bank_for
    from cliplabel_pipeline.core.labelling.index import build_concept_index
    from cliplabel_pipeline.core.values import BankSpec

    bank = bank_for(BankSpec(), handle.model_dir)
    cache = work / "cold-cache"
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    build_concept_index(handle, bank, cache)
    _sync(handle.device)
    return {"concepts": len(bank.names), "templates": len(bank.templates), "bank_s": round(time.perf_counter() - t0, 2)}


def verdict(stages: dict) -> dict:
    """Each target met or not, and where one is missed, the stage that bounds it (the slowest per item)."""
    get = lambda stage, key: (stages.get(stage) or {}).get(key)  # noqa: E731
    enc, e2e, bank = get("encoder_alone", "img_s"), get("end_to_end_objects", "items_s"), get("bank_cold", "bank_s")
    out = {}
    if enc:
        out["encoder_img_s"] = {"value": enc, "target": TARGETS["encoder_img_s"], "met": enc >= TARGETS["encoder_img_s"]}
    if e2e:
        out["end_to_end_items_s"] = {"value": e2e, "target": TARGETS["end_to_end_items_s"],
                                     "met": e2e >= TARGETS["end_to_end_items_s"]}
        if enc:
            ratio = round(e2e / enc, 3)
            out["end_to_end_vs_encoder"] = {"value": ratio, "target": 0.5, "met": ratio >= 0.5}
        # items per second each stage alone could feed: two items (mask and its cut-out) per mask decoded or
        # built, one per crop encoded twice over (one crop stands for two items)
        bounds = {"decoding": (get("decoding_alone", "masks_s") or 0) * 2,
                  "gpu_preprocessing": (get("preprocessing_alone", "crops_s") or 0) * 2,
                  "encoder": (enc or 0) * 2}
        bounds = {k: round(v, 1) for k, v in bounds.items() if v}
        if bounds:
            out["bound_by"] = min(bounds, key=bounds.get)
            out["stage_bounds_items_s"] = bounds
    if bank is not None:
        out["bank_cold_s"] = {"value": bank, "target": TARGETS["bank_cold_s"], "met": bank <= TARGETS["bank_cold_s"]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"))
    parser.add_argument("--dry", action="store_true", help="everything but the CUDA parts, on the CPU, small")
    parser.add_argument("--objects", type=int)
    parser.add_argument("--photos", type=int)
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    check = Check(args.out, args.budget_s)
    import torch

    from cliplabel_pipeline.core.encoding.model import load_clip
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.reading.items import list_job_items

    cuda = torch.cuda.is_available() and not args.dry
    if not cuda and not args.dry:
        check.say("no CUDA device here: run with --dry on a CPU (nothing is simulated)")
        return 2
    cores = os.cpu_count() or 1
    objects = args.objects or (60 if args.dry else 10_000)
    photos = args.photos or (16 if args.dry else 2_000)
    photo_size = (800, 600) if args.dry else (4032, 3024)
    device = "cuda" if cuda else "cpu"
    check.figures["machine"] = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "cores": cores, "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": sys.version.split()[0], "dry": args.dry,
        "transformers": __import__("transformers").__version__, "pillow": __import__("PIL").__version__}
    check.say("machine", check.figures["machine"])
    check.save()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    check.stage("tests", 180, run_tests, args.dry)
    check.stage("data", 90, make_data, work, objects, photos, photo_size, cores)
    model_dir = work / "vit-b-32-random"
    check.stage("model", 60, make_model, work, args.dry)
    handle = load_clip(str(model_dir), device, "auto")
    results = work / "results"
    obj = list_job_items(JobFolder.open(results, "objects-job"))
    photo_jobs = [list_job_items(JobFolder.open(results, f"photo-{i:05d}")) for i in range(photos)]
    from cliplabel_pipeline.core.encoding.gpu_input import choose_batch_size

    check.stage("bank_cold", 60, bank_cold, handle, work)
    check.stage("encoder_alone", 40, encoder_alone, handle, 8 if args.dry else choose_batch_size(device),
                1 if args.dry else 15)
    check.stage("decoding_alone", 60, decoding_alone, obj, photo_jobs, cores)
    check.stage("preprocessing_alone", 40, preprocessing_alone, handle, obj, device, cores, 32 if args.dry else 1024)
    check.stage("end_to_end_objects", 90, end_to_end, handle, [obj], "object job")
    check.stage("end_to_end_objects_threads", 60, end_to_end, handle, [obj], "object job", False)
    check.stage("end_to_end_photos", 60, end_to_end, handle, photo_jobs, "photo jobs")
    check.stage("per_file_path", 40, per_file_path, handle, obj, 20 if args.dry else 4000)
    check.figures["verdict"] = verdict(check.figures["stages"])
    check.say("verdict", json.dumps(check.figures["verdict"]))
    check.save()
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    tests = check.figures["stages"].get("tests") or {}
    return 0 if tests.get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
