"""What every source reader shares and kinds.py re-exports: the user-error type and the picture extensions.

A module of its own so that the readers of published sources (dl3dv.py, hypersim.py, journeydb.py),
which kinds.py dispatches to, need not import kinds.py back (no import cycle).
"""

from __future__ import annotations

# the `--kind` choices of `onegen ingest` (kinds.py lists and reads them); here, so that building the
# CLI parser imports nothing heavy
KINDS = ("folder", "table", "webdataset", "hf", "scenes", "subjects", "dl3dv", "hypersim", "journeydb")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class SourceError(Exception):
    """A user error about the source itself; the message is one line for the terminal."""
