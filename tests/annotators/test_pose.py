"""PoseAnnotator on a random-init YOLO (from ultralytics' yolov8n.yaml) + a tiny random ViTPose (CPU, offline)."""

from __future__ import annotations

import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo_cfg_"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.pose import PoseAnnotator  # noqa: E402
from onegen.annotators.render_pose import COLORS, render_pose  # noqa: E402
from onegen.core.image_codec import decode_rgb  # noqa: E402
from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_vitpose, tiny_yolo  # noqa: E402
from tests.conftest import image_batch as _batch  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("pose_tiny")
    return tiny_yolo(root), tiny_vitpose(root / "vitpose")


@pytest.fixture(scope="module")
def annotator(checkpoints) -> PoseAnnotator:
    detector, vitpose = checkpoints
    ann = PoseAnnotator(detector=detector, model=vitpose, num_gpus=0, imgsz=160, box_threshold=0.5)
    ann.setup()
    return ann


def test_random_detector_gives_no_person_rows(annotator):
    images = [skdata.astronaut()[::4, ::4], skdata.coffee()[::4, ::4], np.full((50, 70, 3), 200, np.uint8)]
    out = annotator(_batch(images))
    assert out["status"] == ["no_person"] * 3  # random YOLO init: class scores far below 0.5
    assert out["condition"] == [None] * 3 and "confidence" in out["error"][0]


def test_keypoints_match_library_processor_on_same_boxes(annotator, checkpoints):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(checkpoints[1])
    images = [skdata.astronaut()[::2, ::2].copy(), skdata.coffee()[::2, ::2].copy()]  # 256x256, 200x300
    boxes_xyxy = [np.array([[90, 40, 150, 200], [60, 60, 120, 140]], np.float32), np.array([[120, 50, 200, 150]], np.float32)]
    ours = annotator.keypoints(images, boxes_xyxy)  # one batch of 3 crops
    coco = [[[float(x0), float(y0), float(x1 - x0), float(y1 - y0)] for x0, y0, x1, y1 in b] for b in boxes_xyxy]
    inputs = processor(images=images, boxes=coco, return_tensors="pt")
    ours_pixels = torch.cat(  # the same crops through our sampler, normalised
        [_our_pixels(annotator, im, b) for im, b in zip(images, boxes_xyxy, strict=True)]
    )
    # crops agree with the SciPy warp up to a rounding step of one uint8 level (1/255/std ~ 0.018)
    assert (ours_pixels - inputs["pixel_values"]).abs().max() <= 0.02
    with torch.no_grad():
        outputs = annotator._model(pixel_values=inputs["pixel_values"])
    ref = processor.post_process_pose_estimation(outputs, boxes=coco)
    for image_ours, image_ref in zip(ours, ref, strict=True):
        assert image_ours.shape == (len(image_ref), 17, 3)
        for person_ours, person_ref in zip(image_ours, image_ref, strict=True):
            # tolerance: sub-pixel; crops may differ by one uint8 level at a few pixels
            assert np.abs(person_ours[:, :2] - person_ref["keypoints"].numpy()).max() < 0.5
            assert np.abs(person_ours[:, 2] - person_ref["scores"].numpy()).max() < 1e-2


def _our_pixels(annotator, image, boxes):
    from onegen.annotators.pose import centers_and_scales, crop_persons

    spec = annotator._spec
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    center, scale = centers_and_scales(xywh, spec)
    crops = crop_persons(torch.from_numpy(image).permute(2, 0, 1).float(), center, scale, spec)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    return (crops - mean) / std


def test_annotate_with_detected_boxes_writes_json_and_condition(annotator, monkeypatch):
    """The detector is the only piece replaced: two fixed boxes for image 0, none for image 1."""
    images = [skdata.astronaut()[::2, ::2].copy(), skdata.coffee()[::4, ::4].copy()]
    boxes = [np.array([[90, 40, 150, 200], [60, 60, 120, 140]], np.float32), np.zeros((0, 4), np.float32)]
    confs = [np.array([0.9, 0.8], np.float32), np.zeros(0, np.float32)]
    monkeypatch.setattr(annotator, "detect", lambda ims: list(zip(boxes, confs, strict=True)))
    monkeypatch.setattr(annotator, "keypoint_threshold", 0.0)  # draw every keypoint of the random model
    out = annotator(_batch(images))
    assert out["status"] == ["ok", "no_person"]
    persons = json.loads(out["keypoints_json"][0])
    assert out["n_persons"][0] == 2 == len(persons)
    assert persons[0]["box"] == [90.0, 40.0, 150.0, 200.0] and persons[0]["score"] == 0.9
    direct = annotator.keypoints([images[0]], [boxes[0]])[0]  # (2, 17, 3)
    assert np.abs(np.array([p["keypoints"] for p in persons]) - direct).max() < 0.01
    cond = decode_rgb(out["condition"][0])
    assert cond.shape == images[0].shape and cond.any()
    assert (cond == render_pose(256, 256, list(direct), threshold=0.0, style="mmpose")).all()
    assert out["style"] == ["mmpose", None] and out["annotator_version"][0] == "2"
    monkeypatch.setattr(annotator, "style", "openpose")  # the ControlNet option, recorded per row
    openpose = annotator(_batch(images))
    assert openpose["style"] == ["openpose", None]
    assert (decode_rgb(openpose["condition"][0]) == render_pose(256, 256, list(direct), 0.0, "openpose")).all()


