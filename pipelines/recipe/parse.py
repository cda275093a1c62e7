"""A recipe: one TOML file (tomllib) that declares a whole dataset, parsed into the jobs' own configs.

    root = "dataset"                  # dataset root (catalog/, annotations/)
    shards = "shards"                 # shards folder

    [[sources]]                       # one ingest job each -> IngestConfig
    path = "inputs/photos"            # + kind, name, caption_column, image_column, uri_column,
    rows_per_part = 256               #   images (copy | reference), min_side, max_pixels, image_format

    [[annotators]]                    # in order; one annotate job each (consecutive CPU ones fused)
    name = "depth"                    # a name of `onegen annotate --annotators`, or module:Class
    model = "depth-anything/Depth-Anything-V2-Large-hf"   # any field, as `--set depth.model=...`
    num_gpus = 1

    [build]                           # -> BuildConfig: the `onegen build` flags, same names
    tasks = []                        # empty: every task the stores can make
    samples_per_shard = 1000          # + max_shard_bytes, rows_per_unit, prefix, caption, views,
                                      #   samples_per_scene, sliding_window, view_resolution,
                                      #   min_subject_images, filters, dedup, dedup_distance,
                                      #   semantic_threshold, min_person_area, id_nsfw_threshold
    [train]                           # written to <shards>/train.json for `onegen train --config`
    weights = { text2image = 1, image2image = 1, id = 1, multiview = 1 }   # per task family
    out = "runs/onegen"               # + any other TrainConfig field

Relative paths (root, shards, source paths, train.out) are relative to the recipe's base folder (the
recipe file's folder unless `onegen run --dir` says otherwise); `{dir}` in any string is replaced by
that folder (for annotator checkpoints next to the data, as the demo's). Every unknown field or
wrong type is a RecipeError of one line. No code is executed: annotators are built through
pipelines/jobs/annotator_choices.py, like `--annotators` / `--set`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import tomllib

from onegen.annotators.base import Annotator
from onegen.core.errors import UserError
from onegen.core.tasks import FAMILY_NAMES, TASKS
from onegen.pipelines.hygiene.build_hygiene import HygieneConfig
from onegen.pipelines.hygiene.task_selection import PoseSelection
from onegen.pipelines.jobs.annotator_choices import AnnotatorChoiceError, make_annotator
from onegen.pipelines.jobs.build import BuildConfig
from onegen.pipelines.jobs.ingest import IngestConfig
from onegen.pipelines.samples.faceid import FaceidConfig
from onegen.pipelines.samples.multiview import MultiviewConfig
from onegen.pipelines.sources.image_checks import ImageLimits
from onegen.pipelines.sources.kinds import SourceSpec

TOP_LEVEL = {"root", "shards", "sources", "annotators", "build", "train"}
SOURCE_FIELDS = {"path": "", "kind": "auto", "name": "", "caption_column": "", "image_column": "", "uri_column": "",
                 "rows_per_part": 256, "images": "copy", "min_side": 64, "max_pixels": 64_000_000,
                 "image_format": "jpg"}
BUILD_FIELDS = {"tasks": [], "samples_per_shard": 1000, "max_shard_bytes": 1 << 30, "rows_per_unit": 0,
                "prefix": "onegen", "caption": "original", "views": "2-12", "samples_per_scene": 1,
                "sliding_window": False, "view_resolution": 256, "min_subject_images": 4, "filters": [],
                "dedup": "", "dedup_distance": 4, "semantic_threshold": 0.95, "min_person_area": 0.0,
                "id_nsfw_threshold": None}


class RecipeError(UserError):
    """A recipe that cannot be read or names something unknown; the message is one line."""


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: the configs of its jobs, in run order."""

    path: str
    base: str  # folder relative paths are resolved against
    root: str
    shards: str
    sources: tuple[IngestConfig, ...]
    annotators: tuple[Annotator, ...]
    build: BuildConfig
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields written to train.json


def load_recipe(path: str, base: str | None = None) -> Recipe:
    """Read and check `path`; `base` (default: the recipe's folder) anchors relative paths and `{dir}`."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise RecipeError(f"no recipe at {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"recipe {path} is not valid TOML: {error}") from None
    base = os.path.abspath(base or os.path.dirname(os.path.abspath(path)))
    raw = _expand(raw, base)
    _only(raw, TOP_LEVEL, "recipe")
    for required in ("root", "shards"):
        if not isinstance(raw.get(required), str):
            raise RecipeError(f"recipe {path}: `{required} = \"PATH\"` is required")
    root, shards = _path(raw["root"], base), _path(raw["shards"], base)
    sources = tuple(_source(entry, i, root, base) for i, entry in enumerate(_tables(raw, "sources")))
    if not sources:
        raise RecipeError(f"recipe {path}: no [[sources]]")
    annotators = tuple(_annotator(entry, i) for i, entry in enumerate(_tables(raw, "annotators")))
    build = _build(raw.get("build", {}), root, shards)
    return Recipe(os.path.abspath(path), base, root, shards, sources, annotators, build,
                  _train(raw.get("train", {}), shards, base))


def bundled_recipe(name: str) -> str:
    """Path of a recipe shipped with onegen (recipes/<name>.toml: "demo", "onegen")."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", f"{name}.toml")
    if os.path.exists(path):
        return path
    from importlib.resources import files

    return str(files("onegen.recipes") / f"{name}.toml")


