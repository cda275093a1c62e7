"""Cluster mode: a head and a worker node started with `ray start` on this machine, inside a network
namespace that has nothing but loopback, and `onegen ingest --address` submitted to them: both nodes'
workers commit parts."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_photo_folder

SCRIPT = """
set -e
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled PATH={bin}:$PATH
ray start --head --node-ip-address=127.0.0.1 --port={port} --num-cpus=1 --object-store-memory=150000000 \
  --include-dashboard=false --disable-usage-stats --temp-dir={temp} > {temp}/head.log 2>&1
ray start --address=127.0.0.1:{port} --node-ip-address=127.0.0.1 --num-cpus=1 \
  --object-store-memory=150000000 > {temp}/worker.log 2>&1
{python} -c "import ray; ray.init(address='127.0.0.1:{port}'); \
print('NODES', sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))"
{python} -m onegen.pipelines.cli.main ingest {photos} --out {out} --address 127.0.0.1:{port} --rows-per-part 1 --no-progress
"""


def _stop_cluster(temp: Path) -> None:
    """Kill the cluster's processes (those naming our temp dir) and their children; never `ray stop`,
    which would also stop every other Ray on the machine."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
    victims = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    for process in victims.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare and ip")
def test_two_node_cluster_on_loopback_only(tmp_path):
    write_photo_folder(tmp_path / "photos", count=8)
    temp = Path(tempfile.mkdtemp(prefix="ogr-", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    script = SCRIPT.format(bin=Path(sys.executable).parent, port=6391, temp=temp, python=sys.executable,
                           photos=tmp_path / "photos", out=tmp_path / "dataset")
    try:
        # without the single-machine switch a local Ray of an earlier test left in this process's environment
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
        result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=240,
                                env=env)
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(temp.glob("*.log")))
    finally:
        _stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:] + logs
    assert "NODES ['127.0.0.1', '127.0.0.1']" in result.stdout  # two live nodes, both on loopback
    catalog = pq.read_table(tmp_path / "dataset" / "catalog")
    assert catalog.num_rows == 8 and len(set(catalog.column("key").to_pylist())) == 8
    # the workers committed the parts, on both nodes (each part records the node that wrote it)
    parts = sorted((tmp_path / "dataset" / "catalog" / "photos").glob("*.parquet"))
    nodes = {pq.read_schema(p).metadata[b"onegen.node"] for p in parts}
    assert len(parts) == 8 and len(nodes) == 2
