"""How the `onegen` process ends: flush what it printed, stop Ray, then `os._exit` without destructors.

Why: at interpreter shutdown, CPython runs module teardown and C++ static destructors while native
threads that pyarrow started (its CPU / IO thread pools and jemalloc's background threads) may still
be running or joinable; a `std::thread` destroyed while joinable calls `std::terminate`, which prints
`terminate called without an active exception` and aborts (rc 134) after everything was already
printed (seen in ~3 of 19 `onegen manifest stats` runs). Nothing the CLI still needs happens after
its output is flushed and Ray is stopped, so the process ends there with `os._exit(code)`: no module
teardown, no static destructors, no race. tests/pipelines/test_cli_entry.py runs `manifest stats`
100 times in subprocesses and expects rc 0 every time.

Only the process entry point (`cli.main()` without argv: the console script, `python -m`) exits this
way; `main([...])` called in-process (tests, the demo) returns its code as before.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn


def run_and_exit(command: Callable[[], int]) -> NoReturn:
    """Run `command`, then end the process with its exit status through `exit_process`.

    SystemExit keeps its status (argparse errors: 2, `--help`: 0); any other exception prints its
    traceback on stderr, as Python would, and exits 1."""
    try:
        code = command()
    except SystemExit as stop:
        code = _status(stop.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # the process ends here: print what Python would have printed
        traceback.print_exc()
        code = 1
    exit_process(code)


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_process(code: int) -> NoReturn:
    """Stop a Ray this process started or joined, flush logging and the standard streams, `os._exit`."""
    try:
        if "ray" in sys.modules:  # never import Ray only to stop it
            from onegen.pipelines.runtime.ray_setup import shutdown_ray

            shutdown_ray()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(code)
