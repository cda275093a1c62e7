"""job_output: third-party output (warnings, logging, C-level writes to fd 2) into the job's log; bars and our
one-line failures on the terminal; the log named at the end; -v and nested jobs redirect nothing.

Run in a fresh interpreter: pytest's own capture of warnings and logging would hide what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging, os, sys, warnings
from onegen.core.job_output import current_log, job_output, terminal_stderr
from onegen.manifests.layout import job_log
handler_made_before = logging.StreamHandler()  # as libraries make theirs at import time
logging.getLogger("some.library").addHandler(handler_made_before)
with job_output(job_log(sys.argv[1], "ingest"), "ingest", verbose=sys.argv[2] == "-v") as path:
    warnings.warn("a third-party warning")
    logging.getLogger("some.library").warning("a library's logging line")
    os.write(2, b"E core_worker.cc: a C++ notice\\n")
    print("onegen: error: our one line", file=terminal_stderr())
    print("ingested photos: 3 rows", flush=True)
    with job_output(job_log(sys.argv[1] + "/inner", "build"), "build", verbose=False) as inner:  # the demo's steps
        assert inner == path == current_log()
assert current_log() is None
"""


def _run(folder, verbose: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(folder), verbose], capture_output=True, text=True,
                          timeout=60)


def test_third_party_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path):
    run = _run(tmp_path, "")
    assert run.returncode == 0, run.stderr
    log = tmp_path / "jobs" / "ingest.log"
    assert run.stderr == "onegen: error: our one line\n"
    assert run.stdout == f"ingested photos: 3 rows\nlog: {log} (third-party messages and Ray worker output)\n"
    text = log.read_text()
    assert "a third-party warning" in text and "a library's logging line" in text and "E core_worker.cc" in text
    assert "our one line" not in text and not (tmp_path / "inner").exists()


def test_verbose_redirects_nothing(tmp_path):
    run = _run(tmp_path, "-v")
    assert run.returncode == 0, run.stderr
    assert "a third-party warning" in run.stderr and "E core_worker.cc" in run.stderr and "log: " not in run.stdout
    assert not (tmp_path / "jobs").exists()


YOLO_SCRIPT = """
import sys
from onegen.core.job_output import job_output
from onegen.manifests.layout import job_log
from onegen.pipelines.demo.tiny_models import tiny_yolo
with job_output(job_log(sys.argv[1], "demo"), "demo", verbose=False):  # the demo builds its tiny YOLO like this
    tiny_yolo(sys.argv[1] + "/yolo")
    print("[demo] our line", flush=True)
"""


def test_ultralytics_settings_banner_stays_off_stdout_on_a_fresh_home(tmp_path):
    """On a fresh HOME (no Ultralytics settings yet) importing ultralytics logs a 3-line banner on the
    stdout it found at import; the demo's first lines were that banner. It belongs in the job's log."""
    home, settings = tmp_path / "home", tmp_path / "yolo-settings"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "YOLO_VERBOSE")}
    env.update(HOME=str(home), YOLO_CONFIG_DIR=str(settings), YOLO_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", YOLO_SCRIPT, str(tmp_path / "demo")], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    log = tmp_path / "demo" / "jobs" / "demo.log"
    assert run.stdout == f"[demo] our line\nlog: {log} (third-party messages and Ray worker output)\n"
    assert "Ultralytics" not in run.stderr
    assert (settings / "Ultralytics" / "settings.json").exists()  # the settings were new: the banner was due
    assert "Creating new Ultralytics Settings" in log.read_text()
