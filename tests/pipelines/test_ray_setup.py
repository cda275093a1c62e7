"""Ray stays on loopback (no cloud-metadata probes, no outward node IP), and the annotation plan
asks Ray for the annotator's GPUs/CPUs on an actor pool."""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa
import pytest

from onegen.annotators.base import Annotator
from onegen.pipelines.jobs.annotate import AnnotateJob, build_annotation_dataset
from onegen.pipelines.jobs.annotate_work import PartUnit, group_unit
from tests.conftest import write_photo_folder

INET = re.compile(r'connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), (?:sin_addr=inet_addr\("([^"]+)"\)|.*?inet_pton\(AF_INET6, "([^"]+)")')


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1") or address.startswith("::ffff:127.")


# `read(pid, name)` for the scripts below: /proc/<pid>/<name>, "" for a process that exited meanwhile
PROC_READ = (
    "def read(pid, name):\n"
    "    try:\n"
    "        return open(f'/proc/{pid}/{name}', errors='replace').read()\n"
    "    except OSError:\n"
    "        return ''\n"
)


def _fresh_python(script: str) -> str:
    """Run `script` in a new interpreter (its own Ray, usage stats off); its stdout, once it exited 0."""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=280,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (.ci/run installs it)")
def test_a_job_connects_to_loopback_only(tmp_path):
    write_photo_folder(tmp_path / "photos", count=4)
    trace = tmp_path / "connect.trace"
    env = {k: v for k, v in os.environ.items() if k not in ("http_proxy", "HTTP_PROXY")}
    command = ["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace), sys.executable, "-m",
               "onegen.pipelines.cli.main", "ingest", str(tmp_path / "photos"), "--out", str(tmp_path / "d"),
               "--num-cpus", "1", "--object-store-mb", "100", "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    addresses = [m.group(2) or m.group(3) for m in INET.finditer(trace.read_text())]
    assert len(addresses) > 10  # Ray's own processes really talked (over loopback)
    outside = sorted({a for a in addresses if not _is_loopback(a)})
    assert outside == [], f"connections beyond loopback: {outside}"


@dataclass
class _NeedsGpu(Annotator):
    name: ClassVar[str] = "needs_gpu"
    output_schema: ClassVar[pa.Schema] = pa.schema([])
    num_gpus: float = 1.0
    num_cpus: float = 0.5
    batch_size: int = 32
    concurrency: int = 3


def test_annotation_plan_places_the_annotator_on_gpu_actors(ray_local):
    from ray.data import ActorPoolStrategy

    part = PartUnit(0, "/nowhere/photos/part-00000.parquet", "/nowhere/out.parquet", 1, "", ())
    dataset = build_annotation_dataset({0: group_unit([part])}, (AnnotateJob("/nowhere", _NeedsGpu()),))
    commit = dataset._logical_plan.dag  # the last operator: the commit stage, a CPU task after the actors
    assert "commit_units" in commit.name and "num_gpus" not in commit.ray_remote_args
    operator = commit.input_dependencies[0]  # the annotator's map
    assert "AnnotatorActor" in operator.name
    assert operator.ray_remote_args["num_gpus"] == 1.0 and operator.ray_remote_args["num_cpus"] == 0.5
    assert isinstance(operator.compute, ActorPoolStrategy) and operator.compute.min_size == 3
    assert operator.batch_size == 32


@pytest.mark.timeout(300)
def test_jobs_of_plain_tasks_never_import_ray_data_or_torch_on_the_driver(tmp_path):
    """ingest and build (and stateless annotators) run as plain Ray tasks: the driver does not pay
    ray.data's import (~0.8 s of a CLI job); a job that makes a unit dataset configures it then.
    A recipe run of such stages (with a [train] table) imports no torch either (2.4 s)."""
    write_photo_folder(tmp_path / "photos", count=4)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'root = "r"\nshards = "r-shards"\n[[sources]]\npath = "{tmp_path / "photos"}"\n'
                      '[[annotators]]\nname = "canny"\n[build]\ntasks = ["text2image", "canny2image"]\n'
                      '[train]\nsteps = 10\n')
    script = (
        "import sys\n"
        "from onegen.pipelines.cli.main import main\n"
        f"root, photos = {str(tmp_path / 'd')!r}, {str(tmp_path / 'photos')!r}\n"
        "ray = ['--num-cpus', '2', '--object-store-mb', '300', '--no-progress']\n"
        "assert main(['ingest', photos, '--out', root, *ray]) == 0\n"
        "assert main(['annotate', root, '--annotators', 'canny', *ray]) == 0\n"
        "assert main(['build', root, '--out', root + '-shards', *ray]) == 0\n"
        f"assert main(['run', {str(recipe)!r}, *ray]) == 0\n"
        "print('ray.data imported:', 'ray.data' in sys.modules, 'torch imported:', 'torch' in sys.modules)\n"
    )
    stdout = _fresh_python(script)
    assert "ray.data imported: False torch imported: False" in stdout, stdout


