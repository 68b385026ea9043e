"""Where a job's intermediate results live: ``<job>/_cliplabel/``, never in ``masks/`` or ``objects/``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.embedding import Embedded
from cliplabel_pipeline.core.outputs import read_jsonl, write_atomic, write_jsonl

WORK_DIR = "_cliplabel"


def work_dir(job_dir: Path) -> Path:
    return Path(job_dir) / WORK_DIR


def save_embedded(job_dir: Path, embedded: Embedded) -> Path:
    """Write embeddings (``.npy``), their item rows and timings, and ``skipped.jsonl``; returns the ``.npy``."""
    folder = work_dir(job_dir)
    buf = io.BytesIO()
    np.save(buf, embedded.embeddings)
    write_atomic(folder / "embeddings.npy", buf.getvalue())
    write_jsonl(folder / "items.jsonl", embedded.meta)
    write_atomic(folder / "timings.json", json.dumps({"batch_seconds": embedded.batch_seconds,
                                                      "seconds": embedded.seconds}).encode())
    write_jsonl(Path(job_dir) / "skipped.jsonl", embedded.skipped)
    return folder / "embeddings.npy"


def load_embedded(job_dir: Path) -> Embedded:
    folder = work_dir(job_dir)
    timings = json.loads((folder / "timings.json").read_text())
    skipped_path = Path(job_dir) / "skipped.jsonl"
    return Embedded(read_jsonl(folder / "items.jsonl"), np.load(folder / "embeddings.npy"),
                    read_jsonl(skipped_path) if skipped_path.is_file() else [],
                    timings["batch_seconds"], timings["seconds"])
