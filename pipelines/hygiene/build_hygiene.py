"""What a build unit calls for dataset hygiene (issue 13): dedup, score filters, pose and ID selection. No Ray.

    config = HygieneConfig(filters=("aesthetic>=5", "nsfw<0.5"), dedup="phash", min_person_area=0.1,
                           id_nsfw_threshold=0.5)
    check_hygiene_inputs(root, config)             # driver, once: bad filter / missing store or table -> raises
    stores = hygiene_stores(config)                # store names to join to each catalog part (with the task stores)
    # in the build unit of one catalog part (its path, keys_sha256 of its keys):
    duplicates = unit_duplicates(root, config, catalog_part, keys_sha256)   # {key: representative}
    filters = parse_filters(config.filters)
    reason = row_skip_reason(row["key"], annotations, duplicates, filters)     # every task of that row
    pose = person_area_reason(annotations.get("pose"), row["width"], row["height"], config.pose)  # pose2image
    excluded = faceid_exclusions(subject_keys, subject_annotations, duplicates, filters, config)  # faceid

`annotations` is {store name (no version): that row's annotation dict, or None}, as the build joins them.
Reasons, first that applies: `duplicate_of:<key>`, then the first failing filter's `filtered:<name>=...` /
`missing_annotation:<store>` (pipelines.filters). For an ID subject, `faceid_exclusions` adds the NSFW
exclusion and is passed as `faceid_samples(..., excluded=...)`, so every one of them happens before the
"at least 4 photos" rule. Changing a threshold changes only these answers: no annotator runs again.
The dedup tables are read through pipelines/hygiene/dedup_tables.py (their paths: manifests/layout.py).
"""

from __future__ import annotations

from typing import Any

from onegen.core.errors import PathError
from onegen.manifests.layout import DatasetLayout
from onegen.pipelines.hygiene import dedup_tables
from onegen.pipelines.hygiene.dedup_groups import duplicate_reason
from onegen.pipelines.hygiene.filters import ScoreFilter, apply_filters, filter_stores, parse_filters
from onegen.pipelines.hygiene.settings import HygieneConfig
from onegen.pipelines.hygiene.task_selection import NSFW_STORE, nsfw_exclusions


def dedup_table(root: str, config: HygieneConfig) -> str | None:
    """The dedup table folder the build reads, or None when dedup is off (`dedup_tables.dedup_table`)."""
    return dedup_tables.dedup_table(root, config.dedup, config.max_distance, config.semantic_threshold)


def hygiene_stores(config: HygieneConfig) -> list[str]:
    """Annotation store names (no version) the hygiene checks read."""
    stores = set(filter_stores(parse_filters(config.filters)))
    if config.id_nsfw_threshold is not None:
        stores.add(NSFW_STORE)
    return sorted(stores)


def check_hygiene_inputs(root: str, config: HygieneConfig) -> None:
    """Fail before any unit starts: unparseable filter, missing annotation store, unfinished dedup table."""
    layout = DatasetLayout(root)
    missing = [name for name in hygiene_stores(config) if layout.find_store(name) is None]
    if missing:
        raise PathError(f"hygiene needs the {', '.join(missing)} annotation(s): run "
                        f"`onegen annotate --annotators {','.join(missing)}` first (no model runs at build)")
    table = dedup_table(root, config)
    if table is not None and not dedup_tables.is_finished(table):
        raise PathError(f"--dedup {config.dedup}: no finished dedup table at {table}; run the dedup job first")


def unit_duplicates(root: str, config: HygieneConfig, catalog_part: str,
                    keys_sha256: str | None = None) -> dict[str, str]:
    """{duplicate key: representative} of the catalog part at path `catalog_part` ({} when dedup is off)."""
    table = dedup_table(root, config)
    return {} if table is None else dedup_tables.read_part_duplicates(table, catalog_part, keys_sha256)


def row_skip_reason(key: str, annotations: dict[str, dict[str, Any] | None], duplicates: dict[str, str],
                    filters: tuple[ScoreFilter, ...]) -> str | None:
    """None to keep the row's candidates, else the reason: duplicate first, then the first failing filter."""
    if key in duplicates:
        return duplicate_reason(duplicates[key])
    return apply_filters(filters, annotations)


def faceid_exclusions(keys: list[str], annotations: list[dict[str, dict[str, Any] | None]], duplicates: dict[str, str],
                      filters: tuple[ScoreFilter, ...], config: HygieneConfig) -> list[str | None]:
    """Per photo of one subject: why it leaves before the 4-photo rule (duplicate, filter, NSFW), or None."""
    reasons = [row_skip_reason(key, found, duplicates, filters) for key, found in zip(keys, annotations, strict=True)]
    if config.id_nsfw_threshold is None:
        return reasons
    nsfw = nsfw_exclusions([found.get(NSFW_STORE) for found in annotations], config.id_nsfw_threshold)
    return [reason or unsafe for reason, unsafe in zip(reasons, nsfw, strict=True)]
