"""One owner per concept (issue 21 item 2), read from the source with `ast`:

- task tokens (and the sampler's task names) are spelled only in core/tasks.py: everything else names them
  by the table's constants, reads them from its rows, or builds `[[token]]` with `tasks.marker`;
- every path of a dataset root or a shards folder is spelled only in manifests/layout.py: no other module
  joins a path with a store segment ("catalog", "annotations", "dedup", "jobs", "manifests", ...) or names
  one of the layout's files (build.json, _SUCCESS.json, ...).

Docstrings and comments may describe them; code may not spell them. Each allowed exception says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from onegen.core import tasks

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("core", "manifests", "annotators", "model", "training", "evaluation", "pipelines")

TASK_NAMES = frozenset({row.token for row in tasks.ROWS} | {n for row in tasks.ROWS for n in row.sample_as}
                       | {tasks.IMAGE2IMAGE})
TASK_OWNER = "core/tasks.py"
# (module, literal): why the literal is not a task token there
TASK_EXCEPTIONS = {
    ("pipelines/jobs/build.py", "multiview"): "BuildConfig's `multiview` settings section (a build.json key)",
    ("pipelines/jobs/build.py", "faceid"): "BuildConfig's `faceid` settings section (a build.json key)",
    ("pipelines/recipe/parse.py", "[[...]]"): "TOML's array-of-tables syntax ([[sources]]) in messages",
}

PATH_SEGMENTS = frozenset({"catalog", "rejects", "annotations", "dedup", "jobs", "manifests", "skipped", "units"})
LAYOUT_FILES = frozenset({"build.json", "index.json", "_SUCCESS.json", "_job.json", "train.json", "README.md"})
PATH_OWNER = "manifests/layout.py"
PATH_EXCEPTIONS: dict[tuple[str, str], str] = {}

_BRACKETED = re.compile(r"\[\[([A-Za-z0-9_]+)\]\]")


def _sources() -> list[Path]:
    return sorted(p for room in ROOMS if (REPO / room).is_dir() for p in (REPO / room).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _strings(tree: ast.AST) -> list[ast.Constant]:
    skip = _docstrings(tree)
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def task_spellings(source: str) -> list[str]:
    """The task names a module's code spells: string literals equal to one, `[[name]]` inside a literal, and
    f-strings that put brackets around a value (`f"[[{task}]]"`, reported as "[[...]]")."""
    tree = ast.parse(source)
    found = []
    for node in _strings(tree):
        if node.value in TASK_NAMES:
            found.append(node.value)
        found += [f"[[{name}]]" for name in _BRACKETED.findall(node.value) if name in TASK_NAMES]
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            for before, value, after in zip(node.values, node.values[1:], node.values[2:], strict=False):
                if (isinstance(before, ast.Constant) and str(before.value).endswith("[[")
                        and isinstance(value, ast.FormattedValue)
                        and isinstance(after, ast.Constant) and str(after.value).startswith("]]")):
                    found.append("[[...]]")
    return found


_SOURCE_FILE = re.compile(r"[\w./]+\.py\b")  # "pipelines/jobs/ingest.py" names a module, not a dataset path


def _segments(text: str) -> set[str]:
    return {part for part in _SOURCE_FILE.sub("", text).split("/") if part} & PATH_SEGMENTS


def _joined(node: ast.AST) -> list[ast.Constant]:
    """String literals that take part in building a path: arguments of a *join* call, operands of `/`, and
    the literal pieces of an f-string or string that holds a "/"."""
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name.endswith("join") or name == "joinpath":
            return [a for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return [o for o in (node.left, node.right) if isinstance(o, ast.Constant) and isinstance(o.value, str)]
    if isinstance(node, ast.JoinedStr):
        return [v for v in node.values if isinstance(v, ast.Constant) and "/" in str(v.value)]
    return []


def path_spellings(source: str) -> list[str]:
    """Store segments joined into a path (or kept in a constant for joining later), and the layout's file
    names, as a module's code spells them."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = [n.value for n in _strings(tree) if n.value in LAYOUT_FILES]
    found += [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
              and n.value.value in PATH_SEGMENTS and all(isinstance(t, ast.Name) and t.id.isupper() for t in n.targets)]
    for node in ast.walk(tree):
        for literal in _joined(node):
            if id(literal) not in skip:
                found += sorted(_segments(literal.value))
    for node in _strings(tree):  # a plain "catalog/..." or ".../jobs/..." literal is a path too
        if "/" in node.value and " " not in node.value:
            found += sorted(_segments(node.value))
    return found


def _violations(spell, owner: str, exceptions: dict) -> list[str]:
    found = []
    for path in _sources():
        module = str(path.relative_to(REPO))
        if module == owner:
            continue
        for literal in spell(path.read_text(encoding="utf-8")):
            if (module, literal) not in exceptions:
                found.append(f"{module}: {literal!r}")
    return sorted(set(found))


def test_task_tokens_are_spelled_only_in_the_task_table():
    assert _violations(task_spellings, TASK_OWNER, TASK_EXCEPTIONS) == []


def test_dataset_paths_are_spelled_only_in_the_layout():
    assert _violations(path_spellings, PATH_OWNER, PATH_EXCEPTIONS) == []


def test_the_owners_spell_them():
    """The scans would find something in the owners themselves (so an empty answer above means something)."""
    table = task_spellings((REPO / TASK_OWNER).read_text(encoding="utf-8"))
    assert {tasks.DEPTH2IMAGE, tasks.CAMERA_POSE, "image2depth"} <= set(table)
    layout = path_spellings((REPO / PATH_OWNER).read_text(encoding="utf-8"))
    assert {"catalog", "annotations", "dedup", "jobs", "manifests", "build.json", "_SUCCESS.json"} <= set(layout)


def test_the_scans_see_what_they_forbid():
    code = '''
"""A docstring may say depth2image, [[faceid]] and catalog/<source>/part-00000.parquet."""
def f(root, task, files, os, Path):
    a = "canny2image"
    b = f"[[{task}]] a photo"
    c = "[[multiview]] a scene"
    d = files.join(root, "dedup", f"phash-k{4}")
    e = os.path.join(root, "jobs", "ingest.log")
    g = Path(root) / "manifests"
    h = f"{root}/annotations/{task}"
    i = "_SUCCESS.json"
    j = "skipped"  # a status, not a path: allowed
    k = "(see pipelines/jobs/ingest.py)"  # a module's file name: allowed
    return "image2depth"
UNITS = "units"
'''
    assert sorted(set(task_spellings(code))) == ["[[...]]", "[[multiview]]", "canny2image", "image2depth"]
    assert sorted(set(path_spellings(code))) == ["_SUCCESS.json", "annotations", "dedup", "jobs", "manifests", "units"]
