"""The one task table: every task's token, training family, views, what feeds it, and how it is sampled.

Imports nothing (no Ray, Arrow or torch), so the shard builder, the trainer's family mixing, the
sampler's `--task` choices and the demo all read the same rows:

    row = TASKS["depth2image"]
    row.family        # "image2image" (the trainer's families: text2image, image2image, id, multiview)
    row.views         # (2, 2): min, max views of one sample
    row.annotator     # "depth": the annotator whose store feeds it (None: the catalog alone)
    row.condition     # "depth map": what view 1 holds (two-view tasks)
    row.made_from     # "condition": how the builder makes it (catalog | condition | scenes | subjects | "")
    row.row_kind      # "image": the catalog row kind it is made from (image | scene | subject_image | None)
    row.sample_as     # ("depth2image", "image2depth"): the `onegen sample --task` names that use the token
    marker(DEPTH2IMAGE)  # "[[depth2image]]": the token as prompts spell it

Every task token is spelled once, below (`TEXT2IMAGE`, `CANNY2IMAGE`, ...); the rest of onegen names
tokens by these constants or reads them from the rows (tests/test_vocabulary.py scans the source tree),
so "which row kinds and stores feed a task" (`made_from`, `row_kind`, `annotator`) is stated here alone:
the builder and the sample makers read it.

Adding a condition annotator is one annotator file (a class with `conditions = (ConditionSpec(task,
column, ext),)`, and a line in pipelines/jobs/annotator_choices.py) plus one row here. The builder refuses
a condition whose token has no row (`unknown_condition_tasks`), because the trainer could not place its
shards in a family. Rows with `made_from == ""` are tasks of the released model that onegen does not
build (image editing, subject-driven: their data comes from external sets such as OmniEdit and
Subjects200K); their shards, when present, are still mixed into their family.
"""

from __future__ import annotations

from dataclasses import dataclass

# task tokens (the prompt token without brackets; docs/design.md §4, the released code's strings)
TEXT2IMAGE = "text2image"
CANNY2IMAGE = "canny2image"
DEPTH2IMAGE = "depth2image"
HED2IMG = "hed2img"
POSE2IMAGE = "pose2image"
SEMANTICMAP2IMAGE = "semanticmap2image"
BOUNDINGBOX2IMAGE = "boundingbox2image"
DEBLURRING = "deblurring"
IMAGE_INPAINTING = "image_inpainting"
SUPER_RESOLUTION = "super_resolution"  # no released token: our choice (docs/decisions.md)
IMAGE_EDITING = "image_editing"
SUBJECT_DRIVEN = "subject_driven"
FACEID = "faceid"
MULTIVIEW = "multiview"
CAMERA_POSE = "camera_pose"  # a sampler name of the multiview token: images given, rays generated

# the trainer's families (text2image and multiview are named as their one token)
IMAGE2IMAGE, ID = "image2image", "id"
FAMILY_NAMES = (TEXT2IMAGE, IMAGE2IMAGE, ID, MULTIVIEW)

# how the builder makes a task -> the catalog row kind (manifests/schemas.py `kind`) it reads; "": not built
ROW_KINDS: dict[str, str | None] = {"catalog": "image", "condition": "image", "scenes": "scene",
                                    "subjects": "subject_image", "": None}
MADE_FROM = tuple(ROW_KINDS)


@dataclass(frozen=True)
class Task:
    """One task (docs/design.md §4). `token` is the prompt token without brackets."""

    token: str
    family: str
    views: tuple[int, int]
    annotator: str | None
    condition: str | None
    made_from: str
    sample_as: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.family not in FAMILY_NAMES or self.made_from not in MADE_FROM or self.views[0] > self.views[1]:
            raise ValueError(f"bad task row {self}")

    @property
    def row_kind(self) -> str | None:
        """The catalog row kind whose rows are this task's candidates (None: onegen does not build it)."""
        return ROW_KINDS[self.made_from]


def marker(token: str) -> str:
    """`token` as prompts spell it: `[[token]]` (also the image markers: marker("img0") == "[[img0]]")."""
    return f"[[{token}]]"


