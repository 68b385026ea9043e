"""The concept index: a bank's text embeddings and the model's logit scale, cached on disk.

Computed once per (model weights, text precision, templates, concept list) with the model's text tower, and
kept as ``text-<key>.npz`` under the cache folder with a checksum (a file that fails its checks is rebuilt).
Loading it back needs neither tower, so labelling from stored image embeddings, grouping and reporting never
load the image model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.labelling.concepts import ConceptBank
from cliplabel_pipeline.core.labelling.npz_cache import read_npz, write_npz

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptIndex:
    """Unit-norm fp32 text embeddings ``[n_concepts, d]`` of ``bank`` and the logit scale to score them."""

    bank: ConceptBank
    text_emb: np.ndarray
    logit_scale: float
    model_identity: str
    text_precision: str
    cache_hit: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.bank.names


def cache_key(model_identity: str, text_precision: str, bank: ConceptBank) -> str:
    """Hash of everything the text embeddings depend on: weights, precision, templates, concept list."""
    payload = json.dumps([model_identity, text_precision, list(bank.templates), list(bank.names)])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def index_cache_path(cache_dir: Path, model_identity: str, text_precision: str, bank: ConceptBank) -> Path:
    return Path(cache_dir) / f"text-{cache_key(model_identity, text_precision, bank)}.npz"


def _read_verified_cache(path: Path, n_concepts: int, width: int | None) -> dict[str, np.ndarray] | None:
    """The cache's arrays if its checksum matches and ``text_emb`` is ``[n_concepts, width]`` of finite unit rows
    with a finite positive ``logit_scale``; None otherwise (a failing file is removed with one warning)."""
    def problem(arrays: dict[str, np.ndarray]) -> str | None:
        emb, scale = arrays.get("text_emb"), arrays.get("logit_scale")
        if emb is None or scale is None:
            return "text_emb or logit_scale missing"
        if emb.dtype.kind != "f" or emb.ndim != 2:
            return f"text_emb is {emb.dtype} of shape {emb.shape}, not a float matrix"
        if emb.shape[0] != n_concepts or (width is not None and emb.shape[1] != width):
            return f"text_emb is {emb.shape[0]} x {emb.shape[1]}, not {n_concepts} x {width or 'any'}"
        if not np.isfinite(emb).all() or not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3):
            return "text_emb rows are not finite unit vectors"
        if scale.size != 1 or scale.dtype.kind not in "fiu" or not np.isfinite(scale).all() or scale.item() <= 0:
            return f"logit_scale {scale!r} is not a finite positive number"
        return None

    return read_npz(path, problem)


def load_cached_index(cache_dir: Path, model_identity: str, text_precision: str,
                      bank: ConceptBank, width: int | None = None) -> ConceptIndex | None:
    """The cached index, or None when there is none or it fails a check (``width``: the model's, when known)."""
    path = index_cache_path(cache_dir, model_identity, text_precision, bank)
    arrays = _read_verified_cache(path, len(bank.names), width)
    if arrays is None:
        return None
    emb, scale = arrays["text_emb"].astype(np.float32, copy=False), float(arrays["logit_scale"].item())
    return ConceptIndex(bank, emb, scale, model_identity, text_precision, cache_hit=True)


def build_concept_index(handle, bank: ConceptBank, cache_dir: Path) -> ConceptIndex:
    """The index of ``bank`` for the loaded model ``handle``: from the cache, else encoded and cached.

    Each concept's embedding is the re-normalised mean over the prompt templates.
    """
    width = handle.model.config.projection_dim
    cached = load_cached_index(cache_dir, handle.identity, handle.text_precision, bank, width)
    if cached is not None:
        return cached
    from cliplabel_pipeline.core.encoding.encode import encode_texts

    start = time.perf_counter()
    prompts = [t.format(name) for name in bank.names for t in bank.templates]
    flat = encode_texts(handle, prompts).reshape(len(bank.names), len(bank.templates), -1)
    emb = flat.mean(axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)
    log.info("encoded %d prompts for %d concepts in %.1fs", len(prompts), len(bank.names),
             time.perf_counter() - start)
    path = index_cache_path(cache_dir, handle.identity, handle.text_precision, bank)
    write_npz(path, text_emb=emb, logit_scale=np.float64(handle.logit_scale))
    return ConceptIndex(bank, emb, handle.logit_scale, handle.identity, handle.text_precision, cache_hit=False)
