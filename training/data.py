"""The shard loader: WebDataset shards -> homogeneous training batches (docs/design.md §6), resumable in O(1).

Streams: one per task family (text2image, image2image, id, multiview; `FAMILIES`), each an endless
`streams.ShardStream` over that family's shards (from `select_shards`): shards drawn with replacement, so
DDP ranks never run dry on uneven shards, then a shuffle buffer. Shards are split by node and worker:
stream s = rank * workers + worker reads shards[s::streams] when there are enough shards, else all of
them with its own seed. Each step draws a family by `task_weights` (families without shards are dropped
with a logged notice), takes its next sample, decodes it and puts it into a pending batch keyed by
(view kinds, H, W); a batch is emitted when it holds `batch_size` samples, so batches are homogeneous in
views and size.

Sample members: imgN.(jpg|png) raw image views or latN.npy latents (float16 (16, h, w)), rayN.npy ray
views (float16 (16, h, w)), txt / json (prompt, task); precomputed shards instead hold every view in one
views.npy (float16 (V, 16, h, w)) with kinds.txt ("latent ray ..."), plus t5.npy ((L, D) float16) +
t5mask.npy ((L,) bool). Views are ordered by index, an image before its ray:
[img0, ray0, img1, ray1, ...]. Raw images are resized (cover) and centre-cropped to the bucket nearest in
aspect ratio to view 0; rays are resampled to the latent grid when their size differs (an approximation).

Roles: "generate" marks each sample's targets, which the trainer uses only when it holds the other
views clean (`clean_condition_prob`; by default every view is noised and in the loss). 1 view:
generated; 2 image views: image from condition or, with `reverse_prob`, condition from image; faceid /
>2 image views: view 0 from the references; multiview: with `pose_prob` all rays generated from clean
images (pose estimation), else a random non-empty subset of images from the others, rays clean.
Caption dropout (CFG) clears a row's mask.

Held-out samples (`holdout` f, the run's --val-fraction): a sample whose key hashes below f (`held_out`) is
skipped by every stream, before decoding, so training never sees the validation samples; the skip is a
function of the key alone, so it changes neither resume nor the split by node.

Batch dict: "views" list of V tensors, (B, 3, H, W) in [-1, 1] for "pixels" views or (B, 16, h, w) for
"latent"/"ray" views; "kinds" tuple of V kinds; "generate" (B, V) bool; "keep_caption" (B,) bool;
"prompt" list[str]; "task"/"family"/"key" list[str]; with precomputed text "t5" (B, L, D) float32 and
"t5mask" (B, L) bool (padded to the longest).

Resume (`Loader.state_dict()`, restored by `make_loader(config, state)`): per stream (one per DataLoader
worker) the state after the last batch the trainer took from it: the family-mixing RNG state, each
family's `ShardStream.state()` (shard order RNG, shard and byte offset, shuffle RNG, buffered samples as
references) and the pending batches as (family, sample reference, roles, caption kept); plus which stream
gives the next batch (the DataLoader takes workers round-robin). Restoring re-reads only the buffered and
pending samples by seeking, so resuming at step N costs the same for every N.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
import re
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from onegen.core.tasks import FAMILIES as TASK_FAMILIES
from onegen.core.tasks import ID
from onegen.core.tasks import family_of as task_family
from onegen.manifests.query import read_manifests, select_shards
from onegen.training.streams import ShardStream
from onegen.training.train_config import DataConfig

log = logging.getLogger(__name__)

FAMILIES: dict[str, tuple[str, ...]] = TASK_FAMILIES  # family -> task tokens, from the task table
VIEW_MEMBER = re.compile(r"^(img|lat|ray)(\d+)\.(jpg|jpeg|png|npy)$")


family_of = task_family  # token -> family (None for a token without a row in core/tasks.py)
_MAX_HELD_OUT_RUN = 10_000  # consecutive held-out samples after which a family stream is taken to hold no other


def held_out(key: str, fraction: float) -> bool:
    """Whether a sample key is in the held-out (validation) fraction: the first 8 bytes of sha256(key) as a
    number in [0, 1) below `fraction`. Stable across runs, ranks and workers (no seed)."""
    if fraction <= 0:
        return False
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < fraction


def family_shards(config: DataConfig) -> dict[str, list[str]]:
    """Shard paths per family with a positive weight; families without shards are dropped (logged)."""
    tasks = set(read_manifests(config.shards, ["task"]).to_pydict().get("task", []))
    for task in sorted(t for t in tasks if family_of(t) is None):
        log.warning("task %r belongs to no family; its shards are not used", task)
    chosen = {}
    for family, weight in config.task_weights:
        if family not in FAMILIES:
            raise KeyError(f"unknown task family {family!r}; known: {list(FAMILIES)}")
        urls = select_shards(config.shards, tasks=list(FAMILIES[family])) if weight > 0 else []
        if urls:
            chosen[family] = urls
        elif weight > 0:
            log.warning("task family %r has no shards under %s; dropped from the mix", family, config.shards)
    if not chosen:
        raise ValueError(f"no shards of any weighted task family under {config.shards}")
    return chosen


def nearest_bucket(width: int, height: int, buckets: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """The (H, W) bucket closest in log aspect ratio to a width x height image."""
    ratio = np.log(width / height)
    return min(buckets, key=lambda hw: abs(np.log(hw[1] / hw[0]) - ratio))


def fit_to_bucket(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """Resize to cover (H, W), centre-crop; -> (3, H, W) float32 in [-1, 1]."""
    H, W = size
    scale = max(H / image.height, W / image.width)
    new = (max(W, round(image.width * scale)), max(H, round(image.height * scale)))
    image = image.convert("RGB").resize(new, Image.BICUBIC)
    left, top = (new[0] - W) // 2, (new[1] - H) // 2
    pixels = np.asarray(image.crop((left, top, left + W, top + H)), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 127.5 - 1  # (3, H, W)


def view_members(sample: dict) -> list[tuple[int, str, str]]:
    """(index, prefix, member) of the view members, in view order (an image before its ray)."""
    found = [(int(m[2]), m[1] == "ray", m[1], name) for name in sample if (m := VIEW_MEMBER.match(name))]
    return [(index, prefix, name) for index, _, prefix, name in sorted(found)]


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}  # header bytes -> (dtype, shape, data offset)


def _npy(data: bytes) -> np.ndarray:
    """A .npy member as a read-only array; headers seen before are not parsed again (np.load parses each one
    with a Python literal eval, a large part of decoding small arrays). Anything but a plain C-order v1/v2
    file goes through np.load."""
    if data[:6] == b"\x93NUMPY" and data[6] in (1, 2):
        start = 10 if data[6] == 1 else 12
        length = int.from_bytes(data[8:start], "little")
        header = data[start:start + length]
        if header not in _NPY_HEADERS:
            meta = np.lib.format.read_array_header_1_0(io.BytesIO(data[8:start + length])) if data[6] == 1 else \
                np.lib.format.read_array_header_2_0(io.BytesIO(data[8:start + length]))
            shape, fortran, dtype = meta
            if fortran or dtype.hasobject:
                return np.load(io.BytesIO(data), allow_pickle=False)
            _NPY_HEADERS[header] = (dtype, shape, start + length)
        dtype, shape, offset = _NPY_HEADERS[header]
        return np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_views(sample: dict, buckets: tuple[tuple[int, int], ...]) -> tuple[list[torch.Tensor], tuple[str, ...], tuple[int, int]]:
    """Views of one raw wds sample -> (tensors, kinds, pixel (H, W)); see the module docstring."""
    if "views.npy" in sample:  # precomputed: every view packed in one array
        packed = _npy(sample["views.npy"])  # (V, 16, h, w)
        kinds = tuple(sample["kinds.txt"].decode().split())
        if len(kinds) != packed.shape[0]:
            raise ValueError(f"{sample['__key__']}: kinds.txt names {len(kinds)} views, views.npy holds {packed.shape[0]}")
        views = [torch.from_numpy(view.astype(np.float32)) for view in packed]  # V x (16, h, w)
        return views, kinds, (8 * packed.shape[2], 8 * packed.shape[3])
    members = view_members(sample)
    first = next(name for _, prefix, name in members if prefix != "ray")
    if first.endswith(".npy"):
        h, w = _npy(sample[first]).shape[-2:]
        size = (8 * h, 8 * w)
    else:
        image = Image.open(io.BytesIO(sample[first]))
        size = nearest_bucket(image.width, image.height, buckets)
    views, kinds = [], []
    for _, prefix, name in members:
        if prefix == "img":
            views.append(fit_to_bucket(Image.open(io.BytesIO(sample[name])), size))  # (3, H, W)
            kinds.append("pixels")
            continue
        array = torch.from_numpy(_npy(sample[name]).astype(np.float32))  # (16, h, w)
        if array.shape[-2:] != (size[0] // 8, size[1] // 8):
            array = F.interpolate(array[None], size=(size[0] // 8, size[1] // 8), mode="bilinear")[0]
        views.append(array)
        kinds.append("latent" if prefix == "lat" else "ray")
    return views, tuple(kinds), size


def choose_generated(kinds: tuple[str, ...], family: str, rng: random.Random, reverse_prob: float,
                     pose_prob: float) -> list[bool]:
    """Which views are generated (True) vs held clean as conditions; see the module docstring."""
    images = [i for i, k in enumerate(kinds) if k != "ray"]
    rays = [i for i, k in enumerate(kinds) if k == "ray"]
    generate = [False] * len(kinds)
    if rays:
        if len(images) < 2 or rng.random() < pose_prob:
            targets = rays
        else:
            targets = rng.sample(images, rng.randint(1, len(images) - 1))
    elif len(images) == 2 and family != ID:
        targets = [images[1] if rng.random() < reverse_prob else images[0]]
    else:
        targets = [images[0]]
    for i in targets:
        generate[i] = True
    return generate


def prepare(sample: dict, family: str, config: DataConfig, rng: random.Random,
            roles: tuple[list[bool], bool] | None = None) -> dict:
    """A raw wds sample -> a decoded training item (one row of a batch).

    The roles (generate flags, caption kept) are drawn from `rng`, or given as `roles` (a restore)."""
    meta = json.loads(sample["json"])
    views, kinds, size = decode_views(sample, config.buckets)
    if roles is None:
        roles = (choose_generated(kinds, family, rng, config.reverse_prob, config.pose_prob),
                 rng.random() >= config.caption_dropout)
    item = {"key": sample["__key__"], "task": meta["task"], "family": family, "views": views, "kinds": kinds,
            "size": size, "prompt": meta.get("prompt") or sample.get("txt", b"").decode("utf-8"),
            "generate": list(roles[0]), "keep_caption": bool(roles[1])}
    if "t5.npy" in sample:
        item["t5"] = torch.from_numpy(_npy(sample["t5.npy"]).astype(np.float32))  # (L, D)
        item["t5mask"] = torch.from_numpy(_npy(sample["t5mask.npy"]).astype(bool))  # (L,)
    return item


def collate(items: list[dict]) -> dict:
    """Stack homogeneous items (same kinds and size) into the batch dict of the module docstring, except that
    "generate" and "keep_caption" stay nested lists: `Loader` makes them tensors in the training process
    (from a DataLoader worker every tensor travels in its own shared-memory segment, which costs more than
    these tensors are worth)."""
    batch = {"views": [torch.stack([it["views"][v] for it in items]) for v in range(len(items[0]["kinds"]))],
             "kinds": items[0]["kinds"], "generate": [it["generate"] for it in items],
             "keep_caption": [it["keep_caption"] for it in items]}
    for name in ("prompt", "task", "family", "key"):
        batch[name] = [it[name] for it in items]
    if all("t5" in it for it in items):
        length = max(it["t5"].shape[0] for it in items)
        if all(it["t5"].shape[0] == length for it in items):  # no padding needed: one stack, no zero fill
            batch["t5"] = torch.stack([it["t5"] for it in items])  # (B, L, D)
            batch["t5mask"] = torch.stack([it["t5mask"] for it in items])  # (B, L)
            return batch
        states = torch.zeros(len(items), length, items[0]["t5"].shape[1])  # (B, L, D): one copy, padded with 0
        masks = torch.zeros(len(items), length, dtype=torch.bool)  # (B, L)
        for row, it in enumerate(items):
            states[row, : it["t5"].shape[0]] = it["t5"]
            masks[row, : it["t5mask"].shape[0]] = it["t5mask"]
        batch["t5"], batch["t5mask"] = states, masks
    return batch


def _as_is(batch: dict) -> dict:
    """DataLoader collate_fn for ready batches: skips default_convert's walk over the loader state."""
    return batch


