"""Seekable sample streams over WebDataset shards, with a state that resumes them in O(1).

A `ShardStream` is one endless stream of raw samples of one task family: shards drawn with replacement
by a seeded `random.Random` (as `wds.ResampledShards(deterministic=True)` does), each read from start
to end as a plain tar stream, then a shuffle buffer (webdataset's `shuffle`: fill to `buffer_size`,
yield a random slot, put the last one there). Samples group tar members by webdataset's key rule
(`base_plus_ext`: the key is the name up to the first dot), and a sample is addressed by a `SampleRef`:
(index of its shard in the stream's url list, byte offset of its first member's tar header).

State (`ShardStream.state()`, plain Python values, JSON- and `torch.load(weights_only=True)`-safe):
    {"shard_rng": random state, "shuffle_rng": random state,
     "position": [shard index, byte offset of the next unread sample] or None (draw a new shard),
     "buffer": [[shard index, offset], ...] the shuffle buffer's samples in slot order}
`load_state` puts the RNGs back, re-reads the buffered samples by seeking to their offsets and opens
the current shard at its offset: a restore reads `buffer_size` samples whatever the position, never
the stream since its start.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
from webdataset.tariterators import base_plus_ext

SampleRef = tuple[int, int]  # (shard index in the stream's urls, byte offset of the sample's first header)


@dataclass
class RawSample:
    """One sample as read from its tar: `members` maps extension -> bytes, plus "__key__"/"__url__"."""

    ref: SampleRef
    members: dict


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


def read_samples(url: str, index: int, offset: int = 0) -> Iterator[tuple[RawSample, int | None]]:
    """Samples of one tar from byte `offset` (a header boundary) to its end.

    Yields (sample, offset of the next sample or None at the end of the tar). Members whose name has no
    extension are skipped, as webdataset does; a tar member that is not a regular file is skipped too.
    """
    with fsspec.open(url, "rb") as handle:
        handle.seek(offset)
        current: dict | None = None
        start = offset
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = base_plus_ext(info.name)
                if key is None:
                    continue
                if current is not None and key != current["__key__"]:
                    yield RawSample((index, start), current), offset + info.offset
                    current = None
                if current is None:
                    current, start = {"__key__": key, "__url__": url}, offset + info.offset
                current[ext.lower()] = tar.extractfile(info).read()
        if current is not None:
            yield RawSample((index, start), current), None


def read_one(url: str, ref: SampleRef) -> RawSample:
    """The sample at `ref` (random access: one seek, then only its own members are read)."""
    for sample, _ in read_samples(url, ref[0], ref[1]):
        return sample
    raise ValueError(f"no sample at byte {ref[1]} of {url}")


class ShardStream:
    """Endless shuffled samples over `urls` (see the module docstring); deterministic given `seed`."""

    def __init__(self, urls: list[str], seed: int, buffer_size: int):
        if not urls:
            raise ValueError("a shard stream needs at least one shard")
        self.urls, self.buffer_size = urls, max(1, buffer_size)
        self.shard_rng, self.shuffle_rng = random.Random(seed), random.Random(seed + 1)
        self.position: SampleRef | None = None  # next unread sample of the current shard
        self.buffer: list[RawSample] = []
        self.reads = 0  # samples read from tars by this object (restores included)
        self._reader: Iterator[tuple[RawSample, int | None]] | None = None

    def _read(self) -> RawSample:
        """The next sample in shard order, drawing a new shard at the end of one."""
        while True:
            if self.position is None:
                index = self.shard_rng.randrange(len(self.urls))
                self.position, self._reader = (index, 0), None
            if self._reader is None:
                self._reader = read_samples(self.urls[self.position[0]], *self.position)
            found = next(self._reader, None)
            if found is None:  # an empty shard (or one ending right at `position`)
                self.position, self._reader = None, None
                continue
            sample, following = found
            self.reads += 1
            self.position = None if following is None else (self.position[0], following)
            if following is None:
                self._reader = None
            return sample

    def __next__(self) -> RawSample:
        while len(self.buffer) < self.buffer_size:
            self.buffer.append(self._read())
        slot = self.shuffle_rng.randrange(len(self.buffer))
        chosen = self.buffer[slot]
        self.buffer[slot] = self.buffer[-1]
        self.buffer.pop()
        return chosen

    def __iter__(self) -> ShardStream:
        return self

    def state(self) -> dict:
        return {"shard_rng": _rng_state(self.shard_rng), "shuffle_rng": _rng_state(self.shuffle_rng),
                "position": None if self.position is None else list(self.position),
                "buffer": [list(sample.ref) for sample in self.buffer]}

    def load_state(self, state: dict) -> None:
        """Resume where `state()` was taken: RNGs, shard position, and the buffer re-read by seeking."""
        _set_rng_state(self.shard_rng, state["shard_rng"])
        _set_rng_state(self.shuffle_rng, state["shuffle_rng"])
        self.position = None if state["position"] is None else tuple(state["position"])
        self._reader = None
        self.buffer = [self.fetch(tuple(ref)) for ref in state["buffer"]]

    def fetch(self, ref: SampleRef) -> RawSample:
        """Re-read one sample by reference (counted in `reads`)."""
        self.reads += 1
        return read_one(self.urls[ref[0]], ref)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of (name, data) members in order (for tests and benchmarks)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
