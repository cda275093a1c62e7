"""`caption` and `entities` annotators: dense captions and entity lists from a VLM (docs/design.md §3).

Both share one loader and batched generator (annotators.vlm) and differ in prompt and parser.

caption handles three row kinds, each with its own prompt and word range (fields of the annotator):
- `image` (`prompt`, `min_words`-`max_words`, default 100-150): the whole picture;
- `subject_image` (`subject_prompt`, default 30-75 words, the released prompt guide's source-caption
  length): one caption per ID photo, describing the person's appearance, clothing and setting;
- `scene` (`scene_prompt`, default 30-100 words): ONE view per scene is captioned, view `scene_view`
  when >= 0, else a view drawn from the row key (`scene_caption_view`); the prompt asks for the scene
  as a whole, without view-specific words ("looking at the camera", "on the left"), which the released
  guide warns make multiview results multi-faced. Scenes read by a camera reader or from a catalog
  source listed in `token_only_scenes` (default: "co3d", as the paper trains CO3D with the task token
  alone) are not captioned: status "token_only".

caption outputs (one row per catalog row):
- `caption` (string): the cleaned caption (annotators.caption_text.clean_caption), never truncated;
  the shard builder puts it after the task token (text2image, faceid per view, multiview).
- `caption_raw` (string): the model's answer as generated.
- `word_count` (int32): words in `caption`.
- `length_reason` (string): null inside the row kind's word range, else
  `words_out_of_range:<n> not in <min>-<max>`; such a caption is still status "ok" (usable).
- `caption_view` (int32): scenes: the index in `view_images` of the captioned view; null otherwise.
- `view_phrases` (list<string>): scenes: view-specific phrases found in the caption (recorded, not
  removed); null otherwise.
- `caption_original` (string): the catalog's own caption, kept beside the generated one.

entities outputs (rows of kind `image` only):
- `entities` (list<string>): at most 10 short noun phrases (parse_entities), read by the segment annotator.
- `entities_raw` (string): the model's answer as generated.

A row whose answer cannot be used gets status "unparseable" with the reason (and the start of the
answer) in `error`; its output columns are null, as for every non-ok row. Infrastructure problems
raise: a missing checkpoint at `setup()`, OOM from `annotate` (the base class halves the batch).

Backends: "hf" runs transformers in this process. "vllm" is run by the pipelines runner through
ray.data.llm (pipelines/jobs/vllm_annotate.py): each row's prompt and image come from the same
`vlm_input`, its request from annotators.vlm's `vllm_request`, its answer goes through the same
`parse_answer`; calling such an annotator directly is refused at setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError, decode_or_reject, key_rng, row_meta
from onegen.annotators.caption_text import (
    MAX_ENTITIES,
    clean_caption,
    length_reason,
    parse_entities,
    view_phrases,
    word_count,
)
from onegen.annotators.vlm import GenerationSettings, LoadedVLM, VLMRequest, generate, load_vlm, require_vllm
from onegen.core.weights import pick_device

CAPTION_PROMPT = (
    "Describe this image in detail in one paragraph of 100 to 150 words. Mention the main subjects, "
    "their appearance, actions and positions, the background, the colours, the lighting and the style. "
    "Start directly with the content, not with 'The image shows'."
)
SUBJECT_PROMPT = (
    "Describe the person in this photo in one paragraph of 30 to 75 words: their apparent age and "
    "gender, hair, facial features and expression, clothing and accessories, and the setting and "
    "lighting around them. Start directly with the person, not with 'The image shows'."
)
SCENE_PROMPT = (
    "Describe the scene in this picture as a whole in one paragraph of 30 to 100 words: what place or "
    "object it is, its main objects, materials, colours and lighting. Describe the scene itself, not "
    "this photograph: do not mention the camera, the viewpoint, left or right, foreground or background, "
    "or where anyone is looking. Start directly with the content, not with 'The image shows'."
)
ENTITIES_PROMPT = (
    f"List at most {MAX_ENTITIES} distinct objects, people or animals visible in this image, as short "
    "noun phrases of one to three words, one per line, most prominent first. Answer with the list only."
)
BACKENDS = ("hf", "vllm")
UNPARSEABLE = "unparseable"
TOKEN_ONLY = "token_only"  # scenes of a `token_only_scenes` reader/source: no caption, as the paper's CO3D
NO_SUCH_VIEW = "no_such_view"


@dataclass(frozen=True)
class VLMInput:
    """What one row asks the VLM: the prompt, the encoded image (or an already decoded (H, W, 3) array)
    and, for a scene, which of its views that image is."""

    prompt: str
    image: Any
    view: int | None = None


def _rgb(image: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from encoded bytes or an already decoded array; RowError(decode_error)."""
    if isinstance(image, np.ndarray):
        return image
    if image is None:
        raise RowError("decode_error: the row has no image bytes")
    return decode_or_reject(image)


