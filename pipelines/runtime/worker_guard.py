"""Every Ray worker of a job runs `install` at start (pipelines/runtime/worker_setup.py).

Why: Ray cancels a running task (`ray.cancel`, and Ray Data on a failed job or a finished limit)
by raising KeyboardInterrupt in the worker's main thread. When that lands inside an import, the
module's native half stays registered while Python drops the module, and the worker is poisoned for
good: torch's next import fails ("Only a single TORCH_LIBRARY can be used to register the namespace
prims", "module functions cannot set METH_CLASS"), and so does every later task Ray hands that
process. A cancel that arrives mid-import therefore ends the worker at once (Ray starts a clean
one); a cancel anywhere else stays Ray's KeyboardInterrupt. The module imports only the standard
library: it runs in every worker before anything else.
"""

from __future__ import annotations

import os
import signal
import sys

_IMPORT_MACHINERY = "<frozen importlib._bootstrap"
INTERRUPTED_IMPORT_EXIT_CODE = 75  # EX_TEMPFAIL: the task was being cancelled; nothing of it is kept


def install() -> None:
    """Route SIGINT (Ray's task cancellation) through `_interrupt` in this worker process."""
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum, frame) -> None:
    if _inside_import(frame):
        sys.stderr.write("onegen: a task was cancelled during an import; ending this worker so that "
                         "Ray starts a clean one\n")
        sys.stderr.flush()
        os._exit(INTERRUPTED_IMPORT_EXIT_CODE)
    signal.default_int_handler(signum, frame)


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith(_IMPORT_MACHINERY):
            return True
        frame = frame.f_back
    return False
