"""Files that are valid but costly, or that sit at and just past each limit of ``core/reading``, put in a job
one case at a time: each is either labelled or skipped with its reason, the job still succeeds, and the run
stays within a stated CPU time and memory growth per case (process CPU, this process and its children; peak
resident memory over what was resident before, Linux's VmHWM reset per case)."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, target
from PIL import Image

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.reading.budget import MAX_FRAMES, MAX_JPEG_SCANS, MAX_PNG_CHUNKS, MAX_SCAN_MEGAPIXELS
from cliplabel_pipeline.core.reading.images import MAX_DECODE_BYTES, MAX_PIXELS
from cliplabel_pipeline.core.reading.items import MAX_DEPTH, MAX_FILE_BYTES, MAX_NAME_BYTES
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.toyworld.demo import TOY_MODEL_DIR
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.hostile_images import png_header_only
from cliplabel_pipeline_tests.untrusted import costly_files as cf

CPU_S = 5.0  # what one file may cost, labelling included: CPU seconds ...
MEMORY_MB = MAX_DECODE_BYTES / 1e6 + 250  # ... and resident memory over the job's own (the decode budget + slack)
LABELLED, SKIPPED, EITHER = "labelled", "skipped", "either"


@dataclass
class Cost:
    cpu: float = 0.0
    wall: float = 0.0
    peak_mb: float | None = None


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _cpu() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


@contextlib.contextmanager
def measured():
    cost = Cost()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from what is resident now
        rss = _status("VmRSS")
    except OSError:
        rss = None
    cpu, wall = _cpu(), time.monotonic()
    yield cost
    cost.cpu, cost.wall = _cpu() - cpu, time.monotonic() - wall
    if rss is not None:
        cost.peak_mb = (_status("VmHWM") - rss) / 1024


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The toy model loaded and its concept index cached once, so a case pays only for its own file."""
    root = tmp_path_factory.mktemp("warm")
    write_toy_job(root, "warm", seed=7, n_objects=1)
    assert main(["job", "warm", "--results-root", str(root), "--model", str(TOY_MODEL_DIR), "--precision", "fp32",
                 "--db", str(root / "db.duckdb")]) == 0


@pytest.fixture
def bare_job(results_root, warm) -> Path:
    """A toy job holding its source and nothing else: the case's files are the only items."""
    job = write_toy_job(results_root, "job", seed=7, n_objects=1)
    for kind in ("masks", "objects"):
        shutil.rmtree(job / kind)
        (job / kind).mkdir()
    return job


def label(job: Path) -> tuple[Cost, dict[str, str], dict[str, str]]:
    """``cliplabel job`` on ``job``, measured; ``(cost, {labelled path: top1}, {skipped path: reason})``."""
    with measured() as cost:
        rc = main(["job", job.name, "--results-root", str(job.parent), "--model", str(TOY_MODEL_DIR),
                   "--precision", "fp32", "--db", str(job.parent.parent / "lineage.duckdb")])
    assert rc == 0
    labelled = {r["path"]: r["top1"] for r in read_jsonl(job / "labels.jsonl")}
    skipped = {s["path"]: s["reason"] for s in read_jsonl(job / "skipped.jsonl")} \
        if (job / "skipped.jsonl").is_file() else {}
    return cost, labelled, skipped


def noise(side: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8))


def _write(job: Path, rel: str, data: bytes) -> list[str]:
    (job / rel).parent.mkdir(parents=True, exist_ok=True)
    (job / rel).write_bytes(data)
    return [rel]


def _sparse(job: Path, rel: str, size: int, head: bytes = b"") -> list[str]:
    cf.sparse(job / rel, size, head)
    return [rel]


def _flat(job: Path, rel: str, w: int, h: int) -> list[str]:
    cf.flat_png(job / rel, w, h)
    return [rel]


def _many_empty(job: Path, n: int) -> list[str]:
    for i in range(n):
        (job / "objects" / f"e{i:05d}.png").touch()
    return [f"objects/e{i:05d}.png" for i in range(n)]


