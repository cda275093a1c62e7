"""`onegen preview`: a static, offline HTML report over a shards folder (issue 7).

`write_preview(shards, out, per_task, tasks, seed)` writes into the local folder `out`:
    index.html                    self-contained: inline CSS and one tiny inline script, no network
    plot-caption-words.png        caption word-count histogram (all prompts in the manifests)
    plot-image-sizes.png          width against height (all manifest rows with a size)
    plot-samples-per-task.png     samples per task
    contact-<task>.png            one row per previewed sample: views side by side, key + prompt
    samples/<task>/<key>.<member> each previewed view: image members byte for byte, `rayN.npy`
                                  members as `<key>.rayN.png` false colour, plus `<key>.cameras.png`
The overview comes from `shard_stats` (samples per task / source, bytes, skipped per reason, ingest
rejects per reason, annotation statuses per store; bytes are tar file sizes, as build reports them), the
manifests (annotator versions, counted in samples) and the annotation stores (errors apart from the
expected skips such as "blur does not annotate rows of kind 'scene'", per store, status and reason).
Per task, `per_task` samples spread across sources (seeded, `choose_samples`) are shown: every view in member
order with its role (from the sample's `json` member), the prompt, the key and the source. Semantic
and box maps get a colour legend parsed from the prompt's tags. All text goes through html.escape.
The inline script writes every <img>'s naturalWidth into `body[data-img-widths]` once the page has
loaded, so a headless browser's DOM dump can tell whether every picture loaded.
No Ray import: this runs anywhere the shards can be read.
"""

from __future__ import annotations

import html
import io
import json
import os
import random
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote

import numpy as np

from onegen.manifests import files
from onegen.manifests.layout import DatasetLayout, ShardLayout
from onegen.manifests.query import read_manifests, shard_stats
from onegen.pipelines.preview import render

# A prompt tag `<#00FFFF cyan mask: dragon>` / `<#FF0000 red boundingbox: head>` (docs/design.md §4).
_TAG = re.compile(r"<(#[0-9A-Fa-f]{6}) ([A-Za-z]+) (mask|boundingbox): ([^<>]*)>")
_TOKEN = re.compile(r"\[\[[^\[\]]*\]\]")  # task tokens and image markers: [[canny2image]], [[img0]]
_VIEW = re.compile(r"^(img|ray)(\d+)\.")  # view members: img0.jpg, ray0.npy, img1.png
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MANIFEST_COLUMNS = ["key", "shard", "task", "prompt", "source", "members", "annotators", "width", "height",
                    "ordinal"]


@dataclass(frozen=True)
class LegendEntry:
    """One tag of a semantic / box map prompt: colour `hex` ("#RRGGBB", upper case) stands for `label`."""

    hex: str
    colour: str
    kind: str  # "mask" | "boundingbox"
    label: str


def parse_legend(prompt: str) -> list[LegendEntry]:
    """The prompt's colour tags, in prompt order."""
    return [LegendEntry(m.group(1).upper(), m.group(2), m.group(3), m.group(4).strip()) for m in _TAG.finditer(prompt)]


def caption_words(prompt: str) -> int:
    """Words of the caption proper: task tokens, image markers and colour tags do not count."""
    return len(_TAG.sub(" ", _TOKEN.sub(" ", prompt)).split())


def view_members(members: list[str]) -> list[str]:
    """The view members of a sample in view order: img0, ray0, img1, ray1, ... (text members dropped)."""
    views = [m for m in members if _VIEW.match(m)]
    return sorted(views, key=lambda m: (int(_VIEW.match(m).group(2)), _VIEW.match(m).group(1) != "img"))


def view_roles(views: list[str], roles: list[str]) -> list[str]:
    """A role per view member. `roles` (the json member's) names every view, or only the image views
    (ray views are then "rays"); missing names fall back to "image" for img0 and "condition" after."""
    if len(roles) == len(views):
        return list(roles)
    images = iter(roles)
    named = []
    for member in views:
        kind, index = _VIEW.match(member).groups()
        if kind == "ray":
            named.append("rays")
        else:
            named.append(next(images, "image" if index == "0" else "condition"))
    return named


@dataclass
class PreviewView:
    member: str  # suffix inside the tar, e.g. "img1.png"
    role: str
    file: str  # path relative to the report folder


@dataclass
class PreviewSample:
    key: str
    task: str
    source: str
    shard: str
    prompt: str
    width: int | None
    height: int | None
    views: list[PreviewView] = field(default_factory=list)
    legend: list[LegendEntry] = field(default_factory=list)
    camera_plot: str | None = None  # relative path; None when the sample has no ray views
    note: str = ""  # why a camera plot is missing, shown in the report


