"""Loading and batched generation for the vision-language models behind `caption` and `entities`.

Supported checkpoints (a local folder or a hub id in the offline HF cache, see annotators.loading):
- LLaVA-NeXT (`model_type` "llava_next", e.g. `llava-hf/llava-v1.6-mistral-7b-hf`): transformers
  `LlavaNextForConditionalGeneration` + `LlavaNextProcessor`.
- Molmo2 (`model_type` "molmo2", e.g. `allenai/Molmo2-8B`): transformers' native
  `Molmo2ForConditionalGeneration` + `Molmo2Processor`.
- Original Molmo (`model_type` "molmo", e.g. `allenai/Molmo-7B-D-0924`): only with remote code, which
  runs the checkpoint's own Python; refused unless `trust_remote_code=True` is set explicitly.

Generation contract (`generate`): one prompt + one (H, W, 3) uint8 RGB image per request; the answer
text of each request comes back in request order. Requests are sorted by their image-token count and
cut into batches of `batch_size`, so the left padding inside a batch stays small. Greedy decoding is
the default, which makes a batch's answers equal to one-at-a-time answers (up to float noise);
sampling is seeded per batch from `seed` and the request keys, so a rerun with the same batching
gives the same text. Weights run in bf16 on GPU and fp32 on CPU.

The vLLM backend is not driven from here: `vllm_request` builds the per-row request that the runner in
pipelines/ (which owns Ray; pipelines/jobs/vllm_annotate.py) hands to `ray.data.llm`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onegen.core.weights import Checkpoint, MissingCheckpointError, resolve_checkpoint

FAMILIES = {"llava_next": "llava_next", "molmo2": "molmo2", "molmo": "molmo"}


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by every request of a call."""

    max_new_tokens: int = 256
    do_sample: bool = False  # greedy by default: batched == one-at-a-time
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0  # only read when do_sample


@dataclass(frozen=True)
class VLMRequest:
    """One image + one user prompt. `key` seeds sampling; `image` is (H, W, 3) uint8 RGB."""

    key: str
    image: np.ndarray
    prompt: str


@dataclass
class LoadedVLM:
    """A model + processor ready to generate; `family` is one of FAMILIES' values."""

    checkpoint: Checkpoint
    family: str
    model: Any
    processor: Any
    device: str
    dtype: Any


# --- loading ----------------------------------------------------------------------------------------
def checkpoint_family(path: str) -> str:
    """The VLM family of a checkpoint folder, read from its config.json `model_type`."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise MissingCheckpointError(
            f"VLM checkpoint {path!r} has no config.json (not a transformers model folder)"
        )
    model_type = json.loads(config_file.read_text()).get("model_type", "")
    if model_type not in FAMILIES:
        raise ValueError(
            f"VLM checkpoint {path!r} has model_type {model_type!r}; supported: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def load_vlm(model_id: str, device: str, trust_remote_code: bool = False) -> LoadedVLM:
    """Resolve `model_id` offline and load model + processor (bf16 on cuda, fp32 on cpu).

    Raises MissingCheckpointError (one line) when the weights are not on this machine, and
    ValueError for an original-Molmo checkpoint without `trust_remote_code=True`.
    """
    import torch
    from transformers import AutoProcessor

    checkpoint = resolve_checkpoint(model_id, "VLM")
    family = checkpoint_family(checkpoint.path)
    if family == "molmo" and not trust_remote_code:
        raise ValueError(
            f"{model_id!r} is an original Molmo checkpoint, which runs the checkpoint's own remote code: "
            "set trust_remote_code=True to allow it (or use a Molmo2 / LLaVA-NeXT checkpoint)"
        )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model_class = _model_class(family)
    remote = family == "molmo"
    model = model_class.from_pretrained(checkpoint.path, dtype=dtype, trust_remote_code=remote)
    model = model.to(device).eval()
    processor = AutoProcessor.from_pretrained(checkpoint.path, trust_remote_code=remote)
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"  # generation appends on the right: pads must sit on the left
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return LoadedVLM(checkpoint, family, model, processor, device, dtype)


def _model_class(family: str) -> Any:
    if family == "llava_next":
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration
    if family == "molmo2":
        from transformers import Molmo2ForConditionalGeneration

        return Molmo2ForConditionalGeneration
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM


# --- prompts and grouping ---------------------------------------------------------------------------
def chat_messages(prompt: str) -> list[dict[str, Any]]:
    """The single-turn chat (one image, then the prompt) that every backend formats."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def build_prompt(vlm: LoadedVLM, prompt: str) -> str:
    """The model-ready prompt text, via the processor's own chat template."""
    return vlm.processor.apply_chat_template(chat_messages(prompt), add_generation_prompt=True)


def image_token_count(vlm: LoadedVLM, height: int, width: int) -> int:
    """How many placeholder tokens an (height, width) image expands to (0 where the processor can't say)."""
    counter = getattr(vlm.processor, "_get_num_multimodal_tokens", None)
    if counter is None:  # remote-code processors: no count, so no grouping
        return 0
    return int(counter(image_sizes=[(height, width)]).num_image_tokens[0])


