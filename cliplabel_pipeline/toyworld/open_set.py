"""Does labelling know when it does not know? Held-out toy jobs (in the world) beside jobs from outside it.

``evaluate`` labels both through the real pipeline and returns, for the masks and cut-outs: the share of
correctly labelled in-world items still confident, the share of out-of-world items flagged, and the AUROC
of ``match`` (and, to compare, of the softmax ``confidence`` and the raw top-1 ``cosine``) for in- versus
out-of-world, overall and per family. ``benchmarks/open_set.py`` prints it; the tests hold it to numbers.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.pipeline import label_job
from cliplabel_pipeline.core.values import LabelRecord, LabelSettings
from cliplabel_pipeline.toyworld.jobs import write_toy_jobs
from cliplabel_pipeline.toyworld.outside import FAMILIES, OTHER_SHAPES, write_outside_job

SCORES = ("match", "confidence", "cosine")


@dataclass
class FamilyResult:
    items: int
    flagged: float  # share with low_confidence
    auroc: dict[str, float]  # score -> AUROC of correct in-world items against this family's


@dataclass
class OpenSetReport:
    in_world_items: int
    in_world_accuracy: float
    correct_still_confident: float
    families: dict[str, FamilyResult] = field(default_factory=dict)
    outside: FamilyResult | None = None  # every family of ``FAMILIES`` together (what the targets are about)

    def lines(self) -> list[str]:
        out = [f"in-world: {self.in_world_items} masks and cut-outs, accuracy {self.in_world_accuracy:.3f}, "
               f"correct and still confident {self.correct_still_confident:.3f}", "",
               f"| out of world | items | flagged | AUROC match | AUROC confidence | AUROC cosine |",
               "|---|---|---|---|---|---|"]
        rows = {**self.families, "all of the above": self.outside}
        for name, r in rows.items():
            if r is not None:
                out.append(f"| {name} | {r.items} | {r.flagged:.3f} | " + " | ".join(f"{r.auroc[s]:.3f}" for s in SCORES)
                           + " |")
        return out


def _score(rec: LabelRecord, name: str) -> float:
    return float(getattr(rec, name))


def _family(correct: list[LabelRecord], outside: list[LabelRecord]) -> FamilyResult:
    y = np.r_[np.ones(len(correct)), np.zeros(len(outside))]
    auroc = {s: float(roc_auc_score(y, [_score(r, s) for r in correct + outside])) for s in SCORES}
    return FamilyResult(len(outside), float(np.mean([r.low_confidence for r in outside])), auroc)


def _parts(records: list[LabelRecord]) -> list[LabelRecord]:
    return [r for r in records if r.kind != "source"]


def evaluate(labeller, root: Path, in_jobs: int = 60, jobs_per_family: int = 12, seed: int = 4242,
             settings: LabelSettings = LabelSettings(), other_shapes: bool = True) -> OpenSetReport:
    """Write held-out jobs under ``root`` (seeds apart from the calibration's and the design's) and measure."""
    root = Path(root)
    inside: list[tuple[LabelRecord, str | None]] = []
    for job_id in write_toy_jobs(root, in_jobs, seed=seed, prefix="inside"):
        with (root / job_id / "ground_truth.csv").open(newline="") as fh:
            truth = {row["path"]: row["label"] for row in csv.DictReader(fh)}
        inside += [(r, truth.get(r.path)) for r in _parts(label_job(labeller, JobFolder.open(root, job_id), settings).records)]
    correct = [r for r, t in inside if r.top1 == t]
    report = OpenSetReport(len(inside), len(correct) / max(len(inside), 1),
                           float(np.mean([not r.low_confidence for r in correct])) if correct else 0.0)
    families = {**FAMILIES, **(OTHER_SHAPES if other_shapes else {})}
    targets: list[LabelRecord] = []
    for f_index, family in enumerate(families):
        found: list[LabelRecord] = []
        for i in range(jobs_per_family):
            job_id = f"outside-{f_index}-{i:03d}"
            write_outside_job(root, job_id, seed=seed * 100 + f_index * 1000 + i, family=family)
            found += _parts(label_job(labeller, JobFolder.open(root, job_id), settings).records)
        report.families[family] = _family(correct, found)
        if family in FAMILIES:
            targets += found
    report.outside = _family(correct, targets)
    return report
