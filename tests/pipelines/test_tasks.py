"""The task table (core/tasks.py) is the one place tasks are defined: the annotators that feed its
rows declare those tokens, the trainer's families, the sampler's --task names and the builder read it;
an annotator outside the package loads by import path, runs on Ray workers and feeds the build, and a
condition token without a row is refused at build."""

import importlib
import sys
import textwrap

import pytest

from onegen.core import tasks
from onegen.manifests.query import read_manifests
from onegen.pipelines.jobs.annotator_choices import AnnotatorChoiceError, annotator_class, make_annotators
from tests.conftest import TEST_RAY, write_photo_folder


def test_rows_match_the_annotators_that_feed_them():
    for row in tasks.ROWS:
        if row.made_from == "condition":
            declared = {spec.task for spec in annotator_class(row.annotator).conditions}
            assert row.token in declared, (row.token, row.annotator, declared)
        elif row.made_from in ("scenes", "subjects"):
            assert annotator_class(row.annotator).name == row.annotator
        else:
            assert row.annotator is None
    # every condition an in-package annotator declares has a row
    from onegen.pipelines.jobs.annotator_choices import ANNOTATOR_CLASSES

    declared = {spec.task for name in ANNOTATOR_CLASSES for spec in annotator_class(name).conditions}
    assert tasks.unknown_condition_tasks(sorted(declared)) == []


def test_trainer_and_sampler_read_the_table():
    from onegen.training import data, sample

    assert data.FAMILIES == tasks.FAMILIES and set(data.FAMILIES) == set(tasks.FAMILY_NAMES)
    assert all(data.family_of(row.token) == row.family for row in tasks.ROWS)
    assert data.family_of("no_such_task") is None
    assert sample.TASKS == tasks.sampler_tasks()
    for name in sample.TASKS:  # every sampler task prompts with the token of a row
        prompt = sample.task_prompt(sample.SampleRequest(name, "a photo"))
        token = prompt.split("]]", 1)[0].removeprefix("[[")
        assert token in tasks.TASKS and name in tasks.TASKS[token].sample_as, (name, prompt)
    assert sample.SWAPPED["image2depth"] == "depth2image" and "camera_pose" in sample.TASKS


EXTERNAL = '''
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec
from onegen.core.image_codec import encode_png


@dataclass
class SobelAnnotator(Annotator):
    """Sobel edges as another source of canny2image conditions."""

    name: ClassVar[str] = "sobel"
    output_schema: ClassVar[pa.Schema] = pa.schema([("condition", pa.binary())])
    conditions: ClassVar[tuple] = (ConditionSpec("canny2image", "condition", "png"),)
    scale: float = 1.0

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        gray = cv2.cvtColor(row["image"], cv2.COLOR_RGB2GRAY).astype(np.float32)
        edges = np.clip(np.hypot(cv2.Sobel(gray, -1, 1, 0), cv2.Sobel(gray, -1, 0, 1)) * self.scale, 0, 255)
        return {"condition": encode_png(np.repeat(edges.astype(np.uint8)[..., None], 3, axis=2))}


@dataclass
class NormalsAnnotator(SobelAnnotator):
    name: ClassVar[str] = "normals"
    conditions: ClassVar[tuple] = (ConditionSpec("normal2image", "condition", "png"),)
'''


@pytest.fixture
def external_module(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "onegen_test_plugin.py").write_text(textwrap.dedent(EXTERNAL))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("onegen_test_plugin")
    import ray

    # the session's Ray workers did not start with this folder on their path: send the module by value
    ray.cloudpickle.register_pickle_by_value(module)
    yield module
    ray.cloudpickle.unregister_pickle_by_value(module)
    sys.modules.pop("onegen_test_plugin", None)


def test_bad_import_paths_are_one_line_errors(external_module):
    with pytest.raises(AnnotatorChoiceError, match="cannot be loaded"):
        annotator_class("onegen_test_plugin:Missing")
    with pytest.raises(AnnotatorChoiceError, match="not a dataclass subclass"):
        annotator_class("onegen_test_plugin:ClassVar")
    with pytest.raises(AnnotatorChoiceError, match="no setting"):
        make_annotators(["onegen_test_plugin:SobelAnnotator"], ["sobel.sigma=2"])


