"""HED soft-edge annotator: controlnet-aux's ControlNetHED_Apache2 network, batched on the device.

Output column (one row per catalog image, docs/design.md §3):
- `condition` (binary): 8-bit PNG (H, W, 3) at the source resolution, the HED edge probability
  (0 = no edge, 255 = edge) replicated to three channels as ControlNet HED conditions are; view 1 of
  the `[[hed2img]]` sample.

Weights: `ControlNetHED.pth` in a folder with the file layout of the hub repo `lllyasviel/Annotators`
(a hub id in the local HF cache or a local folder), or a path to the .pth file itself.

Processing follows controlnet_aux's HEDdetector: the image is resized so its short side is
`detect_resolution` with both sides rounded to multiples of 64, fed as RGB floats in 0..255, the five
side outputs are resized (bilinear) to the detection size, averaged and passed through a sigmoid. Here
rows of the same source shape form one (N, 3, H, W) tensor on the device; the resizes are torch
interpolations (antialiased bilinear for shrinking, bicubic for enlarging, in place of OpenCV's AREA
and LANCZOS4), and the edge map is resized straight back to the source size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec, RowError
from onegen.core.image_codec import encode_png
from onegen.core.tasks import HED2IMG
from onegen.core.weights import Checkpoint, MissingCheckpointError, pick_device, resolve_checkpoint

WEIGHTS_FILE = "ControlNetHED.pth"


def detect_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """controlnet_aux.util.resize_image's output (h, w): short side -> resolution, multiples of 64."""
    k = float(resolution) / min(height, width)
    return max(64, int(np.round(height * k / 64.0)) * 64), max(64, int(np.round(width * k / 64.0)) * 64)


def hed_edges(net: Any, images: Any, resolution: int) -> Any:
    """(n, 3, H, W) uint8 RGB on the net's device -> (n, H, W) float32 edge probabilities in [0, 1]."""
    import torch
    import torch.nn.functional as F

    height, width = images.shape[-2:]
    size = detect_size(height, width, resolution)
    x = images.float()  # (n, 3, H, W) in 0..255, as the network was trained
    if size != (height, width):
        shrink = size[0] * size[1] < height * width
        mode = "bilinear" if shrink else "bicubic"
        x = F.interpolate(x, size=size, mode=mode, antialias=shrink, align_corners=False).clamp(0, 255)
        x = x.round()  # controlnet_aux resizes uint8 images
    dtype = next(net.parameters()).dtype
    projections = net(x.to(dtype))  # five (n, 1, h / 2^i, w / 2^i)
    side = [F.interpolate(p.float(), size=size, mode="bilinear", align_corners=False) for p in projections]
    edge = torch.sigmoid(torch.cat(side, dim=1).mean(dim=1, keepdim=True))  # (n, 1, h, w)
    if size != (height, width):
        edge = F.interpolate(edge, size=(height, width), mode="bilinear", align_corners=False)
    return edge[:, 0].clamp(0.0, 1.0)  # (n, H, W)


def load_hed(path: str, device: str, half: bool) -> Any:
    """ControlNetHED_Apache2 from a .pth file or a folder holding ControlNetHED.pth."""
    import torch

    weights = os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(weights):
        raise MissingCheckpointError(f"hed checkpoint file {weights!r} not found ({WEIGHTS_FILE} expected)")
    from controlnet_aux.hed import ControlNetHED_Apache2  # heavy import (whole controlnet_aux): lazy

    net = ControlNetHED_Apache2()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net = net.to(device).eval()
    return net.half() if half and device == "cuda" else net.float()


@dataclass
class HedAnnotator(Annotator):
    """HED soft edges. Fields are the whole configuration."""

    name: ClassVar[str] = "hed"
    version: ClassVar[str] = "1"
    output_schema: ClassVar[pa.Schema] = pa.schema([pa.field("condition", pa.binary())])
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(HED2IMG, "condition", "png"),)

    model: str = "lllyasviel/Annotators"
    detect_resolution: int = 512
    num_gpus: float = 1.0
    batch_size: int = 16
    half: bool = True  # fp16 on CUDA (CPU always float32)

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _net: Any = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("hed", self.model)]

    def setup(self) -> None:
        self._checkpoint = resolve_checkpoint(self.model, "hed")
        self._device = pick_device(self.num_gpus)
        self._net = load_hed(self._checkpoint.path, self._device, self.half)

    def model_id(self) -> str:
        return self._checkpoint.model_id if self._checkpoint else self.model

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image an (H, W) uint8 edge map at the source resolution."""
        import torch

        if self._net is None:
            self.setup()
        out: list[Any] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        with torch.inference_mode():
            for rows in groups.values():
                batch = torch.from_numpy(np.stack([images[i] for i in rows])).to(self._device)  # (n, H, W, 3)
                edge = hed_edges(self._net, batch.permute(0, 3, 1, 2), self.detect_resolution)  # (n, H, W)
                edge = (edge * 255.0).round().to(torch.uint8).cpu().numpy()
                for j, i in enumerate(rows):
                    out[i] = edge[j]
        return out

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        edges = self.predict([row["image"] for row in rows])
        return [{"condition": encode_png(np.repeat(edge[:, :, None], 3, axis=2))} for edge in edges]
