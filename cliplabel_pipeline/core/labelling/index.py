"""The concept index: a bank's text embeddings, the model's logit scale and the ``match`` calibration
(``calibration.py``), cached on disk.

Computed once per (model weights, text precision, templates, concept list, probe recipe) with the model's
towers, and kept as ``text-<key>.npz`` under the cache folder with a checksum (a file that fails its checks is
rebuilt). Loading it back needs neither tower, so labelling from stored image embeddings, grouping and
reporting never load the image model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplabel_pipeline.core.labelling.calibration import (
    PROBE_COUNT,
    PROBE_RECIPE,
    Calibration,
    calibrate,
    probe_pictures,
    reference_for,
)
from cliplabel_pipeline.core.encoding.devices import text_precision
from cliplabel_pipeline.core.encoding.weights import embedding_width, model_identity, resolve_model_dir
from cliplabel_pipeline.core.labelling.concepts import ConceptBank, bank_for, reference_bank_for, synonyms
from cliplabel_pipeline.core.labelling.npz_cache import read_npz, write_npz
from cliplabel_pipeline.core.progress import Progress, counter
from cliplabel_pipeline.core.values import BankSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptIndex:
    """Unit-norm fp32 text embeddings ``[n_concepts, d]`` of ``bank``, the logit scale to score them, and the
    calibration of ``match`` for this model and bank."""

    bank: ConceptBank
    text_emb: np.ndarray
    logit_scale: float
    model_identity: str
    text_precision: str
    calibration: Calibration
    cache_hit: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.bank.names


def cache_key(model_identity: str, text_precision: str, bank: ConceptBank,
              reference: ConceptBank | None = None) -> str:
    """Hash of everything the cached index depends on: weights, precision, templates, concept list, probes,
    and the reference bank a person's list is judged beside."""
    parts = [model_identity, text_precision, list(bank.templates), list(bank.names), PROBE_RECIPE]
    if reference is not None:
        parts += ["reference", reference.version, list(reference.names)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def index_cache_path(cache_dir: Path, model_identity: str, text_precision: str, bank: ConceptBank,
                     reference: ConceptBank | None = None) -> Path:
    return Path(cache_dir) / f"text-{cache_key(model_identity, text_precision, bank, reference)}.npz"


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
        null, stats = arrays.get("null_emb"), arrays.get("null_stats")
        if null is None or stats is None:
            return "the match calibration is missing"
        if null.dtype.kind != "f" or null.ndim != 2 or null.shape != (PROBE_COUNT, emb.shape[1]):
            return f"null_emb is {null.dtype} of shape {null.shape}, not {PROBE_COUNT} probes x {emb.shape[1]}"
        if not np.isfinite(null).all() or not np.allclose(np.linalg.norm(null, axis=1), 1.0, atol=1e-3):
            return "null_emb rows are not finite unit vectors"
        if stats.dtype.kind != "f" or stats.shape != (8,) or not np.isfinite(stats).all() or (stats[1::2] <= 0).any():
            return "null_stats are not eight finite statistics with positive spreads"
        per_concept = arrays.get("null_concept_stats")
        reference = arrays.get("reference_emb")
        n_reference = 0 if reference is None else len(reference)
        if reference is not None and (reference.dtype.kind != "f" or reference.ndim != 2
                                      or reference.shape[1] != emb.shape[1]):
            return f"reference_emb is {reference.dtype} of shape {reference.shape}, not concepts x {emb.shape[1]}"
        if n_reference and (not np.isfinite(reference).all()
                            or not np.allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-3)):
            return "reference_emb rows are not finite unit vectors"
        if per_concept is None or per_concept.shape != (2, n_concepts + n_reference):
            return (f"null_concept_stats are not a mean and a spread for each of {n_concepts} concepts"
                    + (f" and {n_reference} reference concepts" if n_reference else ""))
        if per_concept.dtype.kind != "f" or not np.isfinite(per_concept).all() or (per_concept[1] <= 0).any():
            return "null_concept_stats are not finite with positive spreads"
        return None

    return read_npz(path, problem)


def load_cached_index(cache_dir: Path, model_identity: str, text_precision: str,
                      bank: ConceptBank, width: int | None = None,
                      reference: ConceptBank | None = None) -> ConceptIndex | None:
    """The cached index, or None when there is none or it fails a check (``width``: the model's, when known;
    ``reference``: the bank a person's list is judged beside)."""
    path = index_cache_path(cache_dir, model_identity, text_precision, bank, reference)
    arrays = _read_verified_cache(path, len(bank.names), width)
    if arrays is None:
        return None
    emb, scale = arrays["text_emb"].astype(np.float32, copy=False), float(arrays["logit_scale"].item())
    return ConceptIndex(bank, emb, scale, model_identity, text_precision, Calibration.from_arrays(arrays),
                        cache_hit=True)


