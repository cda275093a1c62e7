"""Tiny random checkpoints: each loads through its annotator's real setup(); the demo's settings run on CPU."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.pipelines.demo import tiny_models  # noqa: E402
from onegen.pipelines.jobs.annotator_choices import make_annotators  # noqa: E402
from tests.conftest import image_batch  # noqa: E402

DEMO_ANNOTATORS = {"depth", "pose", "hed", "segment", "caption", "entities"}



def _batch(images: list[np.ndarray]) -> dict[str, list]:
    return image_batch(images, caption="a photo")



def _photos() -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(skdata.astronaut()).resize((64, 64))),
            np.asarray(Image.fromarray(skdata.chelsea()).resize((72, 48)))]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[list[str], list[str], str]:
    folder = tmp_path_factory.mktemp("demo-ckpts")
    names, settings = tiny_models.demo_annotator_settings(folder)
    return names, settings, str(folder)


@pytest.fixture(scope="module")
def demo_annotators(demo) -> dict:
    names, settings, _ = demo
    annotators = make_annotators(names, settings)
    for annotator in annotators:
        annotator.setup()  # the same resolve_checkpoint + loaders a hub id goes through
    return {a.name: a for a in annotators}


def test_demo_settings_are_accepted_and_point_at_the_built_files(demo, demo_annotators):
    names, settings, folder = demo
    assert set(names) == DEMO_ANNOTATORS and len(names) == len(set(names))
    assert names.index("segment") < names.index("entities")  # no entities store yet: segment uses its vocabulary
    assert all(a.num_gpus == 0 for a in demo_annotators.values())
    assert all(a.batch_size <= 8 for a in demo_annotators.values())
    paths = [s.split("=", 1)[1] for s in settings if s.split("=", 1)[1].startswith(folder)]
    assert len(paths) >= 7 and all(Path(p).exists() for p in paths)
    segment = demo_annotators["segment"]
    assert segment.box_threshold == 0.0 and segment.detector == "owlv2" and segment.vocabulary
    assert demo_annotators["caption"].max_new_tokens <= 16 and demo_annotators["entities"].max_new_tokens <= 16
    assert demo_annotators["depth"].model_id().startswith(folder)


def test_demo_annotators_produce_outputs_on_cpu(demo_annotators):
    """Every demo annotator returns one row per photo; the vision ones find something on real photos."""
    photos = _photos()
    statuses = {}
    for name, annotator in demo_annotators.items():
        out = annotator(_batch(photos))
        assert out["key"] == ["k0", "k1"], name
        assert all(not s.startswith("error") for s in out["status"]), (name, out["error"])
        statuses[name] = out["status"]
    for name in ("depth", "hed", "pose", "segment"):  # thresholds 0: the random detectors give boxes
        assert statuses[name] == ["ok", "ok"], (name, statuses[name])
    for name in ("caption", "entities"):  # random text may not parse; it is recorded, not raised
        assert set(statuses[name]) <= {"ok", "unparseable"}


def test_builders_are_deterministic(tmp_path):
    a, b = tiny_models.tiny_depth(tmp_path / "a"), tiny_models.tiny_depth(tmp_path / "b")
    assert _digest(a) == _digest(b)
    c = tiny_models.tiny_depth(tmp_path / "c", seed=1)
    assert _digest(c) != _digest(a)


def _digest(folder: str) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def test_grounding_dino_loads_in_segment_setup(demo, tmp_path):
    from onegen.annotators.segment import SegmentAnnotator

    sam = next(s.split("=", 1)[1] for s in demo[1] if s.startswith("segment.sam_checkpoint="))
    ann = SegmentAnnotator(detector="grounding_dino", detector_id=tiny_models.tiny_grounding_dino(tmp_path / "gd"),
                           sam_model_type="tiny", sam_checkpoint=sam, vocabulary=("cat", "person"),
                           box_threshold=0.0, text_threshold=0.0, num_gpus=0)
    ann.setup()
    assert type(ann._detector).__name__ == "GroundingDinoForObjectDetection"
    assert ann(_batch(_photos()[:1]))["status"] == ["ok"]


def test_molmo2_loads_in_entities_setup(tmp_path):
    from onegen.annotators.caption import EntitiesAnnotator

    ann = EntitiesAnnotator(model=tiny_models.tiny_molmo2(tmp_path / "molmo2"), num_gpus=0, max_new_tokens=4)
    ann.setup()
    assert ann._vlm.family == "molmo2"
    assert ann(_batch(_photos()[:1]))["status"][0] in ("ok", "unparseable")


def test_face_checkpoints_load_in_faces_setup(tmp_path):
    from onegen.annotators.faces import FacesAnnotator

    detector = FacesAnnotator(detector=tiny_models.tiny_face_detector(tmp_path / "yolos"), score_threshold=0.0,
                              min_face_size=0.0)
    detector.setup()
    assert len(detector.detect([_photos()[0]])[0]) == 3  # three detection tokens, all labelled "face"
    assert detector(_batch(_photos()[:1]))["status"] == ["many_faces"]
    nsfw = FacesAnnotator(nsfw_model=tiny_models.tiny_nsfw(tmp_path / "vit"), nsfw_threshold=1.01)
    out = nsfw(_batch([skdata.astronaut()]))  # the cascade finds her face; then the classifier runs
    assert out["status"] == ["ok"] and out["nsfw_checked"] == [True] and 0.0 <= out["nsfw_score"][0] <= 1.0


def test_training_checkpoints_load(tmp_path):
    import torch

    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae

    encoder = TextEncoder.load(tiny_models.tiny_text_encoder(tmp_path / "t5", width=32))
    states, _ = encoder.encode(["a photo of a cat"])
    assert states.shape[-1] == 32
    latents = Vae.load(tiny_models.tiny_vae(tmp_path / "vae")).encode(torch.zeros(1, 3, 32, 32))
    assert latents.shape == (1, 16, 4, 4)
