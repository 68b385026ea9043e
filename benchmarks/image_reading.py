"""Reading and preprocessing one image: time per image on ordinary photos, and peak RSS on hostile ones.

    python benchmarks/image_reading.py [--repeat 20] [--workdir DIR] [--against GIT_REV]

Ordinary photos (640 x 480 PNG, 1024 x 768 RGBA PNG, 4032 x 3024 JPEG upright and turned by EXIF) are
read and cropped ``--repeat`` times each in this process; ``--against`` times the same with ``images.py``
as it was at a git revision, for comparison. Hostile images (thin strips, 88 Mpx flat frames, a large mask)
are each read in a fresh process whose peak RSS is reset after importing (Linux), so each figure is what one
image costs. Linux only for the RSS part.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402 - after the path: the tests' images are borrowed

from cliplabel_pipeline_tests import hostile_images as hostile  # noqa: E402

PROBE = """
import json, sys, time
from cliplabel_pipeline.core.reading.images import crop_source_under_mask, letterbox, load_picture, resize_and_crop
def rss(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024
source = load_picture(sys.argv[2], reduced=False)[0] if len(sys.argv) > 2 else None
open("/proc/self/clear_refs", "w").write("5")
before, start = rss("VmRSS"), time.perf_counter()
try:
    if source is None:
        pic, _ = load_picture(sys.argv[1])
        resize_and_crop(pic, 224, 224), letterbox(pic, 224)
    else:
        letterbox(crop_source_under_mask(source, sys.argv[1])[0], 224)
    outcome = "read"
except Exception as exc:
    outcome = f"skipped: {exc}"
print(json.dumps({"peak_mib": round(rss("VmHWM") - before), "seconds": round(time.perf_counter() - start, 2),
                  "outcome": outcome[:90]}))
"""


def ordinary(workdir: Path) -> dict[str, Path]:
    import numpy as np

    rng = np.random.default_rng(0)

    def photo(w, h):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx // 7) % 256, (yy // 5) % 256, ((xx + yy) // 9) % 256], -1)
        return Image.fromarray(np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8))

    turned = Image.Exif()
    turned[hostile.ORIENTATION] = 6
    files = {"640x480 PNG": (photo(640, 480), "PNG", {}), "1024x768 RGBA PNG": (photo(1024, 768).convert("RGBA"), "PNG", {}),
             "4032x3024 JPEG": (photo(4032, 3024), "JPEG", {"quality": 90}),
             "4032x3024 JPEG turned by EXIF": (photo(4032, 3024), "JPEG", {"quality": 90, "exif": turned})}
    out = {}
    for name, (img, fmt, kw) in files.items():
        out[name] = workdir / (name.replace(" ", "_") + "." + fmt.lower())
        img.save(out[name], format=fmt, **kw)
    return out


def time_reading(module, files: dict[str, Path], repeat: int) -> dict[str, float]:
    """Milliseconds per image for decode + CLIP crop with ``module`` (an ``images.py``)."""
    load = getattr(module, "load_picture", None) or module.load_rgb
    result = {}
    for name, path in files.items():
        load(path)  # warm the page cache
        start = time.perf_counter()
        for _ in range(repeat):
            module.resize_and_crop(load(path)[0], 224, 224)
        result[name] = round(1000 * (time.perf_counter() - start) / repeat, 1)
    return result


def images_module_at(rev: str, workdir: Path):
    source = subprocess.run(["git", "show", f"{rev}:cliplabel_pipeline/core/reading/images.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = workdir / "images_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("images_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hostile_files(workdir: Path) -> dict[str, tuple[Path, ...]]:
    red = (220, 30, 30)
    Image.new("RGB", (9_400, 9_400), red).save(workdir / "prog.jpg", quality=90, progressive=True)
    Image.new("RGB", (4_900, 4_900), red).save(workdir / "flat.webp", lossless=True)
    source = hostile.write_flat_png(workdir / "source.png", 9_400, 9_400, b"\xc8\x1e\x1e", 2)
    return {
        "1 x 20,000 PNG (165 bytes)": (hostile.write_flat_png(workdir / "s1.png", 1, 20_000, b"\xc8\x1e\x1e", 2),),
        "1 x 90,000 PNG": (hostile.write_flat_png(workdir / "s2.png", 1, 90_000, b"\xc8\x1e\x1e", 2),),
        "1 x 30,000,000 RGBA PNG": (hostile.write_flat_png(workdir / "s3.png", 1, 30_000_000, b"\xc8\x1e\x1e\xff", 6),),
        "1 x 60,000,000 grey PNG": (hostile.write_flat_png(workdir / "s4.png", 1, 60_000_000, b"\xc8", 0),),
        "20,000,000 x 1 RGBA PNG": (hostile.write_flat_png(workdir / "s5.png", 20_000_000, 1, b"\xc8\x1e\x1e\xff", 6),),
        "9,400 x 9,400 RGBA PNG": (hostile.write_flat_png(workdir / "f1.png", 9_400, 9_400, b"\xc8\x1e\x1e\x80", 6),),
        "9,400 x 9,400 RGB PNG": (source,),
        "9,400 x 9,400 progressive JPEG": (workdir / "prog.jpg",),
        "4,900 x 4,900 WEBP": (workdir / "flat.webp",),
        "9,400 x 9,400 mask with alpha (source decoded)": (
            hostile.write_flat_png(workdir / "mask.png", 9_400, 9_400, b"\xff\x80", 4), source),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--against", help="a git revision whose images.py to time as well")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cliplabel-images-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from cliplabel_pipeline.core.reading import images

    files = ordinary(workdir)
    report = {"ms_per_image": time_reading(images, files, args.repeat)}
    if args.against:
        report[f"ms_per_image_at_{args.against}"] = time_reading(images_module_at(args.against, workdir), files,
                                                                 args.repeat)
    report["one_image_in_a_fresh_process"] = {}
    for name, paths in hostile_files(workdir).items():
        run = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], capture_output=True, text=True, check=False,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        report["one_image_in_a_fresh_process"][name] = json.loads(run.stdout) if run.returncode == 0 else run.stderr[-300:]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
