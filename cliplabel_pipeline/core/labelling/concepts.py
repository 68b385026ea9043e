"""The concept bank and prompt templates: the bundled bank, a model directory's own, or a person's labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.values import BankSpec

BANK_DIR = Path(__file__).resolve().parents[2] / "concept_bank"  # shipped inside the package


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


def bank_for(spec: BankSpec, model_dir: Path) -> ConceptBank:
    """The bank a job asked for: its labels, else the model directory's own ``concepts.txt`` (the toy model
    ships one), else the bundled bank; templates from ``spec.templates_file`` or the bundled ones."""
    own = Path(model_dir) / "concepts.txt"
    names_file = own if own.is_file() and not (spec.labels or spec.labels_file) else None
    return load_bank(list(spec.labels) or None, spec.labels_file and Path(spec.labels_file),
                     spec.templates_file and Path(spec.templates_file), names_file=names_file)


def reference_bank_for(spec: BankSpec, model_dir: Path) -> ConceptBank | None:
    """For a person's own labels, the bank they are judged beside for ``match``: the model's own bank (the
    model directory's ``concepts.txt``, else the bundled one) with the list's templates; None otherwise."""
    if not (spec.labels or spec.labels_file):
        return None
    return bank_for(replace(spec, labels=(), labels_file=None), model_dir)


def name_key(name: str) -> str:
    """A concept name as names are compared: case-folded, its spacing made single."""
    return " ".join(name.casefold().split())


@cache
def synonyms(bank_dir: Path = BANK_DIR) -> dict[str, str]:
    """The bundled bank's ``alias -> canonical`` names, as ``name_key`` gives them."""
    pairs = (line.split("\t") for line in read_lines(bank_dir / "synonyms.tsv")[1:])
    return {name_key(a): name_key(c) for a, c, *_ in pairs if c}
