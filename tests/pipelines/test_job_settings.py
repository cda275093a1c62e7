"""The jobs' settings (pipelines/*/settings.py): every field is a flag of its command, explained in --help by
the field's own doc, and the same field as a recipe key; flags keep their old spellings; bad values are one
line (`onegen: error: ...`, exit 2; a RecipeError in a recipe)."""

from __future__ import annotations

import pytest

from onegen.core.config_fields import from_args, options
from onegen.pipelines.cli.main import build_parser, main
from onegen.pipelines.jobs.settings import AnnotateSettings, BuildConfig, DedupSettings, IngestConfig
from onegen.pipelines.recipe.parse import RecipeError, load_recipe

COMMANDS = {"ingest": IngestConfig, "annotate": AnnotateSettings, "build": BuildConfig, "dedup": DedupSettings}

# one non-default value per recipe key; the CLI spelling of the same values below
SOURCE = {"path": "/data/photos", "kind": "table", "name": "pics", "caption_column": "c", "image_column": "i",
          "uri_column": "u", "min_side": 32, "max_pixels": 1000, "image_format": "png", "jpeg_quality": 80,
          "rows_per_part": 8, "images": "reference", "max_views": 5, "min_viewpoint_quality": 0.5, "captions": "/data/cap3d.csv",
          "caption_key": "0", "caption_text": "1", "ids": "/data/lgm_80k.csv", "views_as_photos": True, "fetch_concurrency": 4, "fetch_timeout": 3.5, "fetch_retries": 0,
          "fetch_body_timeout": 30.0}
SOURCE_ARGV = ["ingest", "/data/photos", "--out", "/data/root", "--kind", "table", "--name", "pics",
               "--caption-column", "c", "--image-column", "i", "--uri-column", "u", "--min-side", "32",
               "--max-pixels", "1000", "--image-format", "png", "--jpeg-quality", "80", "--rows-per-part", "8",
               "--images", "reference", "--max-views", "5", "--min-viewpoint-quality", "0.5", "--captions",
               "/data/cap3d.csv", "--caption-key", "0", "--caption-text", "1", "--ids", "/data/lgm_80k.csv", "--views-as-photos", "--fetch-concurrency", "4", "--fetch-timeout", "3.5", "--fetch-retries", "0",
               "--fetch-body-timeout", "30"]
BUILD = {"tasks": ["text2image", "canny2image"], "samples_per_shard": 10, "max_shard_bytes": 4096, "prefix": "p",
         "caption": "dense", "views": "3-6", "samples_per_scene": 2, "sliding_window": True, "view_resolution": 128,
         "min_subject_images": 5, "faceid_views": "3-4", "rows_per_unit": 50, "filters": ["aesthetic>=5", "nsfw<0.5"],
         "dedup": "semantic", "dedup_distance": 6, "semantic_threshold": 0.9, "min_person_area": 0.2,
         "id_nsfw_threshold": 0.5, "policies": ["co3d.caption=token", "hypersim.stores=depth_gt"]}
BUILD_ARGV = ["build", "/data/root", "--out", "/data/shards", "--tasks", "text2image,canny2image",
              "--samples-per-shard", "10", "--max-shard-bytes", "4096", "--prefix", "p", "--caption", "dense",
              "--views", "3-6", "--samples-per-scene", "2", "--sliding-window", "--view-resolution", "128",
              "--min-subject-images", "5", "--faceid-views", "3-4", "--rows-per-unit", "50", "--filter", "aesthetic>=5",
              "--filter", "nsfw<0.5", "--dedup", "semantic", "--dedup-distance", "6", "--semantic-threshold", "0.9",
              "--min-person-area", "0.2", "--id-nsfw-threshold", "0.5", "--policy", "co3d.caption=token",
              "--policy", "hypersim.stores=depth_gt"]


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _recipe(tmp_path, source: dict, build: dict) -> str:
    lines = ['root = "/data/root"', 'shards = "/data/shards"', "[[sources]]"]
    lines += [f"{key} = {_toml(value)}" for key, value in source.items()]
    lines += ["[build]"] + [f"{key} = {_toml(value)}" for key, value in build.items()]
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_recipe_key_and_its_flag_reach_the_same_field(tmp_path):
    # every key of the table is covered, so a new field fails here until it is added above
    assert {option.keys[-1] for option in options(IngestConfig, ("out", "overwrite"))} == set(SOURCE)
    assert {option.keys[-1] for option in options(BuildConfig, ("root", "out", "overwrite"))} == set(BUILD)
    recipe = load_recipe(_recipe(tmp_path, SOURCE, BUILD))
    ingest = from_args(IngestConfig, build_parser().parse_args(SOURCE_ARGV), overwrite=False)
    build = from_args(BuildConfig, build_parser().parse_args(BUILD_ARGV), overwrite=False)
    assert recipe.sources == (ingest,) and recipe.build == build
    assert (build.multiview.min_views, build.multiview.max_views, build.faceid.max_views) == (3, 6, 4)
    assert build.hygiene.filters == ("aesthetic>=5", "nsfw<0.5") and build.hygiene.pose.min_person_area == 0.2
    assert build.caption_mode == "dense" and build.hygiene.max_distance == 6 and ingest.limits.jpeg_quality == 80


