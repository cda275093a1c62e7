"""onegen ingest against img2dataset on a URL table: the same images behind one loopback HTTP server.

    python bench/peer_url_fetch.py [--images 3000] [--venv /tmp/i2d]

img2dataset runs in its own environment, made beforehand:

    python -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset

The table (Parquet: url, caption) lists `--images` URLs on a ThreadingHTTPServer on 127.0.0.1 in a process
of its own: 512 px JPEG crops of scikit-image photos (q95), mixed with 2% 404s, 1% HTML pages served
with 200, 1% truncated JPEGs and 2% slow responses (0.3 s before the body). Both fetch with the same
concurrency: img2dataset 2 processes x 16 threads, `--resize_mode no`, `--retries 2`; onegen ingest
2 parts in flight (one per core) x `--fetch-concurrency 16`, 2 retries. Both validate what arrives
(img2dataset decodes it to check, onegen decodes, hashes and normalises it) and write their output
(WebDataset tars vs catalog Parquet parts). Printed: walls, images/s, the ratio onegen / img2dataset
(goal >= 1.0), and the failures by reason on both sides (img2dataset's per-shard Parquet status and
error_message, onegen's rejects table). Each tool also fetches the first `--small` URLs (default a tenth) in a
run of its own: (N - n) / (T_N - T_n) is its marginal rate, the fixed start-up of either process (onegen's
CLI and Ray, img2dataset's pool) taken out, the rate a long job runs at. The runs repeat `--repeats` times (default
3), the order of the two tools alternating, and the medians are compared: on a 2-core VM single runs of either tool
vary by 10-20%. Results: bench/results/peer_url_fetch.txt.
"""

from __future__ import annotations

import argparse
import collections
import io
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peer_img2dataset import photo_bases, timed  # bench/ is on sys.path when a bench script runs


