"""Task-specific selection from the paper (issue 13): pose samples need a large person; ID photos are safe.

Pure; no Ray, no model: both read stored annotation rows.

- `person_area_reason(pose_row, width, height, config)`: for the pose2image task, None when the `pose` row is
  "ok" and its largest person box (clipped to the image) covers at least `config.min_person_area` of the
  image, else the skip reason `filtered:person_area=<fraction %.3g><<min>` (e.g. filtered:person_area=0.031<0.1),
  `pose:<status>` for a row that is not ok, or `missing_annotation:pose`.
  The paper keeps "a subset primarily featuring humans" for pose; the fraction is the knob.
- `nsfw_exclusions(nsfw_rows, threshold)`: one entry per photo of an ID subject, None (keep) or the reason the
  photo leaves the ID set before the "at least 4 photos" rule: the `nsfw<threshold` filter's reason
  (filtered:nsfw=0.91>=0.5, filtered:nsfw=error, missing_annotation:nsfw). Pass the list as
  `faceid_samples(..., excluded=...)`, which skips those photos with it and counts only the others.
"""

from __future__ import annotations

import json
from typing import Any

from onegen.core.tasks import POSE2IMAGE, TASKS
from onegen.pipelines.hygiene.filters import FILTERED_PREFIX, ScoreFilter
from onegen.pipelines.hygiene.settings import PoseSelection

POSE_STORE = TASKS[POSE2IMAGE].annotator  # the store whose person boxes the pose2image selection reads
NSFW_STORE = "nsfw"


def largest_person_fraction(keypoints_json: str | None, width: int, height: int) -> float:
    """Area of the largest person box of a pose row (clipped to the image) / image area, in [0, 1]."""
    if not keypoints_json or width <= 0 or height <= 0:
        return 0.0
    best = 0.0
    for person in json.loads(keypoints_json):
        x0, y0, x1, y1 = person["box"]
        w = max(0.0, min(x1, width) - max(x0, 0.0))
        h = max(0.0, min(y1, height) - max(y0, 0.0))
        best = max(best, w * h)
    return best / float(width * height)


def person_area_reason(pose_row: dict[str, Any] | None, width: int, height: int,
                       config: PoseSelection = PoseSelection()) -> str | None:
    """None when the image has a person box covering >= config.min_person_area, else the skip reason."""
    if pose_row is None:
        return f"missing_annotation:{POSE_STORE}"
    if pose_row.get("status") != "ok":
        return f"{POSE_STORE}:{pose_row.get('status')}"
    fraction = largest_person_fraction(pose_row.get("keypoints_json"), width, height)
    if fraction >= config.min_person_area:
        return None
    return f"{FILTERED_PREFIX}person_area={fraction:.3g}<{config.min_person_area:g}"


def nsfw_exclusions(nsfw_rows: list[dict[str, Any] | None], threshold: float = 0.5) -> list[str | None]:
    """Per ID photo: None to keep it, or why it is dropped before the subject-size rule (module doc)."""
    keep_below = ScoreFilter("nsfw", "<", threshold, f"{threshold:g}", NSFW_STORE, "score")
    return [keep_below.reason(row) for row in nsfw_rows]
