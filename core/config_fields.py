"""Settings dataclasses -> command-line flags and recipe keys: every setting is written once, as a field.

A job's settings are a frozen dataclass whose fields document themselves (`setting(help, default, ...)`,
stored in the field's metadata). From those fields this module makes
- a sub-command's flags (`add_arguments`) and reads them back into the dataclass (`from_args`),
- the keys of a recipe table or a JSON file (`from_table`),
so a flag and a recipe key reach the same field by construction, with the same default and the same help.

Names: a field's flag and key are its name (`--samples-per-shard`, `samples_per_shard`) unless `name=`
(both), `flag=` (the command line only) or `key=` (the recipe only) say otherwise. A nested settings
dataclass (`group(...)`) is flattened into its parent's flags and keys (`--samples-per-scene` sets
`multiview.samples_per_scene`), or, with `prefix="data."`, spelled with the prefix (`--data.reverse-prob`;
a `[train.data]` table or the dotted key `data.reverse_prob` in a recipe); `legacy=` names the nested
fields that also answer to their bare name, for files and command lines written before the nesting.

Types come from the annotations: str, int, float (an int passes), bool (`--x` / `--no-x`; true / false),
`X | None`, `Literal[...]` (the choices; `check_choices(self)` in `__post_init__` enforces them),
`tuple[str, ...]` (comma-separated on the command line, or a repeatable flag with `repeat=True`; a list
in a recipe), any other tuple (JSON on the command line, lists in a recipe). `span="other_field"` makes one
flag fill two int fields from "N" or "MIN-MAX" (`--views 2-12`). `internal=True` keeps a field off both
(a resource knob the job sets itself).

Errors: a wrong key, type or value is a `SettingError` (a UserError: one line, `onegen: error: ...`, exit
2); argparse reports bad flag values itself. Imports only the standard library and core.errors: parsers
are built from these dataclasses whenever `onegen` starts, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, Literal

from onegen.core.errors import UserError

_META = "onegen.setting"


class SettingError(UserError, ValueError):
    """A setting's value (a flag, a recipe key, a config file entry) cannot be used; the message is one line.

    Also a ValueError: settings checks raised ValueError before they had their own type."""


def setting(help: str, default: Any = MISSING, *, factory: Any = MISSING, name: str = "", flag: str = "",
            key: str = "", positional: bool = False, repeat: bool = False, span: str = "", metavar: str = "",
            internal: bool = False) -> Any:
    """A documented settings field (a `dataclasses.field`); see the module docstring for each option.

    No default: the flag is required (or `positional`) and so is the recipe key."""
    meta = {"help": help, "flag": flag or name, "key": key or name, "positional": positional, "repeat": repeat,
            "span": span, "metavar": metavar, "internal": internal}
    return dataclasses.field(default=default, default_factory=factory, metadata={_META: meta})


def group(factory: Any, help: str, *, prefix: str = "", legacy: tuple[str, ...] = (),
          derived: tuple[str, ...] = ()) -> Any:
    """A nested settings dataclass field, its default made by `factory` (None: required). `prefix` ("" flattens),
    `legacy`: nested fields that also take their bare name; `derived`: nested fields the parent sets itself
    (no flag, no key)."""
    meta = {"help": help, "group": True, "prefix": prefix, "legacy": legacy, "derived": derived}
    return dataclasses.field(default_factory=MISSING if factory is None else factory, metadata={_META: meta})


@dataclass(frozen=True)
class Option:
    """One setting as the command line and a recipe see it."""

    path: tuple[str, ...]  # field names from the top dataclass down, e.g. ("hygiene", "pose", "min_person_area")
    flags: tuple[str, ...]  # command-line names in snake_case, the first one is the argparse dest
    keys: tuple[str, ...]  # recipe / JSON names (dotted below a prefixed group)
    hint: Any  # the field's type
    help: str
    default: Any  # MISSING: required
    positional: bool = False
    repeat: bool = False
    span: tuple[str, ...] = ()  # the path of the field the upper end of a "MIN-MAX" value goes to
    metavar: str = ""

    @property
    def dest(self) -> str:
        return self.flags[0]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _meta(field: dataclasses.Field) -> dict:
    return field.metadata.get(_META, {})


def _default(field: dataclasses.Field) -> Any:
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else MISSING


def options(cls: type, given: Iterable[str] = ()) -> list[Option]:
    """Every flag / key of `cls`, in field order; `given` names top-level fields the caller sets itself."""
    return list(_options(cls, (), "", (), set(given), MISSING))


def _options(cls: type, path: tuple[str, ...], prefix: str, legacy: tuple[str, ...], skip: set[str],
             parent_default: Any) -> Iterable[Option]:
    hints = _hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    spanned = {_meta(field).get("span") for field in fields.values()}  # set through another field's flag
    for field in fields.values():
        meta = _meta(field)
        if field.name in skip or field.name in spanned or not field.init or meta.get("internal"):
            continue
        if not meta:
            raise TypeError(f"{cls.__name__}.{field.name} is no setting(...) / group(...): it has no help")
        default = _default(field) if parent_default is MISSING else getattr(parent_default, field.name)
        if meta.get("span") and default is not MISSING:  # the pair (low, high) one "MIN-MAX" value sets
            default = (default, _default(fields[meta["span"]]) if parent_default is MISSING
                       else getattr(parent_default, meta["span"]))
        if meta.get("group"):
            yield from _options(hints[field.name], (*path, field.name), prefix + meta["prefix"], meta["legacy"],
                                set(meta["derived"]), default)
            continue
        flag, key = meta["flag"] or field.name, meta["key"] or field.name
        flags, keys = (prefix + flag,), (prefix + key,)
        if prefix and field.name in legacy:
            flags, keys = (flag, *flags), (key, *keys)
        yield Option((*path, field.name), flags, keys, hints[field.name], meta["help"], default, meta["positional"],
                     meta["repeat"], (*path, meta["span"]) if meta["span"] else (), meta["metavar"])


# ------------------------------------------------------------------ values: types, choices, ranges


def _optional(hint: Any) -> Any:
    """X for `X | None`, else None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return None


