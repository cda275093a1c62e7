"""The `onegen` command line: ingest, annotate, build, manifest {stats,verify,select}, demo.

Thin by design: each sub-command fills its job's dataclass config and calls the job. User errors
(`UserError`, core/errors.py: bad source, changed job, missing annotations or weights), raised here or
on a Ray worker, print one `onegen: error: ...` line and exit 2; anything else is a bug and keeps its
traceback (pipelines/cli/failures.py tells them apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from onegen.core.errors import UserError
from onegen.pipelines.cli.failures import report_failure, user_error_message
from onegen.pipelines.runtime.ray_setup import RayConfig


def _ray_config(args: argparse.Namespace) -> RayConfig:
    return RayConfig(address=args.address or "", num_cpus=args.num_cpus,
                     object_store_memory=args.object_store_mb * 2**20 if args.object_store_mb else None,
                     progress_bars=not args.no_progress)


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    from onegen.core.job_output import add_verbose_flag

    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--object-store-mb", type=int, help="object store size of the local Ray, MiB")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs made with another config/input")
    add_verbose_flag(parser)


def cmd_ingest(args: argparse.Namespace) -> int:
    from onegen.core.config_fields import from_args
    from onegen.pipelines.jobs.ingest import IngestConfig, run_ingest
    summary = run_ingest(from_args(IngestConfig, args, overwrite=args.overwrite), _ray_config(args))
    print(f"ingested {summary.source}: {summary.catalog_rows} catalog rows from {summary.items} items in "
          f"{summary.parts} parts ({summary.parts_done_before} already done); rejects: {summary.rejects or 'none'}")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from onegen.core.config_fields import from_args
    from onegen.pipelines.jobs.annotate import run_annotators
    from onegen.pipelines.jobs.annotate_work import AnnotationFailed
    from onegen.pipelines.jobs.annotator_choices import make_annotators
    from onegen.pipelines.jobs.settings import AnnotateSettings

    settings = from_args(AnnotateSettings, args, overwrite=args.overwrite)
    annotators = make_annotators(list(settings.annotators), list(settings.settings))
    try:
        summaries = run_annotators(settings.root, annotators, settings.overwrite, _ray_config(args),
                                   retry_errors=settings.retry_errors, max_error_rate=settings.max_error_rate)
    except Exception as error:
        from onegen.manifests.layout import DatasetLayout

        return report_failure(error, AnnotationFailed, DatasetLayout(args.root).failure_log("annotate"))
    for summary in summaries:
        print(f"annotated {summary.annotator}: {summary.parts} parts ({summary.parts_done_before} already done); "
              f"statuses: {summary.statuses}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from onegen.core.config_fields import from_args
    from onegen.pipelines.jobs.build import BuildConfig, run_build

    config = from_args(BuildConfig, args, overwrite=args.overwrite)
    stats = run_build(config, _ray_config(args))
    print(f"built {stats['samples']} samples in {stats['shards']} shards ({stats['bytes']} bytes) at {args.out}: "
          f"{stats['samples_per_task']}")
    from onegen.manifests.dataset_card import caption_note

    if note := caption_note(args.out):
        print(note)
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from onegen.core.config_fields import from_args
    from onegen.pipelines.jobs.dedup_run import run_dedup
    from onegen.pipelines.jobs.settings import DedupSettings

    settings = from_args(DedupSettings, args)
    counts = run_dedup(settings.root, settings.method, settings.phash, settings.semantic, _ray_config(args))
    print(f"dedup ({args.method}): {counts}")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from onegen.manifests.query import select_shards, shard_stats
    from onegen.manifests.stats_table import stats_table
    from onegen.manifests.verify import summary_line, verify_shards

    if args.manifest_command == "stats":
        stats = shard_stats(args.shards)
        print(json.dumps(stats, indent=2) if args.json else stats_table(stats))
        return 0
    if args.manifest_command == "verify":
        checked, problems = verify_shards(args.shards)
        for line in problems:
            print(line)
        print(summary_line(checked, problems))
        return 1 if problems else 0
    for path in select_shards(args.shards, args.task or None, args.source or None):
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from onegen.pipelines.recipe.parse import load_recipe
    from onegen.pipelines.recipe.run import plan_recipe, policy_lines, run_recipe

    recipe = load_recipe(args.recipe, args.dir)
    if args.plan:  # from the stores' records and markers alone: no Ray, no model
        for plan in plan_recipe(recipe):
            print(plan.line())
        for line in policy_lines(recipe):
            print(line)
        return 0
    from onegen.core.job_output import job_output
    from onegen.manifests.layout import job_log

    with job_output(job_log(recipe.root, "run"), "run", args.verbose):  # the dataset root's jobs/run.log
        run_recipe(recipe, _ray_config(args), redo=args.redo)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from onegen.pipelines.demo.command import run_demo

    return run_demo(args.out, _ray_config(args), overwrite=args.overwrite)


_MANIFEST_HELP = {"stats": "samples per task / source, shards, bytes (tar sizes), skips, rejects, annotation "
                           "statuses: a short table, or every count as JSON (--json)",
                  "verify": "re-read every tar against its manifest (sizes, sha256, members); rc 1 on a problem",
                  "select": "print the shard paths holding the given --task / --source"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onegen", description="One-Gen data engine")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_job_commands(commands)
    _add_manifest_commands(commands)
    from onegen.pipelines.cli.eval_command import add_commands as add_eval_commands
    from onegen.pipelines.cli.preview_command import add_commands as add_preview_commands
    from onegen.pipelines.cli.train_commands import add_commands as add_training_commands

    add_preview_commands(commands)
    add_training_commands(commands)
    add_eval_commands(commands)
    _add_run_and_demo(commands)
    return parser


def _add_job_commands(commands) -> None:
    """ingest, annotate, build, dedup: each one's flags are its settings dataclass's fields."""
    from onegen.core.config_fields import add_arguments
    from onegen.pipelines.cli.annotator_help import add_annotator_list
    from onegen.pipelines.jobs.settings import AnnotateSettings, BuildConfig, DedupSettings, IngestConfig

    jobs = (("ingest", "raw items -> catalog", IngestConfig, ("overwrite",), cmd_ingest),
            ("annotate", "catalog -> annotations/<name>@<version>", AnnotateSettings, ("overwrite",), cmd_annotate),
            ("build", "catalog + annotations -> shards + manifests", BuildConfig, ("overwrite",), cmd_build),
            ("dedup", "find near duplicates from stored pHashes / CLIP embeddings", DedupSettings, (), cmd_dedup))
    for name, help_text, settings, given, run in jobs:
        extra = {"formatter_class": argparse.RawDescriptionHelpFormatter} if name == "annotate" else {}
        job = commands.add_parser(name, help=help_text, **extra)
        add_arguments(job, settings, given=given)
        _add_ray_options(job)
        job.set_defaults(run=run)
        if name == "annotate":
            add_annotator_list(job)


def _add_manifest_commands(commands) -> None:
    manifest = commands.add_parser("manifest", help="stats / verify / select over a shards folder")
    manifest_commands = manifest.add_subparsers(dest="manifest_command", required=True)
    for name in ("stats", "verify", "select"):
        sub = manifest_commands.add_parser(name, help=_MANIFEST_HELP[name])
        sub.add_argument("shards", help="shards folder (the --out of `onegen build`)")
        if name == "select":
            sub.add_argument("--task", action="append", help="repeatable")
            sub.add_argument("--source", action="append", help="repeatable")
        if name == "stats":
            sub.add_argument("--json", action="store_true", help="every count as JSON (default: a short table)")
        sub.set_defaults(run=cmd_manifest)


def _add_run_and_demo(commands) -> None:
    run = commands.add_parser("run", help="run a whole dataset recipe (TOML): ingest, annotate, build, mixture")
    run.add_argument("recipe", help="recipe file, e.g. recipes/onegen.toml")
    run.add_argument("--dir", help="folder relative recipe paths and {dir} resolve against (default: the recipe's)")
    run.add_argument("--plan", action="store_true", help="print each stage's done / pending parts and rows; "
                                                         "starts no Ray")
    run.add_argument("--redo", action="store_true", help="redo the stages whose recipe settings changed "
                                                         "(and the build after them); without it they are refused")
    _add_ray_options(run)
    run.set_defaults(run=cmd_run)

    demo = commands.add_parser("demo", help="run the whole pipeline on bundled photos, offline")
    demo.add_argument("--out", default="onegen-demo", help="folder for everything the demo makes (default: onegen-demo)")
    _add_ray_options(demo)
    _option(demo, "--overwrite").help = ("start over: remove the folders an earlier demo made under --out "
                                         "(inputs, tiny-checkpoints, dataset, shards, preview, training) first")
    demo.set_defaults(run=cmd_demo)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(action for action in parser._actions if flag in action.option_strings)


# The folder whose jobs/<command>.log gets a job's third-party output (core/job_output.py).
_JOB_FOLDERS = {"ingest": "out", "annotate": "root", "dedup": "root", "build": "out", "demo": "out",
                "precompute": "out", "train": "out", "sample": "out"}


def main(argv: list[str] | None = None) -> int:
    """Run one `onegen` command and return its exit status: 0, 2 for a user error (one line on stderr).

    Without `argv` this is the process's entry point (the console script, `python -m`): it reads
    sys.argv and ends the process itself once output is flushed (pipelines/cli/process_exit.py)."""
    if argv is None:
        from onegen.pipelines.cli.process_exit import run_and_exit

        run_and_exit(lambda: main(sys.argv[1:]))
    args = build_parser().parse_args(argv)
    from onegen.core.job_output import job_output
    from onegen.manifests.files import mark_driver
    from onegen.manifests.layout import job_log
    from onegen.pipelines.cli.checks import check_paths

    mark_driver()
    try:
        check_paths(args)
        folder = getattr(args, _JOB_FOLDERS.get(args.command, ""), None)
        if folder is None:
            return args.run(args)
        # the demo names its log itself; under torchrun one rank names it
        announce = args.command != "demo" and os.environ.get("RANK", "0") == "0"
        with job_output(job_log(folder, args.command), args.command, args.verbose, announce=announce,
                        user_errors=(UserError,)):
            return args.run(args)
    except Exception as error:
        message = user_error_message(error)  # a UserError, here or on a Ray worker; None: a bug
        if message is None:
            raise
        print(f"onegen: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    main()
