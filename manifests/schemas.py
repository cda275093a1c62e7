"""Arrow schemas of the three stores (docs/design.md §2). Every writer casts to these; readers rely on them.

catalog/<source>/part-NNNNN.parquet      CATALOG_SCHEMA, one row per raw item
rejects/<source>/part-NNNNN.parquet      REJECTS_SCHEMA, one row per item refused at ingest
annotations/<name>@<version>/<source>/part-NNNNN.parquet
                                         annotator.schema(): common fields + outputs, one row per
                                         catalog row of the same part, same order
<shards>/manifests/<shard>.parquet       SHARD_MANIFEST_SCHEMA, one row per sample of that tar
<shards>/skipped/<shard>.parquet         SKIPPED_SCHEMA, candidates left out, with the reason
(every path: manifests/layout.py)
"""

from __future__ import annotations

import pyarrow as pa

# kind: "image" (one picture), "scene" (multiview: per-view list columns, cameras in meta),
# "subject_image" (one picture of an ID subject; `subject` names the person).
CATALOG_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # "<source>-<20 hex>", no dots
        pa.field("source", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),  # where the item came from (path, or path#row)
        pa.field("kind", pa.string(), nullable=False),
        pa.field("image", pa.binary()),  # normalised RGB image bytes; null for scenes and by-reference rows
        pa.field("image_format", pa.string()),  # "jpg" | "png" (the catalog's one format)
        pa.field("width", pa.int32()),  # pixels after EXIF orientation (view 0 for scenes)
        pa.field("height", pa.int32()),
        pa.field("sha256", pa.string(), nullable=False),  # of the original bytes (scene: of its views)
        pa.field("caption_original", pa.string()),
        pa.field("meta", pa.string()),  # JSON: cameras for scenes, subject info, source extras
        pa.field("subject", pa.string()),  # ID subject, null otherwise
        pa.field("view_images", pa.list_(pa.binary())),  # scenes only
        pa.field("view_uris", pa.list_(pa.string())),  # scenes only
        pa.field("image_ref", pa.string()),  # JSON locator of the original bytes (--images reference), else null
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("key", pa.string()),  # null when the item could not even be read
        pa.field("reason", pa.string(), nullable=False),  # short code: decode_error, too_small, ...
        pa.field("error", pa.string()),  # detail
        pa.field("stage", pa.string(), nullable=False),  # "ingest"
    ]
)

SHARD_MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # sample key inside the tar (no dots)
        pa.field("shard", pa.string(), nullable=False),  # tar file name
        pa.field("task", pa.string(), nullable=False),  # e.g. "canny2image"
        pa.field("n_views", pa.int32(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("members", pa.list_(pa.string()), nullable=False),  # member suffixes, e.g. "img0.jpg"
        pa.field("member_bytes", pa.list_(pa.int64()), nullable=False),
        pa.field("member_sha256", pa.list_(pa.string()), nullable=False),
        pa.field("source_keys", pa.list_(pa.string()), nullable=False),  # catalog keys used
        pa.field("annotators", pa.list_(pa.string()), nullable=False),  # "<name>@<version>" used
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("ordinal", pa.int64(), nullable=False),  # position in the task's build stream (resume)
    ]
)

# Candidates the builder could not turn into a sample (annotation status not ok, no caption, ...).
SKIPPED_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # catalog key
        pa.field("task", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("ordinal", pa.int64(), nullable=False),
    ]
)
