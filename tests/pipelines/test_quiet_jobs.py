"""Quiet by default: a normal small job prints progress bars and its summary, nothing that looks like an error;
third-party output and Ray's lines go to the job's log file, named at the end; -v writes no log file."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

BAR = re.compile(r"^(ingest|annotate) [^:]+: +\d+%\|.*\| \d+/\d+ \[")
SUMMARY = re.compile(r"^(ingested photos: |annotated (canny|blur)@1: |log: \S+/jobs/(ingest|annotate)\.log )")
ERRORISH = re.compile(r"error|warning|traceback|core_worker|\bE \d|\(pid=", re.IGNORECASE)


def _onegen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onegen.pipelines.cli.main", *args, "--num-cpus", "2"],
                          capture_output=True, text=True, timeout=300)


def _lines(run: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", run.stdout + run.stderr) if line.strip()]


def test_a_normal_job_prints_bars_and_summaries_only(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((96, 128, 3)) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    (photos / "notes.png").write_bytes(b"not an image")  # a recorded reject, not an error line
    root = tmp_path / "root"
    runs = [_onegen("ingest", str(photos), "--out", str(root)),
            _onegen("annotate", str(root), "--annotators", "canny,blur")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
        lines = _lines(run)
        odd = [line for line in lines if not (BAR.match(line) or SUMMARY.match(line))]
        assert odd == [], odd
        assert not [line for line in lines if ERRORISH.search(line)]
        assert any(BAR.match(line) for line in lines)  # one bar per stage, on the terminal
    for name, run in (("ingest", runs[0]), ("annotate", runs[1])):
        log = root / "jobs" / f"{name}.log"
        assert run.stdout.strip().splitlines()[-1].startswith(f"log: {log}")  # named at the end
        text = log.read_text()
        assert text.startswith(f"=== onegen {name} ") and "%|" not in text  # bars are not in the log


def test_verbose_writes_no_log_file(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(photos / "p.png")
    run = _onegen("ingest", str(photos), "--out", str(tmp_path / "root"), "-v")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not (tmp_path / "root" / "jobs" / "ingest.log").exists()
    assert "log: " not in run.stdout
