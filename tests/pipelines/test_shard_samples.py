"""Sample construction from catalog + annotation rows: members, prompts, captions, skip reasons."""

import json

from onegen.annotators.base import ConditionSpec
from onegen.pipelines.samples.common import TaskSource, candidates, choose_caption

ROW = {"key": "src-0001", "kind": "image", "source": "src", "image": b"JPEG", "image_format": "jpg",
       "caption_original": "a red bird on a branch", "width": 64, "height": 48}
SEMANTIC = TaskSource("semanticmap2image", "segment@1", ConditionSpec("semanticmap2image", "semantic", "png", "semantic_tags"))
CANNY = TaskSource("canny2image", "canny@1", ConditionSpec("canny2image", "condition", "png"))
TEXT = TaskSource("text2image")


def _ok(**columns):
    return {"key": ROW["key"], "status": "ok", "annotator_version": "1", **columns}


def test_condition_sample_with_colour_tags():
    tags = "<#FF0000 red mask: bird> <#00FF00 lime mask: branch>"
    annotations = {"segment": _ok(semantic=b"PNG", semantic_tags=tags)}
    ((task, sample),) = list(candidates(ROW, 7, annotations, [SEMANTIC], "original"))
    assert task == "semanticmap2image" and sample.key == "src-0001-semanticmap2image" and sample.ordinal == 7
    assert sample.prompt == f"[[semanticmap2image]] {tags} a red bird on a branch"
    assert [name for name, _ in sample.members] == ["img0.jpg", "img1.png", "txt", "json"]
    assert sample.members[1][1] == b"PNG" and sample.members[2][1].decode() == sample.prompt
    meta = json.loads(sample.members[3][1])
    assert meta == {"task": "semanticmap2image", "n_views": 2, "roles": ["image", "semantic"],
                    "prompt": sample.prompt, "source_keys": ["src-0001"]}
    assert sample.annotators == ["segment@1"]


def test_skip_reasons_instead_of_samples():
    annotations = {"canny": {"key": ROW["key"], "status": "no_edges", "annotator_version": "1"}}
    results = dict(candidates({**ROW, "caption_original": None}, 0, annotations, [TEXT, CANNY, SEMANTIC], "original"))
    assert results == {"text2image": "no_caption", "canny2image": "canny:no_edges",
                       "semanticmap2image": "missing_annotation:segment@1"}


def test_caption_modes():
    dense = {"caption": _ok(caption="A dense description of a red bird.")}
    assert choose_caption(ROW, dense, "original") == "a red bird on a branch"
    assert choose_caption(ROW, dense, "dense") == "A dense description of a red bird."
    picks = {choose_caption({**ROW, "key": f"k{i}"}, dense, "random") for i in range(20)}
    assert picks == {"a red bird on a branch", "A dense description of a red bird."}  # drawn per key
    assert choose_caption({**ROW, "caption_original": None}, dense, "random") == "A dense description of a red bird."


def test_image_rows_make_only_the_tasks_the_table_feeds_from_image_rows():
    """Which row kinds feed a task is the task table's (`row_kind`): scene and subject tasks get nothing
    from an image row, and an image-fed task gets nothing from a scene row."""
    scene_tasks = [TaskSource("multiview", "cameras@2"), TaskSource("faceid", "faces@1")]
    assert [task for task, _ in candidates(ROW, 0, {}, [TEXT, *scene_tasks], "original")] == ["text2image"]
    assert list(candidates({**ROW, "kind": "scene"}, 0, {}, [TEXT, *scene_tasks], "original")) == []
