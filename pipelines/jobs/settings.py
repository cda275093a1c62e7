"""The jobs' settings: `IngestConfig`, `BuildConfig`, `DedupJobConfig`, and the `onegen annotate` /
`onegen dedup` command settings, one documented field per setting. The commands' flags
(pipelines/cli/main.py) and the recipe's `[[sources]]` / `[build]` keys (pipelines/recipe/parse.py) are made
from these fields by core/config_fields.py, so a flag and a key cannot drift apart.

Light on purpose (standard library + the rooms' settings modules): the command line builds its parsers from
these classes at every start, and `onegen build --help` must not import pyarrow or Ray. The job modules
(jobs/ingest.py, jobs/build.py, jobs/dedup.py) import their config from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from onegen.core.config_fields import check_choices, group, require, setting
from onegen.pipelines.hygiene.settings import DedupConfig, HygieneConfig, SemDedupConfig
from onegen.pipelines.samples.policy import parse_policies
from onegen.pipelines.samples.settings import FaceidConfig, MultiviewConfig
from onegen.pipelines.sources.settings import ImageLimits, SourceSpec

CatalogImages = Literal["copy", "reference"]
CaptionMode = Literal["original", "dense", "random"]
DedupCommandMethod = Literal["phash", "semantic"]
ROWS_PER_UNIT_FACTOR = 4  # a build unit's rows by default: this many shards' worth


@dataclass(frozen=True)
class IngestConfig:
    """`onegen ingest SOURCE --out ROOT` (one `[[sources]]` entry of a recipe)."""

    source: SourceSpec = group(None, "the source to read")
    out: str = setting("dataset root (catalog/, rejects/, annotations/)")
    limits: ImageLimits = group(ImageLimits, "what the catalog accepts")
    rows_per_part: int = setting("catalog rows per Parquet part, the unit one worker ingests and commits", 256)
    num_cpus: float = setting("CPUs per ingest task: decoding is CPU-bound, and Ray prestarts one worker per CPU",
                              1.0, internal=True)
    images: CatalogImages = setting(
        "copy image bytes into the catalog (default), or keep a checked reference into the source for bytes "
        "kept as they are (tars, Parquet, object stores)", "copy")
    overwrite: bool = setting("redo parts made with another config/input", False)

    def __post_init__(self) -> None:
        check_choices(self)
        require(self.rows_per_part >= 1, f"rows_per_part must be at least 1, got {self.rows_per_part}")


@dataclass(frozen=True)
class BuildConfig:
    """`onegen build ROOT --out SHARDS` (a recipe's `[build]` table)."""

    root: str = setting("dataset root", positional=True)
    out: str = setting("shards folder")
    tasks: tuple[str, ...] = setting("comma-separated tasks (default: all the stores can make)", ())
    samples_per_shard: int = setting("samples per tar at most", 1000)
    max_shard_bytes: int = setting("bytes per tar at most; a shard closes at whichever limit comes first "
                                   "(default: 1 GiB)", 1 << 30)
    prefix: str = setting("shard names: PREFIX-TASK-UNIT-N.tar", "onegen")
    caption_mode: CaptionMode = setting("prompt captions: the source's own (original), the caption annotator's "
                                        "(dense), or either drawn per sample (random)", "original", name="caption")
    overwrite: bool = setting("redo a build made with another config/input", False)
    multiview: MultiviewConfig = group(MultiviewConfig, "multiview samples")
    faceid: FaceidConfig = group(FaceidConfig, "faceid samples")
    rows_per_unit: int = setting("catalog rows one build unit (one worker task, its own shards) gathers at least "
                                 "(default: 4 x --samples-per-shard)", 0)
    hygiene: HygieneConfig = group(HygieneConfig, "filters, dedup, pose / ID selection (none by default)")
    policies: tuple[str, ...] = setting(
        "a per-source policy SOURCE.FIELD=VALUE (SOURCE a catalog source or '*' for the others; repeatable): "
        "caption=original|dense|random|token, dense=STORE|source.COLUMN (where the dense caption comes from), "
        "stores=STORE,... (which store makes a task two stores make, e.g. hypersim.stores=depth_gt), "
        "filters=FILTER (a --filter for this source's rows only, e.g. laion.filters='source.punsafe<0.1')",
        (), flag="policy", repeat=True, metavar="SOURCE.FIELD=VALUE")

    def __post_init__(self) -> None:
        check_choices(self)
        parse_policies(self.policies)  # PolicyError (a SettingError) names a bad one
        require(self.samples_per_shard >= 1, f"samples_per_shard must be at least 1, got {self.samples_per_shard}")
        require(self.max_shard_bytes >= 1, f"max_shard_bytes must be at least 1, got {self.max_shard_bytes}")
        require(self.rows_per_unit >= 0, f"rows_per_unit must be 0 (auto) or more, got {self.rows_per_unit}")

    @property
    def unit_rows(self) -> int:
        return self.rows_per_unit or ROWS_PER_UNIT_FACTOR * self.samples_per_shard


@dataclass(frozen=True)
class DedupJobConfig:
    """The pHash dedup job (jobs/dedup.py)."""

    root: str = setting("dataset root (annotated with phash)", positional=True)
    dedup: DedupConfig = group(DedupConfig, "what counts as a copy")
    partitions: int = setting("bucket partitions = edge tasks", 16, internal=True)


@dataclass(frozen=True)
class DedupSettings:
    """`onegen dedup ROOT`: which method, and each method's settings."""

    root: str = setting("dataset root (annotated with phash, or clip for --method semantic)", positional=True)
    method: DedupCommandMethod = setting("phash: perceptual-hash copies (needs the phash annotator); semantic: "
                                         "CLIP-embedding near duplicates (needs clip)", "phash")
    phash: DedupConfig = group(DedupConfig, "--method phash")
    semantic: SemDedupConfig = group(SemDedupConfig, "--method semantic")

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(frozen=True)
class AnnotateSettings:
    """`onegen annotate ROOT --annotators a,b,c`: which annotators, their settings, and the failure policy."""

    root: str = setting("dataset root", positional=True)
    annotators: tuple[str, ...] = setting(
        "comma-separated, e.g. canny,blur,lowres,inpaint (all of them are listed below)")
    settings: tuple[str, ...] = setting("annotator setting, e.g. depth.model=/ckpt/depth or depth.num_gpus=0.5",
                                        (), flag="set", repeat=True, metavar="NAME.FIELD=VALUE")
    retry_errors: bool = setting("annotate again only the rows whose status is 'error' (ok rows are kept as they "
                                 "are)", False)
    max_error_rate: float = setting("fail the job when more than this fraction of a part's rows come back 'error' "
                                    "(an annotator's own reasons such as no_person do not count)", 0.2)
    overwrite: bool = setting("redo stores made with another configuration", False)

    def __post_init__(self) -> None:
        require(0.0 <= self.max_error_rate <= 1.0, f"max_error_rate must be in [0, 1], got {self.max_error_rate}")
