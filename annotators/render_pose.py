"""Pose condition images from COCO-17 keypoints (pure numpy / OpenCV), in two styles.

`style="mmpose"` (the default): what the released OneDiffusion model learned (shared/reference-styles,
pose-coco17-mmpose-palette.png), i.e. ViTPose's own visualiser, mmpose 0.x `imshow_keypoints` with the
COCO dataset_info palette (configs/_base_/datasets/coco.py):
- three colours by body part: head and torso, the left side, the right side. mmpose lists them as
  [51, 153, 255], [0, 255, 0], [255, 128, 0] and draws them with OpenCV on the BGR image it reads
  and writes, so in the saved (and our RGB) image they are orange (255, 153, 51), green (0, 255, 0)
  and azure (0, 128, 255) (`MMPOSE_KEYPOINT_RGB`, `MMPOSE_LINK_RGB`);
- per person, first every keypoint with score > threshold as a filled circle, then every one of the
  19 COCO links (`COCO_SKELETON`, mmpose's order) whose two keypoints have score > threshold and lie
  strictly inside the image, as a `cv2.line` (8-connected) over the dots;
- mmpose's defaults are radius 4 and thickness 1 px at the source resolution; the released model's
  outputs (the reference crop, about 510 px on the short side) show ~2-3 px lines and ~4-5 px dots,
  so we draw thickness 2 and radius 2 at a 512-pixel short side, scaled with short side / 512
  (at least 1 px): the condition looks the same at any image size.

`style="openpose"`: ControlNet's OpenPose body layout for ControlNet-style models: the 18-point
OpenPose layout (neck = midpoint of the two shoulders, present only when both shoulders are) drawn
on black: 17 limbs as filled ellipses in 60 % of the limb colour, then every keypoint as a filled
circle in its full rainbow colour (controlnet_aux.open_pose.util.draw_bodypose; stick width 4 and
radius 4 at 512 px, scaled the same way). Keypoints with score >= threshold are drawn.

All colours are RGB; canvases are (H, W, 3) uint8, black where nothing is drawn.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

STYLES = ("mmpose", "openpose")
BASE_RESOLUTION = 512  # sizes below are in pixels at this short side

# --- mmpose / ViTPose COCO-17 -------------------------------------------------------------------
HEAD_TORSO_RGB = (255, 153, 51)  # mmpose [51, 153, 255] (BGR)
LEFT_RGB = (0, 255, 0)  # mmpose [0, 255, 0]
RIGHT_RGB = (0, 128, 255)  # mmpose [255, 128, 0] (BGR)
# COCO-17 order: nose, eyes, ears, then (left, right) shoulder, elbow, wrist, hip, knee, ankle
MMPOSE_KEYPOINT_RGB = (HEAD_TORSO_RGB,) * 5 + (LEFT_RGB, RIGHT_RGB) * 6
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
MMPOSE_LINK_RGB = (
    LEFT_RGB, LEFT_RGB, RIGHT_RGB, RIGHT_RGB, HEAD_TORSO_RGB, HEAD_TORSO_RGB, HEAD_TORSO_RGB,
    HEAD_TORSO_RGB, LEFT_RGB, RIGHT_RGB, LEFT_RGB, RIGHT_RGB,
) + (HEAD_TORSO_RGB,) * 7  # fmt: skip
MMPOSE_THICKNESS = 2
MMPOSE_RADIUS = 2

# --- ControlNet OpenPose-18 ---------------------------------------------------------------------
# OpenPose-18 index -> COCO-17 index (-1: the neck, computed from the shoulders)
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
# 1-based OpenPose limb pairs, in ControlNet's drawing order (draw_bodypose's limbSeq, first 17)
LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
    (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
BASE_STICK_WIDTH = 4
BASE_RADIUS = 4


def scaled(size: int, height: int, width: int) -> int:
    """A pixel size given at BASE_RESOLUTION, for an image of this size (at least 1 px)."""
    return max(1, round(size * min(height, width) / BASE_RESOLUTION))


def draw_mmpose(canvas: np.ndarray, keypoints: np.ndarray, threshold: float, radius: int, thickness: int) -> np.ndarray:
    """Draw one person's (17, 3) COCO keypoints (x, y, score; pixels) as mmpose's imshow_keypoints does."""
    height, width = canvas.shape[:2]
    for (x, y, score), color in zip(keypoints, MMPOSE_KEYPOINT_RGB, strict=True):
        if score > threshold:
            cv2.circle(canvas, (int(x), int(y)), radius, color, -1)
    for (a, b), color in zip(COCO_SKELETON, MMPOSE_LINK_RGB, strict=True):
        pa, pb = (int(keypoints[a, 0]), int(keypoints[a, 1])), (int(keypoints[b, 0]), int(keypoints[b, 1]))
        inside = all(0 < p[0] < width and 0 < p[1] < height for p in (pa, pb))
        if inside and keypoints[a, 2] > threshold and keypoints[b, 2] > threshold:
            cv2.line(canvas, pa, pb, color, thickness=thickness)
    return canvas


def coco_to_openpose(keypoints: np.ndarray, threshold: float) -> list[tuple[float, float] | None]:
    """(17, 3) COCO keypoints (x, y, score) -> 18 OpenPose points (x, y) or None where not confident."""
    visible = keypoints[:, 2] >= threshold  # (17,)
    points: list[tuple[float, float] | None] = []
    for coco in OPENPOSE_FROM_COCO:
        if coco >= 0:
            points.append((float(keypoints[coco, 0]), float(keypoints[coco, 1])) if visible[coco] else None)
        elif visible[5] and visible[6]:  # neck = midpoint of left (5) and right (6) shoulder
            points.append(
                ((keypoints[5, 0] + keypoints[6, 0]) / 2.0, (keypoints[5, 1] + keypoints[6, 1]) / 2.0)
            )
        else:
            points.append(None)
    return points


def draw_openpose(canvas: np.ndarray, points: list[tuple[float, float] | None]) -> np.ndarray:
    """Draw one person's 18 OpenPose points (pixel coordinates) onto an (H, W, 3) uint8 RGB canvas."""
    height, width = canvas.shape[:2]
    stick = scaled(BASE_STICK_WIDTH, height, width)
    radius = scaled(BASE_RADIUS, height, width)
    for (a, b), color in zip(LIMBS, COLORS, strict=False):
        p, q = points[a - 1], points[b - 1]
        if p is None or q is None:
            continue
        mid_x, mid_y = (p[0] + q[0]) / 2.0, (p[1] + q[1]) / 2.0
        length = math.hypot(p[0] - q[0], p[1] - q[1])
        angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
        polygon = cv2.ellipse2Poly((int(mid_x), int(mid_y)), (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
    for point, color in zip(points, COLORS, strict=True):
        if point is not None:
            cv2.circle(canvas, (int(point[0]), int(point[1])), radius, color, thickness=-1)
    return canvas


def render_pose(
    height: int, width: int, people: list[np.ndarray], threshold: float = 0.3, style: str = "mmpose"
) -> np.ndarray:
    """Black (height, width, 3) uint8 RGB image with every person's (17, 3) COCO keypoints drawn.

    `style`: "mmpose" (ViTPose's visualiser, the released model's style) or "openpose" (ControlNet).
    """
    if style not in STYLES:
        raise ValueError(f"pose style must be one of {STYLES}, got {style!r}")
    canvas = np.zeros((height, width, 3), np.uint8)
    radius, thickness = scaled(MMPOSE_RADIUS, height, width), scaled(MMPOSE_THICKNESS, height, width)
    for keypoints in people:
        keypoints = np.asarray(keypoints, dtype=np.float64)  # (17, 3)
        if style == "mmpose":
            draw_mmpose(canvas, keypoints, threshold, radius, thickness)
        else:
            draw_openpose(canvas, coco_to_openpose(keypoints, threshold))
    return canvas