def _stream_id(offset: int = 0) -> tuple[int, int, int]:
    """(global stream id, number of streams, local stream id) over DDP ranks x DataLoader workers; worker w
    runs local stream (w + offset) % workers, so a restored loader's first batch is the stream due next."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    local = (worker + offset) % workers
    return rank * workers + local, world * workers, local


class ShardBatches(torch.utils.data.IterableDataset):
    """Endless homogeneous batches (see the module docstring); deterministic given config.seed.

    Every batch carries "loader_state": {"stream": local stream id, "state": that stream's state after
    it}; `Loader` takes it off. `states` (local stream id -> state) resumes streams; `offset` rotates
    workers onto streams (`_stream_id`)."""

    def __init__(self, config: DataConfig, offset: int = 0, states: dict[int, dict] | None = None):
        super().__init__()
        self.config, self.offset, self.states = config, offset, states or {}
        self.shards = family_shards(config)
        weights = dict(config.task_weights)
        self.families = sorted(self.shards)
        self.weights = [weights[f] for f in self.families]

    def _family_stream(self, family: str, stream: int, streams: int) -> ShardStream:
        urls = self.shards[family]
        subset = urls[stream::streams] if len(urls) >= streams else urls
        return ShardStream(subset, self.config.seed * 1_000_003 + stream, self.config.shuffle_buffer)

    def __iter__(self) -> Iterator[dict]:
        stream, streams, local = _stream_id(self.offset)
        rng = random.Random(self.config.seed * 7_919 + stream)
        sources = {f: self._family_stream(f, stream, streams) for f in self.families}
        pending: dict[tuple, list[tuple[dict, tuple]]] = {}  # group -> [(item, (family, ref, roles))]
        if local in self.states:
            rng = self._restore(self.states[local], sources, pending)
        while True:
            family = rng.choices(self.families, self.weights)[0]
            raw = self._next_kept(sources[family], family)
            item = prepare(raw.members, family, self.config, rng)
            group = pending.setdefault((item["kinds"], item["size"]), [])
            group.append((item, (family, list(raw.ref), [item["generate"], item["keep_caption"]])))
            if len(group) == self.config.batch_size:
                batch = collate([entry[0] for entry in pending.pop((item["kinds"], item["size"]))])
                state = {"mix_rng": rng.getstate(), "streams": {f: s.state() for f, s in sources.items()},
                         "pending": [entry[1] for group in pending.values() for entry in group]}
                batch["loader_state"] = {"stream": local, "state": state,
                                         "reads": sum(s.reads for s in sources.values())}
                yield batch

    def _next_kept(self, source: ShardStream, family: str):
        """The stream's next sample that is not held out (`held_out`)."""
        for _ in range(_MAX_HELD_OUT_RUN):
            raw = next(source)
            if not held_out(raw.members["__key__"], self.config.holdout):
                return raw
        raise ValueError(f"family {family!r}: {_MAX_HELD_OUT_RUN} samples in a row are held out for validation "
                         f"(holdout {self.config.holdout}); its shards hold too few samples to train on")

    def _restore(self, state: dict, sources: dict[str, ShardStream], pending: dict) -> random.Random:
        """Put the streams, pending batches and mixing RNG back as `state` recorded them."""
        if set(state["streams"]) != set(sources):
            raise ValueError(f"loader state has families {sorted(state['streams'])}, this config {sorted(sources)}")
        for family, source in sources.items():
            source.load_state(state["streams"][family])
        for family, ref, roles in state["pending"]:
            item = prepare(sources[family].fetch(tuple(ref)).members, family, self.config, random.Random(0),
                           roles=(roles[0], roles[1]))
            pending.setdefault((item["kinds"], item["size"]), []).append((item, (family, ref, roles)))
        rng = random.Random()
        version, internal, gauss = state["mix_rng"]
        rng.setstate((version, tuple(internal), gauss))
        return rng


