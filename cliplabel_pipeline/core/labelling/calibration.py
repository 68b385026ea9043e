"""The open-set ``match`` score: does an image match its best concept better than pictures of nothing do?

``confidence`` (a softmax over the candidates) only says which candidate is least wrong. ``match`` asks how an
image's evidence compares with what *null probes* get: pictures of nothing in particular (noise, blurred noise,
gradients, flat colours, checkerboards), drawn here from fixed seeds, never from the user's images. Per image:

    cos  = cosine of the top-1 concept          (high: it looks like that concept)
    gap  = top-1 cosine minus top-2 cosine      (high: it looks like that concept and not its neighbours)
    null = highest cosine to any null probe     (high: it looks like a picture of nothing)
    evidence = z(cos) + 2 * z(gap) - z(null) / 3

each ``z`` standardised by the probes' own distribution (a probe's ``null`` leaves itself out), so the score
adapts to the model's cosine scale and to how crowded the bank is. The weights were chosen on a design seed
of the toy world: ``gap`` separates best (AUROC 0.989 alone against 0.969 for ``cos``). Against the previous
weights (``1, 1, -0.5``), on the design seed and four held-out ones at the default thresholds: AUROC
0.982-0.992 instead of 0.981-0.984, out-of-world items flagged 0.933-0.954 instead of 0.921-0.944.

``match`` is a logistic of how far the evidence stands above the probes':
``match = sigmoid(1.702 * ((evidence - mean) / std - 1.645))``, 0.5 at the probes' 95th percentile. The
statistics depend on the model and the bank only, and are cached with the bank's text embeddings under the
same content key (``PROBE_RECIPE`` is part of that key).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

PROBE_RECIPE = "null-probes-2/evidence-2"  # part of the cache key: change it with the probes or the weights
PROBES_PER_FAMILY = 32
WEIGHTS = (1.0, 2.0, -1 / 3)  # of z(cos), z(gap), z(null)
Z_AT_HALF = 1.645  # match is 0.5 this many null standard deviations above the null mean
_LOGISTIC = 1.702  # the logistic closest to the normal CDF
_EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """Null-probe embeddings and the statistics ``match`` is computed against."""

    null_emb: np.ndarray  # [probes, d] unit rows
    stats: np.ndarray  # cos mean, cos std, gap mean, gap std, null mean, null std, evidence mean, evidence std

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"null_emb": self.null_emb, "null_stats": self.stats}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Calibration":
        return cls(arrays["null_emb"].astype(np.float32, copy=False), arrays["null_stats"].astype(np.float64))

    def summary(self) -> dict:
        """What provenance records: the recipe, the probe count and the null statistics."""
        names = ("cos_mean", "cos_std", "gap_mean", "gap_std", "null_mean", "null_std", "evidence_mean",
                 "evidence_std")
        return {"recipe": PROBE_RECIPE, "probes": int(len(self.null_emb)),
                **{n: round(float(v), 6) for n, v in zip(names, self.stats)}}

    def match(self, top_cos: np.ndarray, image_emb: np.ndarray) -> np.ndarray:
        """``match`` in [0, 1] for images with top cosines ``[n, >=1]`` (sorted) and unit embeddings ``[n, d]``."""
        evidence = _evidence(top_cos, _nearest_null(image_emb, self.null_emb), self.stats)
        z = (evidence - self.stats[6]) / self.stats[7] - Z_AT_HALF
        return 1.0 / (1.0 + np.exp(-_LOGISTIC * z))


def _terms(top_cos: np.ndarray, null: np.ndarray) -> np.ndarray:
    gap = top_cos[:, 0] - top_cos[:, 1] if top_cos.shape[1] > 1 else np.zeros(len(top_cos))
    return np.stack([top_cos[:, 0], gap, null], axis=1).astype(np.float64)


def _evidence(top_cos: np.ndarray, null: np.ndarray, stats: np.ndarray) -> np.ndarray:
    z = (_terms(top_cos, null) - stats[[0, 2, 4]]) / stats[[1, 3, 5]]
    return z @ np.array(WEIGHTS)


def _nearest_null(image_emb: np.ndarray, null_emb: np.ndarray) -> np.ndarray:
    return (image_emb.astype(np.float32, copy=False) @ null_emb.T).max(axis=1)


def calibrate(null_emb: np.ndarray, text_emb: np.ndarray) -> Calibration:
    """The statistics of ``match`` for the bank ``text_emb`` from the probes' embeddings ``null_emb``."""
    cos = null_emb @ text_emb.T
    top = -np.sort(-cos, axis=1)[:, :2]
    sims = null_emb @ null_emb.T
    np.fill_diagonal(sims, -np.inf)  # each probe's nearest *other* probe
    terms = _terms(top, sims.max(axis=1))
    mean, std = terms.mean(axis=0), np.maximum(terms.std(axis=0), _EPS)
    stats = np.zeros(8)
    stats[[0, 2, 4]], stats[[1, 3, 5]] = mean, std
    evidence = _evidence(top, terms[:, 2], stats)
    stats[6], stats[7] = evidence.mean(), max(evidence.std(), _EPS)
    return Calibration(null_emb.astype(np.float32), stats)


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


def probe_pictures(side: int, per_family: int = PROBES_PER_FAMILY) -> list[tuple[np.ndarray, bool]]:
    """``(uint8 picture [h, w, 3], letterboxed?)`` for every probe: each family at several shapes, half of them
    prepared as whole objects are (letterboxed), half as photos are (centre-cropped)."""
    rng, shapes = np.random.default_rng(20261201), random.Random(20261201)
    out = []
    for family in FAMILIES:
        for i in range(per_family):
            h, w = side, int(side * shapes.uniform(0.6, 1.6))
            if i % 2:
                h, w = w, h
            out.append((np.clip(family(rng, h, w), 0, 255).astype(np.uint8), bool(i % 2)))
    return out
