"""The open-set ``match`` score: does an image match its best concept better than pictures of nothing do?

``confidence`` (a softmax over the candidates) only says which candidate is least wrong. ``match`` asks how an
image's evidence compares with what *null probes* get: pictures of nothing in particular (noise, blurred noise,
gradients, flat colours, checkerboards), drawn here from fixed seeds, never from the user's images, and cropped
by the items' own rule (half as cut-outs are, with their margin, half as photos are). Per image:

    cos     = cosine of the top-1 concept                 (high: it looks like that concept)
    gap     = top-1 cosine minus top-2 cosine             (high: ... and not like its neighbours)
    concept = the top-1 cosine against what the probes get for that same concept, in the probes' standard
              deviations for it (high: higher than pictures of nothing reach on this concept)
    evidence = z(cos) + z(gap) + z(concept) / 2

each ``z`` standardised by the probes' own distribution, so the score adapts to the model's cosine scale, to
how crowded the bank is and to concepts that everything resembles a little. The weights were chosen on a
design seed of the toy world (``benchmarks/open_set.py --seed 2026``) and checked on five held-out ones: see
``docs/scores.md``. The nearest probe's cosine, a term of an earlier recipe, added nothing once ``concept``
was in and was dropped.

``match`` is a logistic of how far the evidence stands above the probes':
``match = sigmoid(1.702 * (evidence - line) / std)``, where ``line`` is the ``LINE_PERCENTILE``-th percentile
of the probes' own evidence (counted, not assumed normal) and ``std`` its standard deviation: 0.5 on the line.
The probes' evidence is far from normal (noise scores low, a flat field of an object's colour scores high), and
a line placed at ``mean + 1.645 std`` moved with the few probes in that tail: drawing the 160 probes from another
seed moved the share of correct toy items kept from 0.79 to 0.99. A counted percentile of 640 probes moves by a
few items. The statistics depend on the model and the bank only, and are cached with the bank's text
embeddings under the same content key (``PROBE_RECIPE`` is part of that key).

**A person's own labels.** Against a short list, pictures of nothing are no measure: a yellow circle is
nearer "bird" than any noise is, although it is no bird. So a list is judged beside a *reference*: the model's
own bank (the bundled one, or the toy model's), less every concept that names the same thing as one of the
list's (the same name or a synonym of it, or text embeddings at a cosine of ``SAME_AS`` or more). The
statistics are computed over the list and the reference together, as for a bank of that size, and ``gap``
is taken against the best of the list's other labels *and* of the reference: an image that the reference
names better than the list does (a yellow circle against "cat, dog, bird"; a red square against
"red circle") gets a negative ``gap`` and a low ``match``; one that the list names best scores as it would
in the bank. The reference is cached with the list's embeddings (its names are part of the key).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cliplabel_pipeline.core.labelling.concepts import name_key

PROBE_RECIPE = "null-probes-3/evidence-4"  # part of the cache key: change it with the probes or the weights
PROBES_PER_FAMILY = 128
WEIGHTS = (1.0, 1.0, 0.5)  # of z(cos), z(gap), z(concept)
SAME_AS = 0.95  # text cosine at or above which a reference concept names the same thing as a listed label
LINE_PERCENTILE = 92.5  # match is 0.5 at this percentile of the probes' evidence (chosen on the design seed)
_LOGISTIC = 1.702  # the logistic closest to the normal CDF
_EPS = 1e-6
STAT_NAMES = ("cos_mean", "cos_std", "gap_mean", "gap_std", "concept_mean", "concept_std", "evidence_line",
              "evidence_std")


@dataclass(frozen=True)
class Calibration:
    """Null-probe embeddings and the statistics ``match`` is computed against."""

    null_emb: np.ndarray  # [probes, d] unit rows, what the statistics were computed from
    concept_stats: np.ndarray  # [2, concepts (+ reference)]: the probes' mean and std of each concept's cosine
    stats: np.ndarray  # the eight of ``STAT_NAMES``
    reference_emb: np.ndarray | None = None  # [r, d] unit rows: a person's list is judged beside these

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"null_emb": self.null_emb, "null_concept_stats": self.concept_stats, "null_stats": self.stats}
        return arrays | ({"reference_emb": self.reference_emb} if self.reference_emb is not None else {})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Calibration":
        reference = arrays.get("reference_emb")
        return cls(arrays["null_emb"].astype(np.float32, copy=False),
                   arrays["null_concept_stats"].astype(np.float64), arrays["null_stats"].astype(np.float64),
                   None if reference is None else reference.astype(np.float32, copy=False))

    def summary(self) -> dict:
        """What provenance records: the recipe, the probe count, the reference's size and the null statistics."""
        reference = {} if self.reference_emb is None else {"reference_concepts": int(len(self.reference_emb))}
        return {"recipe": PROBE_RECIPE, "probes": int(len(self.null_emb)), **reference,
                **{n: round(float(v), 6) for n, v in zip(STAT_NAMES, self.stats)}}

    def match(self, top_idx: np.ndarray, top_cos: np.ndarray, image_emb: np.ndarray | None = None) -> np.ndarray:
        """``match`` in [0, 1] for images with top concepts ``top_idx`` and their cosines ``top_cos``
        (``[n, >=1]``, best first); ``image_emb`` (``[n, d]``, unit rows) where there is a reference."""
        if self.reference_emb is not None and len(self.reference_emb):
            if image_emb is None:
                raise ValueError("a calibration with a reference needs the images' embeddings")
            best = (image_emb.astype(np.float32, copy=False) @ self.reference_emb.T).max(axis=1)
            second = top_cos[:, 1] if top_cos.shape[1] > 1 else np.full(len(top_cos), -np.inf)
            top_cos = np.stack([top_cos[:, 0], np.maximum(second, best)], axis=1)
        evidence = _evidence(_terms(top_idx, top_cos, self.concept_stats), self.stats)
        z = (evidence - self.stats[6]) / self.stats[7]
        return 1.0 / (1.0 + np.exp(np.clip(-_LOGISTIC * z, -700.0, 700.0)))