def plan_batches(token_counts: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices sorted by image-token count (stable), cut into batches of at most batch_size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(token_counts)), key=lambda i: token_counts[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


# --- generation -------------------------------------------------------------------------------------
def generate(
    vlm: LoadedVLM, requests: Sequence[VLMRequest], settings: GenerationSettings, batch_size: int
) -> list[str]:
    """Answer text per request, in request order (special tokens stripped, not otherwise cleaned)."""
    if vlm.family == "molmo":
        return [_generate_molmo_v1(vlm, request, settings) for request in requests]
    tokenizer = vlm.processor.tokenizer
    return [
        tokenizer.decode(ids, skip_special_tokens=True)
        for ids in generate_ids(vlm, requests, settings, batch_size)
    ]


def generate_ids(
    vlm: LoadedVLM, requests: Sequence[VLMRequest], settings: GenerationSettings, batch_size: int
) -> list[list[int]]:
    """New token ids per request, in request order, cut before the first end-of-sequence token."""
    counts = [image_token_count(vlm, *request.image.shape[:2]) for request in requests]
    answers: list[list[int]] = [[] for _ in requests]
    for batch in plan_batches(counts, batch_size):
        for i, ids in zip(batch, _generate_batch(vlm, [requests[i] for i in batch], settings), strict=True):
            answers[i] = ids
    return answers


def _generate_batch(
    vlm: LoadedVLM, requests: Sequence[VLMRequest], settings: GenerationSettings
) -> list[list[int]]:
    import torch

    prompts = [build_prompt(vlm, request.prompt) for request in requests]
    # writable copies: decoded catalog images are read-only and torch.from_numpy warns on those
    images = [np.array(request.image) for request in requests]
    inputs = vlm.processor(images=images, text=prompts, padding=True, return_tensors="pt")
    inputs = {
        name: value.to(vlm.device, dtype=vlm.dtype) if value.is_floating_point() else value.to(vlm.device)
        for name, value in inputs.items()
    }
    prompt_length = inputs["input_ids"].shape[1]  # (B, T): left-padded, so new tokens start at T for all
    if settings.do_sample:
        torch.manual_seed(_batch_seed(settings.seed, [request.key for request in requests]))
    with torch.inference_mode():
        output = vlm.model.generate(
            **inputs,
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            temperature=settings.temperature if settings.do_sample else None,
            top_p=settings.top_p if settings.do_sample else None,
            pad_token_id=vlm.processor.tokenizer.pad_token_id,
        )  # (B, T + new)
    stops = _eos_ids(vlm)
    answers = []
    for row in output[:, prompt_length:].tolist():  # rows that stopped early are right-padded
        end = next((j for j, token in enumerate(row) if token in stops), len(row))
        answers.append(row[:end])
    return answers


def _eos_ids(vlm: LoadedVLM) -> set[int]:
    eos = vlm.model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return {token for token in [*eos, vlm.processor.tokenizer.eos_token_id] if token is not None}


def _batch_seed(seed: int, keys: Sequence[str]) -> int:
    """A torch seed from the configured seed and the batch's keys (same batch -> same draws)."""
    digest = hashlib.sha256(f"{seed}:{'|'.join(keys)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _generate_molmo_v1(vlm: LoadedVLM, request: VLMRequest, settings: GenerationSettings) -> str:
    """Original Molmo: its remote code has its own `process` / `generate_from_batch`, one request at a time."""
    import torch
    from PIL import Image
    from transformers import GenerationConfig

    inputs = vlm.processor.process(images=[Image.fromarray(request.image)], text=request.prompt)
    inputs = {name: value.to(vlm.device).unsqueeze(0) for name, value in inputs.items()}
    if "images" in inputs:
        inputs["images"] = inputs["images"].to(vlm.dtype)
    if settings.do_sample:
        torch.manual_seed(_batch_seed(settings.seed, [request.key]))
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        temperature=settings.temperature if settings.do_sample else None,
        top_p=settings.top_p if settings.do_sample else None,
        stop_strings="<|endoftext|>",
    )
    with torch.inference_mode():
        output = vlm.model.generate_from_batch(inputs, config, tokenizer=vlm.processor.tokenizer)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return vlm.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)


# --- vLLM glue (ray.data.llm, driven by pipelines/) --------------------------------------------------
def require_vllm() -> None:
    """Raise ImportError with one clear line when vllm cannot be imported."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError("vllm is not installed: pip install vllm, or use backend='hf'")


def vllm_request(image: bytes, prompt: str, settings: GenerationSettings, mime: str = "image/png") -> dict[str, Any]:
    """One ray.data.llm input row: the same chat as `chat_messages`, with the image inlined (data URL)."""
    import base64

    data_url = f"data:{mime};base64," + base64.b64encode(image).decode()
    messages = chat_messages(prompt)
    messages[0]["content"][0] = {"type": "image_url", "image_url": {"url": data_url}}
    sampling = {"max_tokens": settings.max_new_tokens, "temperature": 0.0}
    if settings.do_sample:
        sampling.update(temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed)
    return {"messages": messages, "sampling_params": sampling}