@dataclass
class _VLMAnnotator(Annotator):
    """Shared configuration and batching; subclasses set `prompt` and implement `parse_answer`.

    Images are decoded here (`decode_images` is False), so a scene decodes only the view it captions.
    """

    decode_images: ClassVar[bool] = False

    model: str = "llava-hf/llava-v1.6-mistral-7b-hf"  # hub id (offline HF cache) or local folder
    backend: str = "hf"  # "hf" | "vllm"
    trust_remote_code: bool = False  # original Molmo only; runs the checkpoint's own code
    prompt: str = ""
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    num_gpus: float = 1.0
    batch_size: int = 16
    _vlm: LoadedVLM | None = field(default=None, init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("VLM", self.model)]

    def setup(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "vllm":
            require_vllm()
            raise RuntimeError(
                f"{self.name}: backend='vllm' runs through ray.data.llm in the pipelines runner "
                "(pipelines/jobs/vllm_annotate.py), not by calling the annotator"
            )
        self._vlm = load_vlm(self.model, pick_device(self.num_gpus), trust_remote_code=self.trust_remote_code)

    def model_id(self) -> str:
        return self.model

    def model_revision(self) -> str:
        return self._vlm.checkpoint.revision if self._vlm is not None else ""

    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            self.max_new_tokens, self.do_sample, self.temperature, self.top_p, self.seed
        )

    def vlm_input(self, row: dict[str, Any]) -> VLMInput:
        """The prompt and image for one row of a handled kind; RowError when the row asks for nothing.

        Shared by both backends; the default asks `prompt` about the row's `image`.
        """
        return VLMInput(self.prompt, row.get("image"))

    def parse_answer(self, raw: str, row: dict[str, Any]) -> dict[str, Any]:
        """Output columns for one answer; raise RowError(reason, "unparseable") when unusable.

        `row` carries at least key, kind, caption_original and `caption_view` (the VLMInput's view).
        """
        raise NotImplementedError

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        if self._vlm is None:
            self.setup()
        results: list[dict[str, Any] | RowError | None] = [None] * len(rows)
        todo, requests = [], []
        for i, row in enumerate(rows):
            try:
                asked = self.vlm_input(row)
                image = _rgb(asked.image)
            except RowError as error:
                results[i] = error
                continue
            row["caption_view"] = asked.view
            todo.append(i)
            requests.append(VLMRequest(str(row["key"]), image, asked.prompt))
        answers = generate(self._vlm, requests, self.settings(), self.batch_size)
        for i, answer in zip(todo, answers, strict=True):
            try:
                results[i] = self.parse_answer(answer, rows[i])
            except RowError as error:
                results[i] = error
        return results


def scene_caption_view(key: str, n_views: int, configured: int = -1) -> int:
    """The view of a scene that gets its caption: `configured` when >= 0 (RowError "no_such_view" when
    the scene has no such view), else one drawn from the key (the same view on every rerun)."""
    if configured >= 0:
        if configured >= n_views:
            raise RowError(f"caption.scene_view={configured} but the scene has {n_views} views", NO_SUCH_VIEW)
        return configured
    if n_views < 1:
        raise RowError("the scene has no views", NO_SUCH_VIEW)
    return int(key_rng(key, "caption-view").integers(0, n_views))