def _special(job: Path) -> list[str]:
    os.mkfifo(job / "objects" / "fifo.png")
    cf.unix_socket(job / "objects" / "socket.png")
    made = ["objects/fifo.png", "objects/socket.png"]
    if cf.mknod_char(job / "objects" / "device.png"):
        made.append("objects/device.png")
    return made


_SMALL_PNG = io.BytesIO()
Image.new("RGB", (40, 30), (200, 20, 20)).save(_SMALL_PNG, "PNG")
# The tallest 1-pixel strip whose decode fits MAX_DECODE_BYTES (4 bytes a pixel, 8 a row, two raw PNG rows).
STRIP_AT = (MAX_DECODE_BYTES - 6) // 12
EXTRA_AT = MAX_JPEG_SCANS - cf.scans_of_pillow()  # repeated scans that bring Pillow's to the limit
# Width x height whose MAX_JPEG_SCANS scans come to MAX_SCAN_MEGAPIXELS exactly (6250 x 5000 for 64 and 2,000).
SCAN_W = 6250
SCAN_H = int(MAX_SCAN_MEGAPIXELS * 1e6 / MAX_JPEG_SCANS / SCAN_W)
slow = pytest.mark.slow


def case(build, expected, reason=None, cpu_s=CPU_S, memory_mb=MEMORY_MB, marks=()):
    return pytest.param(build, expected, reason, cpu_s, memory_mb, marks=marks)


