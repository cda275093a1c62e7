"""`caption` and `entities` annotators: dense captions and entity lists from a VLM (DESIGN §3).

Both share one loader and batched generator (annotators.vlm) and differ in prompt and parser.

caption outputs (one row per catalog image):
- `caption` (string): the cleaned dense caption (annotators.caption_text.clean_caption), meant to be
  100-150 words; the shard builder puts it after the task token.
- `caption_raw` (string): the model's answer as generated.
- `word_count` (int32): words in `caption`.
- `caption_original` (string): the catalog's own caption, kept beside the generated one.

entities outputs:
- `entities` (list<string>): at most 10 short noun phrases (parse_entities), read by the segment annotator.
- `entities_raw` (string): the model's answer as generated.

A row whose answer cannot be used gets status "unparseable" with the reason (and the start of the
answer) in `error`; its output columns are null, as for every non-ok row. Infrastructure problems raise: a missing checkpoint at `setup()`, OOM from
`annotate` (the base class halves the batch).

Backends: "hf" runs transformers in this process. "vllm" is run by the pipelines runner through
ray.data.llm (pipelines/vllm_annotate.py, with `vllm_request` from annotators.vlm; answers parsed with
`parse_answer`); calling such an annotator directly is refused at setup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.annotators.caption_text import MAX_ENTITIES, clean_caption, parse_entities, word_count
from onegen.annotators.loading import pick_device
from onegen.annotators.vlm import GenerationSettings, LoadedVLM, VLMRequest, generate, load_vlm, require_vllm

CAPTION_PROMPT = (
    "Describe this image in detail in one paragraph of 100 to 150 words. Mention the main subjects, "
    "their appearance, actions and positions, the background, the colours, the lighting and the style. "
    "Start directly with the content, not with 'The image shows'."
)
ENTITIES_PROMPT = (
    f"List at most {MAX_ENTITIES} distinct objects, people or animals visible in this image, as short "
    "noun phrases of one to three words, one per line, most prominent first. Answer with the list only."
)
BACKENDS = ("hf", "vllm")
UNPARSEABLE = "unparseable"


@dataclass
class _VLMAnnotator(Annotator):
    """Shared configuration and batching; subclasses set `prompt` and implement `parse_answer`."""

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
                "(pipelines/vllm_annotate.py), not by calling the annotator"
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

    def parse_answer(self, raw: str, row: dict[str, Any]) -> dict[str, Any]:
        """Output columns for one answer; raise RowError(reason, "unparseable") when unusable."""
        raise NotImplementedError

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        if self._vlm is None:
            self.setup()
        requests = [VLMRequest(str(row["key"]), row["image"], self.prompt) for row in rows]
        answers = generate(self._vlm, requests, self.settings(), self.batch_size)
        results: list[dict[str, Any] | RowError] = []
        for row, answer in zip(rows, answers, strict=True):
            try:
                results.append(self.parse_answer(answer, row))
            except RowError as error:
                results.append(error)
        return results


@dataclass
class CaptionAnnotator(_VLMAnnotator):
    """Dense 100-150 word caption per image; the catalog caption is kept in `caption_original`."""

    name: ClassVar[str] = "caption"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("caption", pa.string()),
            pa.field("caption_raw", pa.string()),
            pa.field("word_count", pa.int32()),
            pa.field("caption_original", pa.string()),
        ]
    )
    kinds: ClassVar[tuple[str, ...]] = ("image",)

    prompt: str = CAPTION_PROMPT

    def parse_answer(self, raw: str, row: dict[str, Any]) -> dict[str, Any]:
        try:
            caption = clean_caption(raw)
        except ValueError as error:
            raise RowError(f"caption: {error}", status=UNPARSEABLE) from error
        return {
            "caption": caption,
            "caption_raw": raw,
            "word_count": word_count(caption),
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