def _condition(token: str, annotator: str | None, condition: str, inverse: str = "", built: bool = True) -> Task:
    """A two-view image-to-image row: view 0 the image, view 1 the condition."""
    sample_as = (token, inverse) if inverse else (token,)
    return Task(token, IMAGE2IMAGE, (2, 2), annotator, condition, "condition" if built else "", sample_as)


ROWS: tuple[Task, ...] = (
    Task(TEXT2IMAGE, TEXT2IMAGE, (1, 1), None, None, "catalog", (TEXT2IMAGE,)),
    _condition(CANNY2IMAGE, "canny", "canny edges", "image2canny"),
    _condition(DEPTH2IMAGE, "depth", "depth map (Depth Anything V2)", "image2depth"),
    _condition(HED2IMG, "hed", "HED soft edges", "image2hed"),
    _condition(POSE2IMAGE, "pose", "COCO-17 pose (YOLO + ViTPose)", "image2pose"),
    _condition(SEMANTICMAP2IMAGE, "segment", "semantic map (Grounding DINO + SAM)", "image2segmentation"),
    _condition(BOUNDINGBOX2IMAGE, "segment", "box map (Grounding DINO)"),
    _condition(DEBLURRING, "blur", "blurred image"),
    _condition(IMAGE_INPAINTING, "inpaint", "image with a black masked region"),
    _condition(SUPER_RESOLUTION, "lowres", "low-resolution image"),
    _condition(IMAGE_EDITING, None, "source image of an edit", built=False),
    Task(SUBJECT_DRIVEN, IMAGE2IMAGE, (2, 2), None, "subject image", "", ()),
    Task(FACEID, ID, (2, 5), "faces", "reference photos of the subject", "subjects", (FACEID,)),
    Task(MULTIVIEW, MULTIVIEW, (2, 12), "cameras", "views + Plücker rays", "scenes", (MULTIVIEW, CAMERA_POSE)),
)
TASKS: dict[str, Task] = {row.token: row for row in ROWS}

FAMILIES: dict[str, tuple[str, ...]] = {f: tuple(r.token for r in ROWS if r.family == f) for f in FAMILY_NAMES}


def family_of(token: str) -> str | None:
    """The training family of a task token, None for a token without a row."""
    row = TASKS.get(token)
    return row.family if row else None


def sampler_tasks() -> tuple[str, ...]:
    """`onegen sample --task` choices: text2image, <cond>2image, image2<cond>, multiview, camera_pose, faceid."""
    forward = condition_tasks()
    inverse = tuple(swapped_tasks())
    rest = tuple(name for r in ROWS if r.family in (MULTIVIEW, ID) for name in r.sample_as)
    return (TEXT2IMAGE, *forward, *inverse, *rest)


def condition_tasks() -> tuple[str, ...]:
    """Two-view tasks the sampler generates the image of (the condition given)."""
    return tuple(r.token for r in ROWS if r.family == IMAGE2IMAGE and r.token in r.sample_as)


def swapped_tasks() -> dict[str, str]:
    """Sampler names of the reverse tasks (image given, condition generated) -> their token."""
    return {name: r.token for r in ROWS if r.family == IMAGE2IMAGE for name in r.sample_as if name != r.token}


def built_by(annotator: str) -> tuple[Task, ...]:
    """Rows fed by `annotator`'s store."""
    return tuple(r for r in ROWS if r.annotator == annotator)


def made_from_rows(token: str, kind: str) -> bool:
    """Whether catalog rows of `kind` are candidates of task `token` (KeyError: a token without a row)."""
    return TASKS[token].row_kind == kind


def scene_and_subject_tasks(store_name: str) -> tuple[str, ...]:
    """Tasks made from scenes / ID subjects when the store `store_name` (no version) exists."""
    return tuple(r.token for r in ROWS if r.annotator == store_name and r.made_from in ("scenes", "subjects"))


def unknown_condition_tasks(tokens: list[str]) -> list[str]:
    """Tokens declared by annotators' ConditionSpecs that have no row here."""
    return sorted({t for t in tokens if t not in TASKS})