def _choices(hint: Any) -> tuple | None:
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _describe(hint: Any) -> str:
    if (inner := _optional(hint)) is not None:
        return f"{_describe(inner)} or nothing"
    if (choices := _choices(hint)) is not None:
        return "one of " + ", ".join(repr(c) for c in choices)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)}: " + ", ".join(_describe(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def _value(hint: Any, value: Any) -> Any:
    """`value` (from TOML or JSON) as `hint` says, lists becoming tuples; raises ValueError when it is not."""
    if (inner := _optional(hint)) is not None:
        return None if value is None else _value(inner, value)
    if (choices := _choices(hint)) is not None:
        if value not in choices:
            raise ValueError
        return value
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v) for v in value)
        if len(value) != len(args):
            raise ValueError
        return tuple(_value(a, v) for a, v in zip(args, value, strict=True))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (isinstance(value, bool) and hint is not bool):
        raise ValueError
    return value


def parse_span(text: str | int) -> tuple[int, int]:
    """"N" (or N) -> (N, N); "MIN-MAX" -> (MIN, MAX)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text, text
    if not isinstance(text, str):
        raise ValueError(text)
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def _text(option: Option) -> Any:
    """The argparse `type` of `option`: command-line text -> value."""
    hint = _optional(option.hint) or option.hint
    if option.span:
        return _named(parse_span, "N or MIN-MAX")
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if args == (str, Ellipsis) and not option.repeat:
            return _named(lambda text: tuple(item for item in text.split(",") if item), "comma-separated list")
        if args != (str, Ellipsis):
            return _named(lambda text: _value(hint, json.loads(text)), f"JSON, {_describe(hint)}")
        return str
    return str if _choices(hint) is not None else hint


def _named(function: Any, name: str) -> Any:
    function.__name__ = name  # argparse names the type in its "invalid ... value" message
    return function


def check_choices(settings: Any) -> None:
    """Raise SettingError when a `Literal` field of the dataclass instance holds another value."""
    for name, hint in _hints(type(settings)).items():
        choices = _choices(_optional(hint) or hint)
        value = getattr(settings, name, None)
        if choices is not None and value not in choices and not (value is None and _optional(hint)):
            raise SettingError(f"{name} = {value!r}: expected one of {', '.join(repr(c) for c in choices)}")


def require(condition: bool, message: str) -> None:
    """Raise SettingError(message) unless `condition`: the one-line checks of `__post_init__`."""
    if not condition:
        raise SettingError(message)


# ------------------------------------------------------------------ the command line


def _shown(option: Option) -> str:
    default = option.default
    if option.span and default is not MISSING:
        return f"{default[0]}-{default[1]}" if default[0] != default[1] else str(default[0])
    if isinstance(default, str):
        return default
    return json.dumps(default)


def add_arguments(parser: argparse.ArgumentParser, cls: type, given: Iterable[str] = ()) -> None:
    """One argument per option of `cls` (module docstring); help is the field's, plus its default.

    Optional flags default to None ("not given": `from_args` keeps the dataclass default)."""
    for option in options(cls, given):
        help_text = option.help
        shown = option.default is not MISSING and option.default not in (None, "", ()) and option.default is not False
        if shown and "default" not in help_text:
            help_text = f"{help_text} (default: {_shown(option)})"
        hint = _optional(option.hint) or option.hint
        kwargs: dict[str, Any] = {"help": help_text}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.positional:
            parser.add_argument(option.dest, type=_text(option), **kwargs)
            continue
        names = [f"--{flag.replace('_', '-')}" for flag in option.flags]
        if hint is bool:
            parser.add_argument(*names, dest=option.dest, action=argparse.BooleanOptionalAction, default=None,
                                **kwargs)
            continue
        if (choices := _choices(hint)) is not None:
            kwargs["choices"] = [c for c in choices if c != ""]  # "" (off) is the default, never typed
        if option.repeat:
            kwargs["action"] = "append"
        elif option.span or (typing.get_origin(hint) is tuple and typing.get_args(hint) != (str, Ellipsis)):
            kwargs.setdefault("metavar", "N|MIN-MAX" if option.span else "JSON")
        parser.add_argument(*names, dest=option.dest, type=_text(option), default=None,
                            required=option.default is MISSING, **kwargs)


def from_args(cls: type, args: argparse.Namespace, base: Mapping[str, Any] | None = None, **given: Any) -> Any:
    """`cls` from the flags `add_arguments` made: the flags given override `base` (nested values, e.g. a
    config file's, from `table_values`), which overrides the defaults; `given` sets top-level fields."""
    values = _merge({}, base or {})
    for option in options(cls, given):
        value = getattr(args, option.dest, None)
        if value is None:
            continue
        if option.span:
            _put(values, option.path, value[0])
            _put(values, option.span, value[1])
        else:
            _put(values, option.path, tuple(value) if option.repeat else value)
    return build(cls, {**values, **given})


# ------------------------------------------------------------------ recipe tables and JSON files


def table_values(cls: type, table: Mapping[str, Any], where: str = "", given: Iterable[str] = ()) -> dict:
    """The nested field values a recipe table / JSON object names, checked and typed; raises SettingError
    (`[where] ...`) for an unknown key, a key given twice (by two of its names) or a wrong type."""
    label = f"[{where}] " if where else ""
    if not isinstance(table, Mapping):
        raise SettingError(f"{label}must be a table")
    by_key = {key: option for option in options(cls, given) for key in option.keys}
    values: dict = {}
    seen: dict[tuple[str, ...], str] = {}
    for key, value in _flat(table, _prefixes(by_key)):
        option = by_key.get(key)
        if option is None:
            canonical = sorted(option.keys[-1] for option in options(cls, given))
            raise SettingError(f"{label}has unknown field(s) {[key]}; fields: {', '.join(canonical)}")
        if option.path in seen:
            raise SettingError(f"{label}{key} and {seen[option.path]} are the same setting: give one")
        seen[option.path] = key
        try:
            if option.span:
                low, high = parse_span(value)
                _put(values, option.path, low)
                _put(values, option.span, high)
            else:
                _put(values, option.path, _value(option.hint, value))
        except ValueError:
            expected = "N or \"MIN-MAX\"" if option.span else _describe(option.hint)
            raise SettingError(f"{label}{key} = {value!r}: expected {expected}") from None
    return values


def from_table(cls: type, table: Mapping[str, Any], where: str = "", **given: Any) -> Any:
    """`cls` from a recipe table / JSON object (`table_values`) and the `given` top-level fields; a required
    key that is missing, or a value a `__post_init__` refuses, is a SettingError naming `[where]`."""
    values = table_values(cls, table, where, given)
    label = f"[{where}] " if where else ""
    for option in options(cls, given):
        if option.default is MISSING and _get(values, option.path) is MISSING:
            raise SettingError(f"{label}needs {option.keys[-1]}")
    try:
        return build(cls, {**values, **given})
    except SettingError as error:
        raise SettingError(f"{label}{error}") from None


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """`cls(**values)`, where a dict value of a group field updates that field's default instance."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in values:
            value = values[field.name]
            if _meta(field).get("group") and isinstance(value, Mapping):
                default = _default(field)
                value = build(_hints(cls)[field.name], value) if default is MISSING else _updated(default, value)
            kwargs[field.name] = value
    return cls(**kwargs)


def _updated(instance: Any, values: Mapping[str, Any]) -> Any:
    changes = {}
    for name, value in values.items():
        current = getattr(instance, name)
        changes[name] = _updated(current, value) if isinstance(value, Mapping) and dataclasses.is_dataclass(
            current) else value
    return dataclasses.replace(instance, **changes)


def _prefixes(by_key: Mapping[str, Option]) -> set[str]:
    return {key.rsplit(".", 1)[0] for key in by_key if "." in key}


def _flat(table: Mapping[str, Any], prefixes: set[str], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of a table whose prefixed groups may be nested tables (`[train.data]`)."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if name in prefixes and isinstance(value, Mapping):
            yield from _flat(value, prefixes, f"{name}.")
        else:
            yield name, value


def _put(values: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        values = values.setdefault(name, {})
    values[path[-1]] = value


def _get(values: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(values, Mapping) or name not in values:
            return MISSING
        values = values[name]
    return values


def _merge(into: dict, values: Mapping) -> dict:
    for name, value in values.items():
        if isinstance(value, Mapping):
            _merge(into.setdefault(name, {}), value)
        else:
            into[name] = value
    return into