def make_bodies(count: int) -> tuple[list[bytes], list[str]]:
    """One body and one kind ("ok", "missing", "html", "truncated", "slow") per URL index."""
    import numpy as np
    from PIL import Image

    bases = photo_bases()
    rng = np.random.default_rng(0)
    bodies, kinds = [], []
    for i in range(count):
        base = bases[i % len(bases)]
        y, x = rng.integers(0, base.shape[0] - 512), rng.integers(0, base.shape[1] - 512)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(base[y:y + 512, x:x + 512])).save(buffer, format="JPEG", quality=95)
        roll = rng.random()
        kind = ("missing" if roll < 0.02 else "html" if roll < 0.03 else "truncated" if roll < 0.04
                else "slow" if roll < 0.06 else "ok")
        body = buffer.getvalue()
        bodies.append(body[: len(body) // 3] if kind == "truncated" else b"<html>moved</html>" if kind == "html" else body)
        kinds.append(kind)
    return bodies, kinds


def serve(bodies: list[bytes], kinds: list[str], port_out) -> None:
    """The HTTP server process: GET /<index>.jpg answers as kinds[index] says."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            index = int(self.path.strip("/").split(".")[0])
            kind = kinds[index]
            if kind == "slow":
                time.sleep(0.3)
            status = 404 if kind == "missing" else 200
            body = b"not here" if kind == "missing" else bodies[index]
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if kind == "html" else "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer.request_queue_size = 256
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def img2dataset_reasons(out: Path) -> collections.Counter:
    import pyarrow.parquet as pq

    reasons: collections.Counter = collections.Counter()
    for part in out.glob("*.parquet"):
        table = pq.read_table(part, columns=["status", "error_message"]).to_pylist()
        for row in table:
            reasons["ok" if row["status"] == "success" else (row["error_message"] or "?")[:40]] += 1
    return reasons


def onegen_reasons(root: Path) -> collections.Counter:
    import pyarrow.parquet as pq

    reasons = collections.Counter(pq.read_table(root / "rejects" / "urls", columns=["reason"]).column("reason").to_pylist())
    reasons["ok"] = pq.read_table(root / "catalog" / "urls", columns=["key"]).num_rows
    return reasons


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--venv", default="/tmp/i2d")
    parser.add_argument("--small", type=int, default=0, help="URLs of the start-up run (default: a tenth)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each tool and size (medians compared)")
    args = parser.parse_args()
    small = args.small or max(1, args.images // 10)
    import pyarrow as pa
    import pyarrow.parquet as pq

    venv, work = Path(args.venv), Path(tempfile.mkdtemp(prefix="onegen-urls-"))
    bodies, kinds = make_bodies(args.images)
    ports: multiprocessing.Queue = multiprocessing.Queue()
    server = multiprocessing.Process(target=serve, args=(bodies, kinds, ports), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=30)
        urls = [f"http://127.0.0.1:{port}/{i}.jpg" for i in range(args.images)]
        tables = {}
        for name, count in (("all", args.images), ("small", small)):
            tables[name] = work / f"urls-{name}.parquet"
            pq.write_table(pa.table({"url": urls[:count], "caption": [f"photo {i}" for i in range(count)]}), tables[name])

        def i2d_run(name: str) -> float:
            return timed([str(venv / "bin" / "img2dataset"), "--url_list", str(tables[name]), "--input_format",
                          "parquet", "--url_col", "url", "--caption_col", "caption", "--output_format", "webdataset",
                          "--output_folder", str(work / f"i2d-{name}"), "--processes_count", "2", "--thread_count",
                          "16", "--resize_mode", "no", "--retries", "2", "--number_sample_per_shard", "1000",
                          "--enable_wandb", "False"])

        def onegen_run(name: str) -> float:
            return timed([sys.executable, "-m", "onegen.pipelines.cli.main", "ingest", str(tables[name]), "--out",
                          str(work / f"og-{name}"), "--name", "urls", "--no-progress", "--fetch-concurrency", "16"])

        walls: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        outcomes: dict[str, set] = collections.defaultdict(set)
        for repeat in range(args.repeats):
            for name in ("all", "small"):
                order = (("img2dataset", i2d_run), ("onegen", onegen_run))
                for tool, run in order if repeat % 2 == 0 else order[::-1]:
                    for stale in (work / f"i2d-{name}", work / f"og-{name}"):
                        shutil.rmtree(stale, ignore_errors=True)  # every run starts from nothing
                    walls[tool, name].append(run(name))
                    if name == "all":
                        reasons = (img2dataset_reasons(work / "i2d-all") if tool == "img2dataset"
                                   else onegen_reasons(work / "og-all"))
                        outcomes[tool].add(tuple(sorted(reasons.items())))
        theirs, ours = (dict(next(iter(outcomes[tool]))) for tool in ("img2dataset", "onegen"))
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([str(venv / "bin" / "pip"), "show", "img2dataset"], capture_output=True,
                             text=True).stdout.split("Version: ")[-1].split()[0]
    expected = collections.Counter(kinds)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.images} URLs on 127.0.0.1 ({dict(expected)}); img2dataset {version}")
    median = {key: statistics.median(values) for key, values in walls.items()}
    i2d, onegen = median["img2dataset", "all"], median["onegen", "all"]
    i2d_small, onegen_small = median["img2dataset", "small"], median["onegen", "small"]
    for tool in ("img2dataset", "onegen"):
        same = "same in every run" if len(outcomes[tool]) == 1 else f"DIFFERENT between runs: {outcomes[tool]}"
        print(f"{tool:11s} walls {' '.join(f'{w:.1f}' for w in walls[tool, 'all'])} s; outcomes ({same}) "
              f"{theirs if tool == 'img2dataset' else ours}")
    print(f"median: img2dataset {i2d:.1f}s {args.images / i2d:.1f} URLs/s, onegen {onegen:.1f}s "
          f"{args.images / onegen:.1f} URLs/s")
    print(f"ratio onegen / img2dataset URLs/s: {i2d / onegen:.2f} (goal >= 1.0)")
    theirs_rate, ours_rate = (args.images - small) / (i2d - i2d_small), (args.images - small) / (onegen - onegen_small)
    print(f"start-up runs ({small} URLs, median of {args.repeats}): img2dataset {i2d_small:.1f}s, onegen "
          f"{onegen_small:.1f}s; marginal rate img2dataset {theirs_rate:.1f} URLs/s, onegen {ours_rate:.1f} URLs/s, "
          f"ratio {ours_rate / theirs_rate:.2f}")


if __name__ == "__main__":
    main()
