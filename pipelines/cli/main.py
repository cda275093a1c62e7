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
    from onegen.pipelines.jobs.ingest import IngestConfig, run_ingest
    from onegen.pipelines.sources.image_checks import ImageLimits
    from onegen.pipelines.sources.kinds import SourceSpec

    spec = SourceSpec(args.source, args.kind, args.name or "", args.caption_column or "", args.image_column or "",
                      args.uri_column or "")
    limits = ImageLimits(args.min_side, args.max_pixels, args.image_format)
    summary = run_ingest(IngestConfig(spec, args.out, limits, args.rows_per_part, images=args.images,
                                      overwrite=args.overwrite), _ray_config(args))
    print(f"ingested {summary.source}: {summary.catalog_rows} catalog rows from {summary.items} items in "
          f"{summary.parts} parts ({summary.parts_done_before} already done); rejects: {summary.rejects or 'none'}")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from onegen.pipelines.jobs.annotate import AnnotationFailed, run_annotators
    from onegen.pipelines.jobs.annotator_choices import make_annotators

    annotators = make_annotators([n for n in args.annotators.split(",") if n], args.set or [])
    try:
        summaries = run_annotators(args.root, annotators, args.overwrite, _ray_config(args),
                                   retry_errors=args.retry_errors, max_error_rate=args.max_error_rate)
    except Exception as error:
        return report_failure(error, AnnotationFailed, f"{args.root.rstrip('/')}/jobs/annotate-failure.log")
    for summary in summaries:
        print(f"annotated {summary.annotator}: {summary.parts} parts ({summary.parts_done_before} already done); "
              f"statuses: {summary.statuses}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from onegen.pipelines.hygiene.build_hygiene import HygieneConfig
    from onegen.pipelines.hygiene.task_selection import PoseSelection
    from onegen.pipelines.jobs.build import BuildConfig, run_build
    from onegen.pipelines.samples.faceid import FaceidConfig
    from onegen.pipelines.samples.multiview import MultiviewConfig

    tasks = tuple(t for t in (args.tasks or "").split(",") if t)
    low, _, high = args.views.partition("-")
    multiview = MultiviewConfig(int(low), int(high or low), args.samples_per_scene, args.sliding_window,
                                args.view_resolution)
    config = BuildConfig(args.root, args.out, tasks, args.samples_per_shard, args.max_shard_bytes, args.prefix,
                         args.caption, args.overwrite, multiview, FaceidConfig(args.min_subject_images),
                         rows_per_unit=args.rows_per_unit,
                         hygiene=HygieneConfig(tuple(args.filter or ()), args.dedup or "", args.dedup_distance,
                                               args.semantic_threshold, PoseSelection(args.min_person_area),
                                               args.id_nsfw_threshold))
    stats = run_build(config, _ray_config(args))
    print(f"built {stats['samples']} samples in {stats['shards']} shards ({stats['bytes']} bytes) at {args.out}: "
          f"{stats['samples_per_task']}")
    from onegen.manifests.dataset_card import caption_note

    if note := caption_note(args.out):
        print(note)
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    if args.method == "phash":
        from onegen.pipelines.hygiene.dedup_groups import DedupConfig
        from onegen.pipelines.jobs.dedup import DedupJobConfig, run_phash_dedup

        counts = run_phash_dedup(DedupJobConfig(args.root, DedupConfig(args.max_distance)), _ray_config(args))
    else:
        from onegen.pipelines.hygiene.semdedup import SemDedupConfig
        from onegen.pipelines.jobs.semdedup import run_semantic_dedup

        counts = run_semantic_dedup(args.root, SemDedupConfig(threshold=args.threshold), _ray_config(args))
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
    from onegen.pipelines.recipe.run import plan_recipe, run_recipe

    recipe = load_recipe(args.recipe, args.dir)
    if args.plan:  # from the stores' records and markers alone: no Ray, no model
        for plan in plan_recipe(recipe):
            print(plan.line())
        return 0
    from onegen.core.job_output import job_output

    with job_output(recipe.root, "run", args.verbose):  # the dataset root's jobs/run.log (module job_log)
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

    ingest = commands.add_parser("ingest", help="raw items -> catalog")
    ingest.add_argument("source", help="image folder, parquet/jsonl table(s), webdataset tar(s) or HF dataset dir")
    ingest.add_argument("--out", required=True, help="dataset root (catalog/, rejects/, annotations/)")
    ingest.add_argument("--kind", default="auto", choices=["auto", "folder", "table", "webdataset", "hf", "scenes", "subjects"],
                        help="what SOURCE is (default: auto, told from its files); scenes: multiview folders with "
                             "cameras; subjects: one folder of ID photos per person")
    ingest.add_argument("--name", help="source name used in keys (default: the path's last part)")
    ingest.add_argument("--caption-column", help="table / HF source: the caption column (default: text, caption, ...)")
    ingest.add_argument("--image-column", help="table / HF source: the image bytes column (default: image, jpg, ...)")
    ingest.add_argument("--uri-column", help="table source: a column of image paths/URLs read instead of bytes")
    ingest.add_argument("--rows-per-part", type=int, default=256,
                        help="catalog rows per Parquet part, the unit one worker ingests and commits (default: 256)")
    ingest.add_argument("--min-side", type=int, default=64, help="reject images with a side below this (too_small; default: 64)")
    ingest.add_argument("--max-pixels", type=int, default=64_000_000,
                        help="reject images with more pixels than this (too_large; default: 64000000)")
    ingest.add_argument("--image-format", choices=["jpg", "png"], default="jpg",
                        help="the one encoding of catalog images (JPEGs already upright RGB are kept byte for byte)")
    ingest.add_argument("--images", choices=["copy", "reference"], default="copy",
                        help="copy image bytes into the catalog (default), or keep a checked reference into "
                             "the source for bytes kept as they are (tars, Parquet, object stores)")
    _add_ray_options(ingest)
    ingest.set_defaults(run=cmd_ingest)

    annotate = commands.add_parser("annotate", help="catalog -> annotations/<name>@<version>",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    annotate.add_argument("root", help="dataset root")
    annotate.add_argument("--annotators", required=True,
                          help="comma-separated, e.g. canny,blur,lowres,inpaint (all of them are listed below)")
    annotate.add_argument("--retry-errors", action="store_true",
                          help="annotate again only the rows whose status is 'error' (ok rows are kept as they are)")
    annotate.add_argument("--max-error-rate", type=float, default=0.2,
                          help="fail the job when more than this fraction of a part's rows come back 'error' "
                               "(an annotator's own reasons such as no_person do not count)")
    annotate.add_argument("--set", action="append", metavar="NAME.FIELD=VALUE",
                          help="annotator setting, e.g. depth.model=/ckpt/depth or depth.num_gpus=0.5")
    _add_ray_options(annotate)
    annotate.set_defaults(run=cmd_annotate)
    from onegen.pipelines.cli.annotator_help import add_annotator_list

    add_annotator_list(annotate)

    build = commands.add_parser("build", help="catalog + annotations -> shards + manifests")
    build.add_argument("root", help="dataset root")
    build.add_argument("--out", required=True, help="shards folder")
    build.add_argument("--tasks", help="comma-separated tasks (default: all the stores can make)")
    build.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar at most (default: 1000)")
    build.add_argument("--max-shard-bytes", type=int, default=1 << 30,
                       help="bytes per tar at most; a shard closes at whichever limit comes first (default: 1 GiB)")
    build.add_argument("--rows-per-unit", type=int, default=0,
                       help="catalog rows one build unit (one worker task, its own shards) gathers at least "
                            "(default: 4 x --samples-per-shard)")
    build.add_argument("--prefix", default="onegen",
                       help="shard names: PREFIX-TASK-UNIT-N.tar (default: onegen)")
    build.add_argument("--caption", choices=["original", "dense", "random"], default="original",
                       help="prompt captions: the source's own (original), the caption annotator's (dense), or "
                            "either drawn per sample (random) (default: original)")
    build.add_argument("--views", default="2-12", help="multiview: views per sample, N or MIN-MAX")
    build.add_argument("--samples-per-scene", type=int, default=1, help="multiview: samples drawn per scene")
    build.add_argument("--sliding-window", action="store_true", help="multiview: consecutive frames")
    build.add_argument("--view-resolution", type=int, default=256, help="multiview: square side, multiple of 16")
    build.add_argument("--min-subject-images", type=int, default=4, help="faceid: usable photos a subject needs")
    build.add_argument("--filter", action="append", metavar="NAME<OP>VALUE",
                       help="keep candidates whose stored score passes, e.g. 'aesthetic>=5', 'nsfw<0.5', "
                            "'clip_score>=0.2' (repeatable; the others are skipped as filtered:<name>=<value>...)")
    build.add_argument("--dedup", choices=["phash", "semantic"],
                       help="skip near duplicates found by `onegen dedup` (duplicate_of:<representative>)")
    build.add_argument("--dedup-distance", type=int, default=4, help="pHash Hamming distance of --dedup phash")
    build.add_argument("--semantic-threshold", type=float, default=0.95, help="cosine of --dedup semantic")
    build.add_argument("--min-person-area", type=float, default=0.0,
                       help="pose2image: the largest person box must cover this fraction of the image")
    build.add_argument("--id-nsfw-threshold", type=float,
                       help="faceid: drop photos whose nsfw score is at least this, before the photo-count rule")
    _add_ray_options(build)
    build.set_defaults(run=cmd_build)

    dedup = commands.add_parser("dedup", help="find near duplicates from stored pHashes / CLIP embeddings")
    dedup.add_argument("root", help="dataset root (annotated with phash, or clip for --method semantic)")
    dedup.add_argument("--method", choices=["phash", "semantic"], default="phash",
                       help="phash: perceptual-hash copies (needs the phash annotator); semantic: CLIP-embedding "
                            "near duplicates (needs clip) (default: phash)")
    dedup.add_argument("--max-distance", type=int, default=4, help="phash: Hamming distance that counts as a copy")
    dedup.add_argument("--threshold", type=float, default=0.95, help="semantic: cosine that counts as a copy")
    _add_ray_options(dedup)
    dedup.set_defaults(run=cmd_dedup)

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

    from onegen.pipelines.cli.preview_command import add_commands as add_preview_commands
    from onegen.pipelines.cli.train_commands import add_commands as add_training_commands

    add_preview_commands(commands)
    add_training_commands(commands)

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
    return parser


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
    from onegen.pipelines.cli.checks import check_paths

    mark_driver()
    try:
        check_paths(args)
        folder = getattr(args, _JOB_FOLDERS.get(args.command, ""), None)
        if folder is None:
            return args.run(args)
        # the demo names its log itself; under torchrun one rank names it
        announce = args.command != "demo" and os.environ.get("RANK", "0") == "0"
        with job_output(folder, args.command, args.verbose, announce=announce, user_errors=(UserError,)):
            return args.run(args)
    except Exception as error:
        message = user_error_message(error)  # a UserError, here or on a Ray worker; None: a bug
        if message is None:
            raise
        print(f"onegen: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    main()
