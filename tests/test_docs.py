"""Every reference the code makes to the project's own documents resolves inside the repo: the design
sections it cites (`docs/design.md §N`), the docs files and the test files it names."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("onegen", "core", "evaluation", "pipelines", "annotators", "model", "training", "manifests", "bench",
           "tests", "docs", "recipes")


def _texts() -> dict[str, str]:
    found = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*")) if (REPO / folder).is_dir() else []:
            if path.suffix in (".py", ".md", ".sh", ".toml") and path.is_file():
                found[str(path.relative_to(REPO))] = path.read_text(encoding="utf-8")
    found["README.md"] = (REPO / "README.md").read_text(encoding="utf-8")
    return found


def _design_sections() -> set[str]:
    headings = re.findall(r"^#{2,3} (\d+[a-z]?)\.", (REPO / "docs" / "design.md").read_text(encoding="utf-8"), re.M)
    return set(headings)


def test_every_cited_design_section_exists():
    sections = _design_sections()
    cited = {}
    for name, text in _texts().items():
        for match in re.finditer(r"docs/design\.md (§\d+[a-z]?(?:[-–, ]+§\d+[a-z]?)*)", text):
            for section in re.findall(r"§(\d+[a-z]?)", match.group(1)):
                cited.setdefault(section, name)
    assert {"2", "3", "4", "5", "6"} <= set(cited)  # the contracts the code leans on are cited
    assert {section: name for section, name in cited.items() if section not in sections} == {}


def test_no_reference_to_a_design_outside_the_repo():
    stale = [name for name, text in _texts().items() if re.search(r"\bDESIGN §", text) and name != "tests/test_docs.py"]
    assert stale == []


def test_every_test_file_named_exists():
    named = {}
    for name, text in _texts().items():
        for path in re.findall(r"\btests/[A-Za-z0-9_/]+\.py", text):
            named.setdefault(path, name)
    assert named and {path: name for path, name in named.items() if not (REPO / path).exists()} == {}


def test_every_docs_path_named_in_the_code_exists():
    named = set()
    for name, text in _texts().items():
        if name.endswith(".py"):
            named.update(re.findall(r"\bdocs/[A-Za-z0-9_.-]+\.(?:md|png)", text))
    assert named and [name for name in sorted(named) if not (REPO / name).exists()] == []
