"""onegen.pipelines.cli: the `onegen` command line (parser, path checks, failures, help, process exit).

The top room: it parses, checks what the user named, calls the jobs, the recipe runner, the demo
and the training commands, and tells a user error from a bug (failures.py). Nothing below imports it.
"""
