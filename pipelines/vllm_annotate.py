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

import base64
import json
from typing import Any

from onegen.annotators.base import Annotator, RowError
from onegen.pipelines.part_stream import PART_COLUMN

_MIME = {"jpg": "image/jpeg", "png": "image/png"}


def vllm_annotation_dataset(tasks: list, annotator: Annotator, read_step):
    """The lazy dataset: catalog parts -> ray.data.llm processor -> annotation rows (+ `_part`)."""
    import ray
    from ray.data.llm import build_llm_processor

    from onegen.annotators.vlm import chat_messages, vllm_processor_config

    config = vllm_processor_config(annotator.model, annotator.batch_size, annotator.concurrency,
                                   trust_remote_code=getattr(annotator, "trust_remote_code", False))
    settings = annotator.settings()

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        handled = (row.get("kind") or "image") in annotator.kinds and row.get("image") is not None
        messages = chat_messages(annotator.prompt if handled else "-")
        if handled:
            url = f"data:{_MIME.get(row.get('image_format'), 'image/jpeg')};base64," + base64.b64encode(row["image"]).decode()
            messages[0]["content"][0] = {"type": "image_url", "image_url": {"url": url}}
        else:
            messages[0]["content"] = [part for part in messages[0]["content"] if part.get("type") == "text"]
        sampling = {"max_tokens": settings.max_new_tokens if handled else 1, "temperature": 0.0}
        if handled and settings.do_sample:
            sampling.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
        carried = {k: row.get(k) for k in ("key", "kind", "caption_original", PART_COLUMN)}
        return {"messages": messages, "sampling_params": sampling, "carried": json.dumps(carried)}

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
