"""Starting or joining Ray so that a job sends no traffic beyond loopback (when local).

What Ray does by default, and what we change (measured with `strace -f -e trace=connect`, see
tests/pipelines/test_ray_setup.py):
- Its dashboard process always loads the UsageStatsHead module, which probes cloud metadata
  services (http://169.254.169.254, metadata.google.internal) even with usage stats disabled. We
  start Ray's processes with `http_proxy` pointing at a closed loopback port, so those plain-HTTP
  probes fail at once on 127.0.0.1; every worker puts the user's own values back first thing
  (pipelines/runtime/worker_setup.py), so user code is unaffected (https traffic is never proxied).
- On Linux Ray picks the machine's outward IP as the node address (a UDP "connect" to 8.8.8.8)
  and binds its services there. A local Ray is pinned to 127.0.0.1 instead
  (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, Ray's own switch for single-machine mode).
- Usage stats are off (RAY_USAGE_STATS_ENABLED=0).
- How a local Ray is started and stopped without Ray's idle seconds (prestarted workers serving
  the job, node registration polled finely, the monitor stopped first): pipelines/runtime/ray_local.py.

With `--address` (or RAY_ADDRESS) the job joins an existing cluster and starts nothing; such a
cluster is started by its operator (README "Clusters"; tests/pipelines/test_cluster.py starts a loopback-only
one for tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from onegen.pipelines.runtime.ray_local import start_local_ray, stop_monitor


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
    from onegen.manifests.files import mark_driver

    mark_driver()
    address = config.address or os.environ.get("RAY_ADDRESS", "")
    local = not address
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    if ray.is_initialized():
        return
    hook = "onegen.pipelines.runtime.worker_setup.setup"
    if local:
        import ray._private.ray_constants as ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # when ray was imported before the variable was set
        start_local_ray(hook, num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                        object_store_memory=config.object_store_memory, include_dashboard=False,
                        log_to_driver=True, configure_logging=True, logging_level="WARNING")
    else:
        ray.init(address=address, runtime_env={"worker_process_setup_hook": hook}, logging_level="WARNING")
    from onegen.pipelines.runtime.ray_logs import route_ray_worker_logs

    # worker lines into the job's log file unless -v. Ray Data is configured where a dataset is made
    # (units.unit_dataset): ingest, build and stateless annotators never import it (0.8 s of a driver)
    route_ray_worker_logs()


def shutdown_ray() -> None:
    """Disconnect from Ray and stop the processes of a local Ray this process started; idempotent.
    A local Ray's autoscaler monitor is stopped first (pipelines/runtime/ray_local.py says why)."""
    import ray

    if not ray.is_initialized():
        return
    stop_monitor()
    ray.shutdown()

