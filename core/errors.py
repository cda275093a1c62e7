"""The user-error type: what a user named is wrong, said in one line (`onegen: error: ...`, exit 2).

Raised where a path or an argument is checked, never inferred from an exception's class elsewhere: a
FileNotFoundError or KeyError from our own code is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave (a path, an argument, a recipe, an input) cannot be used as given."""


class PathError(UserError):
    """A path given on the command line is missing or not the kind of folder the command reads."""
