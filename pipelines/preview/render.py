"""Pictures for `onegen preview`: view decoding, ray false colour, camera plots, stats plots, contact sheets.

Everything here writes PNG files and returns nothing but paths or PIL images; the HTML and the report
data live in `onegen.pipelines.preview.report`. Matplotlib runs on the Agg backend (no display, no fonts
fetched); contact sheets use PIL's built-in default font, so nothing is downloaded.

Ray views are `rayN.npy`: float16 (16, h, w) Plücker ray latents (docs/design.md §5,
`onegen.core.camera_geometry.rays_to_latent`). Their false colour maps the first direction copy
(channels 0-2, unit vectors times RAY_SCALE) from [-1, 1] to RGB [0, 255].
"""

from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on build machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from onegen.core.camera_geometry import camera_from_rays, latent_to_rays  # noqa: E402
from onegen.core.ray_pictures import ray_false_colour  # noqa: E402

THUMB_HEIGHT = 160  # contact-sheet view height, pixels
SHEET_CAPTION_CHARS = 110  # prompt characters per contact-sheet row before "..."


def decode_view(suffix: str, data: bytes) -> Image.Image:
    """An RGB picture of one view member: images decode as they are, `ray*.npy` become false colour."""
    if suffix.endswith(".npy"):
        return ray_false_colour(np.load(io.BytesIO(data), allow_pickle=False))
    with Image.open(io.BytesIO(data)) as image:
        if image.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit maps (depth): stretch to 8 bits to show
            pixels = np.asarray(image, dtype=np.float64)
            span = max(float(pixels.max() - pixels.min()), 1e-9)
            return Image.fromarray(((pixels - pixels.min()) / span * 255).astype(np.uint8)).convert("RGB")
        return image.convert("RGB")


def camera_positions(latents: Sequence[np.ndarray]) -> np.ndarray:
    """Camera centres and optical axes from ray latents: (N, 2, 3) [centre, axis]."""
    poses = []
    for latent in latents:
        camera = camera_from_rays(latent_to_rays(latent))  # rays (h, w, 6) -> c2w (4, 4)
        poses.append([camera.c2w[:3, 3], camera.c2w[:3, 2]])  # centre, optical axis (OpenCV z)
    return np.asarray(poses)  # (N, 2, 3)


def camera_plot(latents: Sequence[np.ndarray], path: str) -> str | None:
    """A top view (world x against z) of the cameras behind `latents`; returns `path`, or None if skipped."""
    poses = camera_positions(latents)
    if len(poses) == 0:
        return None
    fig, ax = plt.subplots(figsize=(2.6, 2.6), dpi=100)
    centres, axes = poses[:, 0], poses[:, 1]
    ax.quiver(centres[:, 0], centres[:, 2], axes[:, 0], axes[:, 2], angles="xy", scale_units="xy",
              scale=4.0, color="tab:blue", width=0.01)
    ax.scatter(centres[:, 0], centres[:, 2], c="tab:red", s=18, zorder=3)
    for i, (x, _, z) in enumerate(centres):
        ax.annotate(str(i), (x, z), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title("cameras, top view", fontsize=8)
    ax.tick_params(labelsize=6)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# --- stats plots --------------------------------------------------------------------------------
def caption_word_histogram(counts: Sequence[int], path: str) -> str:
    """Histogram of caption lengths in words (counted by `preview.caption_words`)."""
    fig, ax = plt.subplots(figsize=(4.5, 3), dpi=100)
    ax.hist(counts, bins=min(30, max(1, len(set(counts)))), color="tab:blue")
    ax.set_xlabel("caption words")
    ax.set_ylabel("samples")
    ax.set_title("caption length", fontsize=9)
    return _save(fig, path)


def image_size_scatter(widths: Sequence[int], heights: Sequence[int], path: str) -> str:
    """Scatter of image width against height (pixels, from the manifests)."""
    fig, ax = plt.subplots(figsize=(4.5, 3), dpi=100)
    ax.scatter(widths, heights, s=12, alpha=0.6, color="tab:green")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("image sizes", fontsize=9)
    return _save(fig, path)


def samples_per_task_bar(counts: dict[str, int], path: str) -> str:
    """Horizontal bar chart of samples per task."""
    fig, ax = plt.subplots(figsize=(4.5, 0.4 * max(len(counts), 2) + 1.2), dpi=100)
    names = list(counts)
    ax.barh(names, [counts[n] for n in names], color="tab:orange")
    ax.invert_yaxis()  # first task on top, as in the tables
    ax.set_xlabel("samples")
    ax.set_title("samples per task", fontsize=9)
    ax.tick_params(labelsize=7)
    return _save(fig, path)


# --- contact sheets -----------------------------------------------------------------------------
@dataclass
class SheetRow:
    """One contact-sheet row: the sample's views (in order) and the text under them."""

    key: str
    prompt: str
    views: list[Image.Image]


def _thumb(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / max(image.height, 1)))
    return image.resize((width, height), Image.BILINEAR)


def contact_sheet(rows: Sequence[SheetRow], path: str, thumb_height: int = THUMB_HEIGHT) -> str:
    """A grid PNG: one row per sample, its views side by side, key + truncated prompt underneath."""
    font = ImageFont.load_default()
    pad, line_height = 6, 12
    laid_out = []
    for row in rows:
        thumbs = [_thumb(v, thumb_height) for v in row.views]
        caption = textwrap.shorten(row.prompt, SHEET_CAPTION_CHARS, placeholder=" ...")
        laid_out.append((thumbs, [row.key, caption]))
    width = max([sum(t.width + pad for t in thumbs) + pad for thumbs, _ in laid_out] + [640])
    row_height = thumb_height + 2 * line_height + 2 * pad
    sheet = Image.new("RGB", (width, max(1, len(laid_out)) * row_height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (thumbs, lines) in enumerate(laid_out):
        top, x = r * row_height + pad, pad
        for thumb in thumbs:
            sheet.paste(thumb, (x, top))
            x += thumb.width + pad
        for i, line in enumerate(lines):
            draw.text((pad, top + thumb_height + 2 + i * line_height), _ascii(line), fill="black", font=font)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def _ascii(text: str) -> str:
    """PIL's bitmap default font has Latin-1 glyphs only: replace anything else with '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")
