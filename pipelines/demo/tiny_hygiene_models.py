"""Tiny random checkpoints for the hygiene annotators (clip, aesthetic, nsfw, watermark), written locally.

Same contract as `annotators.tiny_models` (which is full): each `tiny_<family>(folder, seed=0)` writes a
seeded random checkpoint in the layout of the real weights and returns what the annotator's `model` field
takes. They load through the same `resolve_checkpoint` + transformers code as the real ids; nothing here
touches the network.
"""

from __future__ import annotations

from pathlib import Path

CLIP_WORDS = ("a", "photo", "of", "the", "cat", "dog", "person", "rocket", "coffee", "cup", "astronaut", "red", "sky")
CLIP_IMAGE = 32  # CLIP processor resize / crop size
CLIP_DIM = 32  # projection width (ViT-L/14 has 768)


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _word_tokenizer(words: tuple[str, ...], max_length: int):
    """A word-level fast tokenizer: <bos> text <eos>, eos the highest id (CLIP pools at the eos token)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "<bos>": 2, **{w: 3 + i for i, w in enumerate(words)}}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", vocab["<eos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="[PAD]", unk_token="[UNK]", model_max_length=max_length)
    return tokenizer, vocab


def tiny_clip(folder: str | Path, seed: int = 0) -> str:
    """CLIP (1-layer text and vision towers, 32 px, projection 32) + processor + tokenizer; returns the dir."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer, vocab = _word_tokenizer(CLIP_WORDS, max_length=16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=2,
                         eos_token_id=vocab["<eos>"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=CLIP_IMAGE, patch_size=8),
        projection_dim=CLIP_DIM,
    )  # fmt: skip
    _seed(seed)
    CLIPModel(config).eval().save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE},
                       crop_size={"height": CLIP_IMAGE, "width": CLIP_IMAGE}).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def tiny_aesthetic(folder: str | Path, seed: int = 0, input_dim: int = CLIP_DIM) -> str:
    """A random LAION aesthetic MLP state dict (the released key layout) as a .pth; returns the file."""
    import torch

    from onegen.annotators.aesthetic import LAION_AESTHETIC_FILE, aesthetic_mlp

    Path(folder).mkdir(parents=True, exist_ok=True)
    _seed(seed)
    mlp = aesthetic_mlp(input_dim)
    with torch.no_grad():
        mlp[-1].bias.fill_(5.0)  # centre the random scores on the 1-10 scale, as the real ones are
    path = Path(folder) / LAION_AESTHETIC_FILE
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, path)
    return str(path)


def tiny_image_classifier(folder: str | Path, labels: tuple[str, ...] = ("normal", "nsfw"), seed: int = 0) -> str:
    """A ViT image classifier (2 layers, 32 px) with `labels` + processor, like Falconsai's; returns the dir."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=8, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )  # fmt: skip
    _seed(seed)
    ViTForImageClassification(config).eval().save_pretrained(str(folder))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return str(folder)
