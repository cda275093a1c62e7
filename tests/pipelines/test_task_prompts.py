"""The faceid / multiview prompt strings: one function for the shard builder and the sampler."""

import subprocess
import sys

import pytest

from onegen.core.task_prompts import faceid_prompt, multiview_prompt
from onegen.pipelines.samples import faceid as faceid_samples
from onegen.pipelines.samples import multiview as multiview_samples


def test_faceid_prompt_carries_every_views_caption():
    prompt = faceid_prompt(["a woman in a red coat", "the same woman, hair tied back", None, "  smiling\n at dusk "])
    assert prompt == ("[[faceid]] [[img0]] a woman in a red coat [[img1]] the same woman, hair tied back "
                      "[[img2]] [[img3]] smiling at dusk")
    assert faceid_prompt([None, ""]) == "[[faceid]] [[img0]] [[img1]]"


def test_multiview_prompt():
    assert multiview_prompt("a wooden bench in a park") == "[[multiview]] a wooden bench in a park"
    assert multiview_prompt(None) == multiview_prompt("  ") == "[[multiview]]"


def test_builders_and_sampler_share_the_function():
    from onegen.training import sample

    assert faceid_samples.faceid_prompt is faceid_prompt is sample.faceid_prompt
    assert multiview_samples.multiview_prompt is multiview_prompt


def test_sampler_faceid_prompt_keeps_reference_captions():
    from onegen.training.sample import SampleRequest, task_prompt

    request = SampleRequest("faceid", "a man in a grey suit", conditions=("r1.png", "r2.png"),
                            reference_prompts=("the man outdoors, blue shirt", "the man, close crop"))
    assert task_prompt(request) == faceid_prompt(
        ["a man in a grey suit", "the man outdoors, blue shirt", "the man, close crop"])
    assert task_prompt(request) == ("[[faceid]] [[img0]] a man in a grey suit [[img1]] the man outdoors, "
                                    "blue shirt [[img2]] the man, close crop")
    partial = SampleRequest("faceid", "a man", conditions=("r1.png", "r2.png"), reference_prompts=("outdoors",))
    assert task_prompt(partial) == "[[faceid]] [[img0]] a man [[img1]] outdoors [[img2]]"
    with pytest.raises(ValueError, match="reference-prompt"):
        task_prompt(SampleRequest("faceid", "a man", conditions=("r1.png",), reference_prompts=("a", "b")))


def test_sample_cli_reads_reference_prompts():
    import argparse

    from onegen.pipelines.cli.train_commands import add_sample_command

    parser = argparse.ArgumentParser()
    add_sample_command(parser.add_subparsers())
    args = parser.parse_args(["sample", "--checkpoint", "x.pt", "--task", "faceid", "--out", "o",
                              "--condition", "a.png", "--reference-prompt", "cap a",
                              "--condition", "b.png", "--reference-prompt", "cap b"])
    assert args.reference_prompt == ["cap a", "cap b"]


def test_prompt_module_imports_no_ray():
    code = "import sys, onegen.core.task_prompts; assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_faceid_samples_put_each_photos_caption_after_its_marker():
    from onegen.pipelines.samples.faceid import FaceidConfig

    rows = [{"key": f"ids-{i}", "source": "ids", "image": b"JPEG%d" % i, "image_format": "jpg", "width": 8,
             "height": 8} for i in range(5)]
    faces = [{"status": "ok"}] * 5
    captions = [f"photo {i}: a woman with short hair" if i != 3 else None for i in range(5)]
    results = faceid_samples.faceid_samples(rows, faces, captions, list(range(5)), "faces@1", FaceidConfig())
    by_key = {row["key"]: i for i, row in enumerate(rows)}
    for index, sample in results:
        order = [by_key[key] for key in sample.source_keys]
        assert order[0] == index and 2 <= len(order) <= 5
        assert sample.prompt == faceid_prompt([captions[i] for i in order])
        assert dict(sample.members)["txt"].decode() == sample.prompt
        for n, i in enumerate(order):  # "[[imgN]] <that photo's caption>", or the marker alone
            assert (f"[[img{n}]] {captions[i]}" in sample.prompt) == (captions[i] is not None)


def test_caption_modes_for_scenes_and_a_token_only_co3d_scene():
    from onegen.pipelines.samples.common import choose_caption

    scene = {"key": "dl3dv-0", "kind": "scene", "caption_original": "from caption.txt"}
    dense = {"caption": {"key": "dl3dv-0", "status": "ok", "caption": "A courtyard with a fountain."}}
    assert multiview_prompt(choose_caption(scene, dense, "dense")) == "[[multiview]] A courtyard with a fountain."
    assert multiview_prompt(choose_caption(scene, dense, "original")) == "[[multiview]] from caption.txt"
    co3d = {"key": "co3d-1", "kind": "scene", "caption_original": None}
    token_only = {"caption": {"key": "co3d-1", "status": "token_only", "caption": None}}
    for mode in ("original", "dense", "random"):
        assert multiview_prompt(choose_caption(co3d, token_only, mode)) == "[[multiview]]"


def test_caption_switches_are_cli_settings():
    from onegen.pipelines.jobs.annotator_choices import make_annotators

    (caption,) = make_annotators(["caption"], ["caption.token_only_scenes=co3d,mvimgnet", "caption.scene_view=2",
                                               "caption.subject_max_words=60"])
    assert caption.token_only_scenes == ("co3d", "mvimgnet") and caption.scene_view == 2
    assert caption.family("subject_image")[1:] == (30, 60)
    (everything,) = make_annotators(["caption"], ["caption.token_only_scenes="])
    assert everything.token_only_scenes == ()