@dataclass
class PreviewReport:
    """Everything the HTML shows; file paths are relative to the report folder."""

    shards: str
    stats: dict
    annotator_versions: dict[str, int]
    annotation_errors: dict[str, int]
    samples: dict[str, list[PreviewSample]]
    plots: dict[str, str]
    sheets: dict[str, str]
    annotation_skips: dict[str, int] = field(default_factory=dict)  # expected, not errors


# --- reading ------------------------------------------------------------------------------------
def choose_samples(rows: list[dict], per_task: int, tasks: list[str] | None = None,
                   seed: int = 0) -> dict[str, list[dict]]:
    """`per_task` manifest rows per task (tasks sorted by name), spread across sources: the sources take
    turns (in name order), each drawing from its own rows in an order seeded by (`seed`, task). The
    chosen rows come back in (shard, ordinal) order; the same rows and seed give the same choice."""
    by_task: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(rows, key=lambda r: (r["task"], r["shard"], r["ordinal"])):
        if not tasks or row["task"] in tasks:
            by_task[row["task"]][row["source"]].append(row)
    chosen = {}
    for task in sorted(by_task):
        rng = random.Random(f"{seed}:{task}")
        queues = [rng.sample(group, len(group)) for _, group in sorted(by_task[task].items())]
        picked: list[dict] = []
        while len(picked) < per_task and any(queues):
            picked += [queue.pop() for queue in queues if queue][: per_task - len(picked)]
        chosen[task] = sorted(picked, key=lambda r: (r["shard"], r["ordinal"]))
    return chosen


def read_members(shards: str, shard: str, keys: set[str]) -> dict[str, dict[str, bytes]]:
    """{key: {suffix: bytes}} for `keys` from one tar, streamed (stops once every key is complete)."""
    found: dict[str, dict[str, bytes]] = defaultdict(dict)
    fs, path = files.filesystem(files.join(shards, shard))
    with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for info in tar:
            key, _, suffix = info.name.partition(".")
            if key in keys and info.isfile():
                found[key][suffix] = tar.extractfile(info).read()
            elif found and key not in keys and len(found) == len(keys):
                break  # samples are contiguous in a tar: all wanted ones are behind us
    return dict(found)


def annotation_outcomes(root: str) -> tuple[dict[str, int], dict[str, int]]:
    """(errors, expected skips) under a dataset root, rows per "<store>: <status>: <reason, first line>".

    Errors are rows with status "error" (a failure worth a look); every other status that is not "ok" is
    an expected outcome the annotator recorded on purpose ("skipped": blur does not annotate rows of kind
    'scene'; "no_face", "no_person": nothing to annotate)."""
    errors: Counter = Counter()
    skips: Counter = Counter()
    layout = DatasetLayout(root)
    for name in layout.store_names():
        for path in files.list_files(layout.store_dir(name), ".parquet"):
            for row in files.read_table(path, ["status", "error"]).to_pylist():
                if row["status"] != "ok":
                    error = (row["error"] or "").strip().splitlines()[:1]
                    label = f"{name}: {row['status']}: {(error[0] if error else '')[:120]}"
                    (errors if row["status"] == "error" else skips)[label] += 1
    return dict(sorted(errors.items())), dict(sorted(skips.items()))


def annotation_errors(root: str) -> dict[str, int]:
    """Rows with status "error" per "<store>: error: <error, first line>" (see `annotation_outcomes`)."""
    return annotation_outcomes(root)[0]


# --- writing ------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _write_views(out: str, row: dict, members: dict[str, bytes]) -> tuple[PreviewSample, render.SheetRow]:
    """Write one sample's view files; returns its report entry and its contact-sheet row."""
    meta = json.loads(members["json"]) if "json" in members else {}
    views = view_members(row["members"])
    folder = os.path.join("samples", _safe(row["task"]))
    os.makedirs(os.path.join(out, folder), exist_ok=True)
    sample = PreviewSample(row["key"], row["task"], row["source"], row["shard"], row["prompt"], row["width"],
                           row["height"], legend=parse_legend(row["prompt"]))
    pictures, latents = [], []
    for member, role in zip(views, view_roles(views, meta.get("roles", [])), strict=True):
        data = members[member]
        picture = render.decode_view(member, data)
        pictures.append(picture)
        stem = os.path.join(folder, f"{_safe(row['key'])}.{member.rsplit('.', 1)[0]}")
        if member.endswith(".npy"):
            latents.append(np.load(io.BytesIO(data), allow_pickle=False))  # (16, h, w) float16
            relative = f"{stem}.png"
            picture.save(os.path.join(out, relative), format="PNG")
        else:  # the image bytes as trained on, unchanged
            relative = f"{stem}.{member.rsplit('.', 1)[1]}"
            with open(os.path.join(out, relative), "wb") as handle:
                handle.write(data)
        sample.views.append(PreviewView(member, role, relative))
    if latents:
        sample.camera_plot, sample.note = _camera_plot(out, os.path.join(folder, f"{_safe(row['key'])}.cameras.png"),
                                                       latents)
    return sample, render.SheetRow(row["key"], row["prompt"], pictures)


