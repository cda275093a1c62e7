"""The dataset card of a shards folder: `README.md` with Hugging Face dataset-card YAML, written by `build`.

`write_dataset_card(out, prefix)` (called at the end of `onegen build`) commits OUT/README.md:

    ---
    configs:                     one config per task, its data files the task's tars
    - config_name: depth2image     (`{prefix}-{task}-{unit:05d}-{n:06d}.tar`, manifests/layout.py)
      data_files:
      - split: train
        path: "onegen-depth2image-*.tar"
    tags: [onegen, webdataset, onediffusion]
    ---
    # body: samples per task and per source, annotators (store@version, model ids and revisions as the
    # annotation rows recorded them), skipped candidates per task and reason, ingest rejects per reason

so that `datasets.load_dataset(SHARDS, "depth2image")` reads one task's samples (the WebDataset builder:
one column per member, e.g. `img0.jpg`, `img1.png`, `txt`, `json`). Tasks whose samples hold different
numbers of views (faceid, multiview with a view range) have different members per sample, which that
builder refuses: read those with `webdataset` / `wids` (index.json). YAML strings are written as JSON
strings, which YAML reads as they are. `caption_note(out)` is the line `build` prints when text2image
candidates were skipped for want of a caption.
"""

from __future__ import annotations

import json
from collections import Counter

from onegen.core.tasks import TEXT2IMAGE
from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, ShardLayout


def skipped_counts(out: str) -> Counter:
    """Skipped candidates per (task, reason) of a shards folder."""
    counts: Counter = Counter()
    for path in files.list_files(ShardLayout(out).skipped_dir(), ".parquet"):
        for row in files.read_table(path, ["task", "reason"]).to_pylist():
            counts[(row["task"], row["reason"].split(":", 1)[0])] += 1
    return counts


def caption_note(out: str) -> str | None:
    """A line saying how many text2image candidates had no caption, or None when none lacked one."""
    missing = skipped_counts(out).get((TEXT2IMAGE, "no_caption"), 0)
    if not missing:
        return None
    return (f"note: {missing} image(s) got no text2image sample: no caption (give one with a sidecar .txt, an "
            "imagefolder metadata.jsonl, a table's --caption-column, or the caption annotator + --caption dense)")


def annotator_models(root: str, stores: list[str]) -> dict[str, list[str]]:
    """{store@version: ["model_id@revision", ...]} as the annotation rows of each store recorded them."""
    layout = DatasetLayout(root)
    found: dict[str, list[str]] = {}
    for name in stores:
        models = set()
        for path in files.list_files(layout.store_dir(name), ".parquet"):
            table = files.read_table(path, ["model_id", "model_revision"])
            models.update((m or "", r or "") for m, r in zip(table.column("model_id").to_pylist(),
                                                              table.column("model_revision").to_pylist(), strict=True))
        found[name] = sorted(f"{m}@{r}" if r else m for m, r in models if m) or ["(no model)"]
    return found


def card_text(out: str, prefix: str) -> str:
    """The README.md of the module docstring for the shards folder `out`."""
    from onegen.manifests.query import catalog_stats, count_manifest_rows, sum_by

    per_source = count_manifest_rows(out, ["task", "source"])
    per_task = sum_by(per_source, 0)
    record = files.read_json(ShardLayout(out).record()) or {}
    root, stores = record.get("root", ""), list(record.get("stores", []))
    configs = "".join(f"- config_name: {json.dumps(task)}\n  data_files:\n  - split: train\n"
                      f"    path: {json.dumps(ShardLayout.task_tars(prefix, task))}\n" for task in sorted(per_task))
    lines = ["---", "configs:", configs.rstrip("\n"), "tags:", "- onegen", "- webdataset", "- onediffusion", "---",
             "", "# One-Gen shards", "",
             f"{sum(per_task.values())} samples in {len(per_task)} tasks, built by onegen from `{root or '?'}`. "
             "Each task is its own config: `datasets.load_dataset(PATH, TASK)`; WebDataset readers take the "
             f"tars `{prefix}-TASK-UNIT-N.tar` (index.json lists them); tasks with a varying number of views "
             "per sample (faceid, multiview) load with `webdataset` / `wids`, not `datasets`.", "",
             "## Samples per task and source", "", "| task | source | samples |", "| --- | --- | ---: |"]
    lines += [f"| {task} | {source} | {n} |" for (task, source), n in sorted(per_source.items())]
    lines += ["", "## Annotators", "", "| store | models (id@revision) |", "| --- | --- |"]
    if root:
        lines += [f"| {name} | {', '.join(models)} |" for name, models in annotator_models(root, stores).items()]
    lines += ["", "## Skipped candidates (task, reason)", "", "| task | reason | candidates |", "| --- | --- | ---: |"]
    lines += [f"| {task} | {reason} | {n} |" for (task, reason), n in sorted(skipped_counts(out).items())]
    if root:
        rejects = catalog_stats(root)["rejects_per_reason"]
        lines += ["", "## Ingest rejects", "", "| reason | items |", "| --- | ---: |"]
        lines += [f"| {reason} | {n} |" for reason, n in rejects.items()]
    return "\n".join(lines) + "\n"


def write_dataset_card(out: str, prefix: str) -> str:
    """Commit OUT/README.md (module docstring); returns its path."""
    path = ShardLayout(out).card()
    files.commit_bytes(path, card_text(out, prefix).encode("utf-8"))
    return path
