"""bench/gpu_suite.sh and its wheel set (issue 25): the full run fits a GPU loan, and every benchmark imports and
runs on the CPU in a Python 3.12 venv holding only the GPU image's packages plus the wheel set.

The slow test is the proof that no loan is lost to a missing package: it builds the wheel set with
bench/device_wheels.sh, installs nothing else, and runs `gpu_suite.sh --smoke --wheels`. Its image venv
(bench/image_venv.sh, ~1.8 GB, mostly torch) is kept under the temp folder keyed by the pins' content, so
only a change of pins builds it again; nothing is cached outside the temp folder.
"""

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "gpu_suite.sh"
DEVICE_LISTS = ROOT / "bench" / "device"
PYENV_312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3"  # the machine's pyenv
FULL_ORDER = ["vlm", "train", "vision", "segment", "loader"]  # most valuable first (issue 25)
LOAN_SECONDS = 420  # the limits of one full run: ~7 minutes of a 15-minute loan


def names(path: Path) -> list[str]:
    """Package names of a requirements-style list (comments and pins stripped), normalised as pip does."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.split("==", 1)[0].strip().lower().replace("_", "-"))
    return out


def plan(*flags: str) -> list[tuple[str, int, str]]:
    done = subprocess.run(["bash", str(SUITE), "--plan", *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 3) for line in done.stdout.splitlines()]
    return [(row[0], int(row[1]), row[3] if len(row) > 3 else "") for row in rows]


def test_full_run_fits_the_loan_most_valuable_first():
    rows = plan()
    benches = [(name, limit, command) for name, limit, command in rows if name != "total"]
    assert [name for name, _, _ in benches] == FULL_ORDER
    total = sum(limit for _, limit, _ in benches)
    assert total <= LOAN_SECONDS and rows[-1] == ("total", total, "")
    for name, _, command in benches:
        script = command.split()[0]
        assert (ROOT / script).is_file(), (name, script)
        assert "--tiny" not in command, name  # the full run measures the real architectures
    smoke = [name for name, _, _ in plan("--smoke") if name != "total"]
    assert smoke == [*FULL_ORDER, "configs"]
    assert [name for name, _, _ in plan("--only", "train,vlm") if name != "total"] == ["train", "vlm"]


def test_unknown_benchmark_is_refused():
    done = subprocess.run(["bash", str(SUITE), "--plan", "--only", "vlm,nope"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "no benchmark nope" in done.stderr


def test_full_mode_needs_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(SUITE), "--results", str(tmp_path / "results")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert not (tmp_path / "results").exists()


def test_a_wheel_set_of_another_tree_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "onegen-0.1.0-py3-none-any.whl").write_bytes(b"never installed")
    here = subprocess.run([sys.executable, str(ROOT / "bench" / "tree_hash.py")], capture_output=True, text=True)
    assert len(here.stdout.strip()) == 16
    (wheels / "BUILD").write_text(f"onegen 1234567 built 2026-01-01T00:00:00Z, tree {'0' * 16}\n")
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = suite(["--smoke", "--wheels", str(wheels), "--results", str(tmp_path / "results")], env)
    assert done.returncode == 2 and "built from another tree" in done.stderr and here.stdout.strip() in done.stderr
    assert not (tmp_path / "results").exists()


def test_a_benchmark_killed_at_its_limit_keeps_what_it_printed(tmp_path):
    # A stand-in interpreter: each benchmark prints a measurement from Python, then hangs; everything else is the
    # real Python. Python's output to a file is block-buffered unless the suite makes it unbuffered.
    bench = "import sys, time; print('machine: stub'); print(f'summary: {sys.argv[1]} measured'); time.sleep(60)"
    stub = tmp_path / "python"
    stub.write_text(f"#!/usr/bin/env bash\ncase \"$1\" in\n  bench/*) exec {sys.executable} -c \"{bench}\" \"$1\" ;;\n"
                    f"  *) exec {sys.executable} \"$@\" ;;\nesac\n")
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(PYTHON=str(stub), CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(["bash", str(SUITE), "--smoke", "--only", "vlm,train", "--cap", "2", "--results",
                           str(tmp_path / "results")], env=env, capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in (tmp_path / "results" / "gpu-cpu.jsonl").read_text().splitlines()]
    assert done.returncode == 1 and [r["bench"] for r in records] == ["vlm", "train"]  # the kill did not stop train
    for record in records:
        assert record["rc"] == 124 and record["limit"] == 2 and record["seconds"] < 30, record
        script = "vlm" if record["bench"] == "vlm" else "train_step"
        assert record["summary"] == [f"bench/{script}.py measured"]
        assert "machine: stub" in record["report"]
    assert done.stdout.count("killed at its limit") == 2


def test_wheel_set_carries_only_what_the_image_lacks():
    image = set(names(DEVICE_LISTS / "image-packages.txt"))
    wheels = names(DEVICE_LISTS / "wheels.txt")
    pins = names(DEVICE_LISTS / "image-pins.txt")
    assert len(image) > 150 and {"torch", "transformers", "pyarrow", "timm"} <= image
    assert wheels and not set(wheels) & image  # a carried wheel of an image package would shadow the image's
    assert set(pins) <= image  # the smoke venv holds nothing the image lacks
    assert {"ray", "wids", "polars", "diffusers"}.isdisjoint(wheels)  # the suite runs without them
    for path in ("wheels.txt", "image-pins.txt"):
        for line in (DEVICE_LISTS / path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            assert not line or "==" in line, (path, line)  # exact versions: the same set every time


def cuda_library_path() -> str:
    """LD_LIBRARY_PATH for the image venv's torch (a CUDA 13 build): the lib folders of this interpreter's
    `nvidia` packages, which the README's torch install brings."""
    spec = importlib.util.find_spec("nvidia")
    folders = sorted(str(lib) for root in (spec.submodule_search_locations if spec else []) for lib in
                     Path(root).glob("*/lib") if lib.is_dir())
    if not any(Path(folder, "libcudart.so.13").exists() for folder in folders):
        pytest.fail("the image venv's torch 2.11 (CUDA 13 build) needs the CUDA 13 libraries of an installed "
                    "`nvidia` package (pip install torch==2.14.1 brings them); none found")
    return ":".join(folders)


