"""Only data problems become rows: a bug or an out-of-memory error on one row propagates (the runner then
fails the unit); out of memory halves the batch and the annotator keeps the size that worked."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pytest
import torch

from onegen.annotators.base import Annotator, RowError
from tests.conftest import image_batch


@dataclass
class Buggy(Annotator):
    name: ClassVar[str] = "buggy"
    output_schema: ClassVar[pa.Schema] = pa.schema([("value", pa.float32())])

    def annotate_one(self, row):
        return {"value": row["image"].mean() + "one"}  # TypeError: a bug, on every row


@dataclass
class NeedsSmallBatches(Annotator):
    """Raises CUDA's out-of-memory error for batches above `fits` rows; records every batch size tried."""

    name: ClassVar[str] = "oom"
    output_schema: ClassVar[pa.Schema] = pa.schema([("value", pa.float32())])
    fits: int = 2
    sizes: list = None

    def annotate(self, rows):
        self.sizes = (self.sizes or []) + [len(rows)]
        if len(rows) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [{"value": float(r["image"].mean())} for r in rows]


@dataclass
class DataErrors(Annotator):
    name: ClassVar[str] = "picky"
    output_schema: ClassVar[pa.Schema] = pa.schema([("value", pa.float32())])
    data_errors: ClassVar[tuple[type[Exception], ...]] = (ZeroDivisionError,)

    def annotate_one(self, row):
        if row["image"].mean() < 1:
            raise ZeroDivisionError("a black image has no contrast")
        if row["image"].mean() > 254:
            raise RowError("saturated", status="saturated")
        return {"value": 1.0 / row["image"].mean()}


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(20, 200, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_a_bug_is_not_bad_input():
    with pytest.raises(TypeError):
        Buggy()(image_batch(_images(3)))


def test_declared_data_errors_and_row_errors_are_recorded():
    images = _images(2) + [np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)]
    out = DataErrors(batch_size=4)(image_batch(images))
    assert out["status"] == ["ok", "ok", "error", "saturated"]
    assert out["error"][2] == "ZeroDivisionError: a black image has no contrast" and out["error"][3] == "saturated"


def test_out_of_memory_halves_once_and_keeps_the_size_that_worked():
    annotator = NeedsSmallBatches(fits=2)
    first = annotator(image_batch(_images(8)))
    assert first["status"] == ["ok"] * 8 and annotator.batch_limit == 2
    assert annotator.sizes[:3] == [8, 4, 2]  # halved twice, then 2 at a time
    annotator.sizes = []
    second = annotator(image_batch(_images(6)))
    assert second["status"] == ["ok"] * 6 and annotator.sizes == [2, 2, 2]  # paid once, not on every batch


def test_out_of_memory_on_one_row_fails():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        NeedsSmallBatches(fits=0)(image_batch(_images(4)))
