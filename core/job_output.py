"""Quiet jobs: progress bars and summaries on the terminal, everything else in the job's log file.

`job_output(log, command, verbose)` wraps one command of `onegen` (cli.main). Unless `verbose`
(`-v`), for its duration:
- file descriptor 2 and `sys.stderr` point at the local log file `log` (appended, one header line per
  run), so Python warnings, third-party
  logging and progress bars (transformers, timm, controlnet_aux, torch.jit), Ray's driver-side warnings
  and the C++ log lines of Ray's driver core worker (e.g. `E core_worker.cc ... max_restarts > 0`, a
  notice about actor restarts, not a failure) land there;
- the lines of Ray workers that Ray forwards to the driver (`log_to_driver`) are written there too,
  prefixed `(<actor or task> pid=N)` (pipelines/runtime/ray_logs.py, installed by `ray_setup.init_ray`);
- our own progress bars write to the terminal through `progress_stream()` (one bar per stage: Ray
  Data's own bars are off), and the summary lines go to stdout as before.
At the end the streams are restored and, when `announce`, `log: <path>` is printed. With `verbose`
nothing is redirected and Ray prints worker lines live, as it does by default. A `job_output` inside
another one (the demo runs its steps through cli.main) changes nothing: the outer one decides.
The caller names the log file: the command's output folder's `jobs/<command>.log`, as
manifests/layout.py `job_log` spells it (core imports nothing of the layout).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO


@dataclass
class _Active:
    path: str | None  # None: verbose, nothing redirected
    log: IO[str] | None
    terminal: IO[str] | None


_active: list[_Active] = []  # the outermost job_output, while one runs


def add_verbose_flag(parser) -> None:
    """`-v/--verbose` on a command whose third-party output goes to FOLDER/jobs/<command>.log."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party warnings and Ray worker output live (default: in FOLDER/jobs/<command>.log)")


def current_log() -> str | None:
    """The log file of the running job, or None (no job, or -v)."""
    return _active[0].path if _active else None


def terminal_stderr() -> IO[str]:
    """The terminal's stderr while a quiet job runs (progress bars, a failure's one line), else sys.stderr."""
    if _active and _active[0].terminal is not None:
        return _active[0].terminal
    return sys.stderr


progress_stream = terminal_stderr  # what progress bars write to


@contextmanager
def job_output(log_file: str, command: str, verbose: bool, announce: bool = True,
               user_errors: tuple[type[BaseException], ...] = ()) -> Iterator[str | None]:
    """Run the body with third-party output sent to the local file `log_file` (module docstring); yields
    its path (None with `verbose`). `command` names the run in the log's header line.

    When the body raises one of `user_errors` (a refused command: one line, exit 2), the log file and
    the folders made for it are removed again if this call created them: a refused command creates
    nothing. Any other exception keeps the log (what led up to a bug)."""
    if _active:
        yield current_log()
        return
    if verbose:
        _active.append(_Active(None, None, None))
        try:
            yield None
        finally:
            _active.clear()
        return
    path = log_file
    created = _missing_folders(os.path.dirname(path)) + ([] if os.path.exists(path) else [path])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 (closed below)
    log.write(f"=== onegen {command} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC\n")
    sys.stderr.flush()
    saved_fd, saved_stderr = os.dup(2), sys.stderr
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    _active.append(_Active(path, log, terminal))
    refused = False
    try:
        yield path
    except user_errors:
        refused = True
        raise
    finally:
        _active.clear()
        log.flush()
        sys.stderr = saved_stderr
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        terminal.close()
        log.close()
        if refused:
            _remove_created(created)
        elif announce:
            print(f"log: {path} (third-party messages and Ray worker output)", flush=True)


def _missing_folders(folder: str) -> list[str]:
    """`folder` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while folder and not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def _remove_created(created: list[str]) -> None:
    """Undo what job_output made for a refused command: its log file, then the folders it made (if empty)."""
    for made in sorted(created, key=len, reverse=True):
        if os.path.isfile(made):
            os.remove(made)
        elif os.path.isdir(made) and not os.listdir(made):
            os.rmdir(made)


def active_log_file() -> IO[str] | None:
    """The open log file of the running quiet job, or None (no job, -v, or already closed)."""
    active = _active[0] if _active else None
    if active is None or active.log is None or active.log.closed:
        return None
    return active.log
