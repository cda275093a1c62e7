"""Semantic dedup: k-means + cosine threshold, same representative rule and reasons as the pHash dedup."""

from __future__ import annotations

import numpy as np

from onegen.pipelines.hygiene.semdedup import (
    SemDedupConfig,
    kmeans,
    normalise,
    semantic_duplicates,
    similar_pairs,
)


def _planted(seed: int = 0):
    rng = np.random.default_rng(seed)
    base = normalise(rng.normal(size=(300, 32)))
    near = normalise(base[:20] + 0.02 * rng.normal(size=(20, 32)))  # cosine ~0.99 with its original
    keys = [f"laion-{i:03d}" for i in range(300)] + [f"coyo-{i:03d}" for i in range(20)]
    areas = [100] * 300 + [400] * 20  # the copies are larger: they are the representatives
    return keys, np.concatenate([base, near]).astype(np.float16), areas


def test_planted_copies_found_with_the_documented_representative():
    keys, embeddings, areas = _planted()
    found = semantic_duplicates(keys, embeddings, areas, config=SemDedupConfig(n_clusters=8, threshold=0.95))
    assert found == {f"laion-{i:03d}": f"coyo-{i:03d}" for i in range(20)}
    # equal sizes: the smaller key wins
    same_size = semantic_duplicates(keys, embeddings, [100] * 320, config=SemDedupConfig(n_clusters=8))
    assert same_size == {f"laion-{i:03d}": f"coyo-{i:03d}" for i in range(20)}  # "coyo-" < "laion-"


def test_below_threshold_not_merged_and_exemption_kept():
    a = normalise(np.array([[1.0, 0.0, 0.0]]))[0]
    b = normalise(np.array([[1.0, 0.3, 0.0]]))[0]  # cosine 0.958 with a
    x = np.stack([a, b, normalise(np.array([[0.0, 0.0, 1.0]]))[0]])
    keys, areas = ["a", "b", "c"], [10, 20, 30]
    assert semantic_duplicates(keys, x, areas, config=SemDedupConfig(n_clusters=1, threshold=0.95)) == {"a": "b"}
    assert semantic_duplicates(keys, x, areas, config=SemDedupConfig(n_clusters=1, threshold=0.96)) == {}
    assert semantic_duplicates(keys, x, areas, exempt=["s", "s", None], config=SemDedupConfig(n_clusters=1)) == {}


def test_kmeans_is_seeded_and_pairs_are_unique():
    keys, embeddings, _ = _planted(1)
    x = normalise(embeddings)
    labels, centres = kmeans(x, 8, 20, seed=3)
    again, _ = kmeans(x, 8, 20, seed=3)
    assert np.array_equal(labels, again) and np.allclose(np.linalg.norm(centres, axis=1), 1, atol=1e-5)
    a, b = similar_pairs(x, np.arange(len(x)), 0.2)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) and all(i < j for i, j in pairs)
    brute = {(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if float(x[i] @ x[j]) >= 0.2}
    assert set(pairs) == brute
