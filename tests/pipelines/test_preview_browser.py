"""The preview report in a real browser: headless Chromium opens index.html from disk (file://) with its
network gone (its own network namespace) and network features off; every <img> must load (naturalWidth > 0, reported by the page's inline script into
body[data-img-widths]) and a screenshot must not be blank. Skips only when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onegen.pipelines.preview import report as preview

CHROMIUM = Path("/usr/bin/chromium")
OFFLINE_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _fixture_module():
    """The shard fixture builder of test_preview.py, loaded by path (tests/pipelines is not a package)."""
    spec = importlib.util.spec_from_file_location("preview_fixtures", Path(__file__).with_name("test_preview.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Chromium in a network namespace of its own (no interface but a downed loopback), so the report
    is shown to load with the network really gone; flags alone where `unshare` is missing."""
    isolate = ["unshare", "-n"] if shutil.which("unshare") else []
    return subprocess.run([*isolate, str(CHROMIUM), *OFFLINE_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90, check=True)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package chromium (/usr/bin/chromium)")
def test_report_opens_from_disk_with_every_image_loaded(tmp_path):
    shards, _ = _fixture_module().write_fixture_shards(tmp_path / "data")
    index = Path(preview.write_preview(str(shards), str(tmp_path / "report"), per_task=2))
    url = index.resolve().as_uri()
    n_images = len(re.findall(r"<img ", index.read_text(encoding="utf-8")))
    assert n_images > 10

    dom = _chromium(tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", url).stdout
    found = re.search(r'data-img-widths="([0-9,]*)"', dom)
    assert found, "the page's load script did not run"
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) == n_images
    assert all(w > 0 for w in widths), f"images that did not load: {widths}"

    shot = tmp_path / "shot.png"
    _chromium(tmp_path / "profile", "--window-size=1000,1400", f"--screenshot={shot}", url)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.var() > 0