def _camera_plot(out: str, relative: str, latents: list[np.ndarray]) -> tuple[str | None, str]:
    try:
        written = render.camera_plot(latents, os.path.join(out, relative))
    except np.linalg.LinAlgError as error:  # degenerate rays: say so in the report, keep the rest
        return None, f"camera plot failed: {error}"
    return (relative, "") if written else (None, "camera plot skipped: onegen.core.camera_geometry not installed")


def collect_report(shards: str, out: str, per_task: int = 4, tasks: list[str] | None = None,
                   seed: int = 0) -> PreviewReport:
    """Read the shards folder, write every picture of the report into `out`, return the report data."""
    os.makedirs(out, exist_ok=True)
    table = read_manifests(shards, MANIFEST_COLUMNS)
    rows = table.to_pylist() if table.num_rows else []
    stats = shard_stats(shards)
    record = files.read_json(ShardLayout(shards).record()) or {}
    versions = Counter(name for row in rows for name in row["annotators"])
    chosen = choose_samples(rows, per_task, tasks, seed)
    samples: dict[str, list[PreviewSample]] = {}
    sheets: dict[str, str] = {}
    for task, task_rows in chosen.items():
        by_shard: dict[str, set[str]] = defaultdict(set)
        for row in task_rows:
            by_shard[row["shard"]].add(row["key"])
        members = {}
        for shard, keys in sorted(by_shard.items()):
            members.update(read_members(shards, shard, keys))
        missing = [row["key"] for row in task_rows if row["key"] not in members]
        if missing:  # a manifest row without its tar members: the shard is damaged (see `manifest verify`)
            raise ValueError(f"samples listed in the manifests are missing from their tars: {missing}")
        written = [_write_views(out, row, members[row["key"]]) for row in task_rows]
        samples[task] = [sample for sample, _ in written]
        sheets[task] = f"contact-{_safe(task)}.png"
        render.contact_sheet([sheet_row for _, sheet_row in written], os.path.join(out, sheets[task]))
    plots = {
        "caption words": "plot-caption-words.png",
        "image sizes": "plot-image-sizes.png",
        "samples per task": "plot-samples-per-task.png",
    }
    render.caption_word_histogram([caption_words(r["prompt"]) for r in rows], os.path.join(out, plots["caption words"]))
    sized = [r for r in rows if r["width"] and r["height"]]
    render.image_size_scatter([r["width"] for r in sized], [r["height"] for r in sized],
                              os.path.join(out, plots["image sizes"]))
    render.samples_per_task_bar(stats["samples_per_task"], os.path.join(out, plots["samples per task"]))
    errors, skips = annotation_outcomes(record["root"]) if record.get("root") else ({}, {})
    return PreviewReport(shards, stats, dict(sorted(versions.items())), errors, samples, plots, sheets, skips)


def write_preview(shards: str, out: str, per_task: int = 4, tasks: list[str] | None = None, seed: int = 0) -> str:
    """Write the report for `shards` into the local folder `out`; returns the path of index.html."""
    report = collect_report(shards, out, per_task, tasks, seed)
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(report))
    return path


