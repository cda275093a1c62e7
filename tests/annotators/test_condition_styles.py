"""Condition styles: fixed inputs rendered by onegen against reference renderings built here from the
documented rules (mmpose's COCO palette and drawing order, filled boxes with labels), and against the
released model's reference crops in shared/reference-styles where that folder is present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from onegen.annotators.box_map import place_label, render_box_map
from onegen.annotators.render_pose import render_pose

REFERENCES = Path(__file__).resolve().parents[3] / "shared" / "reference-styles"

# mmpose configs/_base_/datasets/coco.py, as written there: colours in the BGR order OpenCV draws them in
MMPOSE_BGR = {"head_torso": (51, 153, 255), "left": (0, 255, 0), "right": (255, 128, 0)}
KEYPOINT_PART = ["head_torso"] * 5 + ["left", "right"] * 6
SKELETON = [  # (keypoint a, keypoint b, part) in coco.py's skeleton_info order
    (15, 13, "left"), (13, 11, "left"), (16, 14, "right"), (14, 12, "right"), (11, 12, "head_torso"),
    (5, 11, "head_torso"), (6, 12, "head_torso"), (5, 6, "head_torso"), (5, 7, "left"), (6, 8, "right"),
    (7, 9, "left"), (8, 10, "right"), (1, 2, "head_torso"), (0, 1, "head_torso"), (0, 2, "head_torso"),
    (1, 3, "head_torso"), (2, 4, "head_torso"), (3, 5, "head_torso"), (4, 6, "head_torso"),
]  # fmt: skip


def rgb(part: str) -> tuple[int, int, int]:
    """What lands in the saved image: mmpose's BGR triple read back as RGB."""
    b, g, r = MMPOSE_BGR[part]
    return r, g, b


def person(scale: float = 1.0) -> np.ndarray:
    """A standing person facing the camera (COCO-17, x y score) in a 512 x 512 frame, times `scale`."""
    xy = [(256, 80), (270, 68), (242, 68), (288, 76), (224, 76), (310, 140), (202, 140), (330, 220),
          (182, 220), (340, 300), (172, 300), (290, 300), (222, 300), (295, 400), (217, 400),
          (300, 490), (212, 490)]  # fmt: skip
    keypoints = np.array([(x * scale, y * scale, 0.9) for x, y in xy])
    keypoints[10, 2] = 0.1  # right wrist below the threshold: neither it nor its link is drawn
    return keypoints


def reference_pose(height: int, width: int, keypoints: np.ndarray, radius: int, thickness: int) -> np.ndarray:
    """mmpose imshow_keypoints on black: dots (score > 0.3) first, then links inside the image."""
    canvas = np.zeros((height, width, 3), np.uint8)
    for (x, y, score), part in zip(keypoints, KEYPOINT_PART, strict=True):
        if score > 0.3:
            cv2.circle(canvas, (int(x), int(y)), radius, rgb(part), -1)
    for a, b, part in SKELETON:
        pa, pb = (int(keypoints[a, 0]), int(keypoints[a, 1])), (int(keypoints[b, 0]), int(keypoints[b, 1]))
        if min(keypoints[a, 2], keypoints[b, 2]) > 0.3 and all(0 < p[0] < width and 0 < p[1] < height for p in (pa, pb)):
            cv2.line(canvas, pa, pb, rgb(part), thickness)
    return canvas


def test_pose_is_drawn_as_vitpose_visualiser_draws_coco17():
    keypoints = person()
    ours = render_pose(512, 512, [keypoints])  # the default style
    np.testing.assert_array_equal(ours, reference_pose(512, 512, keypoints, radius=2, thickness=2))
    colours = {tuple(c) for c in ours.reshape(-1, 3)} - {(0, 0, 0)}
    assert colours == {(255, 153, 51), (0, 255, 0), (0, 128, 255)}  # orange torso/head, green left, azure right
    assert tuple(ours[260, 335]) == (0, 255, 0)  # left forearm (7 -> 9), green
    assert tuple(ours[300, 256]) == (255, 153, 51)  # hip link, orange
    assert not ours[290:310, 160:185].any()  # the right wrist below threshold: no dot, no link
    # scaled with the image: a 1024 frame has 4 px lines where 512 has 2
    big = render_pose(1024, 1024, [person(2.0)])
    np.testing.assert_array_equal(big, reference_pose(1024, 1024, person(2.0), radius=4, thickness=4))
    thin, thick = (ours[290:310, 256] != 0).any(-1).sum(), (big[580:620, 512] != 0).any(-1).sum()  # across the hip link
    assert 2 <= thin <= 3 and 4 <= thick <= 6


def test_pose_links_leaving_the_image_are_not_drawn_and_openpose_stays_available():
    keypoints = person()
    keypoints[9, :2] = (600, 300)  # the left wrist outside a 512 frame: its link is skipped
    ours = render_pose(512, 512, [keypoints])
    assert not ours[295:305, 340:512].any()
    openpose = render_pose(512, 512, [keypoints], style="openpose")
    assert tuple(openpose[80, 256]) == (255, 0, 0)  # the OpenPose nose is red
    assert not np.array_equal(openpose, ours)
    with pytest.raises(ValueError):
        render_pose(64, 64, [keypoints], style="controlnet")


