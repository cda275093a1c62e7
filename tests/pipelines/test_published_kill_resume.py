"""The published-source readers (pipelines/sources/dl3dv.py, hypersim.py, journeydb.py, co3d.py,
gobjaverse.py) killed and rerun: one `onegen run RECIPE.toml` of the five sources, SIGKILLed at a commit in
the middle, then rerun, ends
with each source's catalog and rejects equal to a clean ingest's, row for row: nothing lost, nothing
duplicated, no temporaries left, the bad inputs rejected (or kept) with the reasons each reader records.

One recipe run for the five sources keeps this to two fresh processes (each its own Ray); the clean
reference is ingested in this process, in the session's Ray. The fixtures are the readers' own tests'
writers (published layouts), each with its bad input: a DL3DV scene with a missing frame, a Hypersim
frame whose depth HDF5 is truncated, a JourneyDB malformed jsonl line and a `../` tar member, CO3D's
low-quality, frameless and broken-annotation sequences and a missing frame (read through file:// URLs),
a G-Objaverse object with a missing view and a malformed view json."""

from __future__ import annotations

import json

import fsspec
import pytest

from onegen.manifests.files import TEMP_SUFFIX
from tests.pipelines.test_kill_resume import RAY, _parquet_rows, _run
from tests.pipelines.test_source_co3d import write_co3d
from tests.pipelines.test_source_dl3dv import write_dl3dv_scene
from tests.pipelines.test_source_gobjaverse import write_bad_object, write_gobjaverse
from tests.pipelines.test_source_hypersim import write_hypersim
from tests.pipelines.test_source_journeydb import write_journeydb

# folder -> (catalog source name, its `onegen ingest` flags, the same as recipe keys)
SOURCES = {
    "DL3DV-10K": ("dl3dv_10k", {"rows_per_part": 2, "min_side": 8, "max_views": 4}),
    "hypersim": ("hypersim", {"rows_per_part": 2, "min_side": 8}),
    "JourneyDB": ("journeydb", {"rows_per_part": 2, "min_side": 8}),
    "co3d": ("co3d", {"rows_per_part": 2, "min_side": 32, "min_viewpoint_quality": 0.5}),
    "gobjaverse_280k": ("gobjaverse_280k", {"rows_per_part": 1, "min_side": 8, "max_views": 3}),
}
# Each ingest part commits three files (catalog part, rejects part, unit record) and the sources are
# ingested in recipe order, so commits 1-6 are DL3DV's two parts and the 8th falls inside Hypersim's
# first parts: one source done, one half-way, one not started when the driver dies.
KILL_AT = "before_rename:8:driver"


def write_inputs(folder) -> None:
    scenes = folder / "DL3DV-10K" / "1K"
    write_dl3dv_scene(scenes / "0a1b2c")
    write_dl3dv_scene(scenes / "3d4e5f")
    write_dl3dv_scene(scenes / "9z9z9z", missing=2)  # frame_00003.png listed in transforms.json, not on disk
    write_hypersim(folder / "hypersim")  # 2 scenes x 2 frames; frame 1's depth_meters.hdf5 truncated
    write_journeydb(folder / "JourneyDB")  # 4 members, one `../evil.jpg`; one jsonl line not JSON
    write_co3d(fsspec.filesystem("file", auto_mkdir=True), str(folder / "co3d"))
    write_bad_object(write_gobjaverse(folder / "gobjaverse_280k"))


def source_path(inputs, folder: str) -> str:
    """Where a source is read from: CO3D through file:// URLs (every reader reads through fsspec)."""
    return f"file://{inputs / folder}" if folder == "co3d" else str(inputs / folder)


def write_recipe(path, inputs, root) -> None:
    blocks = [f'root = "{root}"\nshards = "{root}-shards"\n']
    for folder, (_, keys) in SOURCES.items():
        blocks.append(f'[[sources]]\npath = "{source_path(inputs, folder)}"\n' + "".join(f"{k} = {v}\n" for k, v in keys.items()))
    path.write_text("\n".join(blocks))