def _terms(top_idx: np.ndarray, top_cos: np.ndarray, concept_stats: np.ndarray) -> np.ndarray:
    cos = top_cos[:, 0].astype(np.float64)
    gap = cos - top_cos[:, 1] if top_cos.shape[1] > 1 else np.zeros(len(cos))
    mean, std = concept_stats[:, top_idx[:, 0]]
    return np.stack([cos, gap, (cos - mean) / std], axis=1)


def _evidence(terms: np.ndarray, stats: np.ndarray) -> np.ndarray:
    return ((terms - stats[[0, 2, 4]]) / stats[[1, 3, 5]]) @ np.array(WEIGHTS)


def calibrate(null_emb: np.ndarray, text_emb: np.ndarray, reference_emb: np.ndarray | None = None) -> Calibration:
    """The statistics of ``match`` for the bank ``text_emb`` from the probes' embeddings ``null_emb``; for a
    person's list, over the list and ``reference_emb`` together (see the module's note)."""
    bank = text_emb if reference_emb is None else np.concatenate([text_emb, reference_emb])
    cos = null_emb.astype(np.float64) @ bank.T.astype(np.float64)
    concept_stats = np.stack([cos.mean(axis=0), np.maximum(cos.std(axis=0), _EPS)])
    k = min(2, cos.shape[1])
    top_idx = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    terms = _terms(top_idx, np.take_along_axis(cos, top_idx, axis=1), concept_stats)
    stats = np.zeros(8)
    stats[[0, 2, 4]], stats[[1, 3, 5]] = terms.mean(axis=0), np.maximum(terms.std(axis=0), _EPS)
    evidence = _evidence(terms, stats)
    stats[6], stats[7] = np.percentile(evidence, LINE_PERCENTILE), max(evidence.std(), _EPS)
    return Calibration(null_emb.astype(np.float32), concept_stats, stats,
                       None if reference_emb is None else reference_emb.astype(np.float32))


def reference_for(names: tuple[str, ...], text_emb: np.ndarray, ref_names: tuple[str, ...], ref_emb: np.ndarray,
                  synonyms: dict[str, str]) -> np.ndarray:
    """The embeddings of the reference concepts a list ``names`` (embeddings ``text_emb``) is judged beside:
    those of ``ref_names`` less the ones naming the same thing as a listed label (equal names after
    ``synonyms``, case and spacing aside, or text cosine ``>= SAME_AS``)."""
    def canon(name: str) -> str:
        return synonyms.get(name_key(name), name_key(name))

    listed = {canon(n) for n in names}
    near = (ref_emb @ text_emb.T).max(axis=1) >= SAME_AS if len(ref_emb) else np.zeros(0, bool)
    keep = [i for i, n in enumerate(ref_names) if canon(n) not in listed and not near[i]]
    return ref_emb[keep].astype(np.float32)


# the probes: pictures of nothing in particular, the same for every model
def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    if rng.random() < 0.5:
        return rng.integers(0, 256, (h, w, 3)).astype(np.float64)
    return rng.normal(rng.uniform(50, 210), rng.uniform(15, 80), (h, w, 3))


def _blurred_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cells = int(rng.integers(2, 12))  # low-resolution noise, scaled up smoothly
    small = Image.fromarray(rng.integers(0, 256, (cells, cells, 3)).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC), np.float64)


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.7:
        a = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(a) + y * np.sin(a)
    else:  # radial, about a random point
        t = np.hypot(x - rng.random() * w / max(h, w), y - rng.random() * h / max(h, w))
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _flat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.broadcast_to(rng.integers(0, 256, 3).astype(np.float64), (h, w, 3)) + rng.normal(0, 2, (h, w, 3))


def _checker(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cell = max(1, int(max(h, w) / rng.choice([2, 4, 8, 16, 32])))
    on = ((np.indices((h, w)) // cell).sum(0) % 2).astype(bool)
    return np.where(on[..., None], rng.integers(0, 256, 3), rng.integers(0, 256, 3)).astype(np.float64)


FAMILIES: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _noise, _blurred_noise, _gradient, _flat, _checker)
PROBE_COUNT = PROBES_PER_FAMILY * len(FAMILIES)  # what a calibration is made from, and what a cache must hold


PROBE_SEED = 20261201


def probe_pictures(side: int, per_family: int = PROBES_PER_FAMILY, seed: int = PROBE_SEED
                   ) -> list[tuple[np.ndarray, bool]]:
    """``(uint8 picture [h, w, 3], letterboxed?)`` for every probe: each family at several shapes, half of them
    to be prepared as whole objects are (letterboxed with their margin), half as photos are (centre-cropped)."""
    rng, shapes = np.random.default_rng(seed), random.Random(seed)
    out = []
    for family in FAMILIES:
        for i in range(per_family):
            h, w = side, int(side * shapes.uniform(0.6, 1.6))
            if i % 2:
                h, w = w, h
            out.append((np.clip(family(rng, h, w), 0, 255).astype(np.uint8), bool(i % 2)))
    return out