class Loader:
    """Endless batch iterator over a DataLoader of `ShardBatches`, with a resumable `state_dict()`."""

    def __init__(self, config: DataConfig, state: dict | None = None):
        self.workers = max(1, config.num_workers)
        world = int(os.environ.get("WORLD_SIZE", 1))
        if state is not None and (state["workers"], state["world"]) != (self.workers, world):
            raise ValueError(f"loader state of {state['workers']} worker(s) x {state['world']} rank(s) cannot resume "
                             f"on {self.workers} worker(s) x {world} rank(s)")
        self.next_stream = state["next"] if state else 0
        self.streams: dict[int, dict] = {int(k): v for k, v in (state or {}).get("streams", {}).items()}
        self.reads: dict[int, int] = {}
        dataset = ShardBatches(config, self.next_stream, dict(self.streams))
        self._batches = iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=config.num_workers,
                                                         collate_fn=_as_is, persistent_workers=config.num_workers > 0))

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> dict:
        batch = next(self._batches)
        info = batch.pop("loader_state")
        batch["generate"] = torch.tensor(batch["generate"], dtype=torch.bool)  # (B, V)
        batch["keep_caption"] = torch.tensor(batch["keep_caption"], dtype=torch.bool)  # (B,)
        if info["stream"] != self.next_stream:
            raise RuntimeError(f"batch from loader stream {info['stream']}, expected {self.next_stream}")
        self.streams[info["stream"]], self.reads[info["stream"]] = info["state"], info["reads"]
        self.next_stream = (self.next_stream + 1) % self.workers
        return batch

    @property
    def samples_read(self) -> int:
        """Samples read from tars so far by the streams of this loader (restores included)."""
        return sum(self.reads.values())

    def state_dict(self) -> dict:
        """Plain-Python state (see the module docstring); `make_loader(config, state)` resumes it."""
        return {"version": 1, "workers": self.workers, "world": int(os.environ.get("WORLD_SIZE", 1)),
                "next": self.next_stream, "streams": {str(k): v for k, v in sorted(self.streams.items())}}


