"""Dedup tables as the build reads them (issue 13): the methods, the table each one names, one part's duplicates.

Pure; no Ray. The dedup jobs (pipelines/jobs/dedup.py: pHash, pipelines/jobs/semdedup.py: CLIP embeddings)
write the tables, the build units read them here; every path comes from manifests/layout.py:

    dedup/phash-k<max_distance>/<source>/part-NNNNN.parquet      (DatasetLayout.phash_dedup)
    dedup/semantic-t<threshold>/<source>/part-NNNNN.parquet      (DatasetLayout.semantic_dedup)
    dedup/<table>/_SUCCESS.json                                  the counts, committed last (done marker)

One Parquet per catalog part, one row per catalog row removed as a duplicate (rows absent are kept):
`key`, `representative` (the key it duplicates), `reason` (`duplicate_of:<representative>`, the build's skip
reason); its Parquet metadata `onegen.catalog_keys_sha256` is the hash of the catalog part's keys it was
made from, so a table made from another version of the part is refused, not misapplied.

`dedup_table` is the one place a dedup method ("phash" | "semantic") is told apart from the other: the
build's hygiene, `onegen dedup` and a recipe's dedup stage all get the table folder from it, and
pipelines/jobs/dedup_run.py runs the method's job for it.
"""

from __future__ import annotations

from typing import get_args

from onegen.core.errors import PathError
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, split_part
from onegen.pipelines.hygiene.settings import DedupMethod

DEDUP_METHODS = tuple(method for method in get_args(DedupMethod) if method)  # the settings type owns them
PHASH, SEMANTIC = DEDUP_METHODS
CATALOG_KEYS_META = "onegen.catalog_keys_sha256"  # the same metadata key annotation parts carry


def dedup_table(root: str, method: str, max_distance: int, threshold: float) -> str | None:
    """The table folder `method` writes and the build reads under `root` (None when `method` is "": off);
    `max_distance` is pHash's Hamming distance, `threshold` the semantic cosine. ValueError for another method."""
    if method not in ("", *DEDUP_METHODS):
        raise ValueError(f"dedup must be one of {DEDUP_METHODS} or empty, got {method!r}")
    if not method:
        return None
    layout = DatasetLayout(root)
    return layout.phash_dedup(max_distance) if method == PHASH else layout.semantic_dedup(threshold)


def is_finished(table: str) -> bool:
    """Whether the dedup job committed `table` whole (its done marker exists)."""
    return files.exists(DatasetLayout.dedup_done(table))


def read_part_duplicates(table: str, catalog_part: str, catalog_keys_sha256: str | None = None) -> dict[str, str]:
    """{duplicate key: representative} of the catalog part at path `catalog_part`, for a build unit.

    Refuses an unfinished table (PathError: run the dedup job first) and one made from another version of the part
    (RuntimeError, when `catalog_keys_sha256` is given)."""
    if not is_finished(table):
        raise PathError(f"no finished dedup table at {table}: run `onegen dedup` first")
    path = DatasetLayout.dedup_part(table, catalog_part)
    recorded = files.read_metadata(path).get(CATALOG_KEYS_META)
    if catalog_keys_sha256 is not None and recorded != catalog_keys_sha256:
        source, part_file = split_part(catalog_part)
        raise RuntimeError(f"{path} was made from another version of catalog part {source}/{part_file}: run dedup again")
    found = files.read_table(path, ["key", "representative"])
    return dict(zip(found.column("key").to_pylist(), found.column("representative").to_pylist(), strict=True))
