"""Build-time filters on stored scores, `--filter 'aesthetic>=5'` (issue 13). Pure I/O: no model runs.

A filter is `<name><op><threshold>`, op one of >=, >, <=, < (spaces allowed), name one of `FILTER_COLUMNS`,
an explicit `<store>.<column>` of any annotation store, or `source.<column>`: a table source's own column
that ingest kept in the catalog (`source.punsafe<0.1`, `source.AESTHETIC_SCORE>=5`; column names compared
case-insensitively; pipelines/sources/table.py):

    aesthetic   -> aesthetic store, column score        (LAION 1-10 scale)
    nsfw        -> nsfw store, column score             (probability)
    watermark   -> watermark store, column score        (probability)
    clip_score  -> clip store, column clip_score        (cosine of image and catalog caption, [-1, 1])
    clip_score_dense -> clip store, column clip_score_dense (cosine with the dense caption)

A build unit joins the stores of `filter_stores(filters)` (aligned annotation parts) and asks, per candidate,
`apply_filters(filters, annotations)` with annotations = {store name: that row's annotation dict or None};
it returns None (keep) or the first failing filter's skip reason:

    filtered:<name>=<value><failed comparison><threshold>   the score fails, e.g. filtered:aesthetic=4.1<5,
                                                             filtered:nsfw=0.73>=0.5 (value as %.4g,
                                                             threshold as written)
    filtered:<name>=<status>                                 that row's annotation is not "ok" (e.g. error)
                                                             ("skipped", a row kind the annotator does not
                                                             handle such as a scene for aesthetic, passes)
    filtered:<name>=null                                     the row is "ok" but has no value (no caption)
    missing_annotation:<store>                               the store has no row for the candidate

`ScoreFilter.evaluate(row)` gives the same reason plus the value (float or None) for a skipped table that
stores it. `reason_family(reason)` ("filtered:aesthetic", "duplicate_of", ...) is what stats count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from onegen.core.errors import UserError
from onegen.core.source_columns import SOURCE_COLUMN_PREFIX, source_values

FILTER_COLUMNS: dict[str, tuple[str, str]] = {
    "aesthetic": ("aesthetic", "score"),
    "nsfw": ("nsfw", "score"),
    "watermark": ("watermark", "score"),
    "clip_score": ("clip", "clip_score"),
    "clip_score_dense": ("clip", "clip_score_dense"),
}
SOURCE_STORE = SOURCE_COLUMN_PREFIX.rstrip(".")  # not an annotation store: the row's own `source.<column>` values
FILTERED_PREFIX = "filtered:"
_OPERATORS = {">=": (lambda v, t: v >= t, "<"), ">": (lambda v, t: v > t, "<="),
              "<=": (lambda v, t: v <= t, ">"), "<": (lambda v, t: v < t, ">=")}
_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*(>=|<=|>|<)\s*(\S+)\s*$")


class FilterError(UserError, ValueError):
    """A filter expression that cannot be parsed, or names an unknown score; the message is one line."""


@dataclass(frozen=True)
class FilterOutcome:
    reason: str | None  # None: the candidate passes
    value: float | None  # the stored score (None when there is none)


@dataclass(frozen=True)
class ScoreFilter:
    name: str  # as written: "aesthetic" or "store.column"
    op: str  # ">=" | ">" | "<=" | "<"
    threshold: float
    threshold_text: str  # as written, for the reason string
    store: str  # annotation store name (no version)
    column: str

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.threshold_text}"

    def evaluate(self, row: dict[str, Any] | None) -> FilterOutcome:
        """Pass or the skip reason for one candidate's annotation row of `store` (None: no row)."""
        if row is None:
            return FilterOutcome(f"missing_annotation:{self.store}", None)
        if row.get("status") == "skipped":  # the annotator does not handle this kind of row: not filtered
            return FilterOutcome(None, None)
        if row.get("status") != "ok":
            return FilterOutcome(f"{FILTERED_PREFIX}{self.name}={row.get('status')}", None)
        value = row.get(self.column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return FilterOutcome(f"{FILTERED_PREFIX}{self.name}=null", None)
        value = float(value)
        passes, failed_op = _OPERATORS[self.op]
        if passes(value, self.threshold):
            return FilterOutcome(None, value)
        return FilterOutcome(f"{FILTERED_PREFIX}{self.name}={value:.4g}{failed_op}{self.threshold_text}", value)

    def reason(self, row: dict[str, Any] | None) -> str | None:
        return self.evaluate(row).reason


def parse_filter(text: str) -> ScoreFilter:
    """`'aesthetic>=5'` -> ScoreFilter; raises FilterError with the allowed names on a bad expression."""
    match = _PATTERN.match(text)
    if not match:
        raise FilterError(f"--filter {text!r}: expected NAME>=VALUE (ops >=, >, <=, <), e.g. 'aesthetic>=5'")
    name, op, threshold_text = match.groups()
    try:
        threshold = float(threshold_text)
    except ValueError:
        raise FilterError(f"--filter {text!r}: {threshold_text!r} is not a number") from None
    if not math.isfinite(threshold):
        raise FilterError(f"--filter {text!r}: the threshold must be finite")
    if "." in name:
        store, column = name.split(".", 1)
        column = column.lower() if store == SOURCE_STORE else column
    elif name in FILTER_COLUMNS:
        store, column = FILTER_COLUMNS[name]
    else:
        raise FilterError(f"--filter {text!r}: unknown score {name!r}; use one of {', '.join(FILTER_COLUMNS)} "
                          "or STORE.COLUMN")
    return ScoreFilter(name, op, threshold, threshold_text, store, column)


def parse_filters(texts: list[str] | tuple[str, ...]) -> tuple[ScoreFilter, ...]:
    """Every `--filter` (or recipe `filters:` entry), in the order given (the first failing one is reported)."""
    return tuple(parse_filter(text) for text in texts)


def filter_stores(filters: tuple[ScoreFilter, ...]) -> list[str]:
    """Annotation store names (no version) the filters read, sorted: the build joins these parts."""
    return sorted({f.store for f in filters} - {SOURCE_STORE})


def reads_source(filters: tuple[ScoreFilter, ...]) -> bool:
    return any(f.store == SOURCE_STORE for f in filters)


def source_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row's own source columns as the `source` filters read them: {column (lower case): value},
    status "ok". A row without the column (not from a table source) then fails as `filtered:source.x=null`."""
    return {**source_values(row), "status": "ok"}


def apply_filters(filters: tuple[ScoreFilter, ...], annotations: dict[str, dict[str, Any] | None]) -> str | None:
    """None when the candidate passes every filter, else the first failing filter's reason (module doc)."""
    for score_filter in filters:
        reason = score_filter.reason(annotations.get(score_filter.store))
        if reason is not None:
            return reason
    return None


def reason_family(reason: str) -> str:
    """The part of a skip reason that stats group by: `filtered:<name>`, `duplicate_of`, or the reason's head."""
    if reason.startswith(FILTERED_PREFIX):
        return reason.split("=", 1)[0]
    return reason.split(":", 1)[0]
