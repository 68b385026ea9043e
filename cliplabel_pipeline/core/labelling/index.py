"""The concept index: a bank's text embeddings and the model's logit scale, cached on disk.

Computed once per (model weights, text precision, templates, concept list) with the model's text tower, and
kept as ``text-<key>.npz`` under the cache folder. Loading it back needs neither tower, so labelling from
stored image embeddings, grouping and reporting never load the image model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.labelling.concepts import ConceptBank

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


def load_cached_index(cache_dir: Path, model_identity: str, text_precision: str,
                      bank: ConceptBank) -> ConceptIndex | None:
    """The cached index, or None when there is none (or it does not fit the bank)."""
    path = index_cache_path(cache_dir, model_identity, text_precision, bank)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        emb, scale = data["text_emb"], float(data["logit_scale"])
    if emb.ndim != 2 or emb.shape[0] != len(bank.names):
        return None
    return ConceptIndex(bank, emb, scale, model_identity, text_precision, cache_hit=True)


def build_concept_index(handle, bank: ConceptBank, cache_dir: Path) -> ConceptIndex:
    """The index of ``bank`` for the loaded model ``handle``: from the cache, else encoded and cached.

    Each concept's embedding is the re-normalised mean over the prompt templates.
    """
    cached = load_cached_index(cache_dir, handle.identity, handle.text_precision, bank)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, text_emb=emb, logit_scale=np.float64(handle.logit_scale))
    os.replace(tmp.name, path)
    return ConceptIndex(bank, emb, handle.logit_scale, handle.identity, handle.text_precision, cache_hit=False)
