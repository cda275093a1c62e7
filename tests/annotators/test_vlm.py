"""VLM loading + batched generation, and the caption / entities annotators, on tiny random models.

The tiny LLaVA-NeXT (Mistral text + CLIP vision) and Molmo2 checkpoints are built here from configs
with an in-memory-trained BPE tokenizer, saved with save_pretrained, and loaded through the same
`load_vlm` that real hub ids use. `build_tiny_llava_next` / `build_tiny_molmo2` are also used by
bench/vlm.py --tiny.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import importlib.util  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from onegen.annotators.base import RowError  # noqa: E402
from onegen.annotators.caption import CaptionAnnotator, EntitiesAnnotator  # noqa: E402
from onegen.annotators.caption_text import parse_entities  # noqa: E402
from onegen.annotators.imageio import encode_png  # noqa: E402
from onegen.annotators.loading import MissingCheckpointError  # noqa: E402
from onegen.annotators.vlm import (  # noqa: E402
    GenerationSettings,
    VLMRequest,
    generate,
    generate_ids,
    image_token_count,
    load_vlm,
    plan_batches,
    vllm_request,
)

# --- tiny checkpoints -------------------------------------------------------------------------------
_CORPUS = [
    "a photo of a dog on the grass with a red ball",
    "the image shows a cat, a person and a car near a tree",
    "describe this image in detail. list the main objects, one per line",
    "1. dog\n2. cat\n3. tree",
] * 4
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)
MOLMO_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|image|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MOLMO_TOKENS = [
    "<|image|>", "<|video|>", "<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>",
    "<frame_start>", "<im_end>", "<frame_end>", "<im_low>", "<|im_start|>", "<|im_end|>",
]  # fmt: skip
INIT_RANGE = 0.2  # larger than the default 0.02 so the random image features visibly steer the text


def build_tokenizer(special_tokens: list[str], chat_template: str):
    """A byte-level BPE tokenizer trained in memory, with `special_tokens` and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>", *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=chat_template,
    )


