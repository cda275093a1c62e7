"""A recipe: one TOML file (tomllib) that declares a whole dataset, parsed into the jobs' own configs.

    root = "dataset"                  # dataset root (catalog/, annotations/)
    shards = "shards"                 # shards folder

    [[sources]]                       # one ingest job each -> IngestConfig: the `onegen ingest` flags,
    path = "inputs/photos"            #   same names (kind, name, caption_column, images, min_side, ...;
    rows_per_part = 256               #   `onegen ingest --help` explains each)

    policy = { caption = "token" }    # this source's build policy (pipelines/samples/policy.py): caption,
                                      #   dense, stores; becomes `[build] policies` "NAME.FIELD=VALUE"

    [[annotators]]                    # in order; one annotate job each (consecutive CPU ones fused)
    name = "depth"                    # a name of `onegen annotate --annotators`, or module:Class
    model = "depth-anything/Depth-Anything-V2-Large-hf"   # any field, as `--set depth.model=...`
    sources = ["laion", "coyo"]       # only these sources' rows (others: skipped, "not for this source")
    num_gpus = 1

    [build]                           # -> BuildConfig: the `onegen build` flags, same names (caption,
    tasks = []                        #   views = "2-12", ...), except `filters = [...]` for the
    samples_per_shard = 1000          #   repeatable `--filter`; empty tasks: every task the stores make
    [train]                           # written to <shards>/train.json for `onegen train --config`
    weights = { text2image = 1, image2image = 1, id = 1, multiview = 1 }   # per task family
    out = "runs/onegen"               # + any other TrainConfig field, the `onegen train` flags'
    data.reverse_prob = 0.5           #   names; the loader's as data.X (or a [train.data] table)

Relative paths (root, shards, source paths, train.out, train.val_shards, train.eval_depth, train.eval_camera) are relative to the recipe's base folder (the
recipe file's folder unless `onegen run --dir` says otherwise); `{dir}` in any string is replaced by
that folder (for annotator checkpoints next to the data, as the demo's). The `[[sources]]`, `[build]`
and `[train]` keys are made from the jobs' settings dataclasses (core/config_fields.py), the same fields
the command-line flags come from. Every unknown field, wrong type or refused value is a RecipeError of
one line. No code is executed: annotators are built through
pipelines/jobs/annotator_choices.py, like `--annotators` / `--set`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import tomllib

from onegen.annotators.base import Annotator
from onegen.core.config_fields import SettingError, from_table
from onegen.core.errors import UserError
from onegen.core.tasks import FAMILY_NAMES, TASKS
from onegen.pipelines.jobs.annotator_choices import AnnotatorChoiceError, make_annotator
from onegen.pipelines.jobs.settings import BuildConfig, IngestConfig
from onegen.pipelines.samples.policy import FIELDS as POLICY_FIELDS
from onegen.pipelines.samples.policy import policy_texts

TOP_LEVEL = {"root", "shards", "sources", "annotators", "build", "train"}


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
    entries = [dict(entry) for entry in _tables(raw, "sources")]
    policies = [entry.pop("policy", {}) for entry in entries]  # the build's, kept beside the source it is about
    sources = tuple(_source(entry, i, root, base) for i, entry in enumerate(entries))
    if not sources:
        raise RecipeError(f"recipe {path}: no [[sources]]")
    annotators = tuple(_annotator(entry, i) for i, entry in enumerate(_tables(raw, "annotators")))
    texts: list[str] = []
    for index, (source, table) in enumerate(zip(sources, policies, strict=True)):
        _only(table, set(POLICY_FIELDS), f"sources.{index}.policy")
        texts += policy_texts(source.source.source_name, table)
    build = _build(raw.get("build", {}), root, shards, tuple(texts))
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


def _source(entry: dict, index: int, root: str, base: str) -> IngestConfig:
    if isinstance(entry.get("path"), str):
        entry = {**entry, "path": _path(entry["path"], base)}
    return _settings(IngestConfig, entry, f"sources.{index}", out=root)


def _settings(cls: type, table: dict, where: str, **given: Any) -> Any:
    """`cls` from a recipe table (core/config_fields.py); its SettingError becomes a RecipeError."""
    try:
        return from_table(cls, table, where, **given)
    except SettingError as error:
        raise RecipeError(f"recipe: {error}") from None


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


def _build(table: dict, root: str, shards: str, source_policies: tuple[str, ...]) -> BuildConfig:
    """[build], with the sources' `policy` tables first (a `[build] policies` text of the same field wins)."""
    if source_policies:
        own = table.get("policies", [])
        if not isinstance(own, list):
            raise RecipeError("recipe: [build] policies must be a list of \"SOURCE.FIELD=VALUE\" strings")
        table = {**table, "policies": [*source_policies, *own]}
    build = _settings(BuildConfig, table, "build", root=root, out=shards, overwrite=False)
    unknown = [t for t in build.tasks if t not in TASKS]
    if unknown:
        raise RecipeError(f"recipe: [build] unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    return build


def _train(table: dict, shards: str, base: str) -> dict[str, Any]:
    """The TrainConfig values train.json gets, checked now against TrainConfig (unknown key, wrong type or
    value: a RecipeError): the table as written, plus `shards` and `task_weights` from `weights`
    (family -> weight). Those two keep their bare (pre-`data`) names, so that a recipe run before the
    loader's settings were nested writes the same train.json and is not seen as changed."""
    if not isinstance(table, dict):
        raise RecipeError("recipe: [train] must be a table")
    values = dict(table)
    data = values.get("data")
    own_weights = "task_weights" in values or (isinstance(data, dict) and "task_weights" in data)
    if own_weights and "weights" not in values:  # TrainConfig's own spelling, [[family, weight], ...]
        return _checked_train({"shards": shards, **values}, base)
    weights = values.pop("weights", {family: 1.0 for family in FAMILY_NAMES})
    _only(weights, set(FAMILY_NAMES), "train.weights")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights.values()):
        raise RecipeError("recipe: [train.weights] weights must be numbers >= 0")
    return _checked_train({"shards": shards, **values, "task_weights": [[f, float(w)] for f, w in weights.items()]},
                          base)


def _checked_train(values: dict[str, Any], base: str) -> dict[str, Any]:
    from onegen.training.train_config import config_from_values

    for key in ("out", "val_shards", "eval_depth", "eval_camera"):  # run folder, validation and eval sets
        if isinstance(values.get(key), str) and values[key]:
            values[key] = _path(values[key], base)
    try:
        config_from_values(values, "train")
    except SettingError as error:
        raise RecipeError(f"recipe: {error}") from None
    return values


def train_fields() -> set[str]:
    """The top-level keys a train.json may have: TrainConfig's field names (`data` among them) and the
    loader's bare legacy names. From the torch-free config module: importing the trainer for them cost
    every `onegen run` 2.4 s of torch import (bench/results/startup.txt)."""
    from onegen.core.config_fields import options
    from onegen.training.train_config import TrainConfig

    return {key.split(".", 1)[0] for option in options(TrainConfig) for key in option.keys}
