"""How the build draws faceid and multiview samples: `FaceidConfig`, `MultiviewConfig`, one documented field
per setting (`onegen build` flags and `[build]` recipe keys are made from them by core/config_fields.py).

Light on purpose (standard library only): the command line builds its parsers from these classes at every
start. build.json records them whole (`asdict`), so a field added, renamed or removed here makes existing
shard folders' records disagree: change them only with that in mind.
"""

from __future__ import annotations

from dataclasses import dataclass

from onegen.core.config_fields import require, setting

ORDINALS_PER_ROW = 256  # the build reserves this many ordinals per scene row
LATENT_MULTIPLE = 16  # 2 x core.camera_geometry.RAY_STRIDE: a view's side covers whole 2x2 latent patches


@dataclass(frozen=True)
class FaceidConfig:
    """Which ID subjects make faceid samples, and how many photos a sample holds (target + references)."""

    min_subject_images: int = setting("faceid: usable photos a subject needs", 4)
    min_views: int = setting("faceid: photos per sample, the target and 1-4 references, N or MIN-MAX", 2,
                             name="faceid_views", span="max_views")
    max_views: int = setting("faceid: the most photos per sample (set with --faceid-views)", 5)

    def __post_init__(self) -> None:
        require(2 <= self.min_views <= self.max_views,
                f"faceid views: need 2 <= min <= max, got {self.min_views}-{self.max_views}")
        require(self.min_subject_images >= self.min_views,
                f"min_subject_images must be at least the fewest faceid views ({self.min_views}), "
                f"got {self.min_subject_images}")


@dataclass(frozen=True)
class MultiviewConfig:
    """How views are drawn from a scene. Invalid values raise SettingError (a ValueError) at construction."""

    min_views: int = setting("multiview: views per sample, N or MIN-MAX", 2, name="views", span="max_views")
    max_views: int = setting("multiview: the most views per sample (set with --views)", 12)
    samples_per_scene: int = setting("multiview: samples drawn per scene", 1)
    sliding_window: bool = setting("multiview: consecutive frames instead of a random subset of views", False)
    resolution: int = setting(f"multiview: square side, a multiple of {LATENT_MULTIPLE}", 256,
                              name="view_resolution")

    def __post_init__(self) -> None:
        require(1 <= self.min_views <= self.max_views,
                f"need 1 <= min_views <= max_views, got {self.min_views}, {self.max_views}")
        require(1 <= self.samples_per_scene <= ORDINALS_PER_ROW,
                f"samples_per_scene must be in [1, {ORDINALS_PER_ROW}], got {self.samples_per_scene}")
        require(self.resolution > 0 and self.resolution % LATENT_MULTIPLE == 0,
                f"resolution must be a positive multiple of {LATENT_MULTIPLE}, got {self.resolution}")
