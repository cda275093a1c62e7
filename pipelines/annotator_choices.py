"""Annotator names the CLI accepts, and `--set name.field=value` options applied to their dataclass fields.

Classes are imported only when chosen, so `onegen annotate --annotators canny` never imports
transformers or ultralytics.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from onegen.annotators.base import Annotator

# name -> (module, class). Plain data for the CLI's lookup, not a plug-in registry.
ANNOTATOR_CLASSES: dict[str, tuple[str, str]] = {
    "canny": ("onegen.annotators.conditions", "CannyAnnotator"),
    "blur": ("onegen.annotators.conditions", "BlurAnnotator"),
    "lowres": ("onegen.annotators.conditions", "LowresAnnotator"),
    "inpaint": ("onegen.annotators.conditions", "InpaintAnnotator"),
    "cameras": ("onegen.annotators.cameras_annotator", "CamerasAnnotator"),
    "depth": ("onegen.annotators.depth", "DepthAnnotator"),
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


class AnnotatorChoiceError(Exception):
    """Unknown annotator name or a bad --set option; the message is one line."""


def make_annotators(names: list[str], settings: list[str]) -> list[Annotator]:
    """Instantiate the named annotators with `name.field=value` settings applied."""
    options: dict[str, dict[str, str]] = {}
    for setting in settings:
        target, _, value = setting.partition("=")
        name, _, field_name = target.partition(".")
        if not field_name or not _:
            raise AnnotatorChoiceError(f"--set {setting!r}: expected NAME.FIELD=VALUE")
        options.setdefault(name, {})[field_name] = value
    unknown = [n for n in set(names) | set(options) if n not in ANNOTATOR_CLASSES]
    if unknown:
        raise AnnotatorChoiceError(f"unknown annotator(s) {sorted(unknown)}; choose from {', '.join(ANNOTATOR_CLASSES)}")
    return [_instantiate(name, options.get(name, {})) for name in names]


def _instantiate(name: str, values: dict[str, str]) -> Annotator:
    module, class_name = ANNOTATOR_CLASSES[name]
    cls = getattr(importlib.import_module(module), class_name)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for field_name, text in values.items():
        if field_name not in fields:
            raise AnnotatorChoiceError(f"{name} has no setting {field_name!r}; settings: {', '.join(sorted(fields))}")
        kwargs[field_name] = _parse(text, hints[field_name], f"{name}.{field_name}")
    return cls(**kwargs)


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
