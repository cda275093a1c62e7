"""`onegen precompute`: shards with raw images + prompts -> shards with VAE latents + T5 states.

For every shard `{name}.tar` of SHARDS (one with a manifest) it writes OUT/{name}.tar holding the same
sample keys, where the view members (`imgN.<ext>`, `rayN.npy`, ...) become one `views.npy` (float16
(V, 16, H/8, W/8) in view order: each image resized/centre-cropped to its resolution bucket as the loader
does and encoded (`Vae.encode` posterior mean), each ray view resampled to the latent grid) and one
`kinds.txt` ("latent ray latent ray ..."), `txt` and `json` are kept as they are, and `t5.npy` (float16
(L, D), the prompt's real tokens only) + `t5mask.npy` (bool (L,)) are added. Every precomputed sample thus
has the same member names whatever its number of views, which is what column readers need
(`ray.data.read_webdataset` cannot cast a column like `lat1.npy` that some samples of a block lack). Shards and manifests are written through
`ShardWriter` (same commit rule: tar, skipped, then manifest), so a shard whose OUT manifest exists is
done and skipped on a rerun. OUT/index.json (wids shard index) and OUT/build.json (the input's build
record + what was precomputed) are rewritten at the end.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds

from onegen.manifests import files
from onegen.manifests.layout import ShardLayout
from onegen.manifests.query import select_shards
from onegen.manifests.shard_index import write_shard_index
from onegen.manifests.shard_writer import Sample, ShardWriter
from onegen.training.data import VIEW_MEMBER, decode_views

NO_LIMIT = 1 << 62


@dataclass(frozen=True)
class PrecomputeConfig:
    shards: str
    out: str
    text_encoder: str
    vae: str
    buckets: tuple[tuple[int, int], ...] = ((256, 256),)
    device: str = "cpu"
    text_batch: int = 16


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _view_latents(sample: dict, config: PrecomputeConfig, vae) -> list[tuple[str, bytes]]:
    """The sample's views as [("views.npy", (V, 16, h, w) float16), ("kinds.txt", kinds)] (images encoded)."""
    views, kinds, _ = decode_views(sample, config.buckets)
    pixels = [v for v, k in zip(views, kinds, strict=True) if k == "pixels"]
    latents = iter(vae.encode(torch.stack(pixels)).cpu().numpy().astype(np.float16) if pixels else [])  # (n, 16, h, w)
    packed = [next(latents) if k == "pixels" else v.numpy().astype(np.float16) for v, k in zip(views, kinds, strict=True)]
    names = ["latent" if k == "pixels" else k for k in kinds]
    return [("views.npy", _npy(np.stack(packed))), ("kinds.txt", " ".join(names).encode())]  # (V, 16, h, w)


def _shard_samples(url: str, rows: dict[str, dict], config: PrecomputeConfig, vae, text_encoder) -> list[Sample]:
    raw = list(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()))
    samples = []
    for start in range(0, len(raw), config.text_batch):
        chunk = raw[start : start + config.text_batch]
        states, mask = text_encoder.encode([rows[s["__key__"]]["prompt"] for s in chunk])  # (b, L, D), (b, L)
        for i, sample in enumerate(chunk):
            row = rows[sample["__key__"]]
            n_tokens = int(mask[i].sum())
            members = _view_latents(sample, config, vae)
            members += [(name, sample[name]) for name in row["members"] if not VIEW_MEMBER.match(name)
                        and name not in ("views.npy", "kinds.txt")]
            members += [("t5.npy", _npy(states[i, :n_tokens].float().cpu().numpy().astype(np.float16))),
                        ("t5mask.npy", _npy(mask[i, :n_tokens].cpu().numpy()))]
            samples.append(Sample(key=row["key"], task=row["task"], prompt=row["prompt"], source=row["source"],
                                  members=members, n_views=row["n_views"], source_keys=row["source_keys"],
                                  annotators=row["annotators"], width=row["width"], height=row["height"],
                                  ordinal=row["ordinal"]))
    return samples


def precompute_shard(url: str, config: PrecomputeConfig, vae, text_encoder) -> bool:
    """Write one shard's precomputed twin under config.out; False when it was already there."""
    name = url.rsplit("/", 1)[-1].removesuffix(".tar")
    if files.exists(ShardLayout(config.out).manifest(name)):
        return False
    prefix, task, index = name.rsplit("-", 2)
    table = files.read_table(ShardLayout(config.shards).manifest(name))
    rows = {row["key"]: row for row in table.to_pylist()}
    writer = ShardWriter(config.out, prefix, task, samples_per_shard=NO_LIMIT, max_shard_bytes=NO_LIMIT,
                         next_index=int(index))
    for sample in _shard_samples(url, rows, config, vae, text_encoder):
        writer.add(sample)
    writer.finish()
    return True


def write_index(config: PrecomputeConfig) -> None:
    """OUT/index.json (wids-shard-index-v1) from OUT's manifests, and OUT/build.json."""
    write_shard_index(config.out, "onegen-precomputed")
    record = files.read_json(ShardLayout(config.shards).record()) or {}
    record["precomputed"] = {"from": config.shards, "text_encoder": config.text_encoder, "vae": config.vae,
                             "buckets": [list(b) for b in config.buckets]}
    files.commit_json(ShardLayout(config.out).record(), record)


def run_precompute(config: PrecomputeConfig) -> dict:
    """Precompute every shard of config.shards; returns {"written": n, "skipped": n}."""
    from onegen.model.text_encoder import TextEncoder
    from onegen.model.vae import Vae

    urls = select_shards(config.shards)
    vae, text_encoder = Vae.load(config.vae, config.device), TextEncoder.load(config.text_encoder, config.device)
    done = [precompute_shard(url, config, vae, text_encoder) for url in urls]
    write_index(config)
    return {"written": sum(done), "skipped": len(done) - sum(done)}


def parse_buckets(text: str) -> tuple[tuple[int, int], ...]:
    """"256x256,256x384" -> ((256, 256), (256, 384)) as (H, W)."""
    return tuple(tuple(int(v) for v in part.lower().split("x")) for part in text.split(",") if part)


def _cmd_precompute(args: argparse.Namespace) -> int:
    config = PrecomputeConfig(args.shards, args.out, args.text_encoder, args.vae, parse_buckets(args.buckets),
                              args.device)
    print(f"precompute: {run_precompute(config)}")
    return 0