def test_defaults_are_the_jobs_own_and_old_spellings_still_parse():
    build = from_args(BuildConfig, build_parser().parse_args(["build", "r", "--out", "s"]), overwrite=False)
    assert build == BuildConfig("r", "s")
    assert build.hygiene.pose.min_person_area == 0.0  # the build's default, not PoseSelection's own 0.1
    args = build_parser().parse_args(["build", "r", "--out", "s", "--views", "4", "--dedup", "phash"])
    one = from_args(BuildConfig, args)
    assert (one.multiview.min_views, one.multiview.max_views, one.hygiene.dedup) == (4, 4, "phash")
    annotate = from_args(AnnotateSettings, build_parser().parse_args(
        ["annotate", "r", "--annotators", "canny,,blur", "--set", "canny.low=50", "--set", "blur.sigma_max=3",
         "--retry-errors", "--max-error-rate", "0.5"]), overwrite=True)
    assert annotate == AnnotateSettings("r", ("canny", "blur"), ("canny.low=50", "blur.sigma_max=3"), True, 0.5, True)
    dedup = from_args(DedupSettings, build_parser().parse_args(["dedup", "r", "--method", "semantic",
                                                                "--threshold", "0.9", "--max-distance", "2"]))
    assert (dedup.method, dedup.semantic.threshold, dedup.phash.max_distance) == ("semantic", 0.9, 2)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_is_explained_in_help_by_its_field(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in options(COMMANDS[command], ("overwrite",)):
        shown = option.dest if option.positional else f"--{option.dest.replace('_', '-')}"
        assert shown in text, (command, shown)
        assert " ".join(option.help.split())[:40] in text, (command, option.help)


def test_a_field_only_flag_shows_in_help_with_its_doc(capsys):
    """--jpeg-quality and --faceid-views exist nowhere but as fields of ImageLimits / FaceidConfig."""
    for argv, flag, doc in ((["ingest", "--help"], "--jpeg-quality", "JPEG quality of the images ingest re-encodes"),
                            (["build", "--help"], "--faceid-views N|MIN-MAX", "faceid: photos per sample")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert flag in text and doc in text


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for argv, message in ((["--min-side", "0"], "min_side must be at least 1, got 0"),
                          (["--rows-per-part", "0"], "rows_per_part must be at least 1")):
        assert main(["ingest", str(photos), "--out", str(tmp_path / "root"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"onegen: error: {message}") and err.count("\n") == 1, err
    for build, message in (({"views": "6-3"}, "recipe: [build] need 1 <= min_views <= max_views, got 6, 3"),
                           ({"caption": "dens"}, "recipe: [build] caption = 'dens': expected one of"),
                           ({"view_resolution": 100}, "resolution must be a positive multiple of 16"),
                           ({"faceid_views": "2-5", "min_subject_images": 1}, "min_subject_images must be at least"),
                           ({"dedup_distance": 64}, "dedup_distance must be in [0, 63]")):
        with pytest.raises(RecipeError) as error:
            load_recipe(_recipe(tmp_path, {"path": "p"}, build))
        assert message in str(error.value) and "\n" not in str(error.value)