def source_rows(root, folder: str, name: str) -> list[dict]:
    rows = _parquet_rows(root / folder / name)
    assert len({r.get("key") or r.get("uri") for r in rows}) == len(rows), f"{folder}/{name} has duplicates"
    return rows


@pytest.mark.timeout(600)
def test_published_sources_run_killed_mid_ingest_and_rerun_equal_clean_ingests(tmp_path, ray_local):
    from onegen.pipelines.cli.main import main

    inputs, clean, killed = tmp_path / "inputs", tmp_path / "clean", tmp_path / "killed"
    write_inputs(inputs)
    for folder, (_, keys) in SOURCES.items():
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in keys.items()]
        assert main(["ingest", source_path(inputs, folder), "--out", str(clean), *flags, *RAY]) == 0
    recipe = tmp_path / "five.toml"
    write_recipe(recipe, inputs, killed)

    assert _run(["run", str(recipe)], KILL_AT, tmp_path / "count") == -9
    parts = {name: sorted((killed / "catalog" / name).glob("*.parquet")) for name, _ in SOURCES.values()}
    assert len(parts["dl3dv_10k"]) == 2 and len(parts["hypersim"]) < 2
    assert parts["journeydb"] == parts["co3d"] == parts["gobjaverse_280k"] == []
    assert list(killed.rglob(f"*{TEMP_SUFFIX}"))  # it died inside a commit
    done_before = {p: p.stat().st_mtime_ns for p in parts["dl3dv_10k"]}

    _run(["run", str(recipe)])
    assert {p: p.stat().st_mtime_ns for p in parts["dl3dv_10k"]} == done_before  # resumed, not redone
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))
    for name, _ in SOURCES.values():
        for folder in ("catalog", "rejects"):
            assert source_rows(killed, folder, name) == source_rows(clean, folder, name), f"{folder}/{name}"
        count = len(list((clean / "catalog" / name).glob("*.parquet")))
        assert len(list((killed / "catalog" / name).glob("*.parquet"))) == count >= 1

    # what each reader records of its bad input, the same in both runs (compared above)
    catalog = {name: _parquet_rows(clean / "catalog" / name) for name, _ in SOURCES.values()}
    rejects = {name: _parquet_rows(clean / "rejects" / name) for name, _ in SOURCES.values()}
    assert [(r["reason"], "frame_00003.png" in r["error"]) for r in rejects["dl3dv_10k"]] == [("bad_scene", True)]
    assert len(catalog["dl3dv_10k"]) == 2
    # Hypersim: a truncated depth file is a row error only when depth_gt reads it; at ingest the frame is a photo
    assert rejects["hypersim"] == [] and len(catalog["hypersim"]) == 4
    depths = sorted(json.loads(r["meta"])["depth"]["uri"].rsplit("/", 1)[1] for r in catalog["hypersim"])
    assert depths == sorted(["frame.0000.depth_meters.hdf5", "frame.0001.depth_meters.hdf5"] * 2)
    assert [(r["reason"], "unsafe tar member name" in r["error"]) for r in rejects["journeydb"]] == [("read_error", True)]
    assert {json.loads(r["meta"])["malformed_lines"] for r in catalog["journeydb"]} == {1}  # skipped, counted
    captions = {r["uri"].rsplit("#", 1)[1]: r["caption_original"] for r in catalog["journeydb"]}
    assert captions == {"000/aa.jpg": "a red fox, watercolor", "000/bb.jpg": None,
                        "001/cc.jpg": "a lighthouse at dusk --ar 16:9"}
    assert {r["reason"] for r in rejects["co3d"]} == {"bad_annotations", "bad_scene", "low_viewpoint_quality", "no_frames"}
    assert len(catalog["co3d"]) == 1 and len(rejects["co3d"]) == 6
    assert len(catalog["gobjaverse_280k"]) == 3 and [r["reason"] for r in rejects["gobjaverse_280k"]] == ["bad_scene"]
    assert (tmp_path / "killed-shards" / "train.json").exists()  # the rerun finished the recipe (its build too)
