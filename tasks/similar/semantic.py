"""Semantic duplicates: items whose embeddings point the same way (SemDeDup, Abbas et al., 2023).

k-means (faiss, spherical) cuts the L2-normalised embeddings into about √N clusters. Within each cluster the
members are taken best first (the keep policy's order), and each member's most similar better member is found,
with their cosine. An item is a semantic duplicate at ε when that cosine is at least 1 − ε, so a larger ε removes
a superset of what a smaller one removes, and one pass answers every ε (`removed_shares`). Pairs that k-means puts
in different clusters are not compared: the price of not comparing every pair (SemDeDup accepts it too).
"""

from __future__ import annotations

import math

import numpy as np

BLOCK = 2048  # rows of a cluster compared at once: a (BLOCK × cluster size) float32 matrix at a time
EPSILONS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)  # the ε a report and a dry run show the removed share of
TRAIN_POINTS_PER_CLUSTER = 64  # k-means learns its centroids from a sample of this many points per cluster
ITERATIONS = 10


def nearest_better(
    vectors: np.ndarray, rank: np.ndarray, clusters: int | None = None, seed: int = 0, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `vectors` (L2-normalised, float16 or float32): the row of its most similar member of its
    cluster that `rank` puts before it (-1 for a cluster's first), and their cosine (-1.0 where there is none).
    `rank`: each row's place in the keep order, smaller first, all different. `labels`: the clusters, where
    `cluster_labels` made them already."""
    n = len(vectors)
    parent, cosine = np.full(n, -1, np.int64), np.full(n, -1.0, np.float32)
    if n < 2:
        return parent, cosine
    if labels is None:
        labels = cluster_labels(vectors, clusters or round(math.sqrt(n)), seed)
    order = np.lexsort((rank, labels))  # by cluster, best first within it
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, cuts):
        x = np.asarray(vectors[members], dtype=np.float32)
        for start in range(1, len(members), BLOCK):  # the first member has nothing before it
            rows = np.arange(start, min(start + BLOCK, len(members)))
            sims = x[rows] @ x[: rows[-1]].T  # each row against every member before the block's last
            sims[rows[:, None] <= np.arange(rows[-1])[None, :]] = -np.inf  # only members before the row
            best = sims.argmax(axis=1)
            parent[members[rows]] = members[best]
            cosine[members[rows]] = sims[np.arange(len(rows)), best]
    return parent, cosine


def cluster_labels(vectors: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each row's k-means cluster (faiss, spherical: centroids normalised, so nearest is most similar)."""
    import faiss

    n, d = vectors.shape
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, np.int64)
    sample = np.random.default_rng(seed).choice(n, min(n, k * TRAIN_POINTS_PER_CLUSTER), replace=False)
    kmeans = faiss.Kmeans(
        d, k, niter=ITERATIONS, seed=seed, spherical=True, max_points_per_centroid=TRAIN_POINTS_PER_CLUSTER
    )
    kmeans.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
    labels = np.empty(n, np.int64)
    for start in range(0, n, 65536):  # float32 a chunk at a time: the whole matrix stays as it came
        chunk = np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32)
        labels[start : start + len(chunk)] = kmeans.index.search(chunk, 1)[1][:, 0]
    return labels


def nearest_in(vectors: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `vectors`, the most similar row of `others` (exact search) and their cosine."""
    import faiss

    if not len(others) or not len(vectors):
        return np.full(len(vectors), -1, np.int64), np.full(len(vectors), -1.0, np.float32)
    index = faiss.IndexFlatIP(others.shape[1])
    index.add(np.ascontiguousarray(others, dtype=np.float32))
    found, where = [], []
    for start in range(0, len(vectors), 65536):
        sims, ids = index.search(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32), 1)
        found.append(sims[:, 0])
        where.append(ids[:, 0])
    return np.concatenate(where).astype(np.int64), np.concatenate(found).astype(np.float32)


def removed_shares(cosine: np.ndarray, epsilons=EPSILONS) -> dict[str, float]:
    """The share of items each ε would remove: those whose nearest better member is at cosine ≥ 1 − ε."""
    n = max(len(cosine), 1)
    return {f"{e:g}": round(float((cosine >= 1 - e).sum()) / n, 4) for e in epsilons}
