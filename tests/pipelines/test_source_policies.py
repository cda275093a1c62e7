"""Per-source policies (pipelines/samples/policy.py, annotators' `sources` / `store`), through the real CLI:
an annotator limited to one source never runs on the other's rows (they are `skipped: not for this source`),
two stores making one task are refused until a policy names one per source, and each source's prompts take
the caption its policy says (the token alone; a dense caption from the source table's own column)."""

import dataclasses
import json
import sys
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onegen.annotators.base import NOT_FOR_THIS_SOURCE, Annotator
from onegen.manifests.layout import DatasetLayout
from onegen.manifests.query import read_manifests
from onegen.pipelines.cli.main import main
from onegen.pipelines.samples.common import choose_caption
from onegen.pipelines.samples.policy import PolicyError, SourcePolicy, parse_policies, policy_for
from tests.conftest import write_photo_folder

RAY = ["--num-cpus", "2", "--object-store-mb", "300", "--no-progress"]


@dataclasses.dataclass
class OnlyForA(Annotator):
    """Fails its unit (a bug, not bad input) the moment it is handed a row of another source than `a`."""

    name: ClassVar[str] = "only_a"
    output_schema: ClassVar[pa.Schema] = pa.schema([pa.field("seen", pa.string())])

    def annotate_one(self, row):
        if row["source"] != "a":
            raise AssertionError(f"only_a ran on a row of source {row['source']!r}")
        return {"seen": row["key"]}


def test_policy_texts_parse_with_star_fallback_and_refuse_bad_ones():
    policies = parse_policies(["*.caption=dense", "co3d.caption=token", "hypersim.stores=depth_gt",
                               "pixelprose.dense=source.vlm_caption", "coyo.filters=source.aesthetic>=5",
                               "coyo.filters=source.nsfw<0.5"])
    assert policy_for(policies, "coyo").filters == ("source.aesthetic>=5", "source.nsfw<0.5")
    assert policy_for(policies, "co3d") == SourcePolicy(caption="token")
    assert policy_for(policies, "laion") == SourcePolicy(caption="dense")
    assert policy_for(policies, "hypersim") == SourcePolicy(caption="dense", stores=("depth_gt",))
    assert policy_for(policies, "pixelprose").dense == "source.vlm_caption"
    for bad, said in (("co3d.caption=long", "caption is one of"), ("co3d.colour=red", "no field 'colour'"),
                      ("caption=dense", "expected SOURCE.FIELD=VALUE"), ("x.stores=depth@1", "no @version"),
                      ("x.dense=source.", "source.<column>")):
        with pytest.raises(PolicyError, match=said):
            parse_policies([bad])
    assert main(["build", "d", "--out", "s", "--policy", "co3d.caption=long"]) == 2  # one line, before any I/O


def test_choose_caption_under_each_policy():
    row = {"key": "k", "caption_original": "a cat", "source.VLM_Caption": "A tabby cat asleep on a sofa."}
    stores = {"caption": {"status": "ok", "caption": "A cat on a couch."},
              "caption_molmo": {"status": "ok", "caption": "Molmo: a cat."}}
    assert choose_caption(row, stores, "token") == ""
    assert choose_caption(row, stores, "original") == "a cat"
    assert choose_caption(row, stores, "dense") == "A cat on a couch."
    assert choose_caption(row, stores, "dense", "caption_molmo") == "Molmo: a cat."
    assert choose_caption(row, stores, "dense", "source.vlm_caption") == "A tabby cat asleep on a sofa."
    assert choose_caption({**row, "source.VLM_Caption": None}, stores, "dense", "source.vlm_caption") is None