def cached_concept_index(cache_dir: Path, model: str, precision: str, spec: BankSpec) -> ConceptIndex | None:
    """The index of bank ``spec`` for ``model`` at the resolved ``precision`` a run recorded, from the on-disk
    cache, without loading the model or importing torch; None when it is not cached here."""
    model_dir = resolve_model_dir(model)
    return load_cached_index(cache_dir, model_identity(model_dir), text_precision(precision),
                             bank_for(spec, model_dir), embedding_width(model_dir), reference_bank_for(spec, model_dir))


def build_concept_index(handle, bank: ConceptBank, cache_dir: Path, progress: Progress | None = None,
                        reference: ConceptBank | None = None, cache_max_bytes: int | None = None) -> ConceptIndex:
    """The index of ``bank`` for the loaded model ``handle``: from the cache, else encoded and cached.

    Each concept's embedding is the re-normalised mean over the prompt templates. ``reference``: for a person's
    list, the bank it is judged beside (``calibration.py``), itself built (or read from the cache) first.
    ``cache_max_bytes``: the cache's budget (``Settings.cache_max_mb``), least recently used files evicted past it.
    """
    width = handle.model.config.projection_dim
    cached = load_cached_index(cache_dir, handle.identity, handle.text_precision, bank, width, reference)
    if cached is not None:
        return cached
    ref_index = None if reference is None else build_concept_index(handle, reference, cache_dir, progress,
                                                                   cache_max_bytes=cache_max_bytes)
    from cliplabel_pipeline.core.encoding.encode import encode_texts

    start = time.perf_counter()
    prompts = [t.format(name) for name in bank.names for t in bank.templates]
    advance = counter(progress, f"encoding the concept bank ({len(bank.names)} concepts; cached after)", len(prompts))
    flat = encode_texts(handle, prompts, progress=advance).reshape(len(bank.names), len(bank.templates), -1)
    emb = flat.mean(axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)
    log.info("encoded %d prompts for %d concepts in %.1fs", len(prompts), len(bank.names),
             time.perf_counter() - start)
    reference_emb = None
    if ref_index is not None:
        reference_emb = reference_for(bank.names, emb, ref_index.names, ref_index.text_emb, synonyms())
    # a person's list takes the probes its reference was calibrated with (cached with it, same recipe and model):
    # a new list costs its own prompts, not 640 images
    probes = ref_index.calibration.null_emb if ref_index is not None else null_embeddings(handle, progress)
    calibration = calibrate(probes, emb, reference_emb)
    path = index_cache_path(cache_dir, handle.identity, handle.text_precision, bank, reference)
    write_npz(path, max_bytes=cache_max_bytes, text_emb=emb, logit_scale=np.float64(handle.logit_scale), **calibration.to_arrays())
    return ConceptIndex(bank, emb, handle.logit_scale, handle.identity, handle.text_precision, calibration,
                        cache_hit=False)


_NULL_EMBEDDINGS: dict[tuple, np.ndarray] = {}  # per loaded model: every bank of a process shares its probes


def null_embeddings(handle, progress: Progress | None = None) -> np.ndarray:
    """The null probes' image embeddings for the loaded model ``handle``, prepared as items are."""
    key = (handle.identity, handle.precision, handle.image_size, handle.crop_size, PROBE_RECIPE)
    if key not in _NULL_EMBEDDINGS:
        _NULL_EMBEDDINGS[key] = encode_probes(handle, probe_pictures(handle.crop_size), progress)
    return _NULL_EMBEDDINGS[key]


def encode_probes(handle, pictures: list[tuple[np.ndarray, bool]], progress: Progress | None = None) -> np.ndarray:
    """Embeddings of ``pictures`` (``probe_pictures``' pairs), each cropped by the items' own rule: as a cut-out
    (letterboxed with its margin) or as a photo (centre-cropped)."""
    from PIL import Image

    from cliplabel_pipeline.core.encoding.decode_pool import crop_of
    from cliplabel_pipeline.core.encoding.encode import encode_images
    from cliplabel_pipeline.core.reading.images import normalise_batch

    start = time.perf_counter()
    pixels = np.stack([crop_of(Image.fromarray(p), "object" if boxed else "source", handle.image_size,
                               handle.crop_size) for p, boxed in pictures])
    batch, advance, parts = 32, counter(progress, "encoding null probes (for match)", len(pixels)), []
    for i in range(0, len(pixels), batch):
        parts.append(encode_images(handle, normalise_batch(pixels[i:i + batch], handle.mean, handle.std), batch))
        advance(min(i + batch, len(pixels)))
    log.info("encoded %d null probes for the match score in %.1fs", len(pixels), time.perf_counter() - start)
    return np.concatenate(parts)
