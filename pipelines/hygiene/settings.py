"""Dataset hygiene settings: dedup, score filters, pose and ID selection (`HygieneConfig`, `PoseSelection`)
and the dedup jobs' own (`DedupConfig` for pHash, `SemDedupConfig` for CLIP embeddings), one documented field
per setting (`onegen build` / `onegen dedup` flags and recipe keys are made from them by
core/config_fields.py).

Light on purpose (standard library only): the command line builds its parsers from these classes at every
start. build.json and the dedup tables' records store them whole (`asdict`), so a field added, renamed or
removed here makes existing records disagree: change them only with that in mind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from onegen.core.config_fields import check_choices, group, require, setting

HASH_BITS = 64  # a pHash's bits
DedupMethod = Literal["", "phash", "semantic"]  # "": no dedup


@dataclass(frozen=True)
class PoseSelection:
    """pose2image keeps images whose largest person is large enough (the paper's "primarily humans")."""

    min_person_area: float = setting("pose2image: the largest person box must cover this fraction of the image",
                                     0.1)

    def __post_init__(self) -> None:
        require(0.0 <= self.min_person_area <= 1.0,
                f"min_person_area must be in [0, 1], got {self.min_person_area}")


@dataclass(frozen=True)
class HygieneConfig:
    """What a build skips besides failed annotations; nothing by default."""

    filters: tuple[str, ...] = setting(
        "keep candidates whose stored score passes, e.g. 'aesthetic>=5', 'nsfw<0.5', 'clip_score>=0.2' "
        "(repeatable; the others are skipped as filtered:<name>=<value>...)", (), flag="filter", repeat=True,
        metavar="NAME<OP>VALUE")
    dedup: DedupMethod = setting("skip near duplicates found by `onegen dedup` (duplicate_of:<representative>): "
                                 "phash (dedup/phash-k<dedup_distance>) or semantic (dedup/semantic-t<threshold>)",
                                 "")
    max_distance: int = setting("pHash Hamming distance of --dedup phash", 4, name="dedup_distance")
    semantic_threshold: float = setting("cosine of --dedup semantic", 0.95)
    pose: PoseSelection = group(lambda: PoseSelection(min_person_area=0.0), "pose2image selection (0: every person)")
    id_nsfw_threshold: float | None = setting(
        "faceid: drop photos whose nsfw score is at least this, before the photo-count rule", None)

    def __post_init__(self) -> None:
        check_choices(self)
        require(0 <= self.max_distance < HASH_BITS, f"dedup_distance must be in [0, {HASH_BITS - 1}], "
                                                    f"got {self.max_distance}")
        require(0.0 < self.semantic_threshold <= 1.0,
                f"semantic_threshold must be in (0, 1], got {self.semantic_threshold}")
        require(self.id_nsfw_threshold is None or 0.0 <= self.id_nsfw_threshold <= 1.0,
                f"id_nsfw_threshold must be in [0, 1], got {self.id_nsfw_threshold}")


@dataclass(frozen=True)
class DedupConfig:
    """pHash dedup (`onegen dedup --method phash`)."""

    max_distance: int = setting("phash: Hamming distance (bits) at or below which two pHashes are copies", 4)

    def __post_init__(self) -> None:
        require(0 <= self.max_distance < HASH_BITS,
                f"max_distance must be in [0, {HASH_BITS - 1}], got {self.max_distance}")


@dataclass(frozen=True)
class SemDedupConfig:
    """Semantic dedup over CLIP embeddings (`onegen dedup --method semantic`): k-means, then near pairs
    within each cluster."""

    n_clusters: int = setting("semantic: k-means clusters the embeddings are split into", 100)
    threshold: float = setting("semantic: cosine at or above which two embeddings are copies", 0.95)
    iterations: int = setting("semantic: k-means iterations", 20)
    seed: int = setting("semantic: k-means seed", 0)

    def __post_init__(self) -> None:
        require(self.n_clusters >= 1, f"n_clusters must be at least 1, got {self.n_clusters}")
        require(0.0 < self.threshold <= 1.0, f"threshold must be in (0, 1], got {self.threshold}")
        require(self.iterations >= 1, f"iterations must be at least 1, got {self.iterations}")
