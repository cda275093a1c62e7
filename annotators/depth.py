"""Depth annotator: Depth Anything V2 (transformers) -> 16-bit relative inverse depth + condition image.

Output columns (one row per catalog image, docs/design.md §3):
- `png16` (binary): 16-bit single-channel PNG at the source resolution (H, W) of the model's relative
  inverse depth (larger = nearer), normalised per image to [0, 1] and stored as round(d * 65535).
- `condition` (binary): 8-bit PNG (H, W, 3), the same normalised map as round(d * 255) replicated to three
  channels; view 1 of the `[[depth2image]]` sample. Convention: grey *inverse* depth (Depth Anything's
  relative output, larger = nearer), min-max normalised per image, so the nearest surface is white
  (255) and the farthest black (0). This is what the released model's depth input shows
  (shared/reference-styles/depth-input-inverse-grey.webp: grey, R = G = B, near bright, values
  spanning ~0..252) and the rule of Depth Anything's own visualisation (per-image min-max to 0..255,
  grey to three channels; it truncates where we round, at most one level apart).
- `depth_min`, `depth_max` (float32): the raw model output's range at source resolution, so that
  raw = depth_min + d * (depth_max - depth_min) (units: the model's relative inverse depth, unitless).
A map whose range is (numerically) empty is a data problem: RowError status "degenerate_depth".

Preprocessing follows the checkpoint's own DPTImageProcessor settings (preprocessor_config.json:
keep_aspect_ratio, ensure_multiple_of=14, size 518, bicubic, ImageNet mean/std) but runs as batched
tensor ops on the model's device: rows are grouped by source shape, each group is resized as one
(N, 3, H, W) uint8 tensor exactly as the library's torchvision backend does (uint8 bicubic with
antialias, then fused rescale+normalise), and groups that land on the same model input size share one
forward. Postprocessing matches `post_process_depth_estimation` (bicubic, align_corners=False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec, RowError
from onegen.core.image_codec import encode_png
from onegen.core.tasks import DEPTH2IMAGE
from onegen.core.weights import Checkpoint, pick_device, resolve_checkpoint


@dataclass(frozen=True)
class ResizeSpec:
    """The DPT image processor settings that matter for Depth Anything (read from the checkpoint)."""

    height: int = 518
    width: int = 518
    multiple: int = 14
    keep_aspect_ratio: bool = True
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resample: int = 3  # PIL.Image.BICUBIC

    @classmethod
    def from_processor(cls, processor: Any) -> ResizeSpec:
        size = processor.size
        return cls(
            height=int(size["height"]),
            width=int(size["width"]),
            multiple=int(processor.ensure_multiple_of or 1),
            keep_aspect_ratio=bool(processor.keep_aspect_ratio),
            mean=tuple(float(v) for v in processor.image_mean),
            std=tuple(float(v) for v in processor.image_std),
            resample=int(processor.resample),
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Model input (h, w) for a source (height, width): DPT's get_resize_output_image_size."""
        scale_h, scale_w = self.height / height, self.width / width
        if self.keep_aspect_ratio:
            # scale as little as possible: fit whichever side needs the smaller change
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h
        return _to_multiple(scale_h * height, self.multiple), _to_multiple(scale_w * width, self.multiple)


def _to_multiple(value: float, multiple: int) -> int:
    # DPT's constrain_to_multiple_of; a side that would round to 0 (the library then fails) gets one multiple
    return max(round(value / multiple) * multiple, multiple)


def group_by_shape(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Row indices grouped by (H, W), in first-seen order, so each group stacks into one tensor."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    return groups


def preprocess(images: list[np.ndarray], spec: ResizeSpec, device: Any, dtype: Any = None) -> list[tuple[list[int], Any]]:
    """Batched DPT preprocessing: a list of (row indices, pixel_values (n, 3, h, w)) per model input size."""
    import torch
    from torchvision.transforms.v2 import functional as tvF

    interpolation = tvF.InterpolationMode.BICUBIC if spec.resample == 3 else tvF.InterpolationMode.BILINEAR
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0
    buckets: dict[tuple[int, int], tuple[list[int], list[Any]]] = {}
    for (height, width), rows in group_by_shape(images).items():
        batch = torch.from_numpy(np.stack([images[i] for i in rows])).to(device)  # (n, H, W, 3) uint8
        batch = batch.permute(0, 3, 1, 2)  # (n, 3, H, W) uint8
        size = spec.output_size(height, width)
        # uint8 resize then float normalise: the order (and rounding) of the library's torchvision backend
        batch = tvF.resize(batch, list(size), interpolation=interpolation, antialias=True)  # (n, 3, h, w) uint8
        batch = ((batch.float() - mean) / std).contiguous()  # (n, 3, h, w) float32, NCHW-contiguous
        indices, tensors = buckets.setdefault(size, ([], []))
        indices.extend(rows)
        tensors.append(batch)
    return [(indices, torch.cat(tensors).to(dtype or torch.float32)) for indices, tensors in buckets.values()]


def normalise_depth(predicted: Any, sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, float, float]]:
    """Resize predicted depth (n, h, w) back to each (H, W) and normalise per image to [0, 1].

    Returns per image (normalised float32 (H, W) array on the CPU, raw min, raw max). Images of one
    size are interpolated together (bicubic, align_corners=False, as post_process_depth_estimation).
    """
    import torch
    import torch.nn.functional as F

    out: list[Any] = [None] * len(sizes)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        by_size.setdefault(size, []).append(i)
    for size, rows in by_size.items():
        depth = predicted[rows].float().unsqueeze(1)  # (n, 1, h, w)
        depth = F.interpolate(depth, size=size, mode="bicubic", align_corners=False)[:, 0]  # (n, H, W)
        low = depth.amin(dim=(1, 2), keepdim=True)  # (n, 1, 1)
        high = depth.amax(dim=(1, 2), keepdim=True)  # (n, 1, 1)
        norm = (depth - low) / (high - low).clamp_min(torch.finfo(torch.float32).tiny)  # (n, H, W) in [0, 1]
        norm, low, high = norm.cpu().numpy(), low.flatten().tolist(), high.flatten().tolist()
        for j, i in enumerate(rows):
            out[i] = (norm[j], float(low[j]), float(high[j]))
    return out


