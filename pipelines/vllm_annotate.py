"""The vLLM path of the caption / entities annotators: the same prompts and output columns, served by
`ray.data.llm` (vLLM engine stages) instead of transformers' generate in our own actors.

Used by the annotation runner when an annotator has `backend == "vllm"`. Every catalog row goes
through the processor, so the output stays one row per catalog row in part order (rows of kinds the
annotator does not handle get a one-token request and come back "skipped"). Answers are parsed by the
annotator's own `parse_answer`, and rows are built by its `_to_columns`, exactly as on the HF path (named
"0::<column>", as the runner's actors name the first annotator's columns).
vllm is an optional extra (`pip install onegen[vllm]`); without it the job fails at planning with one line.
"""

from __future__ import annotations

import json
from typing import Any

from onegen.annotators.base import Annotator, RowError
from onegen.pipelines.part_stream import PART_COLUMN

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
    from onegen.annotators.loading import resolve_checkpoint
    from onegen.annotators.vlm import require_vllm

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


def vllm_annotation_dataset(tasks: list, annotator: Annotator, read_step):
    """The lazy dataset: catalog parts -> ray.data.llm processor -> annotation rows (+ `_part`)."""
    import ray
    from ray.data.llm import build_llm_processor

    from onegen.annotators.vlm import vllm_request

    config = vllm_processor_config(annotator.model, annotator.batch_size, annotator.concurrency,
                                   trust_remote_code=getattr(annotator, "trust_remote_code", False))
    settings = annotator.settings()

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        carried = json.dumps({k: row.get(k) for k in ("key", "kind", "caption_original", PART_COLUMN)})
        if (row.get("kind") or "image") in annotator.kinds and row.get("image") is not None:
            mime = _MIME.get(row.get("image_format"), "image/jpeg")
            return {**vllm_request(row["image"], annotator.prompt, settings, mime), "carried": carried}
        # rows the annotator skips still pass through (one row out per row in): a one-token text request
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "-"}]}],
                "sampling_params": {"max_tokens": 1, "temperature": 0.0}, "carried": carried}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        carried = json.loads(row["carried"])
        if (carried.get("kind") or "image") not in annotator.kinds:
            result: Any = RowError(f"{annotator.name} does not annotate rows of kind {carried['kind']!r}", "skipped")
        else:
            try:
                result = annotator.parse_answer(row["generated_text"], carried)
            except RowError as error:
                result = error
        columns = annotator._to_columns([carried["key"]], [result])
        # the runner's commit takes annotator i's columns as "<i>::<column>"; this path serves one annotator
        return {**{f"0::{name}": values[0] for name, values in columns.items()}, PART_COLUMN: carried[PART_COLUMN]}

    items = [{"task": json.dumps(task)} for task in tasks]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    dataset = dataset.map_batches(read_step, batch_size=1, num_cpus=0.25)
    return build_llm_processor(config, preprocess=preprocess, postprocess=postprocess)(dataset)
