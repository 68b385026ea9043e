"""Grouping a job's confidence-filtered sets: the kept items by label, the flagged ones by KMeans.

k is chosen by silhouette over 2..min(8, n-1) (seeded, so reruns give the same groups); 0, 1 or 2
low-confidence items make at most one cluster. Past ``CHOOSE_ON`` items, k is chosen on a seeded sample of
that many (the silhouette compares every pair, so its cost grows with the square of the items) and only the
chosen k is fitted on them all: a job of 10,000 flagged items costs about what one of 2,000 does. Each cluster is named after the concept whose text
embedding is nearest to the cluster's (re-normalised) centroid, and that similarity is kept. Names are
distinct: the clusters choose in order of how close their best concept is, and one whose nearest concept
is taken gets its next-nearest (a suffix only when the bank has fewer concepts than there are clusters).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cliplabel_pipeline.core.labelling.filtered import FilteredSets
from cliplabel_pipeline.core.labelling.index import ConceptIndex
from cliplabel_pipeline.core.values import Cluster, Group, Groups

SEED = 0
MAX_K = 8
CHOOSE_ON = 2000  # items k is chosen on; more are sampled down to this many


def import_clustering() -> None:
    """Import scikit-learn's KMeans and silhouette now. A long-lived worker calls this at its start: otherwise the
    first job with something to cluster, perhaps an hour in, grows its process by the library (about 70 MB)."""
    import sklearn.cluster  # noqa: F401
    import sklearn.metrics  # noqa: F401


def choose_k(x: np.ndarray) -> int:
    """The k in 2..min(8, n-1) with the best cosine silhouette; 1 for fewer than 3 distinct points."""
    if len(x) > CHOOSE_ON:
        x = x[np.sort(np.random.default_rng(SEED).choice(len(x), CHOOSE_ON, replace=False))]
    n = len(np.unique(x.round(5), axis=0))  # a mask and its cut-out can embed identically
    if n < 3:
        return min(n, 1)
    from sklearn.cluster import KMeans  # only where there is something to cluster: 1-2 s to import
    from sklearn.metrics import silhouette_score

    best_k, best = 1, -1.0
    for k in range(2, min(MAX_K, n - 1) + 1):
        labels = KMeans(k, n_init=4, random_state=SEED).fit_predict(x)
        if len(set(labels)) < 2:
            continue
        score = silhouette_score(x, labels, metric="cosine")
        if score > best:
            best_k, best = k, score
    return best_k


def cluster_low_confidence(x: np.ndarray, text_emb: np.ndarray, names: tuple[str, ...]) -> list[dict]:
    """Clusters of rows of ``x``: ``{"name", "similarity", "members": [row indices]}``."""
    k = choose_k(x)
    if k == 0:
        return []
    if k == 1:
        assign = np.zeros(len(x), int)
    else:
        from sklearn.cluster import KMeans

        assign = KMeans(k, n_init=4, random_state=SEED).fit_predict(x)
    found = []
    for c in range(k):
        members = np.flatnonzero(assign == c)
        centroid = x[members].mean(0)
        centroid /= np.linalg.norm(centroid) or 1.0
        found.append((text_emb @ centroid, members))
    return _named(found, names)


def _named(found: list[tuple[np.ndarray, np.ndarray]], names: tuple[str, ...]) -> list[dict]:
    """Each ``(similarities to every concept, members)`` named after its nearest concept not yet taken."""
    taken: set[int] = set()
    repeats: dict[int, int] = defaultdict(int)
    named: dict[int, dict] = {}
    for c in sorted(range(len(found)), key=lambda c: -float(found[c][0].max())):
        sims, members = found[c]
        order = [int(j) for j in np.argsort(-sims, kind="stable")]
        free = next((j for j in order if j not in taken), None)
        if free is None:  # more clusters than concepts
            best = order[0]
            repeats[best] += 1
            name = f"{names[best]} ({repeats[best] + 1})"
        else:
            best, name = free, names[free]
            taken.add(free)
        named[c] = {"name": name, "similarity": round(float(sims[best]), 6), "members": members.tolist()}
    return [named[c] for c in range(len(found))]


def group_items(filtered: FilteredSets, embeddings: dict[str, np.ndarray], index: ConceptIndex) -> Groups:
    """The kept items grouped by their label of record (a reviewed item by the label a person gave); the flagged
    ones (a rejected item among them) clustered and named after a concept. ``embeddings``: by path, at least
    every flagged item's."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for rec in filtered.kept:
        by_label[rec.label or rec.top1].append(rec.path)  # the label of record: a person's, where one decided
    groups = Groups([Group(name, items) for name, items in sorted(by_label.items())])
    low = [f.path for f in filtered.flagged]
    if low:
        x = np.stack([embeddings[p] for p in low])
        for i, c in enumerate(cluster_low_confidence(x, index.text_emb, index.names)):
            groups.clusters.append(Cluster(c["name"], i, c["similarity"], [low[m] for m in c["members"]]))
    return groups
