"""What `onegen ingest` reads and what the catalog accepts: `SourceSpec` and `ImageLimits`, one documented
field per setting (the `--kind` / `--min-side` ... flags and the recipe's `[[sources]]` keys are made from
these fields by core/config_fields.py).

Light on purpose (standard library only): the command line builds its parsers from these classes at
every start. The job records store these dataclasses whole (`asdict` into jobs/ingest-<source>.json), so a
field added, renamed or removed here makes every existing catalog's record disagree: change them only
with that in mind.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from onegen.core.config_fields import check_choices, require, setting

SourceKind = Literal["auto", "folder", "table", "webdataset", "hf", "scenes", "subjects", "dl3dv", "hypersim",
                     "journeydb", "co3d", "gobjaverse"]
ImageFormat = Literal["jpg", "png"]


@dataclass(frozen=True)
class SourceSpec:
    """What `onegen ingest` was asked to read. Fields are the whole configuration of a source."""

    path: str = setting("image folder, parquet/jsonl table(s), webdataset tar(s) or HF dataset dir",
                        flag="source", positional=True)
    kind: SourceKind = setting("what SOURCE is (default: auto, told from its files); scenes: multiview folders "
                               "with cameras; subjects: one folder of ID photos per person; dl3dv, hypersim, "
                               "journeydb, co3d, gobjaverse: those datasets as published", "auto")
    name: str = setting("source name used in keys (default: the path's last part)", "")
    caption_column: str = setting("table / HF source: the caption column (default: text, caption, ...)", "")
    image_column: str = setting("table / HF source: the image bytes column (default: image, jpg, ...)", "")
    uri_column: str = setting("table source: a column of image paths/URLs read instead of bytes", "")
    # published sources (issue 22); recorded in the ingest job only when not at their defaults (jobs/ingest.py)
    max_views: int = setting("scenes: keep at most N frames, evenly spaced (0: all)", 0)
    min_viewpoint_quality: float = setting("co3d: reject sequences whose viewpoint_quality_score is below this "
                                           "(low_viewpoint_quality; unscored ones too); 0: keep all", 0.0)
    captions: str = setting("a caption table (CSV / Parquet / JSONL, e.g. Cap3D's) joined onto items by key", "")
    caption_key: str = setting("--captions: its key column (a number for a CSV without header; default: "
                               "uid/id/key/file_name/img_path)", "")
    caption_text: str = setting("--captions: its caption column (a number for a CSV without header; default: "
                                "caption/text/prompt)", "")
    ids: str = setting("gobjaverse: keep only the objects this file lists (G-Objaverse ids or Objaverse uids: "
                       "a CSV's last column, a JSON list, or one per line; e.g. LGM's 80K subset)", "")
    views_as_photos: bool = setting("scene kinds: each view becomes a photo with its camera and the source's own "
                                    "depth (depth2image from ground truth); ingest again without it, under another "
                                    "--name, for multiview", False)
    # URL tables (pipelines/sources/url_fetch.py); how URLs are fetched changes no kept row, so these are
    # not part of the ingest job's identity
    fetch_concurrency: int = setting("URL tables: requests in flight per ingest part", 16)
    fetch_timeout: float = setting("URL tables: seconds without a byte before a URL is a timeout", 20.0)
    fetch_retries: int = setting("URL tables: retries of timeouts, 429 and 5xx, with backoff", 2)
    fetch_body_timeout: float = setting("URL tables: seconds for a whole image body before a URL is a timeout", 120.0)

    def __post_init__(self) -> None:
        check_choices(self)
        require(self.max_views >= 0, f"max_views must be 0 (all) or more, got {self.max_views}")
        require(self.min_viewpoint_quality >= 0, f"min_viewpoint_quality must be 0 (off) or more, "
                f"got {self.min_viewpoint_quality}")
        require(self.fetch_concurrency >= 1 and self.fetch_retries >= 0 and self.fetch_timeout > 0
                and self.fetch_body_timeout > 0,
                "fetch_concurrency >= 1, fetch_retries >= 0, fetch_timeout > 0 and fetch_body_timeout > 0")

    @property
    def source_name(self) -> str:
        base = self.name or posixpath.basename(self.path.rstrip("/")) or "source"
        slug = re.sub(r"[^a-z0-9_]+", "_", base.lower().split(".")[0]).strip("_")
        return slug or "source"


@dataclass(frozen=True)
class ImageLimits:
    """What the catalog accepts. `image_format` is the one encoding every catalog image has."""

    min_side: int = setting("reject images with a side below this (too_small)", 64)
    max_pixels: int = setting("reject images with more pixels than this (too_many_pixels, from the header)",
                              64_000_000)
    image_format: ImageFormat = setting("the one encoding of catalog images (JPEGs already upright RGB are kept "
                                        "byte for byte)", "jpg")
    jpeg_quality: int = setting("JPEG quality of the images ingest re-encodes (--image-format jpg)", 95)

    def __post_init__(self) -> None:
        check_choices(self)
        require(self.min_side >= 1, f"min_side must be at least 1, got {self.min_side}")
        require(self.max_pixels >= 1, f"max_pixels must be at least 1, got {self.max_pixels}")
        require(1 <= self.jpeg_quality <= 100, f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
