"""Near-duplicate groups from 64-bit perceptual hashes, without comparing all pairs. Pure numpy; no Ray.

The rule (docs/decisions.md, "Hygiene"):
- two rows are duplicates when their pHashes (annotators.phash) differ in at most `max_distance` bits
  (default 4), or when their catalog sha256 are equal; duplicates group transitively (connected components);
- bands: the 64 bits are cut into max_distance + 1 contiguous bands, low bits first (`band_layout`; for 4:
  widths 13, 13, 13, 13, 12). Two hashes within distance k agree exactly on at least one of k + 1 bands
  (pigeonhole), so only hashes sharing a (band, band value) bucket are compared. Identical hash values are
  collapsed first, and a pair of distinct values is compared only in the first band on which the two agree
  (`band_pairs`), so no pair is ever compared twice;
- representative of a group: the largest image (width * height), then the smallest key;
- every other member is a duplicate of it, reason `duplicate_of:<representative key>`, except members that
  share the representative's non-empty exemption group (an ID subject), which are kept: rows of one group
  are never removed because of each other. Multiview scenes are not hashed at all.

API for a single process: `find_duplicates(keys, hashes, areas, exempt, sha256, config)` -> {key: rep}.
The Ray job (pipelines.dedup) runs the same pieces, `band_pairs` per bucket partition, `star_edges` for
identical values, then `representatives` over the components.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from onegen.pipelines.hygiene.settings import HASH_BITS, DedupConfig

DUPLICATE_PREFIX = "duplicate_of:"


def duplicate_reason(representative: str) -> str:
    """The skip reason of a row removed in favour of `representative`."""
    return f"{DUPLICATE_PREFIX}{representative}"


def band_layout(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of the max_distance + 1 contiguous bands covering the 64 bits, low bits first."""
    count = max_distance + 1
    widths = [HASH_BITS // count + (1 if i < HASH_BITS % count else 0) for i in range(count)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def to_uint64(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    """Hashes as a uint64 array; int64 input (the stored column) is reinterpreted bit for bit."""
    array = np.asarray(hashes)
    if array.dtype == np.int64:
        return array.view(np.uint64)
    if array.dtype == np.uint64:
        return array
    return np.array([int(h) & ((1 << 64) - 1) for h in array.tolist()], dtype=np.uint64)


def band_values(values: np.ndarray, shift: int, width: int) -> np.ndarray:
    """The `width` bits of each uint64 value starting at bit `shift` (uint64)."""
    return (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def band_pairs(values: np.ndarray, layout: list[tuple[int, int]], band: int, max_distance: int | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index pairs (a, b) of *distinct* uint64 `values` that share band `band` and no earlier band.

    Yields chunks (a, b, values[a] ^ values[b]); with `max_distance`, only the pairs that are also within
    that many bits (each candidate's distance computed once, here). Within one bucket every pair appears once; a pair that also
    agrees on an earlier band is left out (it was, or will be, produced by that band), so over all bands of
    one layout each unordered pair is yielded at most once. Work is proportional to the pairs inside buckets:
    values are sorted by the band, and offset d pairs each position with the one d places on in its bucket.
    """
    shift, width = layout[band]
    bucket = band_values(values, shift, width)
    order = np.argsort(bucket, kind="stable")
    ordered, ordered_values = bucket[order], values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    lengths = np.diff(np.r_[starts, len(values)])
    run_end = np.repeat(starts + lengths, lengths)  # (m,) exclusive end of each sorted position's bucket
    active = np.flatnonzero(run_end - np.arange(len(values)) > 1)
    offset = 1
    while active.size:
        differ = ordered_values[active] ^ ordered_values[active + offset]
        keep = np.ones(len(active), dtype=bool)
        for earlier_shift, earlier_width in layout[:band]:
            keep &= band_values(differ, earlier_shift, earlier_width) != 0
        differ = differ[keep]
        first = active[keep]
        if max_distance is not None:
            close = np.bitwise_count(differ) <= max_distance
            first, differ = first[close], differ[close]
        yield order[first], order[first + offset], differ
        offset += 1
        active = active[run_end[active] - active > offset]


def candidate_pairs(values: np.ndarray, layout: list[tuple[int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`band_pairs` over every band: each unordered pair of distinct values sharing a band, exactly once."""
    for band in range(len(layout)):
        for a, b, _ in band_pairs(values, layout, band):
            yield a, b


def close_pairs(values: np.ndarray, layout: list[tuple[int, int]], max_distance: int,
                bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of distinct uint64 `values` within `max_distance` bits, found through `bands` (all)."""
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for band in range(len(layout)) if bands is None else bands:
        for a, b, _ in band_pairs(values, layout, band, max_distance):
            found_a.append(a)
            found_b.append(b)
    return np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)


def star_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows with equal labels joined to the first row of their label.

    Returns (edges_a, edges_b, first row per distinct label, distinct labels) as index arrays into `labels`.
    """
    distinct, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rows = np.arange(len(labels))
    others = rows != first[inverse]
    return rows[others], first[inverse][others], first, distinct


def components(count: int, edges_a: np.ndarray, edges_b: np.ndarray) -> np.ndarray:
    """Connected-component label (int) of each of `count` nodes of the undirected graph of the edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    weights = np.ones(len(edges_a), dtype=np.int32)
    graph = coo_matrix((weights, (edges_a, edges_b)), shape=(count, count)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels


def representatives(labels: np.ndarray, keys: np.ndarray, areas: np.ndarray, exempt: np.ndarray) -> dict[str, str]:
    """{duplicate key: representative key} over groups of equal `labels` (see the module rule).

    keys (n,) str, areas (n,) int64 pixels, exempt (n,) str ("" = no exemption group).
    """
    counts = np.bincount(labels)
    grouped = np.flatnonzero(counts[labels] > 1)
    if not grouped.size:
        return {}
    order = grouped[np.lexsort((keys[grouped], -areas[grouped], labels[grouped]))]
    ordered_labels = labels[order]
    first = np.r_[True, ordered_labels[1:] != ordered_labels[:-1]]
    rep = order[first][np.cumsum(first) - 1]  # (len(order),) the representative row of each row's group
    same_group = (exempt[order] != "") & (exempt[order] == exempt[rep])
    dropped = ~first & ~same_group
    return dict(zip(keys[order[dropped]].tolist(), keys[rep[dropped]].tolist(), strict=True))


def find_duplicates(keys: Sequence[str], hashes: Sequence[int | None] | np.ndarray, areas: Sequence[int],
                    exempt: Sequence[str | None] | None = None, sha256: Sequence[str | None] | None = None,
                    config: DedupConfig = DedupConfig()) -> dict[str, str]:
    """{key: representative key} for every row that is a duplicate; representatives and unique rows are absent.

    One entry per row, all of one length n: `keys` unique catalog keys; `hashes` pHash (int64 bit pattern or
    unsigned; None where the row has none); `areas` width * height; `exempt` exemption group (None or "" for
    none); `sha256` catalog content hash (None to leave exact duplicates to the pHash alone).
    """
    count = len(keys)
    key_array = np.array(list(keys), dtype=str)
    if len(set(key_array.tolist())) != count:
        raise ValueError("find_duplicates needs unique keys")
    exempt_array = np.array(["" if e is None else str(e) for e in (exempt or [""] * count)], dtype=str)
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    present = np.flatnonzero([h is not None for h in hashes]) if not isinstance(hashes, np.ndarray) else np.arange(count)
    if present.size:
        values = to_uint64([hashes[i] for i in present] if not isinstance(hashes, np.ndarray) else hashes)
        same_a, same_b, first, distinct = star_edges(values)
        edges.append((present[same_a], present[same_b]))
        near_a, near_b = close_pairs(distinct, band_layout(config.max_distance), config.max_distance)
        edges.append((present[first[near_a]], present[first[near_b]]))
    if sha256 is not None:
        known = np.flatnonzero([s is not None for s in sha256])
        same_a, same_b, _, _ = star_edges(np.array([sha256[i] for i in known], dtype=str))
        edges.append((known[same_a], known[same_b]))
    if not edges:
        return {}
    labels = components(count, np.concatenate([a for a, _ in edges]), np.concatenate([b for _, b in edges]))
    return representatives(labels, key_array, np.asarray(areas, dtype=np.int64), exempt_array)


def brute_force_pairs(values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Every index pair (a < b) of uint64 `values` within `max_distance` bits, by comparing all n^2 / 2 pairs.

    The baseline the bench and the tests measure the banded search against.
    """
    found_a, found_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for a in range(len(values) - 1):
        close = np.flatnonzero(np.bitwise_count(values[a + 1 :] ^ values[a]) <= max_distance) + a + 1
        found_a.append(np.full(len(close), a, np.int64))
        found_b.append(close.astype(np.int64))
    return np.concatenate(found_a), np.concatenate(found_b)
