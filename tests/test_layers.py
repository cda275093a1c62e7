"""The rooms' import rule (docs/architecture.md): imports only run downwards, and no module-level cycle
hides behind a function-level import. Read from the source with `ast`, so it fails on the commit that adds
an upward import, wherever in a module it stands."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# room -> layer; a module may import its own room and any room of a lower layer.
LAYERS = {
    "core": 0,
    "manifests": 1,
    "annotators": 2, "model": 2,
    "training": 3,
    "evaluation": 4, "pipelines.runtime": 4, "pipelines.sources": 4,
    "pipelines.samples": 5,
    "pipelines.hygiene": 6,
    "pipelines.jobs": 7,
    "pipelines.preview": 8, "pipelines.recipe": 8,
    "pipelines.demo": 9,
    "pipelines.cli": 10,
}


def _room_of_path(path: Path, repo: Path = REPO) -> str:
    parts = path.relative_to(repo).parts
    return f"pipelines.{parts[1]}" if parts[0] == "pipelines" and len(parts) > 2 else parts[0]


def _module_of_path(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(["onegen"] + [p for p in parts if p != "__init__"])


def _room_of_module(module: str, repo: Path = REPO) -> str | None:
    parts = module.split(".")
    if parts[0] != "onegen" or len(parts) < 2:
        return None
    if parts[1] == "pipelines" and len(parts) > 2 and (repo / "pipelines" / parts[2]).is_dir():
        return f"pipelines.{parts[2]}"
    return parts[1] if parts[1] in LAYERS or parts[1] == "pipelines" else None


def _imports(path: Path, repo: Path = REPO) -> set[str]:
    """Every onegen module `path` imports, at any depth of the module (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onegen"):
            for alias in node.names:  # `from onegen.x import y`: y may be a module or a name in x
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _source_of(candidate, repo) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("onegen"))
    return found


def _source_of(module: str, repo: Path = REPO) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return None
    base = repo.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _sources() -> list[Path]:
    rooms = {name.split(".")[0] for name in LAYERS}
    return sorted(p for room in rooms if (REPO / room).is_dir() for p in (REPO / room).rglob("*.py"))


def test_imports_only_run_downwards():
    upward = []
    for path in _sources():
        room = _room_of_path(path)
        for module in _imports(path):
            target = _room_of_module(module)
            if target is None or target == room or room not in LAYERS:
                continue
            if LAYERS[target] >= LAYERS[room]:
                upward.append(f"{path.relative_to(REPO)} ({room}) imports {module} ({target})")
    assert upward == []


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """The strongly connected groups of more than one module (Tarjan), each as "a <-> b <-> ..." sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(" <-> ".join(sorted(group)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(groups)


def test_no_import_cycle_between_modules():
    graph = {_module_of_path(p): {m for m in _imports(p) if _source_of(m)} for p in _sources()}
    assert _cycles(graph) == []


def test_the_rule_sees_an_upward_import(tmp_path):
    """The checker itself: a function-level import of a job inside core is found and ranked upward."""
    bad = tmp_path / "core" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from onegen.pipelines.jobs import build\n")
    (tmp_path / "pipelines" / "jobs").mkdir(parents=True)
    (tmp_path / "pipelines" / "jobs" / "build.py").write_text("")
    [module] = _imports(bad, tmp_path)
    assert module == "onegen.pipelines.jobs.build"
    assert LAYERS[_room_of_module(module, tmp_path)] > LAYERS[_room_of_path(bad, tmp_path)]


def test_the_rule_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == ["a <-> b <-> c"]