@pytest.mark.timeout(300)
def test_shutdown_stops_the_monitor_first_and_leaves_no_process_of_the_session(tmp_path):
    """shutdown_ray SIGKILLs a local Ray's autoscaler monitor before Ray's own shutdown, which stops
    the GCS first and would then wait out the monitor's one-second grace: Ray's shutdown is watched
    (its per-process-type kill wrapped) and must find the monitor already dead, and every process
    the local Ray started must be gone afterwards (nothing orphaned)."""
    script = (
        "import os, time\n"
        "import ray, ray._private.node as n, ray._private.worker as w, ray._private.ray_constants as c\n"
        "from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray, shutdown_ray\n"
        "seen = []\n"
        "kill = n.Node._kill_process_type\n"
        "def watched(self, kind, *args, **kwargs):\n"
        "    seen.append((kind, any(i.process.poll() is None for i in self.all_processes.get(kind, []))))\n"
        "    return kill(self, kind, *args, **kwargs)\n"
        "n.Node._kill_process_type = watched\n"
        "init_ray(RayConfig(num_cpus=1, object_store_memory=100 << 20, progress_bars=False))\n"
        "assert ray.get(ray.remote(lambda: 1).remote()) == 1\n"
        "session = os.path.basename(w._global_node.get_session_dir_path())\n"
        "shutdown_ray()\n"
        "time.sleep(1)\n"
        f"{PROC_READ}"
        "left = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()\n"
        "        and session in read(p, 'cmdline')]\n"
        "print('monitor alive when Ray stopped it:', dict(seen)[c.PROCESS_TYPE_MONITOR], 'left:', left)\n"
    )
    stdout = _fresh_python(script)
    assert "monitor alive when Ray stopped it: False left: []" in stdout, stdout


@pytest.mark.timeout(300)
def test_a_local_ray_serves_the_job_from_its_prestarted_workers_with_the_users_environment():
    """The workers Ray prestarts during init run the job's tasks (no job runtime_env, which would
    make Ray boot a second set first), each already set up: the user's proxy variables back (the
    closed loopback proxy was only for Ray's own processes) and the import-safe cancel handler in."""
    script = (
        "import os, signal\n"
        "os.environ['http_proxy'] = 'http://users-proxy.invalid:3128'\n"
        "os.environ.pop('HTTP_PROXY', None)\n"
        "import ray, ray._private.worker as w\n"
        "from onegen.pipelines.runtime.ray_setup import RayConfig, init_ray, shutdown_ray\n"
        "init_ray(RayConfig(num_cpus=2, object_store_memory=100 << 20, progress_bars=False))\n"
        "raylet = str(w._global_node.all_processes['raylet'][0].process.pid)\n"
        f"{PROC_READ}"
        "def workers():  # the raylet's children titled ray::IDLE / ray::<task> (not its agents)\n"
        "    return {int(p) for p in os.listdir('/proc') if p.isdigit()\n"
        "            and read(p, 'stat').rsplit(')', 1)[-1].split()[1:2] == [raylet]\n"
        "            and read(p, 'cmdline').startswith('ray::') and 'Agent' not in read(p, 'cmdline')}\n"
        "import time\n"
        "deadline = time.monotonic() + 60\n"
        "while len(workers()) < 2 and time.monotonic() < deadline:  # the raylet may still be forking them\n"
        "    time.sleep(0.05)\n"
        "prestarted = workers()  # before any task was submitted\n"
        "def seen():\n"
        "    import time\n"
        "    time.sleep(0.5)  # both workers get a task\n"
        "    return (os.getpid(), os.environ.get('http_proxy'), os.environ.get('HTTP_PROXY'),\n"
        "            'ONEGEN_WORKER_PROXIES' in os.environ, signal.getsignal(signal.SIGINT).__module__)\n"
        "views = ray.get([ray.remote(seen).remote() for _ in range(4)])\n"
        "print('driver proxy:', os.environ.get('http_proxy'), os.environ.get('HTTP_PROXY'))\n"
        "print('prestarted:', len(prestarted), 'served by them:', {v[0] for v in views} <= prestarted)\n"
        "print('worker views:', sorted({v[1:] for v in views}))\n"
        "shutdown_ray()\n"
    )
    stdout = _fresh_python(script)
    assert "driver proxy: http://users-proxy.invalid:3128 None" in stdout, stdout
    assert "prestarted: 2 served by them: True" in stdout, stdout
    assert ("worker views: [('http://users-proxy.invalid:3128', None, False, 'onegen.pipelines.runtime.worker_guard')]"
            in stdout), stdout


def test_node_registration_is_seen_by_polling_and_rays_lookup_is_restored(ray_local):
    """The fine-grained registration poll init uses finds a registered node, gives up on a node that
    never registers, and Ray's own node lookup is back in place once init returned."""
    import ray
    import ray._private.services as services
    import ray._private.worker as ray_worker

    from onegen.pipelines.runtime.ray_local import wait_until_registered

    gcs = ray_worker._global_node.gcs_address
    assert wait_until_registered(gcs, ray.get_runtime_context().get_node_id(), seconds=10)
    assert not wait_until_registered(gcs, "ab" * 28, seconds=0.3)
    assert services.get_node.__module__ == "ray._private.services"
