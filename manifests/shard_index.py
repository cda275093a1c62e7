"""The wids shard index of a shards folder, written from its manifests.

`write_shard_index(out, name)` lists every committed shard (its manifest fragment), takes each tar's md5
from the fragment's metadata (the shard writer's committer thread hashes each tar as it commits it) or
hashes the tar on a thread pool when it is missing, and commits `index.json`:
{"__kind__": "wids-shard-index-v1", "wids_version": 1, "name", "shardlist": [{url, nsamples, filesize,
md5, task}]}, urls relative to the folder. Returns the shard list.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from onegen.manifests import files
from onegen.manifests.layout import ShardLayout

CHUNK = 8 << 20


def file_md5(path: str) -> str:
    fs, target = files.filesystem(path)
    digest = hashlib.md5()
    with fs.open(target, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_shard_index(out: str, name: str) -> list[dict]:
    entries = []
    for path in ShardLayout(out).manifest_paths():
        table = files.read_table(path, ["task"])
        shard = ShardLayout.shard_of(path) + ".tar"  # the url, relative to the shards folder
        meta = files.read_metadata(path)
        entries.append({"url": shard, "nsamples": table.num_rows, "filesize": int(meta["onegen.shard_bytes"]),
                        "md5": meta.get("onegen.shard_md5"),
                        "task": table.column("task")[0].as_py() if table.num_rows else ""})
    missing = [e for e in entries if not e["md5"]]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for entry, md5 in zip(missing, pool.map(file_md5, [files.join(out, e["url"]) for e in missing]), strict=True):
            entry["md5"] = md5
    files.commit_json(ShardLayout(out).index(),
                      {"__kind__": "wids-shard-index-v1", "wids_version": 1, "name": name, "shardlist": entries})
    return entries


def shard_bytes(out: str) -> int:
    """Bytes of the committed tars of `out` (each manifest records its tar's size): the one byte count that
    `build`'s summary, `manifest stats` and the preview report show."""
    return sum(int(files.read_metadata(path)["onegen.shard_bytes"]) for path in ShardLayout(out).manifest_paths())
