"""OpenPose-style body rendering of COCO-17 keypoints (pure numpy / OpenCV).

ControlNet's OpenPose conditions use the 18-point OpenPose body layout drawn on black: 17 limbs as
filled ellipses in 60 % of the limb colour, then every keypoint as a filled circle in its full
colour (controlnet_aux.open_pose.util.draw_bodypose; stick width 4 and circle radius 4 at the 512-pixel
detection resolution). Here the same drawing is done at the source resolution with both sizes scaled
by short side / 512 (at least 1 px), so the condition looks the same at any image size.

COCO-17 maps onto OpenPose-18 with the neck = midpoint of the two shoulders (present only when both
shoulders are). Colours are RGB.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

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

BASE_RESOLUTION = 512
BASE_STICK_WIDTH = 4
BASE_RADIUS = 4


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
    scale = min(height, width) / BASE_RESOLUTION
    stick = max(1, round(BASE_STICK_WIDTH * scale))
    radius = max(1, round(BASE_RADIUS * scale))
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


def render_pose(height: int, width: int, people: list[np.ndarray], threshold: float = 0.3) -> np.ndarray:
    """Black (height, width, 3) uint8 RGB image with every person's (17, 3) COCO keypoints drawn."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for keypoints in people:
        draw_openpose(canvas, coco_to_openpose(np.asarray(keypoints, dtype=np.float64), threshold))
    return canvas
