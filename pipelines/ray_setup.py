"""Starting or joining Ray so that a job sends no traffic beyond loopback (when local).

What Ray does by default, and what we change (measured with `strace -f -e trace=connect`, see
tests/pipelines/test_ray_setup.py):
- Its dashboard process always loads the UsageStatsHead module, which probes cloud metadata
  services (http://169.254.169.254, metadata.google.internal) even with usage stats disabled. We
  start Ray's processes with `http_proxy` pointing at a closed loopback port, so those plain-HTTP
  probes fail at once on 127.0.0.1; every worker puts the user's own values back first thing
  (pipelines/worker_setup.py), so user code is unaffected (https traffic is never proxied).
- On Linux Ray picks the machine's outward IP as the node address (a UDP "connect" to 8.8.8.8)
  and binds its services there. A local Ray is pinned to 127.0.0.1 instead
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's own switch for single-machine mode).
- Usage stats are off (RAY_USAGE_STATS_ENABLED=0).

With `--address` (or RAY_ADDRESS) the job joins an existing cluster and starts nothing; such a
cluster is started by its operator (README "Clusters"; tests/pipelines/test_cluster.py starts a loopback-only
one for tests).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

CLOSED_LOOPBACK_PROXY = "http://127.0.0.1:9"  # port 9 ("discard") is closed: connections fail at once
_PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY")


@dataclass(frozen=True)
class RayConfig:
    """How a job gets its Ray. Empty `address` (and no RAY_ADDRESS) starts a local Ray."""

    address: str = ""
    num_cpus: int | None = None  # local Ray only; default: the machine's cores
    num_gpus: int | None = None
    object_store_memory: int | None = None  # bytes; local Ray only
    progress_bars: bool = True


def init_ray(config: RayConfig) -> None:
    """Start a loopback-only local Ray or connect to `config.address`; idempotent."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from onegen.manifests.store import mark_driver

    mark_driver()
    address = config.address or os.environ.get("RAY_ADDRESS", "")
    local = not address
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if ray.is_initialized():
        return
    hook = "onegen.pipelines.worker_setup.setup"
    if local:
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
        _start_local_ray(config, hook)
    else:
        ray.init(address=address, runtime_env={"worker_process_setup_hook": hook}, logging_level="WARNING")
    from onegen.pipelines.job_log import route_ray_worker_logs

    # worker lines into the job's log file unless -v. Ray Data is configured where a dataset is made
    # (units.unit_dataset): ingest, build and stateless annotators never import it (0.8 s of a driver)
    route_ray_worker_logs()


def _start_local_ray(config: RayConfig, hook: str) -> None:
    """ray.init of a local Ray whose processes inherit the closed proxy, the user's proxy values and
    the worker set-up hook (pipelines/worker_setup.py); the driver's own environment is restored."""
    import ray
    import ray._private.ray_constants as ray_constants

    from onegen.pipelines.worker_setup import SAVED_PROXIES_VARIABLE

    spawned = {name: CLOSED_LOOPBACK_PROXY for name in _PROXY_VARIABLES}
    spawned[SAVED_PROXIES_VARIABLE] = json.dumps({name: os.environ.get(name) for name in _PROXY_VARIABLES})
    spawned[ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR] = hook
    saved = {name: os.environ.get(name) for name in spawned}
    try:
        os.environ.update(spawned)
        ray.init(
            num_cpus=config.num_cpus,
            num_gpus=config.num_gpus,
            object_store_memory=config.object_store_memory,
            include_dashboard=False,
            log_to_driver=True,
            configure_logging=True,
            logging_level="WARNING",
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shutdown_ray() -> None:
    """Disconnect from Ray and stop the processes of a local Ray this process started; idempotent.

    A local Ray's autoscaler monitor is stopped first, with SIGKILL. Why: `ray.shutdown()` stops the
    GCS before the monitor, and the monitor's SIGTERM handler then tries to report its own death to
    that dead GCS until Ray's one-second grace period runs out (Ray 2.60: 1.0 s of a 1.2 s shutdown,
    bench/results/startup.txt). The monitor is a leaf process (no children to orphan) that only
    scales a cluster a local Ray does not have; SIGKILL also keeps its handler from printing an
    "autoscaler failed" error on the driver. A Ray joined with `--address` has no such process here."""
    import ray

    if not ray.is_initialized():
        return
    _kill_local_monitor()
    ray.shutdown()


def _kill_local_monitor() -> None:
    import ray._private.ray_constants as ray_constants
    import ray._private.worker as ray_worker

    node = ray_worker._global_node  # None on a worker; a head Node when ray.init started Ray here
    for info in (node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []):
        if info.process.poll() is None:
            info.process.kill()
            info.process.wait(timeout=10)  # reaped here; Ray's shutdown then skips a dead process
