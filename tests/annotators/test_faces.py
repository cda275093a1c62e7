"""FacesAnnotator: the real LBP cascade on real photos, and tiny random detector / NSFW checkpoints (CPU, offline)."""

from __future__ import annotations

import json
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="onegen-yolo-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.faces import FacesAnnotator, group_windows  # noqa: E402
from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_face_detector, tiny_nsfw  # noqa: E402
from tests.conftest import image_batch, weights_cached  # noqa: E402

# Where her face is in the 512 x 512 astronaut photo (checked by eye on a saved crop: the region
# x 150-300, y 60-220 holds her face from hairline to chin; the flag, suit, helmet and shuttle are outside).
FACE_X, FACE_Y = (150, 300), (60, 220)


def _batch(images: list[np.ndarray], kind: str = "subject_image") -> dict[str, list]:
    return image_batch(images, kind=kind, meta='{"subject": "s0"}')


def _centre(box: list[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.fixture(scope="module")
def cascade() -> FacesAnnotator:
    annotator = FacesAnnotator()
    annotator.setup()
    return annotator


@pytest.fixture(scope="module")
def photos_out(cascade) -> dict[str, list]:
    astronaut = skdata.astronaut()
    two = np.concatenate([astronaut, astronaut], axis=1)  # two people side by side, (512, 1024, 3)
    return cascade(_batch([astronaut, skdata.coffee(), two]))


# --- the LBP cascade on real photos ------------------------------------------------------------------------
def test_cascade_finds_the_astronauts_face(photos_out):
    assert photos_out["status"][0] == "ok", photos_out["error"][0]
    assert photos_out["n_faces"][0] == 1
    box = photos_out["face_box"][0]
    cx, cy = _centre(box)
    assert FACE_X[0] <= cx <= FACE_X[1] and FACE_Y[0] <= cy <= FACE_Y[1], box
    assert 40 <= box[2] - box[0] <= 200  # a face-sized box, not the whole picture
    faces = json.loads(photos_out["faces_json"][0])
    assert len(faces) == 1 and faces[0]["box"] == pytest.approx(box, abs=0.01)
    assert photos_out["face_score"][0] >= FacesAnnotator.min_neighbours  # windows merged into the face


def test_no_face_and_many_faces(photos_out):
    assert photos_out["status"][1] == "no_face"  # coffee cup
    assert photos_out["status"][2] == "many_faces"  # two astronaut copies
    assert photos_out["face_box"][1] is None and photos_out["n_faces"][2] is None


def test_nsfw_off_by_default(photos_out, cascade):
    assert photos_out["nsfw_checked"][0] is False and photos_out["nsfw_score"][0] is None
    assert cascade.model_id() == "lbp_cascade"


def test_large_images_are_downscaled_and_boxes_come_back_in_source_pixels():
    big = np.asarray(Image.fromarray(skdata.astronaut()).resize((1024, 1024), Image.BICUBIC))
    annotator = FacesAnnotator(max_side=512)
    out = annotator(_batch([big]))
    assert out["status"] == ["ok"], out["error"]
    cx, cy = _centre(out["face_box"][0])
    assert 2 * FACE_X[0] <= cx <= 2 * FACE_X[1] and 2 * FACE_Y[0] <= cy <= 2 * FACE_Y[1], out["face_box"][0]


def test_other_row_kinds_are_skipped(cascade):
    out = cascade(_batch([skdata.astronaut()], kind="multiview"))
    assert out["status"] == ["skipped"]


def test_group_windows_merges_clusters_drops_weak_and_nested():
    face = [[100 + d, 100 - d, 50, 50] for d in range(4)]  # 4 near-identical windows
    weak = [[300, 300, 40, 40]]  # one stray window
    nested = [[110, 110, 22, 22], [111, 111, 22, 22]]  # a face part inside the face
    groups = group_windows(np.array(face + weak + nested, dtype=np.float64), min_neighbours=2)
    assert len(groups) == 1
    box, support = groups[0]
    assert support == 4 and box == pytest.approx([101.5, 98.5, 50, 50])


# --- tiny random checkpoints: a YOLOS face detector and a ViT NSFW classifier ----------------------------
@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("faces_tiny")
    # spread_slots: distinct detection tokens, so the scores below can be told apart
    return {"detector": tiny_face_detector(root / "yolos", spread_slots=True), "nsfw": tiny_nsfw(root / "vit")}


def test_nsfw_above_threshold_is_rejected(tiny_dirs):
    out = FacesAnnotator(nsfw_model=tiny_dirs["nsfw"], nsfw_threshold=0.0)(_batch([skdata.astronaut()]))
    assert out["status"] == ["nsfw"]
    assert out["model_id"] == [f"lbp_cascade+{tiny_dirs['nsfw']}"]


def test_nsfw_below_threshold_passes_with_the_classifiers_probability(tiny_dirs):
    from transformers import pipeline

    astronaut = skdata.astronaut()
    out = FacesAnnotator(nsfw_model=tiny_dirs["nsfw"], nsfw_threshold=1.01)(_batch([astronaut]))
    assert out["status"] == ["ok"], out["error"]
    assert out["nsfw_checked"] == [True]
    score = out["nsfw_score"][0]
    assert 0.0 <= score <= 1.0
    # the library's own classification pipeline on the same checkpoint gives the same "nsfw" probability
    reference = pipeline("image-classification", model=tiny_dirs["nsfw"], top_k=None)(Image.fromarray(astronaut))
    assert score == pytest.approx(next(r["score"] for r in reference if r["label"] == "nsfw"), abs=1e-4)


def test_detector_model_thresholds_and_boxes(tiny_dirs):
    astronaut = skdata.astronaut()
    annotator = FacesAnnotator(detector=tiny_dirs["detector"], score_threshold=0.0, min_face_size=0.0)
    annotator.setup()
    faces = annotator.detect([astronaut])[0]
    assert len(faces) == 3  # every detection token is labelled "face" in the one-label checkpoint
    scores = [score for _, score in faces]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[1]  # the init above separates the tokens
    for box, _ in faces:
        assert 0 <= box[0] <= box[2] <= 512 and 0 <= box[1] <= box[3] <= 512
    assert annotator(_batch([astronaut]))["status"] == ["many_faces"]

    # a threshold between the two best scores keeps exactly the best face
    annotator.score_threshold = (scores[0] + scores[1]) / 2
    out = annotator(_batch([astronaut]))
    assert out["status"] == ["ok"] and out["n_faces"] == [1]
    assert out["face_box"][0] == pytest.approx(faces[0][0], rel=1e-5)
    assert out["face_score"][0] == pytest.approx(scores[0], rel=1e-5)
    annotator.score_threshold = 1.01
    assert annotator(_batch([astronaut]))["status"] == ["no_face"]


def test_detector_without_a_face_label_fails_at_setup(tiny_dirs):
    with pytest.raises(ValueError, match="no label in"):
        FacesAnnotator(detector=tiny_dirs["detector"], face_labels=("head",)).setup()


@pytest.mark.parametrize(
    "config",
    [
        {"detector": "/nonexistent/face-detector"},
        {"detector": "nobody/no-such-face-detector"},
        {"nsfw_model": "/nonexistent/nsfw"},
        {"nsfw_model": "nobody/no-such-nsfw-model"},
        {"detector": "/nonexistent/cascade.xml"},
    ],
)
def test_missing_checkpoint_fails_at_setup_with_one_line(config):
    with pytest.raises(MissingCheckpointError) as caught:
        FacesAnnotator(**config).setup()
    message = str(caught.value)
    assert "\n" not in message and next(iter(config.values())) in message


REAL_NSFW = "Falconsai/nsfw_image_detection"


@pytest.mark.weights
@pytest.mark.skipif(not weights_cached(REAL_NSFW), reason=f"{REAL_NSFW} not in the local HF cache")
def test_real_nsfw_classifier_passes_the_astronaut_portrait():
    out = FacesAnnotator(nsfw_model=REAL_NSFW)(_batch([skdata.astronaut()]))
    assert out["status"] == ["ok"], out["error"]
    assert out["nsfw_checked"] == [True] and out["nsfw_score"][0] < 0.5