@pytest.mark.timeout(600)
def test_external_annotator_feeds_the_build_through_ray(tmp_path, ray_local, external_module):
    from onegen.pipelines.jobs.annotate import run_annotators
    from onegen.pipelines.jobs.build import BuildConfig, BuildInputError, run_build
    from onegen.pipelines.jobs.ingest import IngestConfig, run_ingest
    from onegen.pipelines.sources.settings import SourceSpec

    write_photo_folder(tmp_path / "photos", count=6)
    root = str(tmp_path / "data")
    run_ingest(IngestConfig(SourceSpec(str(tmp_path / "photos")), root, rows_per_part=3), TEST_RAY)
    annotators = make_annotators(["onegen_test_plugin:SobelAnnotator"], ["onegen_test_plugin:SobelAnnotator.scale=2"])
    assert annotators[0].scale == 2.0
    [summary] = run_annotators(root, annotators, False, TEST_RAY)
    assert summary.annotator == "sobel@1" and summary.statuses == {"ok": 6}
    run_build(BuildConfig(root, str(tmp_path / "shards"), ("canny2image",), samples_per_shard=4), TEST_RAY)
    rows = read_manifests(str(tmp_path / "shards")).to_pylist()
    assert len(rows) == 6 and all("sobel@1" in row["annotators"] for row in rows)
    # a token without a row: annotated fine, refused at build with the table's name in the message
    run_annotators(root, make_annotators(["onegen_test_plugin:NormalsAnnotator"], []), False, TEST_RAY)
    with pytest.raises(BuildInputError, match=r"normal2image.*task table"):
        run_build(BuildConfig(root, str(tmp_path / "shards2"), ("canny2image",)), TEST_RAY)


def test_recipes_load_annotators_by_import_path(tmp_path, external_module):
    from onegen.pipelines.recipe.parse import load_recipe

    path = tmp_path / "recipe.toml"
    path.write_text('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n'
                    '[[annotators]]\nname = "onegen_test_plugin:SobelAnnotator"\nscale = 3\n')
    (sobel,) = load_recipe(str(path)).annotators
    assert type(sobel) is external_module.SobelAnnotator and sobel.scale == 3.0 and sobel.store_name == "sobel@1"


def test_the_table_says_which_rows_feed_a_task():
    assert tasks.made_from_rows(tasks.TEXT2IMAGE, "image") and tasks.made_from_rows(tasks.DEPTH2IMAGE, "image")
    assert tasks.made_from_rows(tasks.MULTIVIEW, "scene") and not tasks.made_from_rows(tasks.MULTIVIEW, "image")
    assert tasks.made_from_rows(tasks.FACEID, "subject_image") and not tasks.made_from_rows(tasks.FACEID, "image")
    assert tasks.TASKS[tasks.IMAGE_EDITING].row_kind is None  # not built by onegen: no row kind feeds it
    assert {row.row_kind for row in tasks.ROWS} == {"image", "scene", "subject_image", None}
    with pytest.raises(KeyError):  # a token without a row is a bug, not "fed by nothing"
        tasks.made_from_rows("normal2image", "image")
    # the stores feeding scenes, subjects and the pose selection are the rows' annotators
    from onegen.pipelines.hygiene.task_selection import POSE_STORE
    from onegen.pipelines.samples.faceid import FACES_STORE
    from onegen.pipelines.samples.multiview import CAMERAS_STORE

    assert (CAMERAS_STORE, FACES_STORE, POSE_STORE) == ("cameras", "faces", "pose")


def test_prompts_use_the_tables_tokens():
    from onegen.core.task_prompts import task_prompt

    assert tasks.marker(tasks.HED2IMG) == "[[hed2img]]" and tasks.marker("img1") == "[[img1]]"
    assert task_prompt(tasks.SEMANTICMAP2IMAGE, "a bird", "<#FF0000 red mask: bird>") == \
        "[[semanticmap2image]] <#FF0000 red mask: bird> a bird"
    assert task_prompt(tasks.CANNY2IMAGE, None) == task_prompt(tasks.CANNY2IMAGE, "  ") == "[[canny2image]]"
