"""How a failed `onegen` command is told apart and reported: a user error (one line, exit 2), a job
failure (one line and a traceback file, exit 1), or a bug (its traceback, as Python prints it).

A user error is an instance of `UserError` (core/errors.py), raised where the path or argument is
checked; nothing is inferred from an exception's class name or from traceback text. An exception
raised on a Ray worker reaches the driver wrapped by Ray: a `RayTaskError` holds the worker's exception
as `.cause` (and `as_instanceof_cause()` also makes it an instance of that class, but its text is the
worker's whole traceback); Ray Data's `UserCodeException` holds a UDF's exception as `__cause__`. The
worker's exception is found by looking through exactly those wrappers, Ray's own exception types,
never through `__context__` nor through an exception of ours: an error of ours raised while handling
(or `from`) a user error is a bug and keeps its traceback.

What Ray does not carry is arranged where it happens:
- an actor that raises in `__init__` reaches the driver as `ActorDiedError`, which keeps only the
  error's text: the annotator actor raises a setup error with its first batch instead
  (pipelines/jobs/annotate_work.py, `AnnotatorActor`);
- Ray Data drops a UDF's exception (the `__cause__` of its `UserCodeException` is not pickled) unless
  `DataContext.raise_original_map_exception` is on (set by pipelines/runtime/units.py for unit jobs);
- Ray Data appends its retry notes to the first argument of a UDF's exception (`Failed to apply UDF
  transform after 1/1 attempts ...`): the message of an exception found behind a Ray wrapper is its
  first line (a user error's message is one line, core/errors.py).
"""

from __future__ import annotations

import sys
import traceback

from onegen.core.errors import UserError

_MAX_WRAPPERS = 8  # Ray nests its wrappers two or three deep; a bound, in case a chain loops


def find_error(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`error`, or the worker's exception that Ray wrapped in it, when that is an instance of `kinds`; else None."""
    for _ in range(_MAX_WRAPPERS):
        wrapped = _ray_wrapped(error)
        if wrapped is None:
            return error if isinstance(error, kinds) else None
        error = wrapped
    return None


def _ray_wrapped(error: BaseException) -> BaseException | None:
    """The exception one of Ray's wrappers holds (`RayTaskError.cause`, else `__cause__`), or None when
    `error` is not one of Ray's exceptions. No Ray exception exists in a process that never imported Ray."""
    exceptions = sys.modules.get("ray.exceptions")
    if exceptions is None or not isinstance(error, exceptions.RayError):
        return None
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error.__cause__


def _message(found: BaseException, error: BaseException) -> str:
    text = str(found)
    return text if found is error else text.split("\n", 1)[0]  # Ray's notes follow (module docstring)


def user_error_message(error: BaseException) -> str | None:
    """The one line to print for a user error (`error`, or one raised on a Ray worker); None for anything else."""
    found = find_error(error, (UserError,))
    return None if found is None else _message(found, error)


def report_failure(error: BaseException, kind: type[BaseException], log_path: str) -> int:
    """A job failure of type `kind` (e.g. AnnotationFailed, raised on a worker and wrapped by Ray): its one
    line on the terminal's stderr, the whole traceback in `log_path`, exit status 1. Any other exception
    propagates with its traceback."""
    found = find_error(error, (kind,))
    if found is None:
        raise error
    from onegen.core.job_output import terminal_stderr
    from onegen.manifests import files

    files.commit_bytes(log_path, "".join(traceback.format_exception(error)).encode())
    print(f"onegen: error: {_message(found, error)} (traceback: {log_path})", file=terminal_stderr())  # not the job's log
    return 1