def build_tiny_llava_next(path: str) -> str:
    """Tiny LLaVA-NeXT (2-layer Mistral + 2-layer CLIP, 28 px tiles) + processor saved under `path`."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = build_tokenizer(["<image>"], LLAVA_TEMPLATE)
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=28, patch_size=14, projection_dim=16, initializer_range=INIT_RANGE,
    )  # fmt: skip
    text = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints, image_seq_length=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(path)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
    )
    # CLIP prepends a CLS token: the processor must count it (num_additional_image_tokens=1)
    LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(path)  # fmt: skip
    return path


def build_tiny_molmo2(path: str) -> str:
    """Tiny native Molmo2 (2-layer text + 2-layer ViT, 28 px crops, up to 4 crops) + processor under `path`."""
    from transformers import (
        Molmo2Config,
        Molmo2ForConditionalGeneration,
        Molmo2ImageProcessor,
        Molmo2Processor,
        Molmo2VideoProcessor,
    )

    tokenizer = build_tokenizer(MOLMO_TOKENS, MOLMO_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MOLMO_TOKENS}
    heads = {
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "initializer_range": INIT_RANGE,
    }
    config = Molmo2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, image_size=[28, 28],
                           patch_size=14, **heads),
        adapter_config=dict(vision_feature_layer=[-1, 0], hidden_size=16, intermediate_size=32,
                            text_hidden_size=32, **heads),
        text_config=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         vocab_size=len(tokenizer), additional_vocab_size=0, num_hidden_layers=2,
                         intermediate_size=64, max_position_embeddings=512, initializer_range=INIT_RANGE,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        image_start_token_id=ids["<im_start>"], low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"], image_patch_id=ids["<im_patch>"],
        frame_start_token_id=ids["<frame_start>"], frame_end_token_id=ids["<frame_end>"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=INIT_RANGE,
    )  # fmt: skip
    torch.manual_seed(0)
    Molmo2ForConditionalGeneration(config).save_pretrained(path)
    crops = {"size": {"height": 28, "width": 28}, "patch_size": 14, "pooling_size": [2, 2]}
    Molmo2Processor(
        image_processor=Molmo2ImageProcessor(**crops, overlap_margins=[0, 0], max_crops=4),
        video_processor=Molmo2VideoProcessor(**crops),
        tokenizer=tokenizer,
        chat_template=MOLMO_TEMPLATE,
    ).save_pretrained(path)
    return path


BUILDERS = {"llava_next": build_tiny_llava_next, "molmo2": build_tiny_molmo2}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vlm")
    return {family: build(str(root / family)) for family, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {family: load_vlm(path, "cpu") for family, path in checkpoints.items()}


def photos() -> list[np.ndarray]:
    """Real photos at different sizes and aspect ratios (so image-token counts differ)."""

    def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))

    return [
        resized(skdata.astronaut(), 40, 40),
        resized(skdata.rocket(), 30, 64),
        resized(skdata.coffee(), 70, 30),
        resized(skdata.chelsea(), 56, 42),
        resized(skdata.astronaut()[::-1], 24, 24),
    ]


# --- loading and generation -------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(BUILDERS))
def test_loader_reads_saved_checkpoint(loaded, checkpoints, family: str) -> None:
    vlm = loaded[family]
    assert vlm.family == family
    assert vlm.checkpoint.path == checkpoints[family]
    assert vlm.dtype == torch.float32 and vlm.device == "cpu"
    assert vlm.processor.tokenizer.padding_side == "left"


@pytest.mark.parametrize("family", list(BUILDERS))
def test_batched_generation_equals_one_at_a_time(loaded, family: str) -> None:
    vlm = loaded[family]
    images = photos()
    counts = [image_token_count(vlm, *image.shape[:2]) for image in images]
    assert len(set(counts)) >= 3, counts  # a batch mixes image-token counts, so it is padded
    requests = [VLMRequest(f"k{i}", image, "describe this image") for i, image in enumerate(images)]
    settings = GenerationSettings(max_new_tokens=8)
    one_by_one = generate_ids(vlm, requests, settings, batch_size=1)
    batched = generate_ids(vlm, requests, settings, batch_size=len(requests))
    assert batched == one_by_one
    assert len({tuple(ids) for ids in one_by_one}) >= 2  # the image reaches the model: answers differ
    assert all(len(ids) > 0 for ids in one_by_one)


def test_plan_batches_sorts_by_token_count() -> None:
    assert plan_batches([30, 10, 20, 10, 40], batch_size=2) == [[1, 3], [2, 0], [4]]
    assert plan_batches([], batch_size=4) == []
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=0)


def test_seeded_sampling_is_reproducible(loaded) -> None:
    vlm = loaded["llava_next"]
    requests = [VLMRequest(f"k{i}", image, "describe") for i, image in enumerate(photos()[:3])]
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.0, top_p=1.0, seed=7)
    assert generate_ids(vlm, requests, settings, 3) == generate_ids(vlm, requests, settings, 3)


# --- annotators -------------------------------------------------------------------------------------
def catalog_batch(images: list[np.ndarray]) -> dict[str, list]:
    n = len(images)
    return {
        "key": [f"src-{i:03d}" for i in range(n)],
        "kind": ["image"] * n,
        "image": [encode_png(image) for image in images],
        "caption_original": [f"original caption {i}" for i in range(n)],
        "meta": ["{}"] * n,
        "width": [image.shape[1] for image in images],
        "height": [image.shape[0] for image in images],
    }


@pytest.mark.parametrize("family", list(BUILDERS))
def test_caption_annotator_batch(checkpoints, loaded, family: str) -> None:
    images = photos()
    batch = catalog_batch(images)
    batch["kind"][1] = "multiview"  # not handled: skipped, still one row
    batch["image"][2] = b"not an image"  # data problem: this row errors, the others go on
    annotator = CaptionAnnotator(model=checkpoints[family], num_gpus=0, batch_size=2, max_new_tokens=12)
    annotator.setup()
    out = annotator(batch)
    assert out["key"] == batch["key"]
    assert set(out) >= {"caption", "caption_raw", "word_count", "caption_original", "status", "error"}
    assert out["status"][1] == "skipped" and out["status"][2] == "error"
    assert "decode_error" in out["error"][2]
    good = [0, 3, 4]
    vlm = loaded[family]
    expected_raw = generate(
        vlm, [VLMRequest("", images[i], annotator.prompt) for i in good], annotator.settings(), batch_size=1
    )
    for i, raw in zip(good, expected_raw, strict=True):
        assert out["status"][i] in ("ok", "unparseable")
        if out["status"][i] == "ok":
            assert out["caption_raw"][i] == raw  # the annotator's batched call = one-at-a-time generate
            assert out["caption_original"][i] == f"original caption {i}"
            assert out["word_count"][i] == len(out["caption"][i].split()) > 0
    assert all(model_id == checkpoints[family] for model_id in out["model_id"])
    annotator.schema()  # output columns are declared: building the table would fail otherwise
    import pyarrow as pa

    pa.Table.from_pydict(out, schema=annotator.schema())


def test_entities_annotator_batch(checkpoints) -> None:
    images = photos()[:3]
    annotator = EntitiesAnnotator(model=checkpoints["molmo2"], num_gpus=0, batch_size=3, max_new_tokens=10)
    annotator.setup()
    out = annotator(catalog_batch(images))
    assert out["key"] == [f"src-{i:03d}" for i in range(3)]
    for status, entities, raw, error in zip(
        out["status"], out["entities"], out["entities_raw"], out["error"], strict=True
    ):
        assert status in ("ok", "unparseable")
        if status == "ok":
            assert entities == parse_entities(raw) and 1 <= len(entities) <= 10
        else:
            assert entities is None and error.startswith("entities:")
    import pyarrow as pa

    pa.Table.from_pydict(out, schema=annotator.schema())


def test_unusable_answers_are_unparseable_rows() -> None:
    row = {"key": "k", "caption_original": "x"}
    with pytest.raises(RowError) as caught:
        EntitiesAnnotator().parse_answer("I cannot see any objects.", row)
    assert caught.value.status == "unparseable"
    with pytest.raises(RowError) as caught:
        CaptionAnnotator().parse_answer("   ", row)
    assert caught.value.status == "unparseable"
    parsed = CaptionAnnotator().parse_answer("The image shows a red car. It is parked by a", row)
    assert parsed == {"caption": "A red car.", "caption_raw": "The image shows a red car. It is parked by a",
                      "word_count": 3, "caption_original": "x"}  # fmt: skip


# --- failures at setup ------------------------------------------------------------------------------
def test_missing_checkpoint_fails_at_setup_in_one_line(tmp_path) -> None:
    for model in (str(tmp_path / "no-such-model"), "nobody/not-a-cached-vlm"):
        with pytest.raises(MissingCheckpointError) as caught:
            CaptionAnnotator(model=model, num_gpus=0).setup()
        assert "\n" not in str(caught.value) and model in str(caught.value)


def test_original_molmo_needs_explicit_remote_code(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "molmo"}))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        EntitiesAnnotator(model=str(tmp_path), num_gpus=0).setup()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_fails_clearly_without_vllm() -> None:
    with pytest.raises(ImportError, match="vllm is not installed"):
        CaptionAnnotator(backend="vllm", num_gpus=0).setup()


def test_vllm_request_uses_the_same_chat() -> None:
    request = vllm_request(b"\x89PNG", "describe", GenerationSettings(max_new_tokens=5))
    content = request["messages"][0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "describe"}
    assert request["sampling_params"] == {"max_tokens": 5, "temperature": 0.0}
