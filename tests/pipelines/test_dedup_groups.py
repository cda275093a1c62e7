"""Banded near-duplicate grouping: same answer as all pairs, no pair twice, k + 1 never merged, the rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from onegen.annotators.phash import phash64
from onegen.pipelines.hygiene.dedup_groups import (
    DedupConfig,
    band_layout,
    brute_force_pairs,
    candidate_pairs,
    close_pairs,
    duplicate_reason,
    find_duplicates,
    to_uint64,
)
from tests.conftest import photo


def _flip(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def _random_with_planted(count: int, planted: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, count, dtype=np.int64).view(np.uint64) * np.uint64(2)
    copies = [_flip(int(v), rng.choice(64, int(rng.integers(1, 5)), replace=False).tolist()) for v in values[:planted]]
    return np.unique(np.concatenate([values, np.array(copies, np.uint64)]))


def test_band_layout_covers_the_64_bits():
    for k in (0, 1, 4, 7, 15):
        layout = band_layout(k)
        assert len(layout) == k + 1
        assert sum(w for _, w in layout) == 64 and layout[0][0] == 0
        assert all(s + w == s2 for (s, w), (s2, _) in zip(layout, layout[1:], strict=False))
    assert band_layout(4) == [(0, 13), (13, 13), (26, 13), (39, 13), (52, 12)]


def test_banded_search_finds_exactly_what_brute_force_finds():
    values = _random_with_planted(3000, 300)
    for k in (2, 4, 6):
        a, b = close_pairs(values, band_layout(k), k)
        banded = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
        brute = set(zip(*(arr.tolist() for arr in brute_force_pairs(values, k)), strict=True))
        assert banded == brute and len(banded) == len(a)  # same pairs, none reported twice
        assert k < 4 or len(brute) >= 300  # the planted pairs (distance 1-4) are there


def test_no_pair_compared_twice_and_every_band_sharing_pair_compared():
    # clustered values so that buckets are large and pairs share several bands
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 20, dtype=np.int64).view(np.uint64)
    values = np.unique(base[rng.integers(0, 20, 2000)] ^ (np.uint64(1) << rng.integers(0, 64, 2000).astype(np.uint64)))
    layout = band_layout(4)
    compared = [(min(x, y), max(x, y)) for a, b in candidate_pairs(values, layout) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert len(compared) == len(set(compared))
    masks = [((1 << w) - 1) << s for s, w in layout]
    sharing = {(i, j) for i in range(len(values)) for j in range(i + 1, len(values))
               if any((int(values[i]) ^ int(values[j])) & m == 0 for m in masks)}
    assert set(compared) == sharing


@pytest.mark.parametrize("spread", [True, False])
def test_distance_k_merged_and_k_plus_one_not(spread):
    k = 4
    layout = band_layout(k)
    origin = 0x0123456789ABCDEF
    # spread: one flipped bit per band (c agrees with the origin on no band); else all flips inside band 0.
    # b's and c's flips are disjoint, so b and c are 2k + 1 apart and cannot join through each other.
    b_bits = [s for s, _ in layout[:k]] if spread else list(range(k))
    c_bits = [s + 1 for s, _ in layout] if spread else list(range(k, 2 * k + 1))
    keys = ["a-origin", "b-at-k", "c-at-k-plus-1"]
    hashes = [origin, _flip(origin, b_bits), _flip(origin, c_bits)]
    found = find_duplicates(keys, hashes, areas=[100, 50, 50], config=DedupConfig(max_distance=k))
    assert found == {"b-at-k": "a-origin"}
    alone = find_duplicates(keys[::2], hashes[::2], areas=[100, 50], config=DedupConfig(max_distance=k))
    assert alone == {}


def _jpeg(pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, bytes]:
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.BICUBIC).save(buffer, format="JPEG", quality=85)
    data = buffer.getvalue()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), data


def test_exact_and_near_duplicates_across_two_sources_with_the_documented_representative():
    import hashlib

    astro_small, astro_small_bytes = _jpeg(photo("astronaut"), (200, 200))
    astro_big, astro_big_bytes = _jpeg(photo("astronaut"), (320, 320))
    coffee, coffee_bytes = _jpeg(photo("coffee"), (300, 200))
    rocket, rocket_bytes = _jpeg(photo("rocket"), (200, 150))
    rows = [  # (key, pixels, bytes): source "laion" and source "coyo"
        ("laion-astro", astro_small, astro_small_bytes), ("coyo-astro", astro_big, astro_big_bytes),
        ("laion-coffee", coffee, coffee_bytes), ("coyo-coffee", coffee, coffee_bytes),  # exact copy
        ("coyo-rocket", rocket, rocket_bytes),
    ]
    keys = [k for k, _, _ in rows]
    hashes = [phash64(p) for _, p, _ in rows]
    areas = [p.shape[0] * p.shape[1] for _, p, _ in rows]
    sha = [hashlib.sha256(b).hexdigest() for _, _, b in rows]
    found = find_duplicates(keys, hashes, areas, sha256=sha)
    # largest image wins; equal sizes: the smallest key
    assert found == {"laion-astro": "coyo-astro", "laion-coffee": "coyo-coffee"}
    assert duplicate_reason(found["laion-astro"]) == "duplicate_of:coyo-astro"
    # sha256 alone finds the exact copy when a hash is missing
    no_hash = find_duplicates(keys, [None, hashes[1], None, hashes[3], hashes[4]], areas, sha256=sha)
    assert no_hash == {"laion-coffee": "coyo-coffee"}


def test_groups_are_transitive_and_subject_photos_never_removed_for_each_other():
    origin = 0xF0F0F0F0F0F0F0F0
    keys = ["s1", "s2", "x", "y"]
    hashes = [origin, _flip(origin, [1, 2]), _flip(origin, [1, 2, 3, 4]), _flip(origin, [1, 2, 3, 4, 5, 6, 7])]
    subject = ["subj:a", "subj:a", None, None]
    # chain s1 - s2 - x - y (y is 7 bits from s1 but 3 from x): one group; s1 largest -> s2 kept (same subject)
    found = find_duplicates(keys, hashes, [900, 400, 100, 100], exempt=subject)
    assert found == {"x": "s1", "y": "s1"}
    # an outside image larger than both subject photos: both are its duplicates, not each other's
    found = find_duplicates(keys, hashes, [400, 400, 900, 100], exempt=subject)
    assert found == {"s1": "x", "s2": "x", "y": "x"}


def test_int64_storage_round_trip_and_unique_keys():
    value = (1 << 64) - 3
    stored = np.array([value - (1 << 64)], np.int64)
    assert int(to_uint64(stored)[0]) == value == int(to_uint64([value])[0])
    with pytest.raises(ValueError, match="unique keys"):
        find_duplicates(["k", "k"], [1, 2], [1, 1])
