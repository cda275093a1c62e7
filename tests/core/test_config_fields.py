"""core/config_fields.py: a settings dataclass -> flags (with their help) and recipe keys that reach the same
fields; choices, bools, lists, spans, nested groups (flattened or prefixed, with legacy names); one-line errors."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from onegen.core.config_fields import (
    SettingError,
    add_arguments,
    check_choices,
    from_args,
    from_table,
    group,
    options,
    require,
    setting,
)
from onegen.core.errors import UserError


@dataclass(frozen=True)
class Inner:
    low: int = setting("inner: the fewest, N or MIN-MAX", 2, name="range", span="high")
    high: int = setting("inner: the most (set with --range)", 5)
    ratio: float = setting("inner: a fraction of something", 0.5)

    def __post_init__(self) -> None:
        require(self.low <= self.high, f"need low <= high, got {self.low}-{self.high}")


@dataclass(frozen=True)
class Loader:
    shards: str = setting("loader: the folder it reads", "")
    prob: float = setting("loader: the chance of a thing", 0.25)


@dataclass(frozen=True)
class Job:
    root: str = setting("the root folder", positional=True)
    mode: Literal["fast", "slow"] = setting("how hard to try", "fast")
    names: tuple[str, ...] = setting("comma-separated names", ())
    rules: tuple[str, ...] = setting("a repeatable rule", (), flag="rule", repeat=True)
    pairs: tuple[tuple[int, int], ...] = setting("JSON pairs", ((1, 2),))
    only_once: bool = setting("a switch", False)
    limit: float | None = setting("an optional limit", None)
    inner: Inner = group(Inner, "the inner settings")
    loader: Loader = group(Loader, "the loader", prefix="data.", legacy=("shards",))
    cpus: int = setting("set by the job itself", 1, internal=True)

    def __post_init__(self) -> None:
        check_choices(self)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="job")
    add_arguments(parser, Job)
    return parser


def test_every_field_becomes_a_flag_with_its_help_and_default(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, doc in [("--mode {fast,slow}", "how hard to try (default: fast)"), ("--names NAMES", "comma-separated"),
                      ("--rule RULE", "a repeatable rule"), ("--pairs JSON", "JSON pairs (default: [[1, 2]])"),
                      ("--only-once, --no-only-once", "a switch"), ("--limit LIMIT", "an optional limit"),
                      ("--range N|MIN-MAX", "inner: the fewest, N or MIN-MAX (default: 2-5)"),
                      ("--ratio RATIO", "inner: a fraction of something (default: 0.5)"),
                      ("--shards SHARDS, --data.shards SHARDS", "loader: the folder it reads"),
                      ("--data.prob DATA.PROB", "loader: the chance of a thing (default: 0.25)")]:
        assert f"{flag} {doc}" in text, flag
    assert "root the root folder" in text
    assert "--cpus" not in text and "--high" not in text  # internal; set through --range


def test_a_flag_and_a_recipe_key_reach_the_same_field():
    argv = ["r", "--mode", "slow", "--names", "a,b", "--rule", "x>1", "--rule", "y<2", "--pairs", "[[3, 4]]",
            "--only-once", "--limit", "7", "--range", "3-9", "--ratio", "1", "--shards", "s", "--data.prob", "0.5"]
    table = {"root": "r", "mode": "slow", "names": ["a", "b"], "rules": ["x>1", "y<2"], "pairs": [[3, 4]],
             "only_once": True, "limit": 7, "range": "3-9", "ratio": 1, "data": {"shards": "s", "prob": 0.5}}
    from_cli = from_args(Job, _parser().parse_args(argv))
    assert from_cli == from_table(Job, table, "job")
    assert from_cli == Job("r", "slow", ("a", "b"), ("x>1", "y<2"), ((3, 4),), True, 7.0, Inner(3, 9, 1.0),
                           Loader("s", 0.5))
    # the dotted spelling, the legacy bare name, and a single N for a span
    dotted = from_table(Job, {"root": "r", "data.prob": 0.5, "shards": "s", "range": 4})
    assert dotted.loader == Loader("s", 0.5) and (dotted.inner.low, dotted.inner.high) == (4, 4)
    assert from_args(Job, _parser().parse_args(["r"])) == Job("r")  # nothing given: the dataclass defaults


@pytest.mark.parametrize("table, message", [
    ({"root": "r", "mdoe": "slow"}, "[job] has unknown field(s) ['mdoe']; fields: "),
    ({"root": "r", "mode": "quick"}, "[job] mode = 'quick': expected one of 'fast', 'slow'"),
    ({"root": "r", "ratio": "x"}, "[job] ratio = 'x': expected float"),
    ({"root": "r", "pairs": [[1]]}, "[job] pairs = [[1]]: expected a list of a list of 2: int, int"),
    ({"root": "r", "range": "9-3"}, "[job] need low <= high, got 9-3"),
    ({"root": "r", "shards": "a", "data": {"shards": "b"}}, "are the same setting: give one"),
    ({"mode": "slow"}, "[job] needs root"),
])
def test_bad_values_are_one_line_user_errors(table, message):
    with pytest.raises(SettingError) as error:
        from_table(Job, table, "job")
    assert isinstance(error.value, UserError) and message in str(error.value) and "\n" not in str(error.value)


def test_bad_flags_are_argparse_errors_and_literals_are_checked_on_construction(capsys):
    for argv in (["r", "--mode", "quick"], ["r", "--range", "a-b"], ["r", "--pairs", "[1, 2]"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
        assert "job: error: argument" in capsys.readouterr().err
    with pytest.raises(SettingError, match="mode = 'quick': expected one of 'fast', 'slow'"):
        Job("r", mode="quick")


def test_a_field_without_its_help_is_a_bug_not_a_flag():
    @dataclass(frozen=True)
    class Bare:
        size: int = 3

    with pytest.raises(TypeError, match="Bare.size is no setting"):
        options(Bare)
