"""Does labelling know when it does not know? Held-out toy jobs (in the world) beside jobs from outside it.

``evaluate`` labels both through the real pipeline and returns, for the masks and cut-outs: the share of
correctly labelled in-world items still confident, the share of out-of-world items flagged, and the AUROC
of ``match`` (and, to compare, of the softmax ``confidence`` and the raw top-1 ``cosine``) for in- versus
out-of-world, overall and per family. ``benchmarks/open_set.py`` prints it; the tests hold it to numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.pipeline import label_job
from cliplabel_pipeline.core.reporting.metrics import read_ground_truth
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
               "| out of world | items | flagged | AUROC match | AUROC confidence | AUROC cosine |",
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
        job = JobFolder.open(root, job_id)
        truth = read_ground_truth(job) or {}
        inside += [(r, truth.get(r.path)) for r in _parts(label_job(labeller, job, settings).records)]
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


# --- a person's own label lists ---------------------------------------------------------------------------
LIST_SIZES = (3, 5, 10)
LIST_KINDS = ("names what is drawn", "names nothing drawn", "near neighbours only")
OUTSIDE_KIND = "out of world, against the world's labels"
LIST_TARGETS = {"names what is drawn": ("kept", 0.95), "names nothing drawn": ("flagged", 0.95)}


@dataclass
class ListResult:
    kind: str  # one of ``LIST_KINDS``
    size: int
    items: int
    flagged: float  # share with low_confidence
    accuracy: float | None  # top-1 is the truth, where the list names it

    @property
    def kept(self) -> float:
        return 1.0 - self.flagged

    def meets(self) -> bool | None:
        """Whether the row meets its target (``LIST_TARGETS``); None where it has none (reported only)."""
        if self.kind not in LIST_TARGETS:
            return None
        what, floor = LIST_TARGETS[self.kind]
        return (self.kept if what == "kept" else self.flagged) >= floor


def list_lines(rows: list[ListResult]) -> list[str]:
    out = ["| list | names | items | kept | flagged | accuracy | target |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        target = {None: "reported", True: "met", False: "MISSED"}[r.meets()]
        if r.kind in LIST_TARGETS:
            target = f"{LIST_TARGETS[r.kind][0]} >= {LIST_TARGETS[r.kind][1]:.2f}: {target}"
        acc = "" if r.accuracy is None else f"{r.accuracy:.3f}"
        out.append(f"| {r.kind} | {r.size} | {r.items} | {r.kept:.3f} | {r.flagged:.3f} | {acc} | {target} |")
    return out


def _never_drawn_nouns() -> list[str]:
    """Nouns of the bundled bank: some the toy model read in training, some it never read; none is drawn."""
    from cliplabel_pipeline.core.labelling.concepts import load_bank
    from cliplabel_pipeline.toyworld.draw import COLOURS, SHAPES

    words = set(COLOURS) | set(SHAPES)
    return [n for n in load_bank().names if not (set(n.split()) & words)]


def candidate_list(truth: str, kind: str, size: int, nouns: list[str], rng: random.Random) -> tuple[str, ...]:
    """A list of ``size`` labels of ``kind`` for an item whose true label is ``truth``."""
    from cliplabel_pipeline.toyworld.draw import LABELS

    others = [label for label in LABELS if label != truth]
    if kind == "names what is drawn":
        names = [truth] + rng.sample(others + rng.sample(nouns, 40), size - 1)
    elif kind == "names nothing drawn":
        names = rng.sample(nouns, size)
    else:  # the same colour or the same shape first, then the world's other labels: never the truth
        colour, shape = truth.split()
        near = [label for label in others if label.startswith(colour + " ") or label.endswith(" " + shape)]
        far = [label for label in others if label not in near]
        names = rng.sample(near, min(size, len(near)))
        names += rng.sample(far, size - len(names))
    rng.shuffle(names)
    return tuple(names)


def evaluate_custom_lists(labeller, root: Path, in_jobs: int = 20, seed: int = 4242, lists_per_label: int = 2,
                          settings: LabelSettings = LabelSettings(), sizes: tuple[int, ...] = LIST_SIZES,
                          outside_jobs_per_family: int = 4) -> list[ListResult]:
    """Label held-out toy jobs' masks and cut-outs against lists a person might pass (``LIST_KINDS`` x
    ``sizes``; ``lists_per_label`` lists for each true label), through the same index and scoring as
    ``--labels``; one row per kind and size."""
    from collections import defaultdict

    from cliplabel_pipeline.core.labelling.labels import assign_labels
    from cliplabel_pipeline.core.pipeline import embed_job
    from cliplabel_pipeline.core.values import BankSpec, Embedded

    root = Path(root)
    by_truth: dict[str, list[tuple[object, np.ndarray]]] = defaultdict(list)
    encoder = None
    for job_id in write_toy_jobs(root, in_jobs, seed=seed, prefix="lists"):
        job = JobFolder.open(root, job_id)
        truth = read_ground_truth(job) or {}
        embedded = embed_job(labeller, job, settings)
        encoder = embedded.encoder
        for item, emb in zip(embedded.items, embedded.embeddings):
            if item.kind != "source" and item.path in truth:
                by_truth[truth[item.path]].append((item, emb))
    nouns, rng = _never_drawn_nouns(), random.Random(seed)
    found: dict[tuple[str, int], list[tuple[LabelRecord, str]]] = defaultdict(list)
    for truth_label in sorted(by_truth):
        items = [i for i, _ in by_truth[truth_label]]
        emb = np.stack([e for _, e in by_truth[truth_label]])
        for kind in LIST_KINDS:
            for size in sizes:
                for _ in range(lists_per_label):
                    names = candidate_list(truth_label, kind, size, nouns, rng)
                    index = labeller.with_bank(BankSpec(labels=names)).index
                    records = assign_labels(Embedded(items, emb, [], encoder), index, settings)
                    found[kind, size] += [(r, truth_label) for r in records]
    outside: list[tuple[object, np.ndarray]] = []
    for f_index, family in enumerate(FAMILIES):
        for i in range(outside_jobs_per_family):
            job_id = f"lists-outside-{f_index}-{i:03d}"
            write_outside_job(root, job_id, seed=seed * 100 + f_index * 1000 + i, family=family)
            embedded = embed_job(labeller, JobFolder.open(root, job_id), settings)
            outside += [(item, e) for item, e in zip(embedded.items, embedded.embeddings) if item.kind != "source"]
    if outside:
        from cliplabel_pipeline.toyworld.draw import LABELS

        items, emb = [i for i, _ in outside], np.stack([e for _, e in outside])
        for size in sizes:
            for _ in range(lists_per_label * 4):
                index = labeller.with_bank(BankSpec(labels=tuple(rng.sample(LABELS, size)))).index
                found[OUTSIDE_KIND, size] += [(r, "") for r in
                                              assign_labels(Embedded(items, emb, [], encoder), index, settings)]
    rows = []
    for kind in (*LIST_KINDS, OUTSIDE_KIND):
        for size in sizes:
            pairs = found[kind, size]
            if not pairs:
                continue
            flagged = float(np.mean([r.low_confidence for r, _ in pairs]))
            accuracy = (float(np.mean([r.top1 == t for r, t in pairs])) if kind == "names what is drawn" else None)
            rows.append(ListResult(kind, size, len(pairs), flagged, accuracy))
    return rows
