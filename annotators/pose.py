"""Pose annotator: YOLO person boxes (ultralytics) -> ViTPose COCO-17 keypoints (transformers) -> pose image.

Output columns (one row per catalog image, docs/design.md §3):
- `keypoints_json` (string): JSON list, one entry per person box above `box_threshold`:
  {"box": [x0, y0, x1, y1] (source pixels), "score": box confidence,
   "keypoints": 17 x [x, y, score] in COCO-17 order, x/y in source pixels}.
- `n_persons` (int32): number of entries in keypoints_json.
- `condition` (binary): PNG (H, W, 3) of the skeletons on black (`render_pose`), view 1 of the
  `[[pose2image]]` sample. `style` "mmpose" (default; the released model's style: ViTPose's own
  visualiser, COCO-17 in thin lines and small dots, three colours by body part) or "openpose"
  (ControlNet's 18-point rainbow, for ControlNet-style models).
- `style` (string): the style the condition was drawn in (also part of the annotator's identity).
Version 2 draws the mmpose style by default (version 1 drew OpenPose only).
An image with no person box above `box_threshold` is RowError status "no_person".

ViTPose runs on all person crops of the batch at once. The crops follow VitPoseImageProcessor's
semantics (box -> centre/scale with 1.25 padding at the model's aspect ratio, the unbiased warp of
get_warp_matrix, bilinear sampling rounded to uint8, ImageNet mean/std) but are sampled with one
`grid_sample` per image on the device instead of one SciPy warp per crop and channel. Heatmaps are
decoded by the processor's own `keypoints_from_heatmaps` (argmax + DARK refinement, kernel 11).

The detector is an ultralytics YOLO model from a local `.pt` weights file or a model yaml (random
init, for tests); it never downloads: YOLO_OFFLINE is set and only existing paths (or the yaml names
bundled with ultralytics) are handed to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, ConditionSpec, RowError
from onegen.annotators.render_pose import STYLES, render_pose
from onegen.core.image_codec import encode_png
from onegen.core.tasks import POSE2IMAGE
from onegen.core.weights import (
    Checkpoint,
    MissingCheckpointError,
    import_yolo,
    pick_device,
    resolve_checkpoint,
)


@dataclass(frozen=True)
class CropSpec:
    """VitPoseImageProcessor settings used for the crops (read from the checkpoint)."""

    height: int = 256
    width: int = 192
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    normalize_factor: float = 200.0

    @classmethod
    def from_processor(cls, processor: Any) -> CropSpec:
        return cls(
            height=int(processor.size["height"]),
            width=int(processor.size["width"]),
            mean=tuple(float(v) for v in processor.image_mean),
            std=tuple(float(v) for v in processor.image_std),
            normalize_factor=float(getattr(processor, "normalize_factor", 200.0) or 200.0),
        )


def centers_and_scales(boxes_xywh: np.ndarray, spec: CropSpec) -> tuple[np.ndarray, np.ndarray]:
    """(P, 4) COCO boxes (x, y, w, h) -> centres (P, 2) and scales (P, 2), as box_to_center_and_scale."""
    from transformers.models.vitpose.image_processing_vitpose import box_to_center_and_scale

    pairs = [
        box_to_center_and_scale(box, spec.width, spec.height, normalize_factor=spec.normalize_factor)
        for box in boxes_xywh
    ]
    centers = np.array([c for c, _ in pairs], np.float32).reshape(-1, 2)
    scales = np.array([s for _, s in pairs], np.float32).reshape(-1, 2)
    return centers, scales


def crop_persons(image: Any, centers: np.ndarray, scales: np.ndarray, spec: CropSpec) -> Any:
    """Warp k person crops out of one (3, H, W) float image: (k, 3, spec.height, spec.width), 0..255 rounded.

    Output pixel j samples source x = j * w_roi / (W_out - 1) + cx - w_roi / 2 (the inverse of the
    processor's get_warp_matrix with rotation 0; the same for y), bilinear, zeros outside the image.
    """
    import torch
    import torch.nn.functional as F

    _, height, width = image.shape
    device = image.device
    roi = torch.as_tensor(scales * spec.normalize_factor, device=device)  # (k, 2) ROI (w, h) in pixels
    ctr = torch.as_tensor(centers, device=device)  # (k, 2)
    cols = torch.arange(spec.width, device=device, dtype=torch.float32) / max(spec.width - 1, 1)  # (Wo,)
    rows = torch.arange(spec.height, device=device, dtype=torch.float32) / max(spec.height - 1, 1)  # (Ho,)
    x = cols[None, :] * roi[:, :1] + (ctr[:, :1] - roi[:, :1] / 2)  # (k, Wo) source x
    y = rows[None, :] * roi[:, 1:] + (ctr[:, 1:] - roi[:, 1:] / 2)  # (k, Ho) source y
    gx = 2.0 * x / max(width - 1, 1) - 1.0  # align_corners=True: pixel centres at integers
    gy = 2.0 * y / max(height - 1, 1) - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (k, Ho, Wo, 2)
    src = image[None].expand(len(centers), -1, -1, -1)  # (k, 3, H, W), no copy
    crops = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return crops.round().clamp(0, 255)  # (k, 3, Ho, Wo); the library's warp writes uint8


@dataclass
class PoseAnnotator(Annotator):
    """YOLO person detector + ViTPose top-down keypoints. Fields are the whole configuration.

    `detector`: a local YOLO `.pt` file (e.g. yolo11n.pt / yolov8x.pt downloaded beforehand) or a model
    yaml (random init; tests). `model`: a ViTPose hub id in the local HF cache
    (usyd-community/vitpose-base-simple, ...) or a local save_pretrained folder.
    """

    name: ClassVar[str] = "pose"
    version: ClassVar[str] = "2"  # 2: mmpose (ViTPose visualiser) style by default; 1: OpenPose only
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("keypoints_json", pa.string()),
            pa.field("n_persons", pa.int32()),
            pa.field("condition", pa.binary()),
            pa.field("style", pa.string()),
        ]
    )
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (ConditionSpec(POSE2IMAGE, "condition", "png"),)

    detector: str = "yolo11n.pt"
    model: str = "usyd-community/vitpose-base-simple"
    box_threshold: float = 0.5  # YOLO confidence for a person box
    max_persons: int = 20
    person_class: int = 0  # COCO "person"
    imgsz: int = 640  # YOLO inference size
    keypoint_threshold: float = 0.3  # keypoints below this are not drawn
    style: str = "mmpose"  # "mmpose" (released model, ViTPose visualiser) | "openpose" (ControlNet)
    kernel_size: int = 11  # DARK refinement kernel (post_process_pose_estimation's default)
    num_gpus: float = 1.0
    batch_size: int = 16
    half: bool = True  # fp16 ViTPose/YOLO on CUDA (CPU always float32)

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _yolo: Any = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _spec: CropSpec | None = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        bundled_yaml = self.detector.endswith((".yaml", ".yml")) and os.sep not in self.detector
        return [("pose", self.model)] + ([] if bundled_yaml else [("pose detector", self.detector)])

    def setup(self) -> None:
        import torch
        from transformers import AutoImageProcessor, VitPoseForPoseEstimation

        if self.style not in STYLES:
            raise ValueError(f"pose style must be one of {STYLES}, got {self.style!r}")
        self._device = pick_device(self.num_gpus)
        self._yolo = load_yolo(self.detector)
        self._checkpoint = resolve_checkpoint(self.model, "pose")
        dtype = torch.float16 if self.half and self._device == "cuda" else torch.float32
        self._processor = AutoImageProcessor.from_pretrained(self._checkpoint.path)
        self._spec = CropSpec.from_processor(self._processor)
        model = VitPoseForPoseEstimation.from_pretrained(self._checkpoint.path, dtype=dtype)
        self._model = model.to(self._device).eval()

    def model_id(self) -> str:
        return f"{self.detector}+{self._checkpoint.model_id if self._checkpoint else self.model}"

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Person boxes per image: (xyxy (k, 4) float32 source pixels, confidences (k,)), best first."""
        if self._yolo is None:
            self.setup()
        precision = {"quantize": 16} if self.half and self._device == "cuda" else {}  # fp16 ("half" is deprecated)
        results = self._yolo.predict(
            [np.ascontiguousarray(im[:, :, ::-1]) for im in images],  # ultralytics takes BGR arrays
            conf=self.box_threshold, classes=[self.person_class], max_det=self.max_persons,
            imgsz=self.imgsz, device=self._device, verbose=False, **precision,
        )  # fmt: skip
        out = []
        for result in results:
            boxes = result.boxes
            out.append((boxes.xyxy.float().cpu().numpy(), boxes.conf.float().cpu().numpy()))
        return out

    def keypoints(self, images: list[np.ndarray], boxes_xyxy: list[np.ndarray]) -> list[np.ndarray]:
        """COCO-17 keypoints for given boxes: per image an array (k, 17, 3) of (x, y, score), source pixels.

        All crops of all images go through ViTPose as one batch.
        """
        import torch

        if self._model is None:
            self.setup()
        spec = self._spec
        mean = torch.tensor(spec.mean, device=self._device).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(spec.std, device=self._device).view(1, 3, 1, 1) * 255.0
        crops, centers, scales = [], [], []
        for image, boxes in zip(images, boxes_xyxy, strict=True):
            if len(boxes) == 0:
                continue
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1)  # (k, 4)
            center, scale = centers_and_scales(xywh, spec)
            source = torch.from_numpy(np.array(image)).to(self._device)  # (H, W, 3) uint8 (writable copy)
            source = source.permute(2, 0, 1).float()  # (3, H, W)
            crops.append(crop_persons(source, center, scale, spec))
            centers.append(center)
            scales.append(scale)
        counts = [len(b) for b in boxes_xyxy]
        if not crops:
            return [np.zeros((0, 17, 3), np.float32) for _ in images]
        dtype = next(self._model.parameters()).dtype
        pixel_values = ((torch.cat(crops) - mean) / std).to(dtype)  # (P, 3, Ho, Wo)
        with torch.inference_mode():
            heatmaps = self._forward(pixel_values)  # (P, 17, h, w)
        preds, scores = self._processor.keypoints_from_heatmaps(
            heatmaps.float().cpu().numpy(), np.concatenate(centers), np.concatenate(scales), kernel=self.kernel_size
        )  # (P, 17, 2), (P, 17, 1)
        flat = np.concatenate([preds, scores], axis=2).astype(np.float32)  # (P, 17, 3)
        return list(np.split(flat, np.cumsum(counts)[:-1]))

    def _forward(self, pixel_values: Any) -> Any:
        import torch

        kwargs = {}
        if getattr(self._model.config.backbone_config, "num_experts", 1) > 1:
            # ViTPose++ (MoE) checkpoints pick a dataset head; 0 is COCO
            kwargs["dataset_index"] = torch.zeros(len(pixel_values), dtype=torch.long, device=pixel_values.device)
        return self._model(pixel_values=pixel_values, **kwargs).heatmaps

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        images = [row["image"] for row in rows]
        detections = self.detect(images)
        keypoints = self.keypoints(images, [boxes for boxes, _ in detections])
        out: list[dict[str, Any] | RowError] = []
        for image, (boxes, confs), people in zip(images, detections, keypoints, strict=True):
            if len(boxes) == 0:
                out.append(RowError(f"no person box with confidence >= {self.box_threshold}", "no_person"))
                continue
            persons = [
                {
                    "box": [round(float(v), 2) for v in box],
                    "score": round(float(conf), 4),
                    "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in kps],
                }
                for box, conf, kps in zip(boxes, confs, people, strict=True)
            ]
            canvas = render_pose(image.shape[0], image.shape[1], list(people), self.keypoint_threshold, self.style)
            out.append({"keypoints_json": json.dumps(persons), "n_persons": len(persons),
                        "condition": encode_png(canvas), "style": self.style})
        return out


def load_yolo(detector: str) -> Any:
    """An ultralytics YOLO from a local .pt / .yaml path, or a yaml name bundled with ultralytics.

    Never downloads: a .pt that is not a local file raises MissingCheckpointError (one line).
    """
    YOLO = import_yolo()  # offline, no auto-install, Pillow left unpatched

    expanded = os.path.expanduser(detector)
    if os.path.isfile(expanded):
        return YOLO(expanded, task="detect")
    if detector.endswith((".yaml", ".yml")) and os.sep not in detector:
        # a cfg bundled with ultralytics (yolov8n.yaml -> yolov8.yaml at scale n): random init; for an
        # unknown name its local search raises FileNotFoundError (downloads happen only for URLs)
        try:
            return YOLO(detector, task="detect")
        except FileNotFoundError as error:  # the name the user gave, not one of our paths: a user error
            raise MissingCheckpointError(f"pose detector {detector!r}: no such model yaml ships with ultralytics "
                                         f"({error}); give a local YOLO .pt file or a bundled yaml") from None
    raise MissingCheckpointError(
        f"pose detector checkpoint {detector!r} not found: give a local YOLO .pt file (or a model yaml)"
    )
