"""`onegen demo`, the README's main job, end to end in a fresh process: every step exits cleanly and
leaves what it announces (verified shards of all task families, the preview, a checkpoint, samples)."""

import json
import os
import subprocess
import sys

import pytest

from onegen.manifests.verify import verify_shards


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run([sys.executable, "-m", "onegen.pipelines.cli.main", "demo", "--out", str(out),
                             "--num-cpus", "2", "--object-store-mb", "400", "--no-progress"],
                            env=env, capture_output=True, text=True, timeout=1100)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny RANDOM checkpoints" in result.stdout and "the plumbing is real, the pictures are not" in result.stdout
    assert "onegen run " in result.stdout and "recipes/demo.toml" in result.stdout  # the demo is that recipe
    assert json.loads((out / "shards" / "train.json").read_text())["task_weights"]
    checked, problems = verify_shards(str(out / "shards"))
    assert problems == [] and f"verified {checked} samples: OK" in result.stdout
    assert "[demo]   all " in result.stdout and '"samples_per_task"' not in result.stdout  # the table, not the JSON
    assert "Ultralytics" not in result.stdout  # its settings banner (a fresh YOLO_CONFIG_DIR, conftest) is in the log
    stats = json.loads((out / "shards" / "_SUCCESS.json").read_text())
    assert set(stats["samples_per_task"]) == {
        "text2image", "canny2image", "deblurring", "super_resolution", "image_inpainting", "depth2image",
        "hed2img", "pose2image", "semanticmap2image", "boundingbox2image", "multiview", "faceid"}
    assert (out / "preview" / "index.html").exists() and str(out / "preview" / "index.html") in result.stdout
    samples = out / "training" / "samples"
    assert {p.name for p in samples.iterdir()} >= {"text2image", "faceid", "camera_pose"}
    assert (samples / "camera_pose" / "cameras.json").exists()
    assert [p for p in (out / "training" / "run" / "checkpoints").glob("step_*") if (p / "COMPLETE").exists()]


def test_demo_prints_the_stats_table_and_verifies(tmp_path, capsys):
    """The demo's stats and verify step, called directly (the demo no longer runs the CLI): the table,
    the verification line, and False once a tar no longer matches its manifest."""
    from onegen.pipelines.demo.command import check_shards
    from tests.pipelines.test_cli_entry import _shards

    shards = tmp_path / "shards"
    _shards(shards)
    assert check_shards(shards) is True
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["[demo]", "task", "samples"] and out[4].split()[:3] == ["[demo]", "all", "10"]
    assert out[-1] == "[demo] verified 10 samples: OK" and not any("{" in line for line in out)
    tar = sorted(shards.glob("*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[512 + 10] ^= 0xFF  # a byte of the first member's data (after its 512-byte header): same size
    tar.write_bytes(bytes(data))
    assert check_shards(shards) is False
    assert capsys.readouterr().out.splitlines()[-1].endswith("problem(s)")


def test_demo_overwrite_starts_over_on_its_own_folders_only(tmp_path, monkeypatch):
    from onegen.pipelines.cli.main import build_parser, main
    from onegen.pipelines.demo import command as demo

    for name in demo.DEMO_FOLDERS:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f.txt").write_text("from an earlier demo")
    (tmp_path / "mine.txt").write_text("a user's file next to the demo's folders")
    (tmp_path / "notes").mkdir()
    assert demo.clear_demo_outputs(tmp_path) == list(demo.DEMO_FOLDERS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "notes"]
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, ray, overwrite=False: calls.append((out, overwrite)) or 0)
    assert main(["demo", "--out", str(tmp_path), "--overwrite"]) == 0
    assert calls == [(str(tmp_path), True)]  # the flag reaches the demo
    import contextlib
    import io

    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    assert "start over" in help_text.getvalue()