@dataclass
class DepthAnnotator(Annotator):
    """Depth Anything V2 relative inverse depth. Fields are the whole configuration.

    `model` is a hub id in the local HF cache (depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf)
    or a local folder saved with save_pretrained (model + preprocessor_config.json).
    """

    name: ClassVar[str] = "depth"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("png16", pa.binary()),
            pa.field("condition", pa.binary()),
            pa.field("depth_min", pa.float32()),
            pa.field("depth_max", pa.float32()),
        ]
    )
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(DEPTH2IMAGE, "condition", "png"),)

    model: str = "depth-anything/Depth-Anything-V2-Small-hf"
    num_gpus: float = 1.0
    batch_size: int = 16
    half: bool = True  # fp16 weights/inputs on CUDA (CPU always runs float32)
    # (max - min) <= this * max(|min|, |max|) -> "degenerate_depth"; bicubic resampling of a constant map
    # alone leaves ~1e-6 of spread, and 1e-4 is already below a few 16-bit steps of real structure
    min_relative_range: float = 1e-4

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)
    _spec: ResizeSpec | None = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("depth", self.model)]

    def setup(self) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self._checkpoint = resolve_checkpoint(self.model, "depth")
        self._device = pick_device(self.num_gpus)
        dtype = torch.float16 if self.half and self._device == "cuda" else torch.float32
        processor = AutoImageProcessor.from_pretrained(self._checkpoint.path)
        self._spec = ResizeSpec.from_processor(processor)
        model = AutoModelForDepthEstimation.from_pretrained(self._checkpoint.path, dtype=dtype)
        self._model = model.to(self._device).eval()

    def model_id(self) -> str:
        return self._checkpoint.model_id if self._checkpoint else self.model

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def predict(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, float, float]]:
        """Per image: (normalised depth (H, W) float32 in [0, 1], raw min, raw max) at source size."""
        import torch

        if self._model is None:
            self.setup()
        dtype = next(self._model.parameters()).dtype
        results: list[Any] = [None] * len(images)
        with torch.inference_mode():
            for rows, pixel_values in preprocess(images, self._spec, self._device, dtype):
                predicted = self._model(pixel_values=pixel_values).predicted_depth  # (n, h, w)
                sizes = [images[i].shape[:2] for i in rows]
                for i, result in zip(rows, normalise_depth(predicted, sizes), strict=True):
                    results[i] = result
        return results

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        images = [row["image"] for row in rows]
        out: list[dict[str, Any] | RowError] = []
        for norm, low, high in self.predict(images):
            spread = high - low
            if not (math.isfinite(low) and math.isfinite(high)) or spread <= self.min_relative_range * max(
                abs(low), abs(high)
            ):
                out.append(RowError(f"depth map is constant (min {low:.6g}, max {high:.6g})", "degenerate_depth"))
                continue
            out.append(encode_normalised(norm, low, high))
        return out


def encode_normalised(norm: np.ndarray, low: float, high: float) -> dict[str, Any]:
    """The depth store's columns for a map normalised to [0, 1] (H, W) with its raw range: the one
    encoding of every depth2image condition (this annotator's and annotators/gt_depth.py's)."""
    gray = np.round(norm * 255.0).astype(np.uint8)  # (H, W)
    return {
        "png16": encode_png(np.round(norm * 65535.0).astype(np.uint16)),
        "condition": encode_png(np.repeat(gray[:, :, None], 3, axis=2)),
        "depth_min": float(np.float32(low)),
        "depth_max": float(np.float32(high)),
    }


def encode_inverse_depth(inverse: np.ndarray, valid: np.ndarray, min_relative_range: float) -> dict[str, Any]:
    """`encode_normalised` of an inverse-depth map (H, W), min-max over its `valid` pixels (others 0).
    Raises RowError "degenerate_depth" when the valid range is (numerically) empty, as `annotate` does."""
    if not valid.any():
        raise RowError("no valid depth pixel", "degenerate_depth")
    low, high = float(inverse[valid].min()), float(inverse[valid].max())
    if not (math.isfinite(low) and math.isfinite(high)) or high - low <= min_relative_range * max(abs(low), abs(high)):
        raise RowError(f"depth map is constant (min {low:.6g}, max {high:.6g})", "degenerate_depth")
    norm = np.where(valid, (inverse - low) / (high - low), 0.0)
    return encode_normalised(norm, low, high)