def make_loader(config: DataConfig, state: dict | None = None) -> Loader:
    """Endless batch iterator; `state` (from `Loader.state_dict()`) resumes exactly where it was taken."""
    return Loader(config, state)


def batch_latents(batch: dict, vae=None) -> torch.Tensor:
    """(B, 16, V, h, w) float32 latents; "pixels" views are encoded with `vae` (a model.vae.Vae)."""
    latents = []
    for view, kind in zip(batch["views"], batch["kinds"], strict=True):
        if kind == "pixels":
            if vae is None:
                raise ValueError("batch holds raw images but no VAE was given (precompute latents or pass --vae)")
            view = vae.encode(view)  # (B, 16, h, w)
        latents.append(view.float())
    return torch.stack(latents, dim=2)  # (B, 16, V, h, w)


def batch_caption(batch: dict, text_encoder=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(caption (B, L, D) float32, mask (B, L) bool): precomputed t5 or encoded prompts; dropped rows
    (caption dropout) get an all-False mask, i.e. no caption at all."""
    if "t5" in batch:
        states, mask = batch["t5"], batch["t5mask"]
    else:
        if text_encoder is None:
            raise ValueError("batch holds raw prompts but no text encoder was given (precompute or pass --text-encoder)")
        states, mask = text_encoder.encode(batch["prompt"])
    keep = batch["keep_caption"].to(mask.device)
    return states.float(), mask & keep[:, None]  # (B, L, D), (B, L)
