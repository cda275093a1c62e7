"""Starting and stopping the local Ray of one machine: loopback only, and without Ray's idle seconds.

What `ray.init` of a local Ray costs here (Ray 2.60, 2-core VM; bench/results/startup.txt) and what is
changed, each only for a Ray this process starts (a joined cluster is its operator's):

- Ray's processes inherit the environment of `ray.init`. They get `http_proxy` pointing at a closed
  loopback port (pipelines/runtime/ray_setup.py says why), the user's own proxy values to restore, and Ray's
  worker-set-up-hook variable naming pipelines/runtime/worker_setup.py, so that the workers Ray prestarts
  during init run the hook and serve the job. A job `runtime_env` would do the same for workers, but
  Ray then boots a second set of workers for the job (0.8 s before the first task, and two more
  Python processes' start-up on the cores) while the prestarted ones stay idle.
- After starting the raylet, `ray.init` asks the GCS whether it has registered, and when not yet,
  asks again one second later: that lookup returned after 1.01 or 2.01 s, never in between, for a
  raylet that registers 0.6-1.4 s after start. During our `ray.init` the same question is
  asked every 20 ms first (`_prompt_registration`); Ray's own call then finds the node at once.
- `ray.shutdown()` stops the GCS before the autoscaler monitor, whose SIGTERM handler then tries to
  report its death to that GCS until Ray's one-second grace runs out (1.0 s of a 1.2 s shutdown).
  `stop_monitor` SIGKILLs it first: a leaf process (no children to orphan) that only scales a
  cluster a local Ray does not have; SIGKILL also keeps its handler from printing an "autoscaler
  failed" error on the driver.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

CLOSED_LOOPBACK_PROXY = "http://127.0.0.1:9"  # port 9 ("discard") is closed: connections fail at once
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY")
REGISTRATION_POLL_S = 0.02
REGISTRATION_WAIT_S = 30.0  # then Ray's own wait (and its own error) takes over


def start_local_ray(hook: str, **init_kwargs) -> None:
    """`ray.init(**init_kwargs)` of a local Ray as the module docstring says; the driver's own
    environment is as it was afterwards."""
    import ray
    import ray._private.ray_constants as ray_constants

    from onegen.pipelines.runtime.worker_setup import SAVED_PROXIES_VARIABLE, set_environment

    spawned = {name: CLOSED_LOOPBACK_PROXY for name in PROXY_VARIABLES}
    spawned[SAVED_PROXIES_VARIABLE] = json.dumps({name: os.environ.get(name) for name in PROXY_VARIABLES})
    spawned[ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR] = hook
    saved = {name: os.environ.get(name) for name in spawned}
    try:
        os.environ.update(spawned)
        with _prompt_registration():
            ray.init(**init_kwargs)
    finally:
        set_environment(saved)


@contextmanager
def _prompt_registration() -> Iterator[None]:
    """While inside: Ray's node lookup of ray.init first polls the GCS every 20 ms for the node."""
    import ray._private.services as services

    ray_get_node = services.get_node

    def get_node(gcs_address: str, node_id: str, *args, **kwargs):
        wait_until_registered(gcs_address, node_id)
        return ray_get_node(gcs_address, node_id, *args, **kwargs)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = ray_get_node


def wait_until_registered(gcs_address: str, node_id: str, seconds: float = REGISTRATION_WAIT_S) -> bool:
    """Poll the GCS at `gcs_address` until node `node_id` (hex) has registered; False at the deadline."""
    import ray._raylet

    client = ray._raylet.GcsClient(address=gcs_address)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(key.hex() == node_id for key in client.get_all_node_info(timeout=seconds)):
            return True
        time.sleep(REGISTRATION_POLL_S)
    return False


def stop_monitor() -> None:
    """SIGKILL the autoscaler monitor of a local Ray this process started (see the module docstring)."""
    import ray._private.ray_constants as ray_constants
    import ray._private.worker as ray_worker

    node = ray_worker._global_node  # a head Node when ray.init started Ray here; else no monitor in it
    for info in (node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []):
        if info.process.poll() is None:
            info.process.kill()
            info.process.wait(timeout=10)  # reaped here; Ray's shutdown then skips a dead process