@dataclass
class CaptionAnnotator(_VLMAnnotator):
    """Dense caption per image, per ID photo and per scene (one view); see the module docstring.

    Version 2 adds subject_image and scene rows and the length_reason / caption_view / view_phrases
    columns; caption@1 stores keep their columns and stay readable by the builder.
    """

    name: ClassVar[str] = "caption"
    version: ClassVar[str] = "2"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("caption", pa.string()),
            pa.field("caption_raw", pa.string()),
            pa.field("word_count", pa.int32()),
            pa.field("length_reason", pa.string()),
            pa.field("caption_view", pa.int32()),
            pa.field("view_phrases", pa.list_(pa.string())),
            pa.field("caption_original", pa.string()),
        ]
    )
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image", "scene")

    prompt: str = CAPTION_PROMPT  # kind "image"
    min_words: int = 100
    max_words: int = 150
    subject_prompt: str = SUBJECT_PROMPT  # kind "subject_image" (ID photos)
    subject_min_words: int = 30
    subject_max_words: int = 75
    scene_prompt: str = SCENE_PROMPT  # kind "scene" (multiview)
    scene_min_words: int = 30
    scene_max_words: int = 100
    scene_view: int = -1  # index of the captioned view; -1: drawn from the row key
    token_only_scenes: tuple[str, ...] = ("co3d",)  # camera readers / catalog sources left uncaptioned

    def family(self, kind: str) -> tuple[str, int, int]:
        """(prompt, min words, max words) for a row kind."""
        if kind == "subject_image":
            return self.subject_prompt, self.subject_min_words, self.subject_max_words
        if kind == "scene":
            return self.scene_prompt, self.scene_min_words, self.scene_max_words
        return self.prompt, self.min_words, self.max_words

    def vlm_input(self, row: dict[str, Any]) -> VLMInput:
        kind = row.get("kind") or "image"
        prompt = self.family(kind)[0]
        if kind != "scene":
            return VLMInput(prompt, row.get("image"))
        reader, source = row_meta(row).get("reader"), row.get("source") or str(row["key"]).rsplit("-", 1)[0]
        listed = [name for name in (reader, source) if name and name in self.token_only_scenes]
        if listed:
            raise RowError(f"{listed[0]} scenes keep the task token alone (caption.token_only_scenes)", TOKEN_ONLY)
        views = row.get("view_images")
        views = [] if views is None else list(views)  # Ray rows may carry a numpy array: no truth test
        view = scene_caption_view(str(row["key"]), len(views), self.scene_view)
        return VLMInput(prompt, views[view], view)

    def parse_answer(self, raw: str, row: dict[str, Any]) -> dict[str, Any]:
        try:
            caption = clean_caption(raw)
        except ValueError as error:
            raise RowError(f"caption: {error}", status=UNPARSEABLE) from error
        kind = row.get("kind") or "image"
        _, low, high = self.family(kind)
        count = word_count(caption)
        return {
            "caption": caption,
            "caption_raw": raw,
            "word_count": count,
            "length_reason": length_reason(count, low, high),
            "caption_view": row.get("caption_view") if kind == "scene" else None,
            "view_phrases": view_phrases(caption) if kind == "scene" else None,
            "caption_original": row.get("caption_original"),
        }


@dataclass
class EntitiesAnnotator(_VLMAnnotator):
    """At most 10 entity names per image, for open-vocabulary segmentation."""

    name: ClassVar[str] = "entities"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [pa.field("entities", pa.list_(pa.string())), pa.field("entities_raw", pa.string())]
    )
    kinds: ClassVar[tuple[str, ...]] = ("image",)

    prompt: str = ENTITIES_PROMPT
    max_new_tokens: int = 96

    def parse_answer(self, raw: str, row: dict[str, Any]) -> dict[str, Any]:
        try:
            entities = parse_entities(raw)
        except ValueError as error:
            raise RowError(f"entities: {error}", status=UNPARSEABLE) from error
        return {"entities": entities, "entities_raw": raw}
