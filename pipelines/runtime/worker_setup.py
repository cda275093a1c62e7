"""What every Ray worker of a onegen job runs once at start, before any task: `setup`.

A local Ray (pipelines/runtime/ray_setup.py) starts its processes with `http_proxy` pointing at a closed
loopback port (Ray's dashboard probes cloud metadata over plain HTTP otherwise) and with the user's
own values in `ONEGEN_WORKER_PROXIES`; `setup` puts those back, so code running in a worker sees the
environment the user started the job in. Then it installs the import-safe cancel handler
(pipelines/runtime/worker_guard.py). Standard library only: it runs in every worker before anything else.

How it reaches the workers: for a local Ray through Ray's own worker-setup-hook variable in the
environment the raylet inherits, so the workers Ray prestarts during `ray.init` run it and serve
the job (a job `runtime_env` would make Ray start a second set of workers for the job and leave
the prestarted ones idle: 0.8 s before the first task, bench/results/startup.txt); for a joined
cluster through the job's `runtime_env` (`worker_process_setup_hook`).
"""

from __future__ import annotations

import json
import os

from onegen.pipelines.runtime import worker_guard

SAVED_PROXIES_VARIABLE = "ONEGEN_WORKER_PROXIES"  # JSON {name: the user's value, or null when unset}


def setup() -> None:
    restore_proxy_variables()
    worker_guard.install()


def restore_proxy_variables() -> None:
    saved = os.environ.pop(SAVED_PROXIES_VARIABLE, None)
    if saved is None:  # a worker of a joined cluster: its environment is its operator's
        return
    set_environment(json.loads(saved))


def set_environment(values: dict[str, str | None]) -> None:
    """Set each variable of `values`; None unsets it."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
