"""`onegen run RECIPE`: a small recipe end to end (ingest -> annotate -> dedup -> build -> train.json) in the
session's Ray; `--plan` before and after (pending -> done) in a fresh process that never starts Ray; a
rerun does nothing; a changed annotator setting is refused until --redo, which redoes that annotator
and the build only; the shipped recipes parse and name only known annotators, tasks and families."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onegen.core.tasks import FAMILY_NAMES, TASKS
from onegen.manifests.query import read_manifests
from onegen.pipelines.jobs.annotator_choices import ANNOTATOR_CLASSES
from onegen.pipelines.recipe.parse import RecipeError, bundled_recipe, load_recipe, train_fields
from onegen.pipelines.recipe.run import plan_recipe, run_recipe
from onegen.pipelines.runtime.job_state import JobConflict
from tests.conftest import TEST_RAY, write_photo_folder

RECIPE = """
root = "data"
shards = "shards"

[[sources]]
path = "photos"
rows_per_part = 4

[[annotators]]
name = "canny"
low = 50

[[annotators]]
name = "blur"
sigma_max = {sigma_max}

[[annotators]]
name = "phash"

[build]
tasks = ["text2image", "canny2image", "deblurring"]
samples_per_shard = 4
dedup = "phash"

[train]
weights = {{ text2image = 2, image2image = 1 }}
steps = 10
"""


def _plan_in_fresh_process(recipe: Path) -> tuple[list[str], str]:
    """`onegen run RECIPE --plan` in a new interpreter; (stage lines, whether Ray got initialised there). The
    per-source policy lines that follow the stages are checked to be there, and left out."""
    # os._exit after the flush, as the console script ends (pipelines/cli/process_exit.py): no interpreter
    # teardown racing pyarrow's native threads
    code = ("import os, sys; from onegen.pipelines.cli.main import main; code = main(['run', sys.argv[1], '--plan']); "
            "ray = sys.modules.get('ray'); print('RAY_STARTED', bool(ray and ray.is_initialized()), flush=True); "
            "os._exit(code)")
    result = subprocess.run([sys.executable, "-c", code, str(recipe)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    policies = [line for line in lines if line.startswith("policy ")]
    assert policies == ["policy photos: annotators canny@1, blur@1, phash@1; caption=original"], lines
    return [line for line in lines[:-1] if line not in policies], lines[-1]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


@pytest.mark.timeout(900)
def test_recipe_runs_resumes_and_redoes_only_the_changed_stage(tmp_path, ray_local, monkeypatch):
    write_photo_folder(tmp_path / "photos", count=8)
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.format(sigma_max=5.0))
    before, ray_started = _plan_in_fresh_process(path)
    assert ray_started == "RAY_STARTED False"
    assert [line.split()[:3] for line in before] == [
        ["ingest", "photos", "pending"], ["annotate", "canny@1", "pending"], ["annotate", "blur@1", "pending"],
        ["annotate", "phash@1", "pending"], ["dedup", "phash", "waiting"], ["build", "waiting", "0/0"],
        ["train.json", "pending", "0/1"]]
    assert "0/2 parts done, 8 of 8 rows pending" in before[0] and "8 of 8 rows pending" in before[1]

    recipe = load_recipe(str(path))
    import onegen.pipelines.sources.listing as source_listing

    listed = []
    iter_items = source_listing.iter_items
    monkeypatch.setattr(source_listing, "iter_items", lambda spec, **kw: listed.append(spec.path) or iter_items(spec, **kw))
    run_recipe(recipe, TEST_RAY)
    assert listed == [str(tmp_path / "photos")]  # the source is listed once: the plan and its ingest share it
    monkeypatch.undo()
    rows = read_manifests(str(tmp_path / "shards")).to_pylist()
    assert {r["task"] for r in rows} == {"text2image", "canny2image", "deblurring"}
    assert (tmp_path / "data" / "dedup" / "phash-k4" / "_SUCCESS.json").exists()  # the dedup stage ran
    train = json.loads((tmp_path / "shards" / "train.json").read_text())
    assert train["task_weights"] == [["text2image", 2.0], ["image2image", 1.0]] and train["steps"] == 10
    from onegen.pipelines.cli.main import build_parser
    from onegen.training.train import config_from_args

    config = config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / "shards" / "train.json")]))
    assert config.data.task_weights == (("text2image", 2.0), ("image2image", 1.0))
    assert config.data.shards == str(tmp_path / "shards")
    assert all(p.state == "done" for p in plan_recipe(recipe))
    after, ray_started = _plan_in_fresh_process(path)
    assert ray_started == "RAY_STARTED False" and all(" done " in line for line in after), after
    assert "2/2 parts done, 0 of 8 rows pending" in after[0]

    data, shards = tmp_path / "data", tmp_path / "shards"
    annotations = _mtimes(data / "annotations")
    catalog = _mtimes(data / "catalog")
    run_recipe(recipe, TEST_RAY)  # resumable as a whole: nothing left, nothing redone
    assert _mtimes(data / "annotations") == annotations and _mtimes(data / "catalog") == catalog

    path.write_text(RECIPE.format(sigma_max=3.0))  # one annotator setting changes
    changed = load_recipe(str(path))
    plans = {p.stage: p for p in plan_recipe(changed)}
    assert plans["annotate blur@1"].state == "changed" and "sigma_max" in plans["annotate blur@1"].detail
    assert [s for s, p in plans.items() if p.state == "changed"] == ["annotate blur@1"]
    with pytest.raises(JobConflict, match=r"annotate blur@1: config.sigma_max changed: 5.0 -> 3.0.*--redo"):
        run_recipe(changed, TEST_RAY)
    built = _mtimes(shards / "manifests")
    run_recipe(changed, TEST_RAY, redo=True)
    now = _mtimes(data / "annotations")
    blur = {p for p in annotations if "/blur@1/" in p}
    assert blur and all(now[p] != annotations[p] for p in blur)  # blur redone
    assert all(now[p] == annotations[p] for p in annotations if p not in blur)  # canny untouched
    assert _mtimes(data / "catalog") == catalog  # ingest untouched
    assert _mtimes(shards / "manifests") != built  # the build after it re-sharded from the stores
    assert all(p.state == "done" for p in plan_recipe(changed))


def test_shipped_recipes_name_only_known_annotators_tasks_and_families():
    for name in ("onegen", "demo"):
        recipe = load_recipe(bundled_recipe(name), "/tmp/onegen-recipe-check")
        for annotator in recipe.annotators:
            assert annotator.name in ANNOTATOR_CLASSES
        assert set(recipe.build.tasks) <= set(TASKS)
        assert {family for family, _ in recipe.train["task_weights"]} <= set(FAMILY_NAMES)
        assert set(recipe.train) <= train_fields()
    onegen = load_recipe(bundled_recipe("onegen"))
    models = {a.store_name.split("@")[0]: getattr(a, "model", "") for a in onegen.annotators}
    assert models["depth"] == "depth-anything/Depth-Anything-V2-Large-hf"
    assert models["caption"].startswith("llava-hf/llava-v1.6") and "Molmo" in models["entities"]
    assert "Molmo" in models["caption_molmo"]  # LAION-aesthetic is recaptioned with Molmo (paper §4)
    # the paper's per-source treatment, as policies
    from onegen.pipelines.samples.policy import parse_policies, policy_for

    policies = parse_policies(onegen.build.policies)
    assert policy_for(policies, "hypersim").stores == ("depth_gt",) and policy_for(policies, "laion").stores == ("depth",)
    assert policy_for(policies, "co3d").caption == "token" and policy_for(policies, "laion").dense == "caption_molmo"
    assert policy_for(policies, "pixelprose").dense == "source.vlm_caption"
    by_name = {s.source.source_name: s for s in onegen.sources}
    assert {"pixelprose", "unsplash", "coyo", "laion", "journeydb", "synthetic", "hypersim", "id_subjects", "dl3dv",
            "objaverse", "co3d"} == set(by_name)
    assert by_name["objaverse"].source.captions.endswith("Cap3D_automated_Objaverse_full.csv")
    depth_gt = next(a for a in onegen.annotators if a.name == "depth_gt")
    assert depth_gt.sources == ("hypersim",) and "hypersim" not in next(a for a in onegen.annotators
                                                                         if a.name == "depth").sources
    assert {a.name: a.num_gpus for a in onegen.annotators}["segment"] == 1
    assert {s.source.kind for s in onegen.sources} >= {"subjects", "dl3dv", "hypersim", "journeydb", "gobjaverse", "co3d", "table"}


@pytest.mark.parametrize("text, message", [
    ('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\nrows_per_prt = 4\n', "unknown field"),
    ('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[[annotators]]\nname = "sparkle"\n', "unknown annotator"),
    ('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[[annotators]]\nname = "depth"\nbatch_size = "x"\n',
     "not a valid int"),
    ('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[build]\ntasks = ["text2img"]\n', "unknown task"),
    ('root = "d"\nshards = "s"\n[[sources]]\npath = "p"\n[train]\nweights = { video = 1 }\n', "unknown field"),
    ('root = "d"\n[[sources]]\npath = "p"\n', "shards"),
])
def test_bad_recipes_are_one_line_user_errors(tmp_path, capsys, text, message):
    from onegen.pipelines.cli.main import main

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(path))
    assert main(["run", str(path), "--plan"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("onegen: error: recipe") and "\n" not in error and message in error


def test_plan_with_missing_sources_says_where_paths_resolve_and_how_to_make_them(tmp_path, capsys, monkeypatch):
    """`onegen run recipes/demo.toml --plan` outside the demo's folder: the demo writes those inputs, and
    `--dir` points a recipe at them; any other recipe gets the --dir half."""
    from onegen.pipelines.cli.main import main

    monkeypatch.chdir(tmp_path)
    demo = bundled_recipe("demo")
    assert main(["run", demo, "--plan"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"onegen: error: source path does not exist: {os.path.dirname(demo)}/inputs/photos")
    assert "--dir DIR" in error and "`onegen demo --out DIR`" in error and error.count("\n") == 1
    assert main(["run", demo, "--dir", str(tmp_path / "nothing-here"), "--plan"]) == 2
    assert f"{tmp_path}/nothing-here/inputs/photos" in capsys.readouterr().err
    mine = tmp_path / "mine.toml"
    mine.write_text('root = "d"\nshards = "s"\n[[sources]]\npath = "photos"\n')
    assert main(["run", str(mine), "--plan"]) == 2
    error = capsys.readouterr().err
    assert f"does not exist: {tmp_path}/photos (relative paths of {mine} resolve against {tmp_path}" in error
    assert "--dir DIR" in error and "onegen demo" not in error
