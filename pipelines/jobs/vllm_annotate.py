"""The vLLM path of the caption / entities annotators: the same prompts and output columns, served by
`ray.data.llm` (vLLM engine stages) instead of transformers' generate in our own actors.

Used by the annotation runner when an annotator has `backend == "vllm"`. Every catalog row goes
through the processor, so the output stays one row per catalog row in part order. A row's prompt and
image come from the annotator's own `vlm_input` (the caption annotator's per-kind prompts: images,
ID photos, one view per scene), exactly as on the HF path; rows of kinds the annotator does not
handle, and rows `vlm_input` refuses (a CO3D scene's "token_only", "no_such_view"), get a one-token
request and come back with that status. Answers are parsed by the annotator's own `parse_answer`,
and rows are built by its `_to_columns`, exactly as on the HF path (named "0::<column>", as the
runner's actors name the first annotator's columns).
vllm is an optional extra (`pip install onegen[vllm]`); without it the job fails at planning with one line.
"""

from __future__ import annotations

import json
from typing import Any

from onegen.annotators.base import NOT_FOR_THIS_SOURCE, Annotator, RowError
from onegen.pipelines.runtime.units import UNIT_COLUMN

_MIME = {"jpg": "image/jpeg", "png": "image/png"}


def vllm_processor_config(
    model_id: str,
    batch_size: int,
    concurrency: int = 1,
    max_model_len: int = 8192,
    trust_remote_code: bool = False,
) -> Any:
    """The `ray.data.llm.vLLMEngineProcessorConfig` that serves `model_id` for `build_llm_processor`.

    Rows for that processor come from `vllm_request`; the answers (column "generated_text") go
    through the same parsers as the HF backend.
    """
    from onegen.annotators.vlm import require_vllm
    from onegen.core.weights import resolve_checkpoint

    require_vllm()
    checkpoint = resolve_checkpoint(model_id, "VLM")
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=checkpoint.path,
        engine_kwargs={
            "max_model_len": max_model_len,
            "dtype": "bfloat16",
            "limit_mm_per_prompt": {"image": 1},
            "trust_remote_code": trust_remote_code,
        },
        batch_size=batch_size,
        concurrency=concurrency,
        prepare_multimodal_stage=True,
        chat_template_stage=True,
        tokenize_stage=True,
        detokenize_stage=True,
    )


def vllm_annotation_dataset(reads, annotator: Annotator):
    """The lazy dataset: `reads` (the runner's unit read stage) -> ray.data.llm processor -> annotation
    rows (+ `_unit`), for the runner's commit stage."""
    from ray.data.llm import build_llm_processor

    config = vllm_processor_config(annotator.model, annotator.batch_size, annotator.concurrency,
                                   trust_remote_code=getattr(annotator, "trust_remote_code", False))
    settings = annotator.settings()

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        request, carried = vllm_row_request(annotator, row, settings)
        return {**request, "carried": json.dumps(carried)}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        carried = json.loads(row["carried"])
        columns = annotator._to_columns([carried["key"]], [vllm_row_result(annotator, carried, row["generated_text"])])
        # the runner's commit takes annotator i's columns as "<i>::<column>"; this path serves one annotator
        return {**{f"0::{name}": values[0] for name, values in columns.items()}, UNIT_COLUMN: carried[UNIT_COLUMN]}

    return build_llm_processor(config, preprocess=preprocess, postprocess=postprocess)(reads)


_NO_REQUEST = {"messages": [{"role": "user", "content": [{"type": "text", "text": "-"}]}],
               "sampling_params": {"max_tokens": 1, "temperature": 0.0}}


def vllm_row_request(annotator: Annotator, row: dict[str, Any], settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ray.data.llm request, carried fields) for one raw catalog row.

    Rows the annotator handles ask `vlm_input(row)`'s prompt about its image (a scene: the chosen
    view's bytes); the carried fields hold what `parse_answer` reads (key, kind, caption_original,
    caption_view) and, for rows that ask nothing, the (status, reason) to record instead.
    """
    from onegen.annotators.vlm import vllm_request

    kind = row.get("kind") or "image"
    carried = {"key": row.get("key"), "kind": kind, "caption_original": row.get("caption_original"),
               UNIT_COLUMN: row.get(UNIT_COLUMN), "caption_view": None}
    if not annotator.runs_on(row.get("source")):  # its `sources` policy, as on the HF path (annotators/base.py)
        carried["refused"] = ["skipped", NOT_FOR_THIS_SOURCE]
        return _NO_REQUEST, carried
    if kind not in annotator.kinds:
        carried["refused"] = ["skipped", f"{annotator.name} does not annotate rows of kind {kind!r}"]
        return _NO_REQUEST, carried
    try:
        asked = annotator.vlm_input(row)
    except RowError as error:
        carried["refused"] = [error.status, error.reason]
        return _NO_REQUEST, carried
    if asked.image is None:
        carried["refused"] = ["error", "decode_error: the row has no image bytes"]
        return _NO_REQUEST, carried
    carried["caption_view"] = asked.view
    fmt = row.get("image_format")  # a scene's views share the row's format
    return vllm_request(asked.image, asked.prompt, settings, _MIME.get(fmt, "image/jpeg")), carried


def vllm_row_result(annotator: Annotator, carried: dict[str, Any], answer: str) -> dict[str, Any] | RowError:
    """The parsed output columns of one answer, or the RowError recorded for a row that asked nothing."""
    if carried.get("refused"):
        status, reason = carried["refused"]
        return RowError(reason, status)
    try:
        return annotator.parse_answer(answer, carried)
    except RowError as error:
        return error
