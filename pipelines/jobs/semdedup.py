"""`dedup/semantic-t<threshold>/`: semantic dedup (pipelines.semdedup) of the `clip` store, as one Ray task.

The same table layout, reason and reader as the pHash dedup (pipelines.dedup): one Parquet per catalog part
(key, representative, reason `duplicate_of:<key>`), `_SUCCESS.json` last; build units read their part with
`dedup_tables.read_part_duplicates` (tables in `DatasetLayout.semantic_dedup`). The task reads
every catalog part's small columns and the aligned clip part's embeddings on one worker (O(n x d) float32:
one million ViT-L/14 embeddings are 3 GB); the driver only plans and gets the counts. The job is the same
one-unit job as the pHash dedup's (`SemanticDedupJob`: its marker, its input fingerprint), run as one task. Rows without an "ok"
clip annotation (scenes, errors) are never semantic duplicates.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict

import numpy as np

from onegen.annotators.clip import decode_embedding
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.hygiene.semdedup import SemDedupConfig, semantic_duplicates
from onegen.pipelines.jobs.dedup import (
    CATALOG_COLUMNS,
    PART_SHIFT,
    DedupPart,
    DedupTableJob,
    DedupUnit,
    exemption_group,
    write_dedup,
)
from onegen.pipelines.runtime.unit_job import run_job

CLIP_STORE = "clip"


def semantic_dedup_parts(parts: list[DedupPart] | tuple[DedupPart, ...], config: SemDedupConfig, out: str) -> dict:
    """Read the parts, find semantic duplicates, commit the dedup table; returns the counts."""
    keys, areas, exempt, row_ids, vectors, keys_sha = [], [], [], [], [], []
    for part in parts:
        catalog = files.read_table(part.catalog_path, CATALOG_COLUMNS).to_pylist()
        clip = files.read_table(part.annotation_path, ["key", "status", "embedding"]).to_pylist()
        if [r["key"] for r in clip] != [r["key"] for r in catalog]:
            raise RuntimeError(f"{part.annotation_path} is not aligned with {part.catalog_path}: rerun the clip annotator")
        for index, (row, annotation) in enumerate(zip(catalog, clip, strict=True)):
            if annotation["status"] != "ok" or annotation["embedding"] is None:
                continue
            keys.append(row["key"])
            areas.append((row["width"] or 0) * (row["height"] or 0))
            exempt.append(exemption_group(row["kind"], row["source"], row["subject"]))
            row_ids.append((part.index << PART_SHIFT) | index)
            vectors.append(decode_embedding(annotation["embedding"]))
        keys_sha.append(hashlib.sha256("\n".join(r["key"] for r in catalog).encode()).hexdigest())
    matrix = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    found = semantic_duplicates(keys, matrix, areas, exempt, config)
    by_key = dict(zip(keys, row_ids, strict=True))
    return write_dedup(out, list(parts), keys_sha, {by_key[k]: (k, rep) for k, rep in found.items()},
                       semantic_record(config))


def semantic_record(config: SemDedupConfig) -> dict:
    return {"job": "dedup", "method": "semantic", "semdedup": asdict(config)}


class SemanticDedupJob(DedupTableJob):
    """The semantic dedup table of the clip store: one unit, one task."""

    store_name = CLIP_STORE
    num_cpus = 1.0

    def __init__(self, root: str, config: SemDedupConfig):
        super().__init__(root, DatasetLayout(root).semantic_dedup(config.threshold), semantic_record(config))
        self.config = config

    def run_unit(self, unit: DedupUnit) -> dict:
        return semantic_dedup_parts(unit.parts, self.config, unit.out)


def run_semantic_dedup(root: str, config: SemDedupConfig, ray_config) -> dict:
    """The semantic dedup table as one Ray task; its counts. Done already when made from the same stores."""
    return run_job(SemanticDedupJob(root, config), ray_config)
