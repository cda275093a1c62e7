"""Grounded-SAM segment annotator on tiny random OWLv2 / SAM checkpoints (CPU, offline).

The tiny checkpoints are built from configs / classes, saved to a temp dir and loaded through
the annotator's own loaders (`resolve_checkpoint`, `load_detector`, `load_sam`).
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import io  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.palette import MAX_CLASSES, PALETTE, parse_tags  # noqa: E402
from onegen.annotators.segment import (  # noqa: E402
    SAM_ARCHS,
    Detections,
    SegmentAnnotator,
    build_sam,
    class_names,
    detect,
    load_detector,
    load_sam,
    owlv2_detections,
    render_outputs,
    sam_mask_logits,
    sam_masks,
)
from onegen.core.image_codec import decode_rgb, encode_png  # noqa: E402
from onegen.core.weights import MissingCheckpointError  # noqa: E402
from onegen.pipelines.demo.tiny_models import tiny_grounding_dino, tiny_owlv2, tiny_sam  # noqa: E402


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment-ckpts")
    return {"owlv2": tiny_owlv2(root / "owlv2", prior_boxes=True), "sam": tiny_sam(root, seed=1)}


@pytest.fixture(scope="module")
def annotator(ckpts):
    ann = SegmentAnnotator(detector="owlv2", detector_id=ckpts["owlv2"], sam_model_type="tiny",
                           sam_checkpoint=ckpts["sam"], box_threshold=0.0, num_gpus=0)
    ann.setup()
    return ann


def _small(image: np.ndarray, width: int) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return np.asarray(Image.fromarray(image).convert("RGB").resize((width, height)))


@pytest.fixture(scope="module")
def images():
    return [_small(skdata.astronaut(), 64), _small(skdata.coffee(), 72), _small(skdata.chelsea(), 56)]


# --- equivalence with the libraries --------------------------------------------------------------


def test_owlv2_postprocess_equals_library(annotator, images):
    processor, model = annotator._processor, annotator._detector
    names = [["astronaut", "flag"], ["coffee", "cup"], ["cat", "face"]]
    with torch.no_grad():
        out = model(**processor(text=names, images=images, return_tensors="pt"))
    sizes = torch.tensor([im.shape[:2] for im in images])
    threshold = 0.3
    ours = owlv2_detections(out.logits, out.pred_boxes, sizes, [2, 2, 2], threshold)
    ref = processor.post_process_grounded_object_detection(out, threshold=threshold, target_sizes=sizes)
    assert sum(len(d.boxes) for d in ours) > 0  # the comparison is not vacuous
    for mine, theirs in zip(ours, ref, strict=True):
        torch.testing.assert_close(mine.boxes, theirs["boxes"])
        torch.testing.assert_close(mine.scores, theirs["scores"])
        assert mine.labels.tolist() == theirs["labels"].tolist()


def test_owlv2_padding_queries_never_win(annotator, images):
    names = [["astronaut"], ["coffee", "cup", "person"], ["cat", "face"]]
    found = detect("owlv2", annotator._processor, annotator._detector, images, names, 0.0, 0.0)
    for det, image_names in zip(found, names, strict=True):
        assert len(det.boxes) > 0 and int(det.labels.max()) < len(image_names)


def test_batched_sam_equals_predictor(ckpts, images):
    from segment_anything import SamPredictor

    sam = load_sam("tiny", ckpts["sam"], "cpu")
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 0.0, 63.0, 30.5]]), torch.tensor([[10.0, 10.0, 60.0, 40.0]])]
    batched = sam_mask_logits(sam, images[:2], boxes)
    predictor = SamPredictor(sam)
    for image, image_boxes, logits in zip(images[:2], boxes, batched, strict=True):
        predictor.set_image(image)
        assert logits.shape == (len(image_boxes), *image.shape[:2])
        for box, mine in zip(image_boxes, logits, strict=True):
            ref, _, _ = predictor.predict(box=box.numpy(), multimask_output=False, return_logits=True)
            np.testing.assert_allclose(mine.numpy(), ref[0], atol=1e-4, rtol=1e-4)
            assert np.array_equal(mine.numpy() > sam.mask_threshold, ref[0] > sam.mask_threshold)


# --- rendering ------------------------------------------------------------------------------------


def _rect_mask(height, width, x0, y0, x1, y1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _class_colours(outputs):
    return {c["name"]: tuple(int(c["colour"][i : i + 2], 16) for i in (1, 3, 5)) for c in json.loads(outputs["classes_json"])}


def test_semantic_map_colours_exact_pixels_and_tags_match_pixels():
    h, w = 40, 50
    masks = np.stack([_rect_mask(h, w, 0, 0, 30, 30), _rect_mask(h, w, 10, 10, 20, 20), _rect_mask(h, w, 35, 5, 45, 35)])
    boxes = np.array([[0, 0, 30, 30], [10, 10, 20, 20], [35, 5, 45, 35]], dtype=np.float32)
    out = render_outputs("k1", ["field", "bird", "pole"], boxes, np.ones(3), np.array([0, 1, 2]), masks, h, w)
    semantic = decode_rgb(out["semantic"])
    colours = _class_colours(out)
    assert len(set(colours.values())) == 3 and set(colours.values()) <= {c.rgb for c in PALETTE}
    # the smaller "bird" lies on the larger "field" and is painted after it
    assert tuple(semantic[15, 15]) == colours["bird"] and tuple(semantic[5, 5]) == colours["field"]
    assert tuple(semantic[20, 40]) == colours["pole"] and tuple(semantic[38, 48]) == (0, 0, 0)
    visible = {"field": masks[0] & ~masks[1], "bird": masks[1], "pole": masks[2]}
    tags = parse_tags(out["semantic_tags"])
    assert [name for _, _, name in tags] == ["field", "bird", "pole"]  # entity order
    for colour, kind, name in tags:
        assert kind == "mask"
        assert np.array_equal(np.all(semantic == colour.rgb, axis=-1), visible[name])
    assert (np.any(semantic != 0, axis=-1) == masks.any(0)).all()  # black exactly off every mask
    assert out["n_classes"] == 3


def test_box_map_outline_option_and_default_fill():
    h, w = 32, 32
    masks = np.zeros((2, h, w), dtype=bool)
    boxes = np.array([[2, 3, 20, 25], [10.4, 12.6, 15.2, 17.0]], dtype=np.float32)
    out = render_outputs("k2", ["car", "wheel"], boxes, np.ones(2), np.array([0, 1]), masks, h, w,
                         box_style="outline", box_line_width=2, box_labels=False)
    box_map, colours = decode_rgb(out["boxes"]), _class_colours(out)
    car, wheel = colours["car"], colours["wheel"]
    assert tuple(box_map[3, 10]) == car and tuple(box_map[4, 10]) == car  # top edge, 2 px thick
    assert tuple(box_map[5, 10]) == (0, 0, 0)  # inside the outline stays black
    assert tuple(box_map[24, 19]) == car and tuple(box_map[25, 19]) == (0, 0, 0)  # x1, y1 exclusive edges
    assert tuple(box_map[12, 10]) == wheel and tuple(box_map[16, 14]) == wheel  # floor / ceil-1 corners
    assert tuple(box_map[14, 12]) == (0, 0, 0)
    tags = parse_tags(out["box_tags"])
    assert [(c.rgb, kind, name) for c, kind, name in tags] == [(car, "boundingbox", "car"), (wheel, "boundingbox", "wheel")]
    assert out["semantic_tags"] == ""  # empty masks: no class is visible in the semantic map
    filled = decode_rgb(render_outputs("k2", ["car", "wheel"], boxes, np.ones(2), np.array([0, 1]), masks, h, w,
                                       box_labels=False)["boxes"])  # fill is the default
    assert tuple(filled[6, 6]) == car and tuple(filled[14, 12]) == wheel and tuple(filled[0, 0]) == (0, 0, 0)


def test_classes_without_boxes_are_dropped_and_colours_follow_the_key():
    h, w = 16, 16
    masks = np.stack([_rect_mask(h, w, 0, 0, 8, 8)])
    args = (["a", "b"], np.array([[0, 0, 8, 8]], np.float32), np.ones(1), np.array([1]), masks, h, w)
    out = render_outputs("key-x", *args)
    assert out["n_classes"] == 1 and [n for _, _, n in parse_tags(out["box_tags"])] == ["b"]
    assert render_outputs("key-x", *args) == out  # same key, same bytes
    colours = {_class_colours(render_outputs(f"key-{i}", *args))["b"] for i in range(12)}
    assert len(colours) > 1


# --- the annotator ---------------------------------------------------------------------------------


def _batch(images, entities):
    n = len(images)
    return {"key": [f"test-{i}" for i in range(n)], "kind": ["image"] * n,
            "image": [encode_png(im) for im in images], "caption_original": ["a photo"] * n,
            "meta": ["{}"] * n, "width": [im.shape[1] for im in images], "height": [im.shape[0] for im in images],
            "entities.entities": entities}


def test_annotator_end_to_end(annotator, images):
    entities = [["astronaut", "flag", "Astronaut"], ["coffee", "cup"], []]
    out = annotator(_batch(images, entities))
    assert out["status"] == ["ok", "ok", "no_entities"]
    assert set(annotator.schema().names) == set(out)
    for i in range(2):
        semantic = decode_rgb(out["semantic"][i])
        assert semantic.shape == images[i].shape and decode_rgb(out["boxes"][i]).shape == images[i].shape
        classes = json.loads(out["classes_json"][i])
        assert out["n_classes"][i] == len(classes) == len(parse_tags(out["box_tags"][i])) <= len(set(map(str.lower, entities[i])))
        for colour, _, name in parse_tags(out["semantic_tags"][i]):
            info = next(c for c in classes if c["name"] == name)
            assert info["colour"] == colour.hex
            assert int(np.all(semantic == colour.rgb, axis=-1).sum()) == info["visible_area"] > 0
    assert all(out["semantic_tags"][i] for i in range(2))  # SAM painted something per image
    assert out["semantic"][2] is None and out["model_id"][0].startswith(annotator.detector_id)
    again = annotator(_batch(images, entities))
    assert again["semantic"] == out["semantic"] and again["box_tags"] == out["box_tags"]


def test_no_box_above_threshold_is_no_entities(ckpts, images):
    ann = SegmentAnnotator(detector="owlv2", detector_id=ckpts["owlv2"], sam_model_type="tiny",
                           sam_checkpoint=ckpts["sam"], box_threshold=1.0, num_gpus=0)
    ann.setup()
    out = ann(_batch(images[:1], [["astronaut"]]))
    assert out["status"] == ["no_entities"] and "no box above threshold" in out["error"][0]


def test_vocabulary_used_without_entities_annotation(annotator, images):
    row = {"key": "k"}
    assert class_names(row, ("cat", " Cat ", "dog"), 10) == ["cat", "dog"]
    assert class_names({"entities.entities": ["x"]}, ("cat",), 10) == ["x"]
    assert len(class_names({"entities.entities": [f"e{i}" for i in range(20)]}, (), MAX_CLASSES)) == MAX_CLASSES
    batch = _batch(images[:1], None)
    del batch["entities.entities"]
    assert annotator(batch)["status"] == ["no_entities"]  # empty vocabulary


def test_segment_boxes_paints_exactly_the_sam_masks(annotator, images):
    image = images[0]
    det = Detections(torch.tensor([[5.0, 5.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]]), torch.tensor([0.9, 0.8]),
                     torch.tensor([0, 1]))
    out = annotator.segment_boxes("known", image, ["person", "flag"], det)
    masks = sam_masks(annotator._sam, [image], [det.boxes])[0]
    semantic = decode_rgb(out["semantic"])
    assert np.array_equal(np.any(semantic != 0, axis=-1), masks.any(0))
    areas = [c["mask_area"] for c in json.loads(out["classes_json"])]
    assert areas == [int(m.sum()) for m in masks]


def test_missing_checkpoints_fail_at_setup_in_one_line(ckpts, tmp_path):
    cases = [
        dict(detector_id=str(tmp_path / "nope"), sam_checkpoint=ckpts["sam"]),
        dict(detector_id="someone/not-cached-detector", sam_checkpoint=ckpts["sam"]),
        dict(detector_id=ckpts["owlv2"], sam_checkpoint=""),
        dict(detector_id=ckpts["owlv2"], sam_checkpoint=str(tmp_path)),  # folder without a .pth
    ]
    for fields in cases:
        ann = SegmentAnnotator(detector="owlv2", sam_model_type="tiny", num_gpus=0, **fields)
        with pytest.raises(MissingCheckpointError) as info:
            ann.setup()
        assert "\n" not in str(info.value)


def test_loader_uses_saved_weights(ckpts):
    sam = load_sam("tiny", ckpts["sam"], "cpu")
    torch.manual_seed(1)
    fresh = build_sam(SAM_ARCHS["tiny"]).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in sam.state_dict().items())
    _, model = load_detector("owlv2", ckpts["owlv2"], "cpu")
    assert model.config.vision_config.image_size == 64
    with pytest.raises(ValueError, match="unknown sam_model_type"):
        load_sam("vit_x", ckpts["sam"], "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_path_matches_cpu(ckpts, images):
    cpu = load_sam("tiny", ckpts["sam"], "cpu")
    gpu = load_sam("tiny", ckpts["sam"], "cuda")
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0]])]
    np.testing.assert_allclose(sam_mask_logits(gpu, images[:1], boxes)[0].cpu().numpy(),
                               sam_mask_logits(cpu, images[:1], boxes)[0].numpy(), atol=1e-3)


def test_png_bytes_decode(annotator, images):
    out = annotator(_batch(images[:1], [["astronaut"]]))
    assert Image.open(io.BytesIO(out["boxes"][0])).format == "PNG"


# --- Grounding DINO ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grounding(tmp_path_factory):
    return tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


def test_grounding_dino_postprocess_equals_library(grounding, images):
    processor, model = load_detector("grounding_dino", grounding, "cpu")
    names = [["astronaut", "flag"], ["coffee", "cup", "face"], ["cat"]]
    found = detect("grounding_dino", processor, model, images, names, 0.3, 0.0)
    texts = [". ".join(n) + "." for n in names]
    with torch.no_grad():
        inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
        out = model(**inputs)
    ref = processor.post_process_grounded_object_detection(out, inputs["input_ids"], threshold=0.3, text_threshold=0.3,
                                                           target_sizes=[im.shape[:2] for im in images])
    assert sum(len(d.boxes) for d in found) > 0
    single_word = 0
    for det, theirs, image_names in zip(found, ref, names, strict=True):
        torch.testing.assert_close(det.boxes, theirs["boxes"])
        torch.testing.assert_close(det.scores, theirs["scores"])
        for label, phrase in zip(det.labels.tolist(), theirs["text_labels"], strict=True):
            if phrase in image_names:  # the library's phrase is one whole class name: same class
                single_word += 1
                assert image_names[label] == phrase
    assert single_word > 0


def test_annotator_with_grounding_dino(grounding, ckpts, images):
    ann = SegmentAnnotator(detector="grounding_dino", detector_id=grounding, sam_model_type="tiny",
                           sam_checkpoint=ckpts["sam"], box_threshold=0.3, text_threshold=0.3, num_gpus=0)
    ann.setup()
    out = ann(_batch(images[:2], [["astronaut", "flag"], ["cup"]]))
    assert out["status"] == ["ok", "ok"]
    names = {n for tags in out["box_tags"] for _, _, n in parse_tags(tags)}
    assert names <= {"astronaut", "flag", "cup"} and names
