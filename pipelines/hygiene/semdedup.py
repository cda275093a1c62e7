"""Semantic dedup on the stored CLIP embeddings (issue 13, optional): k-means, then a cosine threshold per cluster.

As NeMo Curator's SemDeDup: embeddings are L2-normalised and clustered with spherical k-means (k-means++
seeding, Lloyd iterations on cosine similarity, seeded so reruns agree); only members of one cluster are
compared, and two are duplicates when their cosine similarity is >= `threshold` (NeMo's 1 - eps). Unlike
NeMo's per-cluster ranking, duplicates then group transitively and each group keeps the same representative
as the pHash dedup (pipelines.dedup_groups: largest image, then smallest key; members of the
representative's exemption group are kept) with the same reason, `duplicate_of:<key>`. Pairs that fall into
different clusters are never compared: that is the approximation k-means buys (more clusters: faster, fewer
found).

API: `semantic_duplicates(keys, embeddings, areas, exempt, config)` -> {duplicate key: representative key};
embeddings (n, d) float16 or float32 (`annotators.clip.embedding_matrix` of the clip store's `embedding`
column). Pure numpy; no Ray, no model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onegen.pipelines.hygiene.dedup_groups import components, representatives
from onegen.pipelines.hygiene.settings import SemDedupConfig

CHUNK = 4096  # rows per similarity block: memory CHUNK x cluster size float32


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows of unit length (zero rows stay zero)."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid per row by cosine, that cosine), in blocks of CHUNK rows."""
    labels = np.empty(len(x), np.int64)
    best = np.empty(len(x), np.float32)
    for start in range(0, len(x), CHUNK):
        sims = x[start : start + CHUNK] @ centroids.T  # (c, k)
        labels[start : start + CHUNK] = sims.argmax(axis=1)
        best[start : start + CHUNK] = sims.max(axis=1)
    return labels, best


def kmeans(x: np.ndarray, clusters: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of unit rows x (n, d): (labels (n,) int64, centroids (k, d) unit float32)."""
    rng = np.random.default_rng(seed)
    k = min(clusters, len(x))
    centroids = [x[int(rng.integers(len(x)))]]
    closest = 1.0 - x @ centroids[0]  # (n,) cosine distance to the nearest chosen centroid
    for _ in range(1, k):  # k-means++: draw proportionally to the squared distance
        weights = np.maximum(closest, 0.0) ** 2
        pick = int(rng.choice(len(x), p=weights / weights.sum())) if weights.sum() > 0 else int(rng.integers(len(x)))
        centroids.append(x[pick])
        closest = np.minimum(closest, 1.0 - x @ x[pick])
    centres = np.stack(centroids).astype(np.float32)  # (k, d)
    labels = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        labels, best = _assign(x, centres)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
        sums[empty] = x[np.argsort(best)[: len(empty)]]  # an empty cluster restarts at the worst-fitting rows
        updated = normalise(sums)
        if np.array_equal(updated, centres):
            break
        centres = updated
    return labels, centres


def similar_pairs(x: np.ndarray, members: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a < b, into x) among `members` whose cosine is >= threshold; each pair once."""
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    block = x[members]  # (m, d)
    for start in range(0, len(members), CHUNK):
        sims = block[start : start + CHUNK] @ block.T  # (c, m)
        rows, cols = np.nonzero(sims >= threshold)
        rows = rows + start
        upper = cols > rows
        found_a.append(members[rows[upper]])
        found_b.append(members[cols[upper]])
    return np.concatenate(found_a), np.concatenate(found_b)


def semantic_duplicates(keys: Sequence[str], embeddings: np.ndarray, areas: Sequence[int],
                        exempt: Sequence[str | None] | None = None,
                        config: SemDedupConfig = SemDedupConfig()) -> dict[str, str]:
    """{duplicate key: representative key} by k-means + cosine threshold (module doc)."""
    count = len(keys)
    if embeddings.shape[0] != count or len(areas) != count:
        raise ValueError(f"semantic_duplicates: {count} keys, {embeddings.shape[0]} embeddings, {len(areas)} areas")
    if count < 2:
        return {}
    x = normalise(embeddings)
    labels, _ = kmeans(x, config.n_clusters, config.iterations, config.seed)
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        a, b = similar_pairs(x, order[start:end], config.threshold)
        found_a.append(a)
        found_b.append(b)
    groups = components(count, np.concatenate(found_a), np.concatenate(found_b))
    exempt_array = np.array(["" if e is None else str(e) for e in (exempt or [""] * count)], dtype=str)
    return representatives(groups, np.array(list(keys), dtype=str), np.asarray(areas, np.int64), exempt_array)