def test_render_exact_colours():
    """The ControlNet option: circle centres carry the OpenPose colour; limbs 60 % of the limb colour."""
    kps = np.zeros((17, 3))
    kps[0] = (100, 100, 1.0)  # nose -> OpenPose 0
    kps[5] = (300, 200, 1.0)  # left shoulder -> OpenPose 5
    kps[6] = (200, 200, 1.0)  # right shoulder -> OpenPose 2; neck = (250, 200)
    kps[8] = (200, 400, 0.1)  # right elbow below threshold: not drawn
    img = render_pose(512, 512, [kps], threshold=0.3, style="openpose")
    assert tuple(img[100, 100]) == COLORS[0]  # nose
    assert tuple(img[200, 250]) == COLORS[1]  # neck
    assert tuple(img[200, 200]) == COLORS[2]  # right shoulder
    assert tuple(img[200, 300]) == COLORS[5]  # left shoulder
    # limb neck -> right shoulder is limb 0 (red at 60 %), neck -> left shoulder limb 1
    assert tuple(img[200, 225]) == (153, 0, 0)
    assert tuple(img[200, 275]) == tuple(int(c * 0.6) for c in COLORS[1])
    # limb neck -> nose is limb 12 (blue at 60 %); its midpoint is (175, 150)
    assert tuple(img[150, 175]) == tuple(int(c * 0.6) for c in COLORS[12])
    assert not img[300:, :].any()  # the elbow below threshold left nothing
    assert tuple(img[0, 0]) == (0, 0, 0)


def test_render_without_shoulders_has_no_neck():
    kps = np.zeros((17, 3))
    kps[0] = (50, 50, 1.0)
    kps[5] = (80, 90, 1.0)  # only one shoulder
    img = render_pose(128, 128, [kps], threshold=0.3, style="openpose")
    assert tuple(img[50, 50]) == COLORS[0] and tuple(img[90, 80]) == COLORS[5]
    assert (img.reshape(-1, 3) == np.array(COLORS[1])).all(axis=1).sum() == 0  # no neck anywhere


def test_yaml_detector_builds_without_download():
    from onegen.annotators.pose import load_yolo

    yolo = load_yolo("yolov8n.yaml")
    assert sum(p.numel() for p in yolo.model.parameters()) > 0
    with pytest.raises(MissingCheckpointError, match="'yolo-nonesuch.yaml': no such model yaml") as info:
        load_yolo("yolo-nonesuch.yaml")  # a user error (one line, exit 2), not a FileNotFoundError
    assert "\n" not in str(info.value)


def test_missing_checkpoints_fail_at_setup_with_one_line(checkpoints):
    with pytest.raises(MissingCheckpointError, match="no-such-yolo.pt"):
        PoseAnnotator(detector="/nowhere/no-such-yolo.pt", model=checkpoints[1], num_gpus=0).setup()
    with pytest.raises(MissingCheckpointError, match="nobody-here/no-such-vitpose") as info:
        PoseAnnotator(detector=checkpoints[0], model="nobody-here/no-such-vitpose", num_gpus=0).setup()
    assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keypoints_match_cpu(checkpoints, annotator):
    gpu = PoseAnnotator(detector=checkpoints[0], model=checkpoints[1], num_gpus=1, half=False, imgsz=160)
    gpu.setup()
    images = [skdata.astronaut()[::2, ::2].copy()]
    boxes = [np.array([[90, 40, 150, 200]], np.float32)]
    got, ref = gpu.keypoints(images, boxes)[0], annotator.keypoints(images, boxes)[0]
    assert np.abs(got[..., :2] - ref[..., :2]).max() < 0.5
    assert gpu(_batch(images))["status"] == ["no_person"]  # the random detector on CUDA too