def test_pose_colours_match_the_reference_crop():
    path = REFERENCES / "pose-coco17-mmpose-palette.png"
    if not path.exists():
        pytest.skip("shared/reference-styles is not beside this checkout")
    crop = cv2.imread(str(path))[120:, :]  # BGR, below the caption
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(int)  # OpenCV hue: 0..180
    hue = hsv[(hsv[:, 1] > 120) & (hsv[:, 2] > 120), 0]  # saturated, bright: the skeleton's pixels
    ours = cv2.cvtColor(np.array([[(255, 153, 51), (0, 255, 0), (0, 128, 255)]], np.uint8), cv2.COLOR_RGB2HSV)[0, :, 0]
    distance = np.abs(hue[:, None] - ours[None].astype(int))  # (P, 3) hue distance
    distance = np.minimum(distance, 180 - distance)
    share = np.bincount(distance.argmin(1)[distance.min(1) <= 10], minlength=3) / len(hue)
    assert share.sum() > 0.9  # the model's skeleton is drawn in our three hues (orange, green, azure)
    assert (share > 0.05).all()
    # head and torso (11 of the 19 links) are orange, not azure: the BGR-listed palette read as RGB
    assert share[0] > share[2] and share[0] > share[1]
    ours_image = render_pose(512, 512, [person()])
    colours, counts = np.unique(ours_image.reshape(-1, 3), axis=0, return_counts=True)
    assert tuple(colours[np.argmax(np.where(colours.any(1), counts, 0))]) == (255, 153, 51)


# --- boxes --------------------------------------------------------------------------------------
CYAN, RED = (0, 255, 255), (255, 0, 0)


def test_boxes_are_filled_larger_first_with_white_labels_just_above():
    boxes = np.array([[200, 220, 260, 280], [100, 150, 400, 450]], float)  # the small box lies on the big one
    ours = render_box_map(512, 512, boxes, [CYAN, RED], ["cup: 0.37", "table: 0.90"])
    expected = np.zeros((512, 512, 3), np.uint8)
    expected[150:450, 100:400] = RED  # the larger box first, filled, inclusive pixel rectangle
    expected[220:280, 200:260] = CYAN
    for (x0, y0), text in (((100, 150), "table: 0.90"), ((200, 220), "cup: 0.37")):  # labels after all boxes
        cv2.putText(expected, text, (x0, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_8)
    np.testing.assert_array_equal(ours, expected)
    outline = render_box_map(512, 512, boxes, [CYAN, RED], None, style="outline", line_width=2)
    assert tuple(outline[300, 250]) == (0, 0, 0) and tuple(outline[150, 250]) == RED  # the option stays


def test_labels_stay_whole_inside_the_image():
    for box in ([480, 2, 510, 40], [0, 0, 30, 30], [495, 300, 512, 330]):  # at the top, corner, right edge
        ours = render_box_map(512, 512, np.array([box], float), [CYAN], ["bicycle: 0.55"])
        free = np.zeros((200, 600, 3), np.uint8)  # the same text with room all around
        cv2.putText(free, "bicycle: 0.55", (50, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        # the red channel carries only the label (the box is cyan): all of its ink is in the image
        assert ours[..., 0].astype(int).sum() == free[..., 0].astype(int).sum() > 0
        label = place_label("bicycle: 0.55", (box[0], box[1], box[2] - 1, box[3] - 1), 512, 512)
        assert label.origin[0] + label.size[0] < 512 and label.origin[1] - label.size[1] >= 0


def test_box_label_size_and_place_match_the_reference_crop():
    path = REFERENCES / "boxes-filled-with-labels.png"
    if not path.exists():
        pytest.skip("shared/reference-styles is not beside this checkout")
    crop = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)[400:560, 250:400].astype(int)  # "hood: 0.37"
    box = (crop[:, :, 0] < 80) & (crop[:, :, 1] > 200) & (crop[:, :, 2] > 200)
    text = (crop.min(-1) > 150) & ~box
    box_y, box_x = np.nonzero(box)
    text_y, text_x = np.nonzero(text)
    ref = {"gap": box_y.min() - text_y.max(), "dx": text_x.min() - box_x.min(),
           "width": text_x.max() - text_x.min() + 1, "height": text_y.max() - text_y.min() + 1}
    # the same box and label drawn by us at the reference panel's size (~510 px short side)
    x0, y0 = int(box_x.min()) + 100, int(box_y.min()) + 300
    ours = render_box_map(720, 510, np.array([[x0, y0, x0 + 48, y0 + 50]], float), [CYAN], ["hood: 0.37"])
    oy, ox = np.nonzero(ours.min(-1) > 150)  # the same threshold as for the crop's text
    got = {"gap": y0 - oy.max(), "dx": ox.min() - x0, "width": ox.max() - ox.min() + 1, "height": oy.max() - oy.min() + 1}
    assert abs(got["gap"] - ref["gap"]) <= 2 and abs(got["dx"] - ref["dx"]) <= 2, (got, ref)
    assert abs(got["width"] - ref["width"]) <= 0.15 * ref["width"] and abs(got["height"] - ref["height"]) <= 2, (got, ref)
