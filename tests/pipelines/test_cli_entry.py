"""The `onegen` entry point: clean exits, wrong paths refused, fast help (no heavy imports), annotator list."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from onegen.manifests.shard_index import write_shard_index
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.pipelines.cli.main import main

HEAVY = ("torch", "ray", "transformers", "pyarrow")


def _shards(folder) -> str:
    """A small shards folder of two tasks, written by the real shard writer (no Ray)."""
    for task in ("canny2image", "text2image"):
        writer = ShardWriter(str(folder), "onegen", task, 3, 1 << 30)
        for i in range(5):
            writer.add(Sample(key=f"k{i}-{task}", task=task, prompt=f"[[{task}]] {i}", source="photos", n_views=1,
                              source_keys=[f"k{i}"], annotators=[], width=8, height=8, ordinal=i,
                              members=[("img0.jpg", bytes([i]) * 300), ("txt", b"p")]))
        writer.finish()
    write_shard_index(str(folder), "onegen")
    (folder / "build.json").write_text(json.dumps({"job": "build"}))
    return str(folder)


def _onegen(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onegen.pipelines.cli.main", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_manifest_stats_exits_0_in_100_of_100_runs(tmp_path):
    shards = _shards(tmp_path / "shards")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: _onegen("manifest", "stats", shards, "--json"), range(100)))
    codes = [run.returncode for run in runs]
    assert codes == [0] * 100, [(run.returncode, run.stderr[-300:]) for run in runs if run.returncode][:3]
    assert all(json.loads(run.stdout)["samples"] == 10 for run in runs)
    assert not any("terminate called" in run.stderr for run in runs)


def test_entry_point_keeps_exit_codes_and_tracebacks(tmp_path):
    assert _onegen("manifest", "stats", str(tmp_path / "missing")).returncode == 2
    assert _onegen("build").returncode == 2  # argparse: missing arguments
    assert _onegen("--help").returncode == 0


def test_manifest_stats_prints_a_table_and_every_count_with_json(tmp_path, capsys):
    from onegen.manifests.query import shard_stats

    shards = _shards(tmp_path / "shards")
    assert main(["manifest", "stats", shards]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines[:3]] == [["task", "samples"], ["canny2image", "5"], ["text2image", "5"]]
    tars = sum(p.stat().st_size for p in (tmp_path / "shards").glob("*.tar"))
    assert lines[3].split()[:5] == ["all", "10", "in", "4", "shards,"] and f"({tars} bytes)" in lines[3]
    assert lines[4] == "sources: photos 10" and len(lines) == 5
    assert main(["manifest", "stats", shards, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shard_stats(shards)


def test_a_file_not_found_in_our_own_code_is_a_bug_with_its_traceback(tmp_path):
    """FileNotFoundError is no user error by its class (only a checked path is: PathError). A manifest that
    is listed but cannot be opened (a dangling link) fails inside our reading code: traceback, exit 1."""
    shards = _shards(tmp_path / "shards")
    (tmp_path / "shards" / "manifests" / "onegen-zz-000000.parquet").symlink_to(tmp_path / "gone.parquet")
    run = _onegen("manifest", "stats", shards)
    assert run.returncode == 1 and "onegen: error" not in run.stderr
    assert run.stderr.startswith("Traceback") and run.stderr.splitlines()[-1].startswith("FileNotFoundError: ")
    with pytest.raises(FileNotFoundError, match="gone.parquet|onegen-zz-000000"):
        main(["manifest", "stats", shards])


def _dataset_root(folder) -> str:
    (folder / "catalog" / "photos").mkdir(parents=True)
    return str(folder)


@pytest.mark.parametrize("kind", ["missing", "empty", "dataset", "shards"])
def test_every_command_refuses_a_wrong_folder_with_one_line_and_creates_nothing(tmp_path, capsys, kind):
    target = tmp_path / "target"
    if kind == "empty":
        target.mkdir()
    elif kind == "dataset":
        _dataset_root(target)
    elif kind == "shards":
        _shards(target)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    path, out = str(target), str(tmp_path / "out")
    reads_root = [["annotate", path, "--annotators", "canny"], ["build", path, "--out", out], ["dedup", path]]
    reads_shards = [["manifest", "stats", path], ["manifest", "verify", path], ["manifest", "select", path],
                    ["preview", path, "--out", out], ["precompute", path, "--out", out, "--text-encoder", "t",
                                                      "--vae", "v"], ["train", "--shards", path, "--out", out]]
    wrong = [*([] if kind == "shards" else reads_shards), *([] if kind == "dataset" else reads_root),
             ["sample", "--checkpoint", str(tmp_path / "none.safetensors"), "--task", "text2image", "--out", out],
             ["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "m.safetensors")]]
    for argv in wrong:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("onegen: error: ") and err.count("\n") == 1, (argv, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:  # bound then closed: nothing listens there afterwards
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_where_no_ray_answers_is_refused_with_one_line_at_once(tmp_path, capsys, monkeypatch):
    """Ray itself retries joining a dead address for many minutes; the check refuses it before anything
    starts or is created, for --address and for RAY_ADDRESS, on every command that starts Ray."""
    photos = tmp_path / "photos"
    photos.mkdir()
    address = f"127.0.0.1:{_closed_port()}"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for argv in (["ingest", str(photos), "--out", str(tmp_path / "d"), "--address", address],
                 ["run", str(tmp_path / "recipe.toml"), "--address", f"ray://{address}"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"onegen: error: --address {argv[-1]}: no Ray cluster answers there")
        assert err.count("\n") == 1, err
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert main(["ingest", str(photos), "--out", str(tmp_path / "d")]) == 2
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_train_and_sample_refuse_an_unknown_preset_with_one_line(tmp_path, capsys):
    shards = _shards(tmp_path / "shards")
    assert main(["train", "--shards", shards, "--preset", "foo", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown --preset 'foo'" in err and "tiny" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["--help"], ["build", "--help"], ["ingest", "--help"], ["annotate", "--help"],
                                  ["train", "--help"], ["sample", "--help"], ["precompute", "--help"],
                                  ["preview", "--help"], ["demo", "--help"], ["manifest", "stats", "--help"],
                                  ["train", "--bf16", "yes"], ["build"]])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    code = ("import sys\nfrom onegen.pipelines.cli.main import build_parser\n"
            f"try:\n    build_parser().parse_args({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr


def test_every_flag_has_help():
    from onegen.pipelines.cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    bare = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items()
            for action in sub._actions if action.help is None and action.dest != "manifest_command"]
    assert bare == []


def test_train_bf16_is_a_flag_and_family_names_are_explained(capsys):
    from onegen.pipelines.cli.main import build_parser
    from onegen.training.train_config import config_from_args

    assert config_from_args(build_parser().parse_args(["train", "--no-bf16"])).bf16 is False
    assert config_from_args(build_parser().parse_args(["train", "--bf16"])).bf16 is True
    assert config_from_args(build_parser().parse_args(["train"])).bf16 is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-bf16" in text and "image2image = canny2image" in text and "tiny" in text


def test_preset_names_match_the_model_presets():
    from onegen.model.nextdit import PRESETS
    from onegen.training.train_config import PRESET_NAMES

    assert sorted(PRESET_NAMES) == sorted(PRESETS)


def test_annotate_help_lists_every_annotator_as_its_dataclass_defines_it(capsys):
    from onegen.pipelines.cli.annotator_help import annotator_table
    from onegen.pipelines.cli.main import build_parser
    from onegen.pipelines.jobs.annotator_choices import ANNOTATOR_CLASSES

    table = annotator_table()
    assert [info.name for info in table] == list(ANNOTATOR_CLASSES)
    for info in table:
        cls = getattr(importlib.import_module(info.module), info.class_name)
        settings = {f.name: f.default for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
        assert set(info.fields) == set(settings), info.name
        assert info.num_gpus == settings["num_gpus"], info.name
        for name, value in info.model_ids.items():
            assert value.strip("'\"") == settings[name], (info.name, name)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["annotate", "--help"])
    text = capsys.readouterr().out
    assert "depth-anything/Depth-Anything-V2-Small-hf" in text and "GPU x1" in text and "hf download" in text
    assert all(f"  {name} " in text for name in ANNOTATOR_CLASSES)


def test_missing_weights_recommend_hf_download():
    from onegen.core.weights import MissingCheckpointError, resolve_checkpoint

    with pytest.raises(MissingCheckpointError) as missing:
        resolve_checkpoint("onegen-tests/not-in-the-cache", "depth")
    assert "`hf download onegen-tests/not-in-the-cache`" in str(missing.value)
    assert "huggingface-cli" not in str(missing.value)
