"""Benchmark: banded near-duplicate search over 1,000,000 random 64-bit hashes with planted near duplicates.

Plants `--planted` copies (1 to k random bit flips of a random original; a tenth of them exact copies),
runs the whole `find_duplicates` (banded search, components, representatives) on all hashes and checks
recall 1.0 on the planted pairs (each copy ends in its original's group). On a 20,000-hash subset it times
the banded search against the all-pairs brute force (`brute_force_pairs`, vectorised numpy, n^2 / 2
comparisons), checks both find the same pairs, and extrapolates the brute force to the full set by the
n^2 scaling. Writes bench/results/dedup.txt with the machine.

    python bench/dedup.py [--hashes 1000000] [--planted 10000] [--subset 20000] [--k 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from onegen.pipelines.hygiene.dedup_groups import (
    DedupConfig,
    band_layout,
    brute_force_pairs,
    candidate_pairs,
    close_pairs,
    find_duplicates,
)


def planted_hashes(count: int, planted: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (count + planted,) uint64, planted pairs (planted, 2) of row indices (original, copy))."""
    rng = np.random.default_rng(seed)
    originals = rng.integers(0, 2**64, count, dtype=np.uint64, endpoint=False)
    source = rng.choice(count, planted, replace=False)
    copies = originals[source].copy()
    flips = rng.integers(1, k + 1, planted)
    flips[: planted // 10] = 0  # exact copies
    for i in range(planted):
        for bit in rng.choice(64, flips[i], replace=False):
            copies[i] ^= np.uint64(1) << np.uint64(bit)
    pairs = np.stack([source, count + np.arange(planted)], axis=1)
    return np.concatenate([originals, copies]), pairs


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {model}; cores available: {cores}; python {platform.python_version()}; numpy {np.__version__}"


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def full_run(hashes: np.ndarray, pairs: np.ndarray, k: int) -> tuple[float, float, int]:
    """(seconds for find_duplicates on all hashes, recall on the planted pairs, duplicates found)."""
    keys = [f"h{i:07d}" for i in range(len(hashes))]
    areas = np.random.default_rng(1).integers(1, 10**6, len(hashes))
    found, seconds = timed(find_duplicates, keys, hashes, areas, None, None, DedupConfig(max_distance=k))
    group = [found.get(key, key) for key in keys]
    recall = float(np.mean([group[a] == group[b] for a, b in pairs.tolist()]))
    return seconds, recall, len(found)


def subset_run(hashes: np.ndarray, pairs: np.ndarray, size: int, k: int) -> tuple[float, float, int, int]:
    """(banded seconds, brute-force seconds, pairs found, candidate pairs compared) on `size` hashes."""
    rng = np.random.default_rng(2)
    planted = pairs[rng.choice(len(pairs), size // 20, replace=False)].ravel()  # a tenth of the subset are planted pairs, the rest random hashes
    others = np.setdiff1d(rng.choice(len(hashes), 2 * size, replace=False), planted)
    keep = np.concatenate([planted, rng.permutation(others)[: size - len(planted)]])
    values = np.unique(hashes[keep])
    (band_a, band_b), banded = timed(close_pairs, values, band_layout(k), k)
    (brute_a, brute_b), brute = timed(brute_force_pairs, values, k)
    found = {(min(a, b), max(a, b)) for a, b in zip(band_a.tolist(), band_b.tolist(), strict=True)}
    if found != set(zip(brute_a.tolist(), brute_b.tolist(), strict=True)):
        raise AssertionError("banded search and brute force disagree on the subset")
    compared = sum(len(a) for a, _ in candidate_pairs(values, band_layout(k)))
    return banded, brute, len(found), compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--planted", type=int, default=10_000)
    parser.add_argument("--subset", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=4)
    args = parser.parse_args()
    hashes, pairs = planted_hashes(args.hashes, args.planted, args.k)
    total = len(hashes)
    sub_banded, sub_brute, sub_found, sub_compared = subset_run(hashes, pairs, args.subset, args.k)
    full_seconds, recall, duplicates = full_run(hashes, pairs, args.k)
    if recall != 1.0:
        raise AssertionError(f"recall on planted pairs is {recall}, not 1.0")
    brute_full = sub_brute * (total / args.subset) ** 2
    lines = [
        f"banded pHash dedup, k = {args.k} ({args.k + 1} bands of {[w for _, w in band_layout(args.k)]} bits)",
        machine() + " (shared with other jobs while measured)",
        f"full set: {total:,} hashes ({args.hashes:,} random + {args.planted:,} planted copies at distance 0-{args.k})",
        f"  find_duplicates (banded search + groups + representatives): {full_seconds:.1f} s; "
        f"{duplicates:,} duplicates; recall on planted pairs {recall:.3f}",
        f"subset: {args.subset:,} hashes, {sub_found} pairs within {args.k} bits (banded == brute force)",
        f"  banded search: {sub_banded:.3f} s, {sub_compared:,} pairs compared of {args.subset * (args.subset - 1) // 2:,}",
        f"  brute force:   {sub_brute:.3f} s (all pairs, vectorised numpy)",
        f"  ratio on the subset: {sub_brute / sub_banded:.1f}x",
        f"brute force extrapolated to {total:,} (n^2): {brute_full:,.0f} s = {brute_full / 3600:.1f} h",
        f"extrapolated ratio brute force / banded on the full set: {brute_full / full_seconds:,.0f}x",
    ]
    print("\n".join(lines))
    out = Path(__file__).parent / "results" / "dedup.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
