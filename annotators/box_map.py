"""The `[[boundingbox2image]]` condition: boxes on black, as the released OneDiffusion model draws them.

The released model's own detection outputs (shared/reference-styles/boxes-filled-with-labels.png,
the paper's Figure 4) show each box *filled* with its class colour on black and a small white
`name: score` label just above its top-left corner. Rules (`render_box_map`):
- boxes are painted in order of decreasing area (ties: input order), so a small box lying on a larger
  one stays visible; `style="fill"` paints the inclusive pixel rectangle (`pixel_box`) in the class
  colour, `style="outline"` only its border, `line_width` px thick;
- then, in the same order, each box's label `f"{name}: {score:.2f}"` in white (255, 255, 255), OpenCV
  Hershey simplex, thickness 1, 8-connected, font scale 0.4 at a 512-pixel short side scaled with
  short side / 512 (at least 0.2): the reference's ~9 px high, ~5 px per character text at ~510 px.
  The text's baseline sits `label_gap` px (3 at 512, scaled, at least 1) above the box's top edge,
  starting at the box's left edge; it is moved (never cut) to stay inside the image: right-aligned to
  the image edge when it would run past it, and just inside the image top when there is no room above.
Colours are RGB; the canvas is (H, W, 3) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BOX_STYLES = ("fill", "outline")
LABEL_RGB = (255, 255, 255)
LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
BASE_RESOLUTION = 512
BASE_FONT_SCALE = 0.4
MIN_FONT_SCALE = 0.2
BASE_LABEL_GAP = 3


@dataclass(frozen=True)
class BoxLabel:
    """Where a label goes: `origin` (x, y) is cv2.putText's bottom-left (baseline) point, in pixels."""

    text: str
    origin: tuple[int, int]
    font_scale: float
    size: tuple[int, int]  # (width, height) from cv2.getTextSize, baseline excluded


def pixel_box(box: list[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Inclusive pixel rectangle (x0, y0, x1, y1) covered by float box xyxy (pixel edges)."""
    x0 = min(max(int(np.floor(box[0])), 0), width - 1)
    y0 = min(max(int(np.floor(box[1])), 0), height - 1)
    x1 = min(max(int(np.ceil(box[2])) - 1, x0), width - 1)
    y1 = min(max(int(np.ceil(box[3])) - 1, y0), height - 1)
    return x0, y0, x1, y1


def draw_box(canvas: np.ndarray, box: tuple[int, int, int, int], rgb: tuple[int, int, int],
             style: str, line_width: int) -> None:
    """Paint an inclusive pixel rectangle on (H, W, 3) `canvas`: filled, or its outline `line_width` thick."""
    x0, y0, x1, y1 = box
    if style == "fill":
        canvas[y0 : y1 + 1, x0 : x1 + 1] = rgb
        return
    t = line_width
    canvas[y0 : min(y0 + t, y1 + 1), x0 : x1 + 1] = rgb
    canvas[max(y1 - t + 1, y0) : y1 + 1, x0 : x1 + 1] = rgb
    canvas[y0 : y1 + 1, x0 : min(x0 + t, x1 + 1)] = rgb
    canvas[y0 : y1 + 1, max(x1 - t + 1, x0) : x1 + 1] = rgb


def label_text(name: str, score: float) -> str:
    """`name: 0.37` (score with two decimals)."""
    return f"{name}: {score:.2f}"


def place_label(text: str, box: tuple[int, int, int, int], height: int, width: int) -> BoxLabel:
    """The label's font scale and baseline origin for an inclusive pixel box (module rules)."""
    short = min(height, width) / BASE_RESOLUTION
    font_scale = max(MIN_FONT_SCALE, BASE_FONT_SCALE * short)
    gap = max(1, round(BASE_LABEL_GAP * short))
    (text_w, text_h), _ = cv2.getTextSize(text, LABEL_FONT, font_scale, 1)
    x = max(0, min(box[0], width - 1 - text_w))
    y = box[1] - gap
    if y - text_h < 0:  # no room above the box: just inside the image top
        y = text_h + 1
    return BoxLabel(text, (x, min(y, height - 1)), font_scale, (text_w, text_h))


def render_box_map(height: int, width: int, boxes: np.ndarray, colours: list[tuple[int, int, int]],
                   labels: list[str] | None, style: str = "fill", line_width: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 box map: boxes (N, 4) float xyxy pixels, colours[i] the RGB of box i,
    labels[i] its text (None: no labels); line_width 0 = max(2, min(H, W) // 200) (outline only)."""
    if style not in BOX_STYLES:
        raise ValueError(f"box_style must be one of {BOX_STYLES}, got {style!r}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    line = line_width or max(2, min(height, width) // 200)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    pixels = [pixel_box(box.tolist(), height, width) for box in boxes]
    for i in order:
        draw_box(canvas, pixels[i], colours[i], style, line)
    for i in order if labels is not None else ():
        label = place_label(labels[i], pixels[i], height, width)
        cv2.putText(canvas, label.text, label.origin, LABEL_FONT, label.font_scale, LABEL_RGB, 1, cv2.LINE_8)
    return canvas