# build(job) -> paths made; the outcome expected; a word of the skip reason; CPU seconds and MB allowed
CASES = {
    "progressive JPEG of 1,000 scans (4000 px, 220 KB)": case(
        lambda j: _write(j, "objects/scans.jpg", cf.progressive_jpeg(4000, 1000)), SKIPPED, "scans"),
    "progressive JPEG of 1,000 scans behind one junk byte": case(
        lambda j: _write(j, "objects/hidden_scans.jpg", cf.progressive_jpeg(4000, 1000, b"\x00")), EITHER),
    "progressive JPEG at the scan limit": case(
        lambda j: _write(j, "objects/scans_at.jpg", cf.progressive_jpeg(1000, EXTRA_AT)), LABELLED),
    "progressive JPEG one scan past the scan limit": case(
        lambda j: _write(j, "objects/scans_past.jpg", cf.progressive_jpeg(1000, EXTRA_AT + 1)), SKIPPED, "scans"),
    "progressive JPEG at the scan-megapixel limit": case(
        lambda j: _write(j, "objects/smp_at.jpg", cf.progressive_jpeg((SCAN_W, SCAN_H), EXTRA_AT)), LABELLED),
    "progressive JPEG one row past the scan-megapixel limit": case(
        lambda j: _write(j, "objects/smp_past.jpg", cf.progressive_jpeg((SCAN_W, SCAN_H + 1), EXTRA_AT)), SKIPPED,
        "scan-megapixels"),
    "PNG with its pixels in 1-byte IDAT chunks (12,000 chunks)": case(
        lambda j: _write(j, "objects/idat.png", cf.png_split_idat(noise(64), 1)), LABELLED),
    "PNG at the chunk limit": case(
        lambda j: _write(j, "objects/chunks_at.png", cf.png_with_chunks(noise(16), MAX_PNG_CHUNKS - 3)), LABELLED),
    "PNG one chunk past the chunk limit": case(
        lambda j: _write(j, "objects/chunks_past.png", cf.png_with_chunks(noise(16), MAX_PNG_CHUNKS - 2, b"zzZz")),
        SKIPPED, "chunks"),
    "animated PNG at the frame limit": case(
        lambda j: _write(j, "objects/frames_at.png", cf.apng(MAX_FRAMES)), LABELLED),
    "animated PNG one frame past the frame limit": case(
        lambda j: _write(j, "objects/frames_past.png", cf.apng(MAX_FRAMES + 1)), SKIPPED, "frames"),
    "animated PNG of 3,000 frames": case(
        lambda j: _write(j, "objects/frames.png", cf.apng(3000)), SKIPPED, "frames"),
    "animated WEBP at the frame limit": case(
        lambda j: _write(j, "objects/frames_at.webp", cf.animated_webp(MAX_FRAMES)), LABELLED),
    "animated WEBP of 1,000 frames": case(
        lambda j: _write(j, "objects/frames.webp", cf.animated_webp(1000)), SKIPPED, "frames"),
    "WEBP of 3000 x 3000": case(lambda j: _write(j, "objects/big.webp", cf.webp(3000)), LABELLED),
    "WEBP header claiming 16384 x 16384": case(
        lambda j: _write(j, "objects/claims.webp", cf.webp_claiming(16384, 16384)), SKIPPED),
    "PNG header at MAX_PIXELS, no pixels": case(
        lambda j: _write(j, "objects/at.png", png_header_only(9000, MAX_PIXELS // 9000)), SKIPPED),
    "PNG header one row past MAX_PIXELS": case(
        lambda j: _write(j, "objects/past.png", png_header_only(9000, MAX_PIXELS // 9000 + 1)), SKIPPED,
        "decompression bomb"),
    "flat PNG of exactly MAX_PIXELS": case(
        lambda j: _flat(j, "objects/flat_at.png", 9000, MAX_PIXELS // 9000), LABELLED, marks=slow),
    "JPEG frame header at MAX_PIXELS": case(
        lambda j: _write(j, "objects/at.jpg", cf.jpeg_claiming(9000, MAX_PIXELS // 9000)), EITHER),
    "JPEG frame header past MAX_PIXELS": case(
        lambda j: _write(j, "objects/past.jpg", cf.jpeg_claiming(9000, MAX_PIXELS // 9000 + 1)), SKIPPED,
        "decompression bomb"),
    "1-pixel strip at MAX_DECODE_BYTES, no pixels": case(
        lambda j: _write(j, "objects/strip_at.png", cf.png_strip(STRIP_AT)), SKIPPED),
    "1-pixel strip past MAX_DECODE_BYTES": case(
        lambda j: _write(j, "objects/strip_past.png", cf.png_strip(STRIP_AT + 1)), SKIPPED, "decompression bomb"),
    "sparse 20 GB file in masks/": case(
        lambda j: _sparse(j, "masks/huge.png", 20 << 30, b"\x89PNG\r\n\x1a\n"), SKIPPED, "GB"),
    "PNG padded (sparse) to exactly MAX_FILE_BYTES": case(  # reading 1 GB to hash it is allowed this once
        lambda j: _sparse(j, "objects/padded_at.png", MAX_FILE_BYTES, _SMALL_PNG.getvalue()), LABELLED,
        cpu_s=2 * CPU_S, marks=slow),
    "PNG padded (sparse) one byte past MAX_FILE_BYTES": case(
        lambda j: _sparse(j, "objects/padded_past.png", MAX_FILE_BYTES + 1, _SMALL_PNG.getvalue()), SKIPPED, "GB"),
    "a name at the name limit": case(
        lambda j: _write(j, "objects/" + "n" * (MAX_NAME_BYTES - 4) + ".png", _SMALL_PNG.getvalue()), LABELLED),
    "a name one byte past the name limit": case(
        lambda j: _write(j, "objects/" + "n" * (MAX_NAME_BYTES - 3) + ".png", _SMALL_PNG.getvalue()), SKIPPED,
        "byte"),
    "2,000 empty files in one folder": case(lambda j: _many_empty(j, 2000), SKIPPED, "empty file", cpu_s=2 * CPU_S),
    "a FIFO, a socket and a device named like images": case(_special, SKIPPED, "regular file"),
}


@pytest.mark.parametrize(("build", "expected", "reason", "cpu_s", "memory_mb"), list(CASES.values()), ids=list(CASES))
def test_a_costly_file_is_labelled_or_skipped_within_its_budget(build, expected, reason, cpu_s, memory_mb, bare_job):
    made = build(bare_job)
    cost, labelled, skipped = label(bare_job)
    for rel in made:
        assert rel in labelled or rel in skipped, f"{rel} is neither labelled nor skipped"
        if expected == LABELLED:
            assert rel in labelled, f"{rel} skipped: {skipped.get(rel)}"
        elif expected == SKIPPED:
            assert skipped.get(rel), f"{rel} labelled, a skip was expected"
            if reason:
                assert reason in skipped[rel], skipped[rel]
    assert cost.cpu <= cpu_s, f"{cost.cpu:.1f} s of CPU (wall {cost.wall:.1f} s), over {cpu_s} s"
    if cost.peak_mb is not None:
        assert cost.peak_mb <= memory_mb, f"{cost.peak_mb:,.0f} MB over what was resident, over {memory_mb:,.0f}"


def test_folders_1100_deep_are_walked_to_the_limit_and_the_rest_skipped_with_a_reason(bare_job):
    made = cf.deep_folders(bare_job / "objects", 1100)
    try:
        cost, labelled, skipped = label(bare_job)
    finally:
        cf.remove_deep_folders(bare_job / "objects")
    folders = [p for p, r in skipped.items() if "levels deep" in r]
    assert len(folders) == 1, skipped
    for path in made:
        rel = path.relative_to(bare_job).as_posix()
        assert rel in labelled or rel.startswith(folders[0] + "/"), rel
    depth = max(rel.count("/") for rel in labelled)  # objects/d/.../at_N.png: N folders below objects/
    assert MAX_DEPTH - 2 <= depth <= MAX_DEPTH, depth
    assert cost.cpu <= 2 * CPU_S, f"{cost.cpu:.1f} s of CPU"


# --- generated: Hypothesis looks for the costliest file it can make in each family ------------------------
_IMG = noise(64)
families = st.one_of(
    st.builds(lambda n, side, junk: ("objects/scans.jpg", cf.progressive_jpeg(side, n, junk)),
              st.integers(0, 300), st.sampled_from([512, 2048, 4096]), st.sampled_from([b"", b"\x00", b"junk"])),
    st.builds(lambda c: ("objects/idat.png", cf.png_split_idat(_IMG, c)), st.integers(1, 4096)),
    st.builds(lambda n, k: ("objects/chunks.png", cf.png_with_chunks(_IMG, n, k)), st.integers(0, 20_000),
              st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"zzZz", b"sPLT"])),
    st.builds(lambda w, h: ("objects/claims.png", png_header_only(w, h)), st.integers(1, 2**31 - 1),
              st.integers(1, 2**31 - 1)),
    st.builds(lambda w, h: ("objects/claims.jpg", cf.jpeg_claiming(w, h)), st.integers(1, 65535),
              st.integers(1, 65535)),
    st.builds(lambda w, h: ("objects/claims.webp", cf.webp_claiming(w, h)), st.integers(1, 16384),
              st.integers(1, 16384)),
    st.builds(lambda n: ("objects/frames.png", cf.apng(n)), st.integers(1, 500)),
)


@settings(max_examples=max(5, settings().max_examples // 2))  # a job run each: half the stateful budget
@given(made=families)
def test_a_generated_costly_file_is_labelled_or_skipped_within_its_budget(made, tmp_path_factory, warm):
    rel, data = made
    root = tmp_path_factory.mktemp("generated")
    job = write_toy_job(root, "job", seed=7, n_objects=1)
    _write(job, rel, data)
    cost, labelled, skipped = label(job)
    target(cost.cpu, label="CPU seconds")  # steer the search towards the costliest files
    assert rel in labelled or skipped.get(rel), f"{rel} is neither labelled nor skipped with a reason"
    assert cost.cpu <= CPU_S, f"{len(data):,} bytes took {cost.cpu:.1f} s of CPU (wall {cost.wall:.1f} s)"
    if cost.peak_mb is not None:
        assert cost.peak_mb <= MEMORY_MB, f"{cost.peak_mb:,.0f} MB over what was resident"
    shutil.rmtree(root)
