"""onegen.pipelines.cli: the `onegen` command line (parser, path checks, help, process exit).

The top room: it parses, checks what the user named, and calls the jobs, the recipe runner, the demo
and the training commands. Nothing below imports it.
"""