# --- HTML ---------------------------------------------------------------------------------------
_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;background:#fafafa}
table{border-collapse:collapse;margin:0 1.5em 1em 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}
.num{text-align:right}.sample{background:#fff;border:1px solid #ddd;margin:1em 0;padding:.6em}
.row{display:flex;gap:12px;align-items:flex-start}
.strip{display:flex;gap:8px;overflow-x:auto;align-items:flex-start;flex:1;min-width:0}
figure{margin:0}figure img{height:180px;border:1px solid #ccc;image-rendering:auto}
figcaption,.meta{font-size:12px;color:#555}.prompt{font-family:monospace;font-size:12px;white-space:pre-wrap}
.legend{list-style:none;padding:0;margin:.3em 0;font-size:12px}.legend li{display:inline-block;margin-right:1em}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #333;vertical-align:middle;margin-right:4px}
.plots img{max-width:32%;margin-right:1%}
"""
# Records every <img>'s naturalWidth (0 = failed to load) once the page and its images have loaded.
_SCRIPT = """window.addEventListener("load",function(){var w=[];var i=document.images;
for(var k=0;k<i.length;k++){w.push(i[k].naturalWidth);}
document.body.setAttribute("data-img-widths",w.join(","));});"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _src(relative: str) -> str:
    return _e(quote(relative.replace(os.sep, "/")))


def _table(title: str, mapping: dict, header: tuple[str, str]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td class=num>{_e(v)}</td></tr>" for k, v in mapping.items())
    empty = "" if mapping else "<tr><td colspan=2><i>none</i></td></tr>"
    return (f"<table><caption><b>{_e(title)}</b></caption><tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th>"
            f"</tr>{rows}{empty}</table>")


def _overview(report: PreviewReport) -> str:
    stats = report.stats
    totals = {"samples": stats["samples"], "shards": stats["shards"], "bytes": f"{stats['bytes']:,}"}
    if "catalog_rows" in stats:
        totals["catalog rows"] = stats["catalog_rows"]
    statuses = {f"{name}: {status}": n for name, counts in stats.get("annotation_statuses", {}).items()
                for status, n in counts.items()}
    parts = [
        _table("totals", totals, ("what", "count")),
        _table("samples per task", stats["samples_per_task"], ("task", "samples")),
        _table("samples per source", stats["samples_per_source"], ("source", "samples")),
        _table("skipped candidates per reason", stats["skipped_per_reason"], ("task: reason", "candidates")),
        _table("ingest rejects per reason", stats.get("rejects_per_reason", {}), ("reason", "items")),
        _table("annotation statuses", statuses, ("store: status", "rows")),
        _table("annotation errors per reason", report.annotation_errors, ("store: status: error", "rows")),
        _table("expected annotation skips per reason", report.annotation_skips, ("store: status: reason", "rows")),
        _table("annotator versions", report.annotator_versions, ("annotator@version", "samples")),
    ]
    plots = "".join(f'<img src="{_src(path)}" alt="{_e(name)}" title="{_e(name)}">' for name, path in report.plots.items())
    return f'<section id="overview"><h2>Overview</h2>{"".join(parts)}<div class="plots">{plots}</div></section>'


def _sample_html(sample: PreviewSample) -> str:
    figures = "".join(
        f'<figure data-member="{_e(v.member)}" data-role="{_e(v.role)}"><img src="{_src(v.file)}" '
        f'alt="{_e(v.role)}"><figcaption>{i}: {_e(v.role)} ({_e(v.member)})</figcaption></figure>'
        for i, v in enumerate(sample.views))
    cameras = (f'<figure data-member="cameras"><img src="{_src(sample.camera_plot)}" alt="cameras">'
               f"<figcaption>cameras from rays</figcaption></figure>") if sample.camera_plot else ""

    legend = "".join(
        f'<li data-hex="{_e(t.hex)}"><span class="swatch" style="background:{_e(t.hex)}"></span>'
        f"{_e(t.colour)} {_e(t.kind)}: {_e(t.label)}</li>" for t in sample.legend)
    size = f"{sample.width}x{sample.height}" if sample.width and sample.height else "size unknown"
    return (f'<article class="sample" data-key="{_e(sample.key)}"><div class="meta">key <b>{_e(sample.key)}</b> '
            f"· source {_e(sample.source)} · {_e(sample.shard)} · {_e(size)}</div>"
            f'<div class="row"><div class="strip">{figures}</div>{cameras}</div>'
            + (f'<ul class="legend">{legend}</ul>' if legend else "")
            + (f'<div class="meta">{_e(sample.note)}</div>' if sample.note else "")
            + f'<div class="prompt">{_e(sample.prompt)}</div></article>')


def render_html(report: PreviewReport) -> str:
    """The report page: overview, then one section per task (contact sheet + samples)."""
    sections = []
    for task, samples in report.samples.items():
        sheet = report.sheets.get(task)
        sections.append(
            f'<section class="task" id="task-{_e(_safe(task))}"><h2>{_e(task)}</h2>'
            + (f'<p class="meta">contact sheet: <a href="{_src(sheet)}">{_e(sheet)}</a></p>' if sheet else "")
            + "".join(_sample_html(s) for s in samples) + "</section>")
    toc = " · ".join(f'<a href="#task-{_e(_safe(t))}">{_e(t)}</a>' for t in report.samples)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>onegen preview</title>'
            f"<style>{_STYLE}</style></head><body><h1>onegen preview</h1>"
            f'<p class="meta">shards: {_e(report.shards)}</p><p>{toc}</p>{_overview(report)}{"".join(sections)}'
            f"<script>{_SCRIPT}</script></body></html>\n")
