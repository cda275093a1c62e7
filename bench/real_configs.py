"""Random-weight checkpoints at the real architectures the annotators use, for GPU benchmarks without weights.

Speed depends on the architecture, not on the weights, so `bench/gpu_suite.sh` measures these on a machine
that has no model downloads. Each builder writes the layout the real checkpoint has (a transformers folder
with its processor, or the .pt / .pth file) and returns what the bench's model flag takes; the tokenizers
are small in-memory ones (their vocabulary does not change the model's compute: the embedding tables keep
the real vocabulary size).

    depth    Depth-Anything-V2-Small: DINOv2-S/14 (384 wide, 12 layers) + DPT head (64 fusion), 518 px
    pose     ViTPose-base simple: ViT-B/16 at 256 x 192, 17 keypoints; YOLO11n detector (ultralytics yaml)
    hed      ControlNetHED_Apache2 (the lllyasviel/Annotators network)
    segment  OWLv2 base/16 at 960 px (12-layer text and vision towers) + SAM vit_h
    vlm      LLaVA-NeXT Mistral-7B: CLIP ViT-L/14 at 336 px + Mistral 7B, the released anyres grid

    python bench/real_configs.py OUT [--only depth,pose,hed,segment,vlm] [--device cuda]   # prints JSON paths
    python bench/real_configs.py OUT --device meta   # build every architecture without memory, save no weights

The benchmarks' --real flags call these builders. `--device meta` is the smoke check of them (bench/gpu_suite.sh
--smoke): each model is built on the meta device (shapes only) and its processor saved, which proves the configs
and processors work with the installed library versions and prints every model's parameter count.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from onegen.pipelines.demo.tiny_models import LLAVA_TEMPLATE, tiny_hed, vlm_tokenizer

LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def save(folder: str, model, *parts) -> str:
    """save_pretrained the model (not on the meta device: it has no weights) and its processor parts."""
    params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__}: {params / 1e6:.1f}M parameters", flush=True)
    if next(model.parameters()).device.type != "meta":
        model.save_pretrained(folder)
    for part in parts:
        part.save_pretrained(folder)
    return folder


def real_depth(folder: str, device: str = "cpu") -> str:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    with torch.device(device):
        model = DepthAnythingForDepthEstimation(DepthAnythingConfig())  # defaults: V2-Small
    return save(folder, model, DPTImageProcessor(
        size={"height": 518, "width": 518}, ensure_multiple_of=14, keep_aspect_ratio=True, resample=3,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]))


def real_vitpose(folder: str, device: str = "cpu") -> str:
    from transformers import VitPoseConfig, VitPoseForPoseEstimation, VitPoseImageProcessor

    torch.manual_seed(0)
    with torch.device(device):
        model = VitPoseForPoseEstimation(VitPoseConfig(num_labels=17))  # defaults: ViT-B/16 256x192
    return save(folder, model, VitPoseImageProcessor(size={"height": 256, "width": 192}))


def real_yolo(folder: str) -> str:
    from onegen.core.weights import import_yolo

    Path(folder).mkdir(parents=True, exist_ok=True)
    path = os.path.join(folder, "yolo11n_random.pt")
    import_yolo()("yolo11n.yaml").save(path)
    return path


def real_owlv2(folder: str, device: str = "cpu") -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
        PreTrainedTokenizerFast,
    )

    words = ("person", "cat", "dog", "cup", "car", "tree", "face", "hair", "sky", "rocket")
    vocab = {"[PAD]": 0, "[UNK]": 1, "<bos>": 2, **{w: 3 + i for i, w in enumerate(words)}}
    vocab["<eos>"] = len(vocab)  # OWLv2 pools the highest id: EOS last
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A <eos>",
                                                        special_tokens=[("<bos>", 2), ("<eos>", vocab["<eos>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="[PAD]", unk_token="[UNK]", model_max_length=16)
    config = Owlv2Config(text_config={"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": vocab["<eos>"]},
                         vision_config={"image_size": 960, "patch_size": 16})  # base/16 towers, 512 projection
    torch.manual_seed(0)
    with torch.device(device):
        model = Owlv2ForObjectDetection(config)
    return save(folder, model, Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 960, "width": 960}),
                                              tokenizer=tokenizer))


def real_sam(folder: str, device: str = "cpu") -> str:
    from onegen.annotators.sam import SAM_ARCHS, build_sam

    Path(folder).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = os.path.join(folder, "sam_vit_h_random.pth")
    with torch.device(device):
        sam = build_sam(SAM_ARCHS["vit_h"])
    print(f"Sam vit_h: {sum(p.numel() for p in sam.parameters()) / 1e6:.1f}M parameters", flush=True)
    if device != "meta":
        torch.save(sam.state_dict(), path)
    return path


def llava_next_7b_config(tokenizer):
    """LLaVA-NeXT Mistral-7B's architecture around a small tokenizer (its special ids)."""
    from transformers import CLIPVisionConfig, LlavaNextConfig, MistralConfig

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    text = MistralConfig(vocab_size=32064, max_position_embeddings=32768, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # 7B defaults
    return LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=LLAVA_PINPOINTS,
                           image_seq_length=576, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))


def real_llava_next(folder: str, device: str) -> str:
    from transformers import LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor

    tokenizer = vlm_tokenizer(["<image>"], LLAVA_TEMPLATE)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    with torch.device(device):  # 7B parameters: initialise where they will run, in bf16
        model = LlavaNextForConditionalGeneration._from_config(llava_next_7b_config(tokenizer), dtype=dtype)
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                              image_grid_pinpoints=LLAVA_PINPOINTS)
    return save(folder, model, LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE))


def build(root: str, only: set[str], device: str) -> dict[str, str]:
    """Build the chosen families under root; returns {flag name: path}. The small models are built on the CPU
    (seconds) unless `device` is "meta"; the 7B VLM is built on `device`. YOLO11n and HED (the tiny builder
    already writes the real network) are always real: a few MB."""
    small = "meta" if device == "meta" else "cpu"
    paths = {}
    if "depth" in only:
        paths["depth"] = real_depth(os.path.join(root, "depth"), small)
    if "pose" in only:
        paths["pose"] = real_vitpose(os.path.join(root, "vitpose"), small)
        paths["detector"] = real_yolo(os.path.join(root, "yolo"))
    if "hed" in only:
        paths["hed"] = tiny_hed(os.path.join(root, "hed"))
    if "segment" in only:
        paths["owlv2"] = real_owlv2(os.path.join(root, "owlv2"), small)
        paths["sam"] = real_sam(os.path.join(root, "sam"), small)
    if "vlm" in only:
        paths["llava_next"] = real_llava_next(os.path.join(root, "llava_next"), device)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--only", default="depth,pose,hed,segment,vlm")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    paths = build(args.out, set(args.only.split(",")), args.device)
    print(json.dumps(paths))
    print(f"summary: configs {', '.join(sorted(paths))} built on {args.device}")


if __name__ == "__main__":
    main()
