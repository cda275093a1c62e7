"""`onegen manifest verify SHARDS`: re-hash every tar member against the manifests.

Checks, per manifest fragment: the tar exists; its size matches the fragment's metadata and its md5
the shard index (index.json, when there is one); every
member the manifest lists is in the tar with the recorded size and sha256; the tar holds nothing the
manifest does not list; and no sample key appears twice across the shards. Returns the problems as
lines (empty: all good).
"""

from __future__ import annotations

import hashlib
import tarfile

from onegen.manifests import files
from onegen.manifests.layout import ShardLayout


def summary_line(checked: int, problems: list[str]) -> str:
    """The closing line of a verification (after its problem lines): `onegen manifest verify` and the demo."""
    return f"verified {checked} samples: {'OK' if not problems else f'{len(problems)} problem(s)'}"


def verify_shards(out: str) -> tuple[int, list[str]]:
    """(number of samples checked, problem lines)."""
    problems: list[str] = []
    seen_keys: dict[str, str] = {}
    checked = 0
    manifests = ShardLayout(out).manifest_paths()
    if not manifests:
        return 0, [f"{out}: no shard manifests found"]
    index = files.read_json(ShardLayout(out).index()) or {}
    md5s = {entry["url"]: entry.get("md5") for entry in index.get("shardlist", [])}
    for manifest_path in manifests:
        table = files.read_table(manifest_path)
        meta = files.read_metadata(manifest_path)
        shard = ShardLayout.shard_of(manifest_path)
        name, tar_path = f"{shard}.tar", ShardLayout(out).tar(shard)
        if not files.exists(tar_path):
            problems.append(f"{name}: missing shard (its manifest exists)")
            continue
        expected = {}
        for row in table.to_pylist():
            if row["key"] in seen_keys:
                problems.append(f"{name}: sample {row['key']} also in {seen_keys[row['key']]}")
            seen_keys[row["key"]] = name
            for suffix, size, sha in zip(row["members"], row["member_bytes"], row["member_sha256"], strict=True):
                expected[f"{row['key']}.{suffix}"] = (size, sha)
            checked += 1
        problems.extend(_check_tar(name, tar_path, expected, meta, md5s.get(name)))
    return checked, problems


def _check_tar(name: str, tar_path: str, expected: dict[str, tuple[int, str]], meta: dict[str, str],
               indexed_md5: str | None) -> list[str]:
    problems = []
    fs, path = files.filesystem(tar_path)
    md5 = hashlib.md5()
    found: set[str] = set()
    with fs.open(path, "rb") as raw:
        data = raw.read()
    md5.update(data)
    if indexed_md5 and md5.hexdigest() != indexed_md5:
        problems.append(f"{name}: md5 {md5.hexdigest()} differs from the shard index's {indexed_md5}")
    if meta.get("onegen.shard_bytes") and len(data) != int(meta["onegen.shard_bytes"]):
        problems.append(f"{name}: {len(data)} bytes, the manifest says {meta['onegen.shard_bytes']}")
    import io

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                found.add(member.name)
                if member.name not in expected:
                    problems.append(f"{name}: member {member.name} is not in the manifest")
                    continue
                size, sha = expected[member.name]
                content = archive.extractfile(member).read()
                if len(content) != size or hashlib.sha256(content).hexdigest() != sha:
                    problems.append(f"{name}: member {member.name} does not match its sha256/size")
    except tarfile.TarError as error:
        problems.append(f"{name}: unreadable tar ({error})")
        return problems
    problems.extend(f"{name}: member {missing} is missing" for missing in sorted(set(expected) - found))
    return problems
