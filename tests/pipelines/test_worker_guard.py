"""A task cancelled during an import ends its worker (a half-imported torch would poison every later
task of that process); a task cancelled anywhere else keeps its worker, as Ray does by default."""

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def _wait_for(path: Path, seconds: float = 60) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def _cancel_and_report(ray, task, folder: Path, during_import: bool):
    started = folder / "pid"
    reference = task.remote(str(folder), during_import)
    pid = int(_wait_for(started))
    time.sleep(0.3)  # well inside the sleep: in the module body, or in the task body
    ray.cancel(reference)
    with pytest.raises((ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError)):
        ray.get(reference, timeout=60)
    return pid


def test_cancel_mid_import_ends_the_worker_and_elsewhere_keeps_it(ray_local, tmp_path):
    import ray

    @ray.remote(max_retries=0)
    def slow(folder: str, during_import: bool):
        import os
        import sys
        import time

        Path(folder, "pid").write_text(str(os.getpid()))
        if during_import:
            sys.path.insert(0, folder)
            import slow_module  # noqa: F401  (sleeps in its body)
        else:
            for _ in range(6000):
                time.sleep(0.01)

    inside, outside = tmp_path / "inside", tmp_path / "outside"
    for folder in (inside, outside):
        folder.mkdir()
    # short sleeps: Ray's cancel trips Python's interrupt flag, which a thread runs between bytecodes
    (inside / "slow_module.py").write_text("import time\nfor _ in range(6000):\n    time.sleep(0.01)\n")

    pid = _cancel_and_report(ray, slow, inside, during_import=True)
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, "the worker cancelled mid-import is still running"
        time.sleep(0.1)

    pid = _cancel_and_report(ray, slow, outside, during_import=False)
    time.sleep(2)
    assert _alive(pid)  # an ordinary cancel: Ray's KeyboardInterrupt, the worker is reused

    @ray.remote
    def answer():
        return 42

    assert ray.get(answer.remote(), timeout=60) == 42
