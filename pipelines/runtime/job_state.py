"""Job records: what a job was run with, so that a rerun resumes only the same job.

A job writes `<what>.json` holding its configuration and an input fingerprint before it commits
anything. A rerun with the same record resumes; a different record is refused with a message that
names every changed field, unless the caller passes overwrite (then the caller clears the outputs
and the new record replaces the old one).
"""

from __future__ import annotations

import json
from typing import Any

from onegen.core.errors import UserError
from onegen.manifests import files


class JobConflict(UserError):
    """A rerun whose configuration or input differs from what the outputs were made with."""


def check_and_record(path: str, record: dict[str, Any], overwrite: bool, rerun_hint: str) -> bool:
    """Compare `record` with the one at `path`; write it when new. Returns True if outputs must be cleared.

    Raises JobConflict (unless `overwrite`) when an existing record differs.
    """
    normalised = json.loads(json.dumps(record, sort_keys=True, default=str))
    existing = files.read_json(path)
    if existing is None:
        files.commit_json(path, normalised)
        return False
    if existing == normalised:
        return False
    if not overwrite:
        changes = "; ".join(describe_changes(existing, normalised))
        raise JobConflict(f"refusing to resume: {changes}. {rerun_hint}")
    files.commit_json(path, normalised)
    return True


def recorded_changes(path: str, record: dict[str, Any]) -> list[str] | None:
    """What differs between the record at `path` and `record` (as check_and_record compares them):
    None when nothing is recorded yet, [] when they are the same. Writes nothing."""
    existing = files.read_json(path)
    if existing is None:
        return None
    return describe_changes(existing, json.loads(json.dumps(record, sort_keys=True, default=str)))


def describe_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON values ("a.b: 1 -> 2")."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for name in sorted(set(old) | set(new)):
            label = f"{prefix}{name}"
            if name not in old:
                changes.append(f"{label} added ({_short(new[name])})")
            elif name not in new:
                changes.append(f"{label} removed (was {_short(old[name])})")
            else:
                changes.extend(describe_changes(old[name], new[name], f"{label}."))
        return changes
    if old != new:
        return [f"{prefix.rstrip('.')} changed: {_short(old)} -> {_short(new)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]