def image_venv(env: dict[str, str]) -> Path:
    """The Python 3.12 image venv, built by bench/image_venv.sh once per interpreter and content of its pins and
    script."""
    python_312 = str(PYENV_312) if PYENV_312.exists() else shutil.which("python3.12")
    if not python_312:
        pytest.fail(f"no Python 3.12 (neither {PYENV_312} nor python3.12 on PATH) to build the image venv with")
    key = hashlib.sha256(python_312.encode())
    for part in (DEVICE_LISTS / "image-pins.txt", ROOT / "bench" / "image_venv.sh"):
        key.update(part.read_bytes())
    venv = Path(tempfile.gettempdir()) / f"onegen-image-venv-{key.hexdigest()[:16]}"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse it
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build that was killed half-way
            done = subprocess.run(["bash", str(ROOT / "bench" / "image_venv.sh"), str(venv), python_312],
                                  env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            (venv / ".complete").touch()
    return venv


def suite(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SUITE), *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_smoke_in_the_image_venv_with_the_wheel_set(tmp_path):
    # The runner's own packages must not leak in: no PYTHONPATH, and bytecode may be written (in the temp venv).
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    base["PIP_CACHE_DIR"] = str(tmp_path / "pip-cache")
    venv = image_venv(base)
    python = str(venv / "bin" / "python")
    env = {**base, "PYTHON": python, "LD_LIBRARY_PATH": cuda_library_path(), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    carried = ("onegen", "webdataset", "ultralytics", "segment_anything", "controlnet_aux", "ray")
    probe = f"import importlib.util as u; print([n for n in {carried!r} if u.find_spec(n)])"
    found = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert found.stdout.strip() == "[]", found.stderr  # what the suite imports of these comes from the wheels

    wheels = tmp_path / "wheels"
    made = subprocess.run(["bash", str(ROOT / "bench" / "device_wheels.sh"), "--out", str(wheels)],
                          env={**base, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "total" in made.stdout and len(list(wheels.glob("*.whl"))) == len(names(DEVICE_LISTS / "wheels.txt")) + 1

    results = tmp_path / "results"
    done = suite(["--smoke", "--wheels", str(wheels), "--results", str(results)], env)
    out = results / "gpu-cpu.jsonl"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + (out.read_text()[-4000:] if out.exists() else "")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["bench"] for r in records] == [*FULL_ORDER, "configs"]
    expected = {"vision": "annotator/bare", "segment": "bare detector + SAM", "vlm": "one-at-a-time",
                "train": "bare step:", "loader": "plain WebDataset:", "configs": "Sam vit_h: 641.1M parameters"}
    for record in records:
        assert record["rc"] == 0 and record["device"] == "cpu" and record["mode"] == "smoke", record
        assert record["wheels"].startswith(f"{len(names(DEVICE_LISTS / 'wheels.txt')) + 1} wheels, onegen ")
        assert record["summary"], record  # its `summary:` lines, printed to stdout as one line per benchmark
        assert any(expected[record["bench"]] in line for line in record["report"]), record
        assert f"gpu_suite: {record['bench']:<8} ok" in done.stdout
    configs = next(r for r in records if r["bench"] == "configs")["report"]
    assert "LlavaNextForConditionalGeneration: 7566.7M parameters" in configs  # the full run's VLM is the 7B one

    # A wheel missing from the set fails here, not on the loan: the benchmark that needs it fails, the suite too.
    (wheels / next(p.name for p in wheels.glob("webdataset-*.whl"))).unlink()
    again = suite(["--smoke", "--wheels", str(wheels), "--results", str(tmp_path / "again"), "--only", "loader"], env)
    record = json.loads((tmp_path / "again" / "gpu-cpu.jsonl").read_text())
    assert again.returncode == 1 and record["rc"] == 1 and record["summary"] == []
    assert any("No module named 'webdataset'" in line for line in record["report"]), record
