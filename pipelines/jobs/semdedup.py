"""`dedup/semantic-t<threshold>/`: semantic dedup (pipelines.semdedup) of the `clip` store, as one Ray task.

The same table layout, reason and reader as the pHash dedup (pipelines/jobs/dedup.py): one Parquet per catalog
part (key, representative, reason `duplicate_of:<key>`), `_SUCCESS.json` last, in `DatasetLayout.semantic_dedup`
(manifests/layout.py); build units read their part with `dedup_tables.read_part_duplicates`. The task reads
every catalog part's small columns and the aligned clip part's embeddings on one worker (O(n x d) float32:
one million ViT-L/14 embeddings are 3 GB); the driver only plans and gets the counts. Rows without an "ok"
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
    exemption_group,
    plan_dedup_parts,
    write_dedup,
)

CLIP_STORE = "clip"


def semantic_dedup_parts(parts: list[DedupPart], config: SemDedupConfig, out: str) -> dict:
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
    record = {"job": "dedup", "method": "semantic", "semdedup": asdict(config)}
    return write_dedup(out, parts, keys_sha, {by_key[k]: (k, rep) for k, rep in found.items()}, record)


def run_semantic_dedup(root: str, config: SemDedupConfig, ray_config) -> dict:
    """Plan on the driver, run `semantic_dedup_parts` as one Ray task, return its counts."""
    import ray

    from onegen.pipelines.runtime.ray_setup import init_ray

    parts = plan_dedup_parts(root, CLIP_STORE)
    init_ray(ray_config)
    task = ray.remote(num_cpus=1)(semantic_dedup_parts)
    return ray.get(task.remote(parts, config, DatasetLayout(root).semantic_dedup(config.threshold)))