def test_annotators_limited_to_sources_and_build_policies_per_source(tmp_path, ray_local, capsys):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package
    write_photo_folder(tmp_path / "a", count=4)
    names = write_photo_folder(tmp_path / "b_images", count=4)
    table = tmp_path / "b_images" / "b.parquet"  # a table source that brings its own dense captions
    pq.write_table(pa.table({"path": names, "caption": [f"photo {i}" for i in range(4)],
                             "vlm_caption": [f"A dense description number {i}." for i in range(4)],
                             "score": [0.1, 0.9, 0.5, 0.7]}), table)
    root = tmp_path / "d"
    assert main(["ingest", str(tmp_path / "a"), "--out", str(root), "--name", "a", *RAY]) == 0
    assert main(["ingest", str(table), "--out", str(root), "--name", "b", *RAY]) == 0
    guard = f"{__name__}:OnlyForA"
    assert main(["annotate", str(root), "--annotators", f"{guard},canny", "--set", "only_a.sources=a",
                 "--set", "canny.sources=a", *RAY]) == 0
    assert main(["annotate", str(root), "--annotators", "canny", "--set", "canny.sources=b",
                 "--set", "canny.store=canny_b", *RAY]) == 0
    for store, own in (("only_a@1", "a"), ("canny@1", "a"), ("canny_b@1", "b")):
        rows = pq.read_table(root / "annotations" / store).to_pylist()
        assert len(rows) == 8
        mine = [r for r in rows if r["key"].startswith(f"{own}-")]
        others = [r for r in rows if not r["key"].startswith(f"{own}-")]
        assert mine and all(r["status"] == "ok" for r in mine)
        assert others and all((r["status"], r["error"]) == ("skipped", NOT_FOR_THIS_SOURCE) for r in others)
    record = json.loads(open(DatasetLayout(str(root)).store_record("canny_b@1")).read())
    assert record["config"]["sources"] == ["b"] and record["config"]["store"] == "canny_b"

    build = ["build", str(root), "--tasks", "text2image,canny2image", *RAY]
    capsys.readouterr()
    assert main([*build, "--out", str(tmp_path / "refused")]) == 2  # two stores make canny2image, no policy
    assert "two stores make canny2image: canny@1 and canny_b@1; source 'a'" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").rglob("*.tar"))
    policies = ["--policy", "a.stores=canny", "--policy", "b.stores=canny_b", "--policy", "a.caption=token",
                "--policy", "b.caption=dense", "--policy", "b.dense=source.vlm_caption",
                "--policy", "b.filters=source.score>=0.5"]  # b's own column: a's rows, without it, are not filtered
    assert main([*build, "--out", str(tmp_path / "s"), *policies]) == 0
    samples = read_manifests(str(tmp_path / "s")).to_pylist()
    by = {(s["task"], s["source"]) for s in samples}
    assert ("text2image", "a") not in by  # the token alone makes no text2image sample...
    skipped = pq.read_table(tmp_path / "s" / "skipped").to_pylist()
    assert sum(r["reason"] == "token_only" for r in skipped) == 4  # ...and says why, per row
    filtered = [r for r in skipped if r["reason"].startswith("filtered:source.score=")]
    assert len(filtered) == 2 and {r["key"] for r in filtered} == {r["key"] for r in filtered if r["key"].startswith("b-")}
    assert sum(s["source"] == "a" and s["task"] == "canny2image" for s in samples) == 4
    for sample in samples:
        if sample["task"] == "canny2image":
            assert sample["annotators"][0] == ("canny@1" if sample["source"] == "a" else "canny_b@1")
        if sample["source"] == "a":
            assert sample["prompt"] == "[[canny2image]]"
        else:
            assert sample["prompt"].startswith(f"[[{sample['task']}]] A dense description number ")
    assert {("text2image", "b"), ("canny2image", "a"), ("canny2image", "b")} <= by


def test_a_recipe_carries_policies_and_the_plan_prints_them(tmp_path):
    from onegen.pipelines.recipe.parse import RecipeError, load_recipe
    from onegen.pipelines.recipe.run import policy_lines

    recipe = tmp_path / "r.toml"
    recipe.write_text("""root = "d"
shards = "s"
[[sources]]
name = "hypersim"
path = "in/hypersim"
policy = { caption = "dense", stores = ["depth_gt"] }
[[sources]]
name = "co3d"
path = "in/co3d"
policy = { caption = "token" }
[[annotators]]
name = "depth_gt"
sources = ["hypersim"]
[[annotators]]
name = "canny"
[build]
policies = ["*.stores=depth"]
""")
    parsed = load_recipe(str(recipe))
    assert parsed.build.policies == ("hypersim.caption=dense", "hypersim.stores=depth_gt", "co3d.caption=token",
                                     "*.stores=depth")
    assert policy_lines(parsed) == [
        "policy hypersim: annotators depth_gt@1, canny@1; caption=dense dense=caption; stores=depth_gt",
        "policy co3d: annotators canny@1 (not depth_gt@1); caption=token; stores=depth"]
    recipe.write_text(recipe.read_text().replace('caption = "token"', 'colour = "red"'))
    with pytest.raises(RecipeError, match=r"sources.1.policy\] has unknown field\(s\) \['colour'\]"):
        load_recipe(str(recipe))
