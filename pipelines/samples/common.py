"""Turning catalog rows + annotation rows into training samples (docs/design.md §4). Pure; no Ray.

A task is described by a `TaskSource`: text2image needs only the catalog; a condition task names the
annotation store and the `ConditionSpec` it was declared with (read from the store's job.json).
`candidates(...)` yields, per catalog row of kind "image" and task made from such rows (the task
table's `row_kind`, core/tasks.py), either a `Sample` or a skip reason; the builder writes samples into
shards and skips into the skipped tables, so nothing vanishes.

Prompts: `[[task]] <tags> <caption>` (`task_prompts.task_prompt`); the caption is chosen by `caption_mode`
(the build's `--caption`, or the row's source policy, samples/policy.py): "original" (catalog caption),
"dense" (the `caption` annotator's text, or the store / source column the policy's `dense` names),
"random" (either, drawn per key; falls back to whichever exists), or "token" (none). text2image without any
caption is skipped ("no_caption"; "token_only" under the token policy); condition tasks without a caption
keep the token (and tags) alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from onegen.annotators.base import ConditionSpec, key_rng
from onegen.core.source_columns import SOURCE_COLUMN_PREFIX, source_values
from onegen.core.task_prompts import task_prompt
from onegen.core.tasks import made_from_rows
from onegen.manifests.shard_writer import Sample

CAPTION_STORE = "caption"
IMAGE_KIND = "image"  # the catalog row kind `candidates` makes samples of


@dataclass(frozen=True)
class TaskSource:
    task: str
    store: str | None = None  # "<name>@<version>" of the annotation store, None for text2image
    condition: ConditionSpec | None = None


def choose_caption(row: dict, annotations: dict[str, dict], mode: str, dense_from: str = CAPTION_STORE) -> str | None:
    """The caption of `row` under `mode` (original | dense | random | token, samples/policy.py); None when the
    mode's caption is missing, "" for `token` (the task token alone). The dense caption comes from
    `dense_from`: an annotation store's `caption` column (status ok), or `source.<column>` of the catalog row."""
    if mode == "token":
        return ""
    original = (row.get("caption_original") or "").strip() or None
    dense = dense_caption(row, annotations, dense_from)
    if mode == "original":
        return original
    if mode == "dense":
        return dense
    if original and dense:
        return (original, dense)[int(key_rng(row["key"], "caption-choice").integers(0, 2))]
    return original or dense


def dense_caption(row: dict, annotations: dict[str, dict], dense_from: str = CAPTION_STORE) -> str | None:
    """The dense caption of `row`: from the store `dense_from`, or from the catalog column `source.<name>`
    (column names compared case-insensitively, as the `source.` filters do)."""
    if dense_from.startswith(SOURCE_COLUMN_PREFIX):
        value = source_values(row).get(dense_from[len(SOURCE_COLUMN_PREFIX):].lower())
        return str(value).strip() or None if value is not None else None
    found = annotations.get(dense_from)
    if found and found.get("status") == "ok":
        return (found.get("caption") or "").strip() or None
    return None


def candidates(
    row: dict, ordinal: int, annotations: dict[str, dict], tasks: list[TaskSource], caption_mode: str,
    dense_from: str = CAPTION_STORE,
) -> Iterator[tuple[str, Sample | str]]:
    """(task, Sample or skip reason) for each task, for one catalog row.

    `annotations` maps annotator name -> that annotator's row for this key (stored columns);
    `caption_mode` and `dense_from` as `choose_caption` takes them (the row's source policy).
    """
    kind = row.get("kind", IMAGE_KIND)
    if kind != IMAGE_KIND:
        return
    caption = choose_caption(row, annotations, caption_mode, dense_from)
    provenance = _caption_store(annotations, dense_from)
    image_member = (f"img0.{row['image_format']}", row["image"])
    for source in tasks:
        if not made_from_rows(source.task, kind):
            continue  # multiview / faceid samples are made from scenes and subjects, not here
        sample_key = f"{row['key']}-{source.task}"
        base = dict(key=sample_key, task=source.task, source=row["source"], source_keys=[row["key"]],
                    width=row.get("width"), height=row.get("height"), ordinal=ordinal)
        if source.condition is None:
            if caption is None or not caption.strip():
                yield source.task, "token_only" if caption == "" else "no_caption"
                continue
            prompt = task_prompt(source.task, caption)
            meta = sample_meta(source.task, prompt, ["image"], [row["key"]])
            yield source.task, Sample(prompt=prompt, members=[image_member, *text_members(prompt, meta)],
                                      n_views=1, annotators=provenance, **base)
            continue
        name = source.store.split("@", 1)[0]
        annotation = annotations.get(name)
        if annotation is None:
            yield source.task, f"missing_annotation:{source.store}"
            continue
        if annotation.get("status") != "ok":
            yield source.task, f"{name}:{annotation.get('status')}"
            continue
        spec = source.condition
        condition = annotation.get(spec.column)
        if not condition:
            yield source.task, f"{name}:empty_{spec.column}"
            continue
        tags = annotation.get(spec.tags_column) if spec.tags_column else None
        prompt = task_prompt(source.task, caption, tags)
        meta = sample_meta(source.task, prompt, ["image", spec.column], [row["key"]])
        members = [image_member, (f"img1.{spec.ext}", condition), *text_members(prompt, meta)]
        yield source.task, Sample(prompt=prompt, members=members, n_views=2,
                                  annotators=[source.store, *provenance], **base)


def sample_meta(task: str, prompt: str, roles: list[str], source_keys: list[str]) -> dict:
    """The `json` member: what a loader needs without the manifest (task, view roles, prompt)."""
    return {"task": task, "n_views": len(roles), "roles": roles, "prompt": prompt, "source_keys": source_keys}


def text_members(prompt: str, meta: dict) -> list[tuple[str, bytes]]:
    return [("txt", prompt.encode("utf-8")), ("json", json.dumps(meta, sort_keys=True).encode("utf-8"))]


def _caption_store(annotations: dict[str, dict], dense_from: str = CAPTION_STORE) -> list[str]:
    """The caption store a sample's prompt may have drawn on (none when the dense caption is a source column)."""
    row = annotations.get(dense_from)
    return [f"{dense_from}@{row['annotator_version']}"] if row and row.get("status") == "ok" else []
