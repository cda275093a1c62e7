"""bench/gpu_suite.sh in --smoke mode: every benchmark of the GPU suite runs (tiny models, CPU) and is recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_gpu_suite_smoke_runs_every_benchmark_and_writes_jsonl(tmp_path):
    out = tmp_path / "gpu-cpu.jsonl"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--smoke", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stderr[-3000:] + out.read_text()[-3000:] if out.exists() else done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["bench"] for r in records] == ["vision", "segment", "vlm", "train", "loader"]
    expected = {"vision": "annotator/bare", "segment": "bare detector + SAM", "vlm": "one-at-a-time",
                "train": "bare step:", "loader": "plain WebDataset:"}  # each benchmark's own comparison line
    for record in records:
        assert record["rc"] == 0 and record["device"] == "cpu" and record["mode"] == "smoke"
        assert any(expected[record["bench"]] in line for line in record["report"]), record


def test_gpu_suite_full_mode_needs_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--out", str(tmp_path / "x.jsonl")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and not (tmp_path / "x.jsonl").exists()