def _expand(value: Any, base: str) -> Any:
    if isinstance(value, str):
        return value.replace("{dir}", base)
    if isinstance(value, list):
        return [_expand(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, base) for k, v in value.items()}
    return value


def _path(value: str, base: str) -> str:
    return value if "://" in value or os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def _tables(raw: dict, key: str) -> list[dict]:
    entries = raw.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RecipeError(f"recipe: `{key}` must be an array of tables ([[{key}]])")
    return entries


def _only(table: Any, allowed: set[str] | dict, where: str) -> None:
    if not isinstance(table, dict):
        raise RecipeError(f"recipe: [{where}] must be a table")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise RecipeError(f"recipe: [{where}] has unknown field(s) {unknown}; fields: {', '.join(sorted(allowed))}")


def _typed(table: dict, defaults: dict, where: str) -> dict:
    """`defaults` overlaid with `table`, each value of its default's type (ints pass for floats)."""
    _only(table, defaults, where)
    values = dict(defaults)
    for name, value in table.items():
        default = defaults[name]
        want = float if isinstance(default, float) or default is None else type(default)
        ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise RecipeError(f"recipe: [{where}] {name} = {value!r}: expected {want.__name__}")
        values[name] = value
    return values


def _source(entry: dict, index: int, root: str, base: str) -> IngestConfig:
    where = f"sources.{index}"
    values = _typed(entry, SOURCE_FIELDS, where)
    if not values["path"]:
        raise RecipeError(f"recipe: [{where}] needs a path")
    spec = SourceSpec(_path(values["path"], base), values["kind"], values["name"], values["caption_column"],
                      values["image_column"], values["uri_column"])
    limits = ImageLimits(values["min_side"], values["max_pixels"], values["image_format"])
    return IngestConfig(spec, root, limits, values["rows_per_part"], images=values["images"])


def _annotator(entry: dict, index: int) -> Annotator:
    settings = dict(entry)
    choice = settings.pop("name", None)
    if not isinstance(choice, str):
        raise RecipeError(f"recipe: [annotators.{index}] needs name = \"depth\" (or \"module:Class\")")
    try:
        return make_annotator(choice, settings)
    except AnnotatorChoiceError as error:
        raise RecipeError(f"recipe: [annotators.{index}] {error}") from None
    except (TypeError, ValueError) as error:  # the annotator's own field checks
        raise RecipeError(f"recipe: [annotators.{index}] {choice}: {error}") from None


def _build(table: dict, root: str, shards: str) -> BuildConfig:
    values = _typed(table, BUILD_FIELDS, "build")
    unknown = [t for t in values["tasks"] if t not in TASKS]
    if unknown:
        raise RecipeError(f"recipe: [build] unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    low, _, high = values["views"].partition("-")
    try:
        multiview = MultiviewConfig(int(low), int(high or low), values["samples_per_scene"],
                                    values["sliding_window"], values["view_resolution"])
        hygiene = HygieneConfig(tuple(values["filters"]), values["dedup"], values["dedup_distance"],
                                values["semantic_threshold"], PoseSelection(values["min_person_area"]),
                                values["id_nsfw_threshold"])
    except ValueError as error:
        raise RecipeError(f"recipe: [build] {error}") from None
    return BuildConfig(root, shards, tuple(values["tasks"]), values["samples_per_shard"], values["max_shard_bytes"],
                       values["prefix"], values["caption"], False, multiview, FaceidConfig(values["min_subject_images"]),
                       rows_per_unit=values["rows_per_unit"], hygiene=hygiene)


def _train(table: dict, shards: str, base: str) -> dict[str, Any]:
    """TrainConfig fields: `weights` (family -> weight) becomes task_weights; names are checked at run."""
    if not isinstance(table, dict):
        raise RecipeError("recipe: [train] must be a table")
    values = dict(table)
    weights = values.pop("weights", {family: 1.0 for family in FAMILY_NAMES})
    _only(weights, set(FAMILY_NAMES), "train.weights")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights.values()):
        raise RecipeError("recipe: [train.weights] weights must be numbers >= 0")
    if isinstance(values.get("out"), str):
        values["out"] = _path(values["out"], base)
    return {"shards": shards, **values, "task_weights": [[f, float(w)] for f, w in weights.items()]}


def train_fields() -> set[str]:
    """TrainConfig's field names. From the torch-free config module: importing the trainer for
    them cost every `onegen run` 2.4 s of torch import (bench/results/startup.txt)."""
    from onegen.training.train_config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}
