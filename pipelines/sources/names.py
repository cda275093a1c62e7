"""The names every source module shares: the `--kind` choices, image extensions, the column names a table
is searched for (and how), and the one-line user error of a source.

Imports nothing heavy, and the readers of published sources (dl3dv.py, hypersim.py, journeydb.py,
table.py, tar.py) take these from here rather than from kinds.py, which dispatches to them.
"""

from __future__ import annotations

from typing import get_args

from onegen.core.errors import UserError
from onegen.pipelines.sources.settings import SourceKind

KINDS = get_args(SourceKind)[1:]  # the `--kind` choices besides "auto" (kinds.py lists and reads each)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGE_COLUMNS = ("image", "jpg", "png", "bytes", "image_bytes")
# in order of preference; matched case-insensitively (LAION spells URL / TEXT). photo_image_url and
# photo_description are Unsplash's, original_caption PixelProse's.
URI_COLUMNS = ("uri", "url", "path", "image_path", "file_name", "photo_image_url")
CAPTION_COLUMNS = ("caption", "text", "txt", "prompt", "original_caption", "photo_description")


class SourceError(UserError):
    """A user error about the source itself; the message is one line for the terminal."""


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
