"""The vLLM path's per-row requests and results (vllm itself is not installable here): the same row kinds,
prompts, chosen scene view and statuses as the HF path, through the same annotator methods."""

import base64
import json

import numpy as np

from onegen.annotators.caption import CaptionAnnotator, EntitiesAnnotator, scene_caption_view
from onegen.pipelines.jobs.vllm_annotate import vllm_row_request, vllm_row_result
from onegen.pipelines.runtime.units import UNIT_COLUMN

VIEWS = [b"\x89PNG-view-%d" % i for i in range(5)]
ROWS = {
    "image": {"key": "photos-0", "source": "photos", "kind": "image", "image": b"JPEG-0", "image_format": "jpg",
              "caption_original": "a dog", "meta": "{}", UNIT_COLUMN: 3},
    "subject_image": {"key": "ids-1", "source": "ids", "kind": "subject_image", "image": b"PNG-1",
                      "image_format": "png", "caption_original": None, "meta": "{}", UNIT_COLUMN: 3},
    "scene": {"key": "dl3dv-2", "source": "dl3dv", "kind": "scene", "image": None, "image_format": "png",
              "view_images": VIEWS, "caption_original": None, "meta": json.dumps({"reader": "nerfstudio"}),
              UNIT_COLUMN: 3},
    "co3d": {"key": "co3d-3", "source": "co3d", "kind": "scene", "image": None, "image_format": "jpg",
             "view_images": VIEWS[:2], "caption_original": None, "meta": json.dumps({"reader": "co3d"}),
             UNIT_COLUMN: 3},
}


def _asked(request: dict) -> tuple[bytes, str]:
    image, text = request["messages"][0]["content"]
    return base64.b64decode(image["image_url"]["url"].split(",", 1)[1]), text["text"]


def test_requests_use_the_family_prompt_and_the_chosen_view():
    annotator = CaptionAnnotator(backend="vllm", max_new_tokens=20)
    settings = annotator.settings()
    image, carried = vllm_row_request(annotator, ROWS["image"], settings)
    assert _asked(image) == (b"JPEG-0", annotator.prompt) and carried["caption_view"] is None
    subject, _ = vllm_row_request(annotator, ROWS["subject_image"], settings)
    assert _asked(subject) == (b"PNG-1", annotator.subject_prompt)
    assert subject["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    scene, carried = vllm_row_request(annotator, ROWS["scene"], settings)
    view = scene_caption_view("dl3dv-2", len(VIEWS))
    assert _asked(scene) == (VIEWS[view], annotator.scene_prompt) and carried["caption_view"] == view
    assert scene["sampling_params"] == {"max_tokens": 20, "temperature": 0.0}
    fixed, carried = vllm_row_request(CaptionAnnotator(backend="vllm", scene_view=1), ROWS["scene"], settings)
    assert _asked(fixed)[0] == VIEWS[1] and carried["caption_view"] == 1
    as_numpy = {**ROWS["scene"], "view_images": np.array(VIEWS, dtype=object)}  # how Ray rows carry lists
    assert _asked(vllm_row_request(annotator, as_numpy, settings)[0]) == _asked(scene)


def test_results_are_the_hf_paths_columns():
    annotator = CaptionAnnotator(backend="vllm")
    _, carried = vllm_row_request(annotator, ROWS["scene"], annotator.settings())
    carried = json.loads(json.dumps(carried))  # it travels as JSON through the processor
    answer = "A quiet courtyard with a stone fountain, potted olive trees and white walls under soft light."
    result = vllm_row_result(annotator, carried, answer)
    assert result == annotator.parse_answer(answer, {**ROWS["scene"], "caption_view": carried["caption_view"]})
    assert result["caption_view"] == carried["caption_view"] and result["length_reason"] == (
        "words_out_of_range:16 not in 30-100")
    columns = annotator._to_columns([carried["key"]], [result])
    assert columns["status"] == ["ok"] and columns["caption"] == [answer]


def test_rows_asking_nothing_get_their_status():
    annotator = CaptionAnnotator(backend="vllm")
    request, carried = vllm_row_request(annotator, ROWS["co3d"], annotator.settings())
    assert request["sampling_params"]["max_tokens"] == 1
    columns = annotator._to_columns(["co3d-3"], [vllm_row_result(annotator, carried, "x")])
    assert columns["status"] == ["token_only"] and columns["caption"] == [None]
    entities = EntitiesAnnotator(backend="vllm")
    _, carried = vllm_row_request(entities, ROWS["subject_image"], entities.settings())
    assert entities._to_columns(["ids-1"], [vllm_row_result(entities, carried, "x")])["status"] == ["skipped"]
