"""Grouping: confident items by label, low-confidence ones clustered and named by the nearest concept."""

from __future__ import annotations

import numpy as np
import pytest

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.labelling.filtered import split_by_confidence
from cliplabel_pipeline.core.organising.grouping import cluster_low_confidence, group_items
from cliplabel_pipeline.core.pipeline import group_labelled, label_job
from cliplabel_pipeline.core.values import LabelRecord, LabelSettings
from cliplabel_pipeline.toyworld.jobs import write_toy_job

LABELS = ["red star", "blue circle", "green square", "yellow triangle"]


def test_confident_groups_match_the_ground_truth(labeller, toy_job):
    root, job_id = toy_job
    labelled = label_job(labeller, JobFolder.open(root, job_id))
    groups = group_labelled(labelled, labeller.index).groups.to_json()
    by_name = {g["name"]: sorted(g["items"]) for g in groups["groups"]}
    for i, label in enumerate(LABELS):
        assert {f"masks/obj_{i:02d}.png", f"objects/obj_{i:02d}.png"} <= set(by_name[label])
    # every object is confident; only the whole picture of four objects, which no single concept matches, is not
    assert [i for c in groups["clusters"] for i in c["items"]] == ["source.png"]


def test_low_confidence_clusters_are_named_after_what_they_hold(labeller, results_root):
    write_toy_job(results_root, "job", seed=9, labels=LABELS + LABELS, size=(384, 256))
    strict = LabelSettings(min_confidence=1.0)  # everything is low-confidence (the bound: at most 1)
    labelled = label_job(labeller, JobFolder.open(results_root, "job"), strict)
    groups = group_labelled(labelled, labeller.index).groups.to_json()
    assert groups["groups"] == []
    named = {}
    for cluster in groups["clusters"]:
        for item in cluster["items"]:
            if item != "source.png":
                named[item] = cluster["name"]
    truth = {f"{d}/obj_{i:02d}.png": (LABELS + LABELS)[i] for d in ("masks", "objects") for i in range(8)}
    agree = sum(named[p] == truth[p] for p in truth)
    assert agree >= 14, named


def test_grouping_is_deterministic(labeller, toy_job):
    root, job_id = toy_job
    emb = label_job(labeller, JobFolder.open(root, job_id)).embedded.embeddings
    a = cluster_low_confidence(emb, labeller.index.text_emb, labeller.index.names)
    b = cluster_low_confidence(emb, labeller.index.text_emb, labeller.index.names)
    assert a == b


@pytest.mark.parametrize("n", [0, 1, 2])
def test_zero_one_or_two_low_confidence_items(labeller, n):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, labeller.index.text_emb.shape[1])).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) if n else 1
    records = [LabelRecord(f"objects/{i}.png", "object", [], "red star", 0.1, 0.1, 0.0, True) for i in range(n)]
    groups = group_items(split_by_confidence(records), {r.path: x[i] for i, r in enumerate(records)},
                         labeller.index).to_json()
    assert len(groups["clusters"]) == min(n, 1)
    assert sum(len(c["items"]) for c in groups["clusters"]) == n
    for c in groups["clusters"]:
        assert c["name"] in labeller.index.names and -1 <= c["similarity"] <= 1


def test_past_the_sample_size_k_is_chosen_on_a_sample_and_every_item_is_clustered(labeller):
    """3,000 flagged items in five tight groups: k chosen on 2,000 of them still finds five, and each group's
    items, sampled or not, land in one cluster of their own."""
    from cliplabel_pipeline.core.organising.grouping import CHOOSE_ON

    rng = np.random.default_rng(1)
    width = labeller.index.text_emb.shape[1]
    centres = rng.normal(size=(5, width))
    truth = rng.integers(0, 5, 3000)
    x = (centres[truth] + rng.normal(scale=0.3, size=(3000, width))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert len(x) > CHOOSE_ON
    clusters = cluster_low_confidence(x, labeller.index.text_emb, labeller.index.names)
    assert len(clusters) == 5
    assert sorted(sorted(c["members"]) for c in clusters) == sorted(np.flatnonzero(truth == t).tolist() for t in range(5))


def test_grouping_reads_the_filtered_sets_it_is_given(labeller, toy_job):
    """Grouping takes the split from the filtered sets, not from the records again: an item the sets flag is
    clustered, whatever its record says."""
    root, job_id = toy_job
    labelled = label_job(labeller, JobFolder.open(root, job_id))
    strict = split_by_confidence(labelled.records, min_confidence=1.01)  # every item flagged by confidence
    assert not strict.kept and {f.rules for f in strict.flagged} >= {("confidence",)}
    groups = group_labelled(labelled, labeller.index, strict).groups
    assert groups.groups == []
    assert sorted(i for c in groups.clusters for i in c.items) == sorted(r.path for r in labelled.records)
