"""The concept bank, prompt templates, and their text embeddings cached on disk."""

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

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.model import default_cache_dir

log = logging.getLogger(__name__)

BANK_DIR = Path(__file__).resolve().parents[2] / "concept_bank"


def read_lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a UTF-8 text file, stripped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliplabelError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@dataclass(frozen=True)
class ConceptBank:
    """Candidate concept names, the prompt templates, and a version string for provenance."""

    names: tuple[str, ...]
    templates: tuple[str, ...]
    version: str

    @property
    def templates_hash(self) -> str:
        return hashlib.sha256("\n".join(self.templates).encode()).hexdigest()[:12]


def load_bank(
    labels: list[str] | None = None,
    labels_file: Path | None = None,
    templates_file: Path | None = None,
    bank_dir: Path = BANK_DIR,
    names_file: Path | None = None,
) -> ConceptBank:
    """The bundled bank, or the user's labels (list or file) and templates when given; names deduplicated.

    ``names_file`` replaces the bundled concept list (a model directory may ship its own ``concepts.txt``).
    """
    if templates_file:
        templates = read_lines(templates_file)
    else:
        templates = read_lines(bank_dir / "templates.txt")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise CliplabelError(f"each template needs exactly one {{}} where the concept goes; bad: {bad[:3]}")
    if labels or labels_file:
        names = list(labels or []) + (read_lines(labels_file) if labels_file else [])
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        if not names:
            raise CliplabelError("the label list is empty")
        version = "user-" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    elif names_file:
        names = read_lines(names_file)
        version = "own-" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    else:
        names = read_lines(bank_dir / "concepts.txt")
        version = read_lines(bank_dir / "VERSION")[0]
    return ConceptBank(tuple(names), tuple(templates), version)


def embedding_cache_key(model_identity: str, precision: str, bank: ConceptBank) -> str:
    """Hash of everything the text embeddings depend on: model, precision, templates, concept list."""
    payload = json.dumps([model_identity, precision, list(bank.templates), list(bank.names)])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def text_cache_path(handle, bank: ConceptBank, cache_dir: Path | None = None) -> Path:
    """The ``.npy`` file holding ``bank``'s text embeddings for this model and text precision."""
    key = embedding_cache_key(handle.identity, handle.text_precision, bank)
    return Path(cache_dir or default_cache_dir()) / f"text-{key}.npy"


def concept_text_embeddings(handle, bank: ConceptBank, cache_dir: Path | None = None) -> tuple[np.ndarray, bool]:
    """Unit-norm fp32 ``[n_concepts, d]`` embeddings, each the re-normalised mean over templates.

    Returns ``(embeddings, cache_hit)``. Computed once per (model, precision, templates, concepts) and
    kept as ``.npy`` under ``cache_dir``; a second call loads the file and encodes no text.
    """
    from cliplabel_pipeline.core.encode import encode_texts

    path = text_cache_path(handle, bank, cache_dir)
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(bank.names):
            return emb, True
    start = time.perf_counter()
    prompts = [t.format(name) for name in bank.names for t in bank.templates]
    flat = encode_texts(handle, prompts).reshape(len(bank.names), len(bank.templates), -1)
    emb = flat.mean(axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb.astype(np.float32)
    log.info("encoded %d prompts for %d concepts in %.1fs", len(prompts), len(bank.names),
             time.perf_counter() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, emb)
    os.replace(tmp.name, path)
    return emb, False
