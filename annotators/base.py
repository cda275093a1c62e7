"""The annotator contract (docs/design.md §3): a dataclass whose fields are its whole configuration.

An annotator is called on a dict-of-columns batch of catalog rows and returns a dict-of-columns
batch with exactly one output row per input row, in order. It never imports Ray: the runner in
`onegen.pipelines.jobs.annotate` maps it onto Ray Data; tests call it directly.

Input batch columns (catalog, docs/design.md §2): key, kind, image (bytes or None), caption_original,
meta (JSON string), width, height, subject, view_images (list of bytes or None), plus, for each
name in `requires` (and in `optional_requires` whose store exists), that annotator's stored columns
as "<name>.<column>".

Output columns, one value per input row:
- the common columns of `COMMON_FIELDS` (key, status, error, model_id, model_revision,
  annotator_version, onegen_version);
- the annotator's own columns, `output_schema` (null where the row did not produce them).

status is "ok", "error" (exception text in `error`), "skipped" (row kind not handled), or a
reason an annotator defines (e.g. "no_person"); every input row gets a row, never dropped.

Only data problems become rows (docs/design.md §2, failures): a `RowError`, an image that does not decode, or an
exception of a type the annotator lists in `data_errors` (isolated by halving the batch down to the row
that raises it). Anything else raised by `annotate` (a bug, a CUDA error, missing weights) propagates
and fails the unit. An out-of-memory error halves the batch and retries; the annotator then keeps the
batch size that worked for the rest of its life (logged once); out of memory on one row propagates.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen import __version__ as ONEGEN_VERSION
from onegen.core.image_codec import decode_rgb

COMMON_FIELDS = [
    pa.field("key", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("model_id", pa.string()),
    pa.field("model_revision", pa.string()),
    pa.field("annotator_version", pa.string()),
    pa.field("onegen_version", pa.string()),
]


@dataclass(frozen=True)
class ConditionSpec:
    """How the shard builder turns one annotator output into a two-view sample (docs/design.md §4).

    View 0 is the catalog image, view 1 the bytes in `column` (encoded as `ext`). The prompt is
    `[[<task>]] ` + the tags in `tags_column` (when set, e.g. semantic-map colour tags) + the caption.
    """

    task: str  # task token without brackets, e.g. "canny2image"
    column: str  # binary output column holding view 1
    ext: str  # "png" | "jpg"
    tags_column: str | None = None


NOT_FOR_THIS_SOURCE = "not for this source"  # the error of rows an annotator's `sources` leaves out


class RowError(Exception):
    """A data problem with one row: recorded as (status, reason), never raised past the annotator."""

    def __init__(self, reason: str, status: str = "error"):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def key_rng(key: str, salt: str) -> np.random.Generator:
    """A generator seeded by (salt, key): the same key gives the same draws on every rerun."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA (or CPU allocator) out-of-memory errors, which halve the batch and retry."""
    try:
        import torch

        if isinstance(error, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # torch is a core dependency; stay importable without it anyway
        pass
    return isinstance(error, MemoryError) or "out of memory" in str(error).lower()


@dataclass
class Annotator:
    """Base class. Subclasses set the ClassVars and implement `annotate_one` or `annotate`.

    Resource fields are read by the runner: `num_gpus`/`num_cpus` per actor, `batch_size` rows per
    call, `concurrency` actors. Subclasses that load weights do it in `setup()` (once per actor) and
    report what they loaded through `model_id()` / `model_revision()`.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema([])
    requires: ClassVar[tuple[str, ...]] = ()
    optional_requires: ClassVar[tuple[str, ...]] = ()  # joined when that store exists, else absent
    kinds: ClassVar[tuple[str, ...]] = ("image",)
    decode_images: ClassVar[bool] = True
    conditions: ClassVar[tuple[ConditionSpec, ...]] = ()
    data_errors: ClassVar[tuple[type[Exception], ...]] = ()  # exception types that mean "this row is bad"

    num_gpus: float = 0.0
    num_cpus: float = 0.25
    batch_size: int = 16
    concurrency: int = 1
    # per-source policy (pipelines/samples/policy.py): the catalog sources whose rows this annotator runs on
    # (empty: every source); the others' rows get status "skipped", error "not for this source"
    sources: tuple[str, ...] = ()
    # the store's name when one annotator runs twice with other settings (a LLaVA-NeXT and a Molmo `caption`,
    # each for its own sources): the outputs go to `<store>@<version>`, which a build policy then names
    store: str = ""

    # --- to override -------------------------------------------------------------------------
    def setup(self) -> None:
        """Load weights once per worker. Missing weights raise (see annotators.loading)."""

    def checkpoints(self) -> list[tuple[str, str]]:
        """(what, model id or path) of every checkpoint `setup()` will resolve (none by default).

        The runner checks them on the driver before it starts any actor (`preflight`), so missing
        weights stop a local job with one line instead of a dead actor's traceback.
        """
        return []

    def preflight(self) -> None:
        """Raise MissingCheckpointError now if any checkpoint of `checkpoints()` is not on this machine."""
        from onegen.core.weights import resolve_checkpoint

        for what, model_id in self.checkpoints():
            resolve_checkpoint(model_id, what)

    def model_id(self) -> str:
        return ""

    def model_revision(self) -> str:
        return ""

    def annotate_one(self, row: dict[str, Any]) -> dict[str, Any]:
        """Annotate one decoded row; raise RowError for a data problem."""
        raise NotImplementedError(f"{type(self).__name__} implements neither annotate nor annotate_one")

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        """Annotate a list of decoded rows; one result (outputs dict or RowError) per row, in order.

        Batched model annotators override this. Raising RowError or one of `data_errors` (rather than
        returning a RowError) makes the caller halve the batch to find the row; any other exception
        fails the unit (see the module docstring).
        """
        results: list[dict[str, Any] | RowError] = []
        for row in rows:
            try:
                results.append(self.annotate_one(row))
            except RowError as error:
                results.append(error)
        return results

    # --- the contract ----------------------------------------------------------------------------
    @property
    def store_name(self) -> str:
        """Folder name of this annotator's outputs: `<name>@<version>` (`<store>@<version>` when `store` is set)."""
        return f"{self.store or self.name}@{self.version}"

    def schema(self) -> pa.Schema:
        """Arrow schema of the rows this annotator produces (common fields + its outputs)."""
        return pa.schema(COMMON_FIELDS + list(self.output_schema))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        keys, kinds, rows = decode_batch(batch, self.decode_images, set(self.kinds))
        return self.annotate_rows(keys, kinds, rows, batch.get("source"))

    def runs_on(self, source: str | None) -> bool:
        """True when rows of catalog source `source` are this annotator's to annotate (its `sources`)."""
        return not self.sources or source in self.sources

    def annotate_rows(self, keys: list[str], kinds: list[str], rows: list[dict[str, Any] | RowError | None],
                      sources: list[str] | None = None) -> dict[str, list]:
        """Output columns for rows already decoded by `decode_batch` (shared by annotators run together);
        `sources`: each row's catalog source (the batch's `source` column), checked against `self.sources`."""
        results: list[dict[str, Any] | RowError | None] = [None] * len(keys)
        todo = []
        if self.sources and sources is None:
            raise ValueError(f"{self.name} runs on sources {list(self.sources)} but its batch has no `source` column")
        for i, (kind, row) in enumerate(zip(kinds, rows, strict=True)):
            if self.sources and not self.runs_on(sources[i]):
                results[i] = RowError(NOT_FOR_THIS_SOURCE, status="skipped")
            elif kind not in self.kinds:
                results[i] = RowError(f"{self.name} does not annotate rows of kind {kind!r}", status="skipped")
            elif isinstance(row, RowError):
                results[i] = row
            else:
                todo.append(i)
        own_rows = [dict(rows[i]) for i in todo]  # shallow copies: annotators never see each other's edits
        for i, result in zip(todo, self._annotate_isolating(own_rows), strict=True):
            results[i] = result
        return self._to_columns(keys, results)

    # --- internals -------------------------------------------------------------------------------
    def _annotate_isolating(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        """Call `annotate` in batches of at most the size that last worked; isolate data errors.

        A data error (RowError, `data_errors`) halves the batch down to the row that raises it, which is
        recorded with status "error". Out of memory halves the batch for good (`batch_limit`); at one
        row it propagates, as does every other exception: that is not bad input.
        """
        if not rows:
            return []
        limit = self.batch_limit or len(rows)
        if len(rows) > limit:
            return [r for start in range(0, len(rows), limit)
                    for r in self._annotate_isolating(rows[start:start + limit])]
        try:
            results = self.annotate(rows)
        except (RowError, *self.data_errors) as error:
            if len(rows) == 1:
                return [error if isinstance(error, RowError) else RowError(f"{type(error).__name__}: {error}")]
            half = len(rows) // 2
            return self._annotate_isolating(rows[:half]) + self._annotate_isolating(rows[half:])
        except Exception as error:
            if not is_out_of_memory(error) or len(rows) == 1:
                raise
            _empty_cuda_cache()
            self.batch_limit = len(rows) // 2
            logging.getLogger(__name__).warning("%s: out of memory at batch size %d; using %d from now on",
                                                self.name, len(rows), self.batch_limit)
            return self._annotate_isolating(rows)
        if len(results) != len(rows):
            raise RuntimeError(f"{type(self).__name__}.annotate returned {len(results)} results for {len(rows)} rows")
        return results

    @property
    def batch_limit(self) -> int | None:
        """Rows per `annotate` call that fit in memory, once an out-of-memory error has shown it."""
        return self.__dict__.get("_batch_limit")

    @batch_limit.setter
    def batch_limit(self, value: int) -> None:
        self.__dict__["_batch_limit"] = value

    def _to_columns(self, keys: list[str], results: list) -> dict[str, list]:
        output_names = [field.name for field in self.output_schema]
        columns: dict[str, list] = {field.name: [] for field in COMMON_FIELDS}
        columns.update({name: [] for name in output_names})
        model_id, revision = self.model_id(), self.model_revision()
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, RowError):
                status, error, outputs = result.status, result.reason, {}
            else:
                status, error, outputs = result.pop("status", "ok"), result.pop("error", None), result
                unknown = set(outputs) - set(output_names)
                if unknown:
                    raise KeyError(f"{type(self).__name__} produced columns outside its schema: {sorted(unknown)}")
            columns["key"].append(key)
            columns["status"].append(status)
            columns["error"].append(error)
            columns["model_id"].append(model_id)
            columns["model_revision"].append(revision)
            columns["annotator_version"].append(self.version)
            columns["onegen_version"].append(ONEGEN_VERSION)
            for name in output_names:
                columns[name].append(outputs.get(name))
        return columns


def decode_batch(batch: dict[str, Any], decode_images: bool, kinds: set[str]
                 ) -> tuple[list[str], list[str], list[dict[str, Any] | RowError | None]]:
    """(keys, kinds, rows) of a dict-of-columns batch: rows of `kinds` parsed (meta JSON) and, when
    `decode_images`, their images decoded to RGB arrays (a RowError where that fails); other rows None."""
    keys = [str(k) for k in batch["key"]]
    row_kinds: list[str] = []
    rows: list[dict[str, Any] | RowError | None] = []
    for i in range(len(keys)):
        row = {column: values[i] for column, values in batch.items()}
        row_kinds.append(row.get("kind") or "image")
        if row_kinds[-1] not in kinds:
            rows.append(None)
            continue
        try:
            rows.append(_prepare(row, decode_images))
        except RowError as error:
            rows.append(error)
    return keys, row_kinds, rows


def _prepare(row: dict[str, Any], decode_images: bool) -> dict[str, Any]:
    if row.get("image_error"):  # a by-reference catalog image whose source changed (pipelines/catalog_images)
        status, _, detail = row["image_error"].partition(": ")
        raise RowError(detail, status=status)
    row["meta"] = row_meta(row)
    if not decode_images:
        return row
    if row.get("image") is not None:
        row["image"] = decode_or_reject(row["image"])
    if row.get("view_images") is not None:
        row["view_images"] = [decode_or_reject(b) for b in row["view_images"]]
    return row


def row_meta(row: dict[str, Any]) -> dict[str, Any]:
    """The row's meta as a dict (decoded rows carry a dict, raw catalog rows a JSON string)."""
    meta = row.get("meta")
    return json.loads(meta) if isinstance(meta, str) and meta else (meta or {})


def decode_or_reject(data: bytes) -> np.ndarray:
    """Encoded image bytes as (H, W, 3) uint8 RGB; a decoder failure is the row's data problem (RowError)."""
    try:
        return decode_rgb(data)
    except Exception as error:  # noqa: BLE001 - any decoder failure is this row's data problem
        raise RowError(f"decode_error: {type(error).__name__}: {error}") from error


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
