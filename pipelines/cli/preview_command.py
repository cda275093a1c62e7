"""`onegen preview SHARDS --out DIR`: the parser, without importing the report code (matplotlib, pyarrow).

`cmd_preview` imports pipelines/preview/report.py only when the command runs, so `onegen --help` stays fast.
"""

from __future__ import annotations

import argparse


def cmd_preview(args: argparse.Namespace) -> int:
    from onegen.pipelines.preview.report import write_preview

    tasks = [t for value in args.task or [] for t in value.split(",") if t]
    path = write_preview(args.shards, args.out, args.per_task, tasks or None, seed=args.seed)
    print(f"preview written: {path}")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `onegen preview SHARDS --out DIR [--per-task N] [--task T ...] [--seed S]`."""
    preview = subparsers.add_parser("preview", help="offline HTML report of a shards folder")
    preview.add_argument("shards", help="shards folder (tars + manifests/)")
    preview.add_argument("--out", required=True, help="report folder (local); index.html goes there")
    preview.add_argument("--per-task", type=int, default=4, help="samples shown per task (default: 4)")
    preview.add_argument("--task", action="append", help="task(s) to show (repeatable or comma-separated)")
    preview.add_argument("--seed", type=int, default=0,
                         help="seed of the spread of samples shown per task, drawn across sources (default: 0)")
    preview.set_defaults(run=cmd_preview)
