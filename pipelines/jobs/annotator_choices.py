"""Annotator names the CLI accepts, and `--set name.field=value` options applied to their dataclass fields.

Classes are imported only when chosen, so `onegen annotate --annotators canny` never imports
transformers or ultralytics. An annotator outside the package is named by import path,
`--annotators mypkg.module:MyAnnotator` (and `--set mypkg.module:MyAnnotator.field=value` or
`--set <its name>.field=value`); the module must be importable on the driver AND on every Ray worker
(on a cluster: install it there, or ship it with `ray.init(runtime_env={"py_modules": [...]})`).
Recipes give typed values (`make_annotator(choice, {field: value})`), checked against the field types.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from onegen.annotators.base import Annotator
from onegen.core.errors import UserError

# name -> (module, class). Plain data for the CLI's lookup, not a plug-in registry.
ANNOTATOR_CLASSES: dict[str, tuple[str, str]] = {
    "canny": ("onegen.annotators.conditions", "CannyAnnotator"),
    "blur": ("onegen.annotators.conditions", "BlurAnnotator"),
    "lowres": ("onegen.annotators.conditions", "LowresAnnotator"),
    "inpaint": ("onegen.annotators.conditions", "InpaintAnnotator"),
    "cameras": ("onegen.annotators.cameras_annotator", "CamerasAnnotator"),
    "depth": ("onegen.annotators.depth", "DepthAnnotator"),
    "depth_gt": ("onegen.annotators.gt_depth", "GtDepthAnnotator"),
    "pose": ("onegen.annotators.pose", "PoseAnnotator"),
    "hed": ("onegen.annotators.hed", "HedAnnotator"),
    "segment": ("onegen.annotators.segment", "SegmentAnnotator"),
    "caption": ("onegen.annotators.caption", "CaptionAnnotator"),
    "entities": ("onegen.annotators.caption", "EntitiesAnnotator"),
    "faces": ("onegen.annotators.faces", "FacesAnnotator"),
    "phash": ("onegen.annotators.phash", "PhashAnnotator"),
    "clip": ("onegen.annotators.clip", "ClipAnnotator"),
    "aesthetic": ("onegen.annotators.aesthetic", "AestheticAnnotator"),
    "nsfw": ("onegen.annotators.image_scores", "NsfwAnnotator"),
    "watermark": ("onegen.annotators.image_scores", "WatermarkAnnotator"),
}


class AnnotatorChoiceError(UserError):
    """Unknown annotator name or a bad --set option; the message is one line."""


def make_annotators(names: list[str], settings: list[str]) -> list[Annotator]:
    """Instantiate the named annotators (names or `module:Class` paths) with `name.field=value` settings."""
    options: dict[str, dict[str, str]] = {}
    for setting in settings:
        target, _, value = setting.partition("=")
        name, dot, field_name = target.rpartition(".")
        if not field_name or not dot or not name or not _:
            raise AnnotatorChoiceError(f"--set {setting!r}: expected NAME.FIELD=VALUE")
        options.setdefault(name, {})[field_name] = value
    classes = {choice: annotator_class(choice) for choice in names}
    labels = {choice: {choice, cls.name} for choice, cls in classes.items()}
    stray = [n for n in options if not any(n in known for known in labels.values())]
    if stray:
        annotator_class(stray[0])  # unknown name: its own message
        raise AnnotatorChoiceError(f"--set {stray[0]}.*: {stray[0]} is not among --annotators {','.join(names)}")
    return [make_annotator(choice, {f: v for label in labels[choice] for f, v in options.get(label, {}).items()})
            for choice in names]


def annotator_class(choice: str) -> type[Annotator]:
    """The class of a known annotator name, or of an import path `package.module:ClassName`."""
    if ":" not in choice:
        if choice not in ANNOTATOR_CLASSES:
            raise AnnotatorChoiceError(f"unknown annotator {choice!r}; choose from {', '.join(ANNOTATOR_CLASSES)} "
                                       "or give an import path module:Class")
        module, class_name = ANNOTATOR_CLASSES[choice]
        return getattr(importlib.import_module(module), class_name)
    module, _, class_name = choice.partition(":")
    try:
        cls = getattr(importlib.import_module(module), class_name)
    except (ImportError, AttributeError) as error:
        raise AnnotatorChoiceError(f"annotator {choice!r} cannot be loaded: {error}") from None
    if not (isinstance(cls, type) and issubclass(cls, Annotator) and dataclasses.is_dataclass(cls) and cls.name):
        raise AnnotatorChoiceError(f"annotator {choice!r} is not a dataclass subclass of "
                                   "onegen.annotators.base.Annotator with a name")
    return cls


def make_annotator(choice: str, values: dict[str, Any]) -> Annotator:
    """One annotator with its fields set: strings are parsed as `--set` parses them, other values
    (from a recipe) must already have the field's type (ints pass for floats, lists for tuples)."""
    cls = annotator_class(choice)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for field_name, value in values.items():
        if field_name not in fields:
            raise AnnotatorChoiceError(f"{choice} has no setting {field_name!r}; settings: {', '.join(sorted(fields))}")
        label = f"{choice}.{field_name}"
        hint = hints[field_name]
        kwargs[field_name] = _parse(value, hint, label) if isinstance(value, str) else _typed(value, hint, label)
    return cls(**kwargs)


def _typed(value: Any, hint: Any, label: str) -> Any:
    """A non-string recipe value checked against `hint` (bool is not an int here)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        item = args[0] if args else Any
        return tuple(_parse(v, item, label) if isinstance(v, str) else _typed(v, item, label) for v in value)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
        return _typed(value, args[0], label)
    ok = (hint is Any or (hint is bool and isinstance(value, bool))
          or (hint is int and isinstance(value, int) and not isinstance(value, bool))
          or (hint is float and isinstance(value, (int, float)) and not isinstance(value, bool)))
    if not ok:
        raise AnnotatorChoiceError(f"{label} = {value!r}: not a valid {getattr(hint, '__name__', hint)}")
    return float(value) if hint is float else value


def _parse(text: str, hint: Any, label: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    try:
        if hint is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes")
        if hint in (int, float, str):
            return hint(text)
        if origin is tuple:
            item = args[0] if args else str
            return tuple(_parse(part, item, label) for part in text.split(",") if part)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and args:
            return _parse(text, args[0], label)
    except ValueError:
        raise AnnotatorChoiceError(f"--set {label}={text!r}: not a valid {getattr(hint, '__name__', hint)}") from None
    return text
