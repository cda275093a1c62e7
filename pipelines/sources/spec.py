"""What `onegen ingest` is asked to read (SourceSpec), its one-line user error, and the vocabulary every
source module shares: the `--kind` choices, image extensions, the column names a table is searched for.

Imports nothing heavy, so the CLI parser can name the kinds and the published-source readers (dl3dv.py,
hypersim.py, journeydb.py, table.py, tar.py) need not import kinds.py, which dispatches to them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

# the `--kind` choices of `onegen ingest` besides "auto" (kinds.py lists and reads each)
KINDS = ("folder", "table", "webdataset", "hf", "scenes", "subjects", "dl3dv", "hypersim", "journeydb")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "jpg", "png", "bytes", "image_bytes")
# in order of preference; matched case-insensitively (LAION spells URL / TEXT). photo_image_url and
# photo_description are Unsplash's, original_caption PixelProse's.
URI_COLUMNS = ("uri", "url", "path", "image_path", "file_name", "photo_image_url")
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt", "original_caption", "photo_description")


class SourceError(Exception):
    """A user error about the source itself; the message is one line for the terminal."""


@dataclass(frozen=True)
class SourceSpec:
    """What `onegen ingest` was asked to read. Fields are the whole configuration of a source."""

    path: str
    kind: str = "auto"  # "auto" or one of KINDS
    name: str = ""  # source name used in keys; default: the path's last component
    caption_column: str = ""
    image_column: str = ""
    uri_column: str = ""
    # published sources (issue 22):
    max_views: int = 0  # scenes: keep at most this many frames, evenly spaced (0: all)
    captions: str = ""  # a caption table joined by key at ingest (CSV / Parquet / JSONL)
    caption_key: str = ""  # its key column ("" = uid/id/key/file_name/img_path; "0" = position, no header)
    caption_text: str = ""  # its caption column ("" = caption/text/prompt; "1" = position, no header)
    # URL tables (pipelines/sources/url_fetch.py): requests in flight per part, read timeout (s), retries;
    # how URLs are fetched changes no kept row, so these are not part of the ingest job's identity
    fetch_concurrency: int = 16
    fetch_timeout: float = 20.0
    fetch_retries: int = 2

    @property
    def source_name(self) -> str:
        base = self.name or posixpath.basename(self.path.rstrip("/")) or "source"
        slug = re.sub(r"[^a-z0-9_]+", "_", base.lower().split(".")[0]).strip("_")
        return slug or "source"


def pick_column(names: list[str], wanted: str, candidates: tuple[str, ...], what: str, path: str) -> str | None:
    """The column of `names` that is `wanted` (a flag; SourceError if absent), else the first candidate
    present; both compared case-insensitively, the table's own spelling returned."""
    by_lower = {}
    for name in names:
        by_lower.setdefault(name.lower(), name)
    if wanted:
        if wanted.lower() not in by_lower:
            raise SourceError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(names)})")
        return by_lower[wanted.lower()]
    return next((by_lower[c] for c in candidates if c in by_lower), None)
