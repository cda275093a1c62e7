"""Segment Anything (the segment-anything package): architectures by name, checkpoint loading, and
box-prompted masks batched over images (the image encoder runs once per batch).

`SAM_ARCHS` holds vit_h / vit_l / vit_b and a tiny architecture for tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from onegen.core.weights import MissingCheckpointError


@dataclass(frozen=True)
class SamArch:
    """The sizes of a segment_anything Sam; vit_h/l/b match `sam_model_registry`."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    prompt_dim: int = 256
    window_size: int = 14
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_hidden_dim: int = 256


SAM_ARCHS: dict[str, SamArch] = {
    "vit_h": SamArch(1280, 32, 16, (7, 15, 23, 31)),
    "vit_l": SamArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_b": SamArch(768, 12, 12, (2, 5, 8, 11)),
    # tests and CPU benches only: random weights saved to a file by the caller
    "tiny": SamArch(16, 1, 2, (0,), image_size=64, patch_size=8, prompt_dim=32, window_size=4,
                    decoder_mlp_dim=64, decoder_heads=2, iou_hidden_dim=32),
}


def build_sam(arch: SamArch):
    """An untrained `segment_anything.modeling.Sam` of these sizes (same layout as build_sam.py)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes, window_size=arch.window_size,
            out_chans=arch.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=arch.prompt_dim,
                                          mlp_dim=arch.decoder_mlp_dim, num_heads=arch.decoder_heads),
            transformer_dim=arch.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=arch.iou_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def sam_checkpoint_file(path: str) -> str:
    """The state-dict file: `path` itself, or the single *.pth / *.pt file inside folder `path`."""
    if Path(path).is_file():
        return path
    files = sorted(str(p) for p in Path(path).iterdir() if p.suffix in (".pth", ".pt"))
    if len(files) != 1:
        raise MissingCheckpointError(f"SAM checkpoint folder {path!r} holds {len(files)} .pth/.pt files, need exactly 1")
    return files[0]


def load_sam(model_type: str, checkpoint: str, device: str):
    """Build the `model_type` architecture and load the state dict file `checkpoint` into it."""
    if model_type not in SAM_ARCHS:
        raise ValueError(f"unknown sam_model_type {model_type!r}; choose from {sorted(SAM_ARCHS)}")
    sam = build_sam(SAM_ARCHS[model_type])
    state = torch.load(sam_checkpoint_file(checkpoint), map_location="cpu", weights_only=True)
    sam.load_state_dict(state)
    return sam.to(device)


@torch.no_grad()
def sam_mask_logits(sam, images: list[np.ndarray], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
    """SAM mask logits per box, at full image resolution.

    images: (H_i, W_i, 3) uint8 RGB; boxes: (N_i, 4) xyxy pixels of image i. Returns (N_i, H_i, W_i)
    float logits (> sam.mask_threshold is the mask), single-mask output, as SamPredictor gives.
    """
    from segment_anything.utils.transforms import ResizeLongestSide

    device = sam.device
    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = [torch.as_tensor(transform.apply_image(im), device=device).permute(2, 0, 1) for im in images]
    batch = torch.cat([sam.preprocess(x[None]) for x in resized])  # (B, 3, S, S) normalised, padded
    embeddings = sam.image_encoder(batch)  # (B, C, S/p, S/p): the heavy part, batched over images
    dense_pe = sam.prompt_encoder.get_dense_pe()  # (1, C, S/p, S/p)
    logits = []
    for i, image in enumerate(images):
        n = len(boxes[i])
        if n == 0:
            logits.append(torch.zeros((0, *image.shape[:2]), device=device))
            continue
        # the decoder repeats its image embedding once per prompt, so it runs per image
        prompt = transform.apply_boxes_torch(boxes[i].to(device, torch.float32), image.shape[:2])  # (N, 4)
        sparse, dense = sam.prompt_encoder(points=None, boxes=prompt, masks=None)
        low_res, _ = sam.mask_decoder(image_embeddings=embeddings[i : i + 1], image_pe=dense_pe,
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)  # (N, 1, 4S/p, 4S/p)
        full = sam.postprocess_masks(low_res, tuple(resized[i].shape[-2:]), image.shape[:2])  # (N, 1, H, W)
        logits.append(full[:, 0])
    return logits


def sam_masks(sam, images: list[np.ndarray], boxes: list[torch.Tensor]) -> list[np.ndarray]:
    """Boolean masks (N_i, H_i, W_i) on the CPU, one per box (see `sam_mask_logits`)."""
    return [(lg > sam.mask_threshold).cpu().numpy() for lg in sam_mask_logits(sam, images, boxes)]
