"""`onegen annotate --help`: every annotator with its settings, default model ids and GPU need.

Read from the annotator dataclasses' *source* (Python's `ast`), not by importing them: the annotator
modules import numpy, pyarrow, OpenCV and, for some, torch at module level, and `--help` must start
in well under a second. Names come from the `ANNOTATOR_CLASSES` literal of pipelines/jobs/annotator_choices.py;
each class's fields are its own plus those of its bases (in the same module, imported from another
onegen module, or the `Annotator` base of annotators/base.py), later definitions winning, as dataclasses
do. tests/pipelines/test_cli_entry.py checks the table against the imported dataclasses.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import cache

CHOICES_MODULE = "onegen.pipelines.jobs.annotator_choices"


@dataclass(frozen=True)
class AnnotatorInfo:
    name: str
    module: str
    class_name: str
    fields: dict[str, str]  # setting -> default, as written in the source

    @property
    def num_gpus(self) -> float:
        return float(ast.literal_eval(self.fields.get("num_gpus", "0.0")))

    @property
    def model_ids(self) -> dict[str, str]:
        """Settings naming a checkpoint (a field whose name mentions model or checkpoint), with their defaults."""
        return {k: v for k, v in self.fields.items() if ("model" in k or "checkpoint" in k) and v.startswith(("'", '"'))}


@cache
def _tree(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(module)
    with open(spec.origin, encoding="utf-8") as handle:
        return ast.parse(handle.read(), spec.origin)


def _source(module: str) -> str:
    return open(importlib.util.find_spec(module).origin, encoding="utf-8").read()


def annotator_classes() -> dict[str, tuple[str, str]]:
    """The `ANNOTATOR_CLASSES` literal of annotator_choices.py: name -> (module, class)."""
    for node in _tree(CHOICES_MODULE).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "ANNOTATOR_CLASSES":
            return ast.literal_eval(node.value)
    raise LookupError(f"{CHOICES_MODULE} has no ANNOTATOR_CLASSES literal")


def _is_classvar(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def class_fields(module: str, class_name: str) -> dict[str, str]:
    """Dataclass fields of `module.class_name` with their default's source text, bases' fields first."""
    tree = _tree(module)
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    imported = {alias.asname or alias.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module
                for alias in n.names}
    node = classes.get(class_name)
    if node is None:
        raise LookupError(f"{module} defines no class {class_name}")
    fields: dict[str, str] = {}
    for base in node.bases:
        base_name = ast.unparse(base)
        if base_name in classes:
            fields.update(class_fields(module, base_name))
        elif imported.get(base_name, "").startswith("onegen."):
            fields.update(class_fields(imported[base_name], base_name))
    source = _source(module)
    constants = _constants(tree)
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            name = statement.target.id
            if _is_classvar(statement.annotation) or statement.value is None or name.startswith("_"):
                continue  # class constants and private state (field(init=False)) are not settings
            value = statement.value
            fields[name] = constants.get(value.id, value.id) if isinstance(value, ast.Name) else (
                ast.get_source_segment(source, value) or "")
    return fields


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = <literal>` assignments, as source text (a default written as a constant)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = repr(ast.literal_eval(node.value))
            except ValueError:
                continue  # not a literal (a call, an expression): shown by name
    return found


def annotator_table() -> list[AnnotatorInfo]:
    """Every annotator the CLI accepts, in `ANNOTATOR_CLASSES` order."""
    return [AnnotatorInfo(name, module, cls, class_fields(module, cls))
            for name, (module, cls) in annotator_classes().items()]


def add_annotator_list(parser) -> None:
    """Append the annotator list to `parser`'s help, read only when the help is printed."""
    plain = parser.format_help

    def format_help() -> str:
        parser.epilog = annotate_epilog()
        return plain()

    parser.format_help = format_help


def annotate_epilog() -> str:
    """The annotator list shown under `onegen annotate --help`."""
    lines = ["annotators (--set NAME.FIELD=VALUE changes a setting; model ids are hub ids in the offline HF",
             "cache, filled with `hf download ID`, or local folders):"]
    for info in annotator_table():
        need = f"GPU x{info.num_gpus:g}" if info.num_gpus else "CPU"
        models = " ".join(f"{k}={v.strip(chr(34) + chr(39)) or '(none)'}" for k, v in info.model_ids.items())
        settings = ", ".join(f"{k}={_short(v)}" for k, v in info.fields.items() if k not in info.model_ids)
        lines.append(f"  {info.name:<10} {need:<8} {models}".rstrip())
        lines.append(f"  {'':<10} settings: {settings}")
    return "\n".join(lines)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 4] + "...'"
