"""Grounded-SAM segment annotator: entity names -> open-vocabulary boxes -> SAM masks -> maps + tags.

Per catalog image row (docs/design.md §3-§4):
1. class names: the `entities` annotation's list (`row["entities.entities"]`) when the row carries
   it, else the annotator's `vocabulary`; cleaned, de-duplicated case-insensitively, first
   `max_classes` (<= 10) kept. None -> status "no_entities".
2. boxes: Grounding DINO or OWLv2 (transformers, `detector` field), post-processed on the device
   for the whole batch (`owlv2_detections` / `grounding_detections`, equal to the library's
   post-processing), clipped to the image, NMS per class, at most `max_boxes_per_class` per class.
   No box above threshold -> status "no_entities".
3. masks: SAM (segment_anything) prompted by every box; the image encoder runs once on the whole
   batch, the light prompt encoder / mask decoder once per image over all its boxes
   (`sam_masks`, equal to `SamPredictor.predict(box=...)` per box). A class's mask is the union
   of its boxes' masks.
4. maps (`render_outputs`, pure, callable with known boxes and masks): colours from
   `palette.choose_colours(key, n)`; the semantic map is black with each class's pixels in its
   colour, classes painted in order of decreasing mask area so a smaller object lying on a larger
   one stays visible (ties: entity order). The box map (`box_map.render_box_map`) is drawn as the
   released model draws it: black, each box filled with its class colour (`box_style="fill"`, the
   default; `"outline"` draws a `box_line_width` px border instead, 0 = max(2, min(H, W) // 200)),
   larger boxes first, then a small white `name: score` label just above each box (`box_labels`,
   kept inside the image). Version 2 (version 1 drew outlines without labels by default).

Output columns: semantic (PNG), boxes (PNG), semantic_tags / box_tags (tags joined by spaces, in
entity order; a class whose mask is empty or fully covered gets no mask tag), classes_json (list of
{name, colour, colour_name, boxes [[x0, y0, x1, y1] px, float], scores, mask_area,
visible_area}), n_classes (int32, classes with at least one box).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from onegen.annotators.base import Annotator, ConditionSpec, RowError
from onegen.annotators.box_map import BOX_STYLES, draw_box, label_text, pixel_box, render_box_map  # noqa: F401
from onegen.annotators.palette import MAX_CLASSES, box_tag, choose_colours, clean_class_name, mask_tag
from onegen.annotators.sam import (  # noqa: F401
    SAM_ARCHS,
    SamArch,
    build_sam,
    load_sam,
    sam_checkpoint_file,
    sam_mask_logits,
    sam_masks,
)
from onegen.core.image_codec import encode_png
from onegen.core.tasks import BOUNDINGBOX2IMAGE, SEMANTICMAP2IMAGE
from onegen.core.weights import pick_device, resolve_checkpoint

# --- Open-vocabulary detection and its batched post-processing ---------------------------------


@dataclass
class Detections:
    """Boxes of one image: boxes (N, 4) xyxy pixels, scores (N,), labels (N,) class index."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cx, cy, w, h -> x0, y0, x1, y1."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def owlv2_detections(logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: torch.Tensor,
                     n_classes: list[int], threshold: float) -> list[Detections]:
    """OWLv2 outputs -> detections; equals `post_process_object_detection` when no query is padding.

    logits (B, Q, C) per query and text query; pred_boxes (B, Q, 4) cxcywh relative to the padded
    square image; sizes (B, 2) (H, W). Text queries past n_classes[b] (the processor pads every
    image's list to the longest) never win a box.
    """
    valid = torch.arange(logits.shape[-1], device=logits.device)[None] < torch.tensor(n_classes, device=logits.device)[:, None]
    logits = logits.masked_fill(~valid[:, None, :], torch.finfo(logits.dtype).min)  # (B, Q, C)
    best, labels = logits.max(-1)  # (B, Q)
    scores = best.sigmoid()
    side = sizes.to(pred_boxes).max(-1).values  # (B,) OWLv2 pads to a square of the long side
    boxes = _corners(pred_boxes) * side[:, None, None]  # (B, Q, 4) pixels
    keep = scores > threshold
    return [Detections(boxes[b][keep[b]], scores[b][keep[b]], labels[b][keep[b]]) for b in range(len(logits))]


def grounding_detections(logits: torch.Tensor, pred_boxes: torch.Tensor, sizes: torch.Tensor,
                         token_class: torch.Tensor, box_threshold: float,
                         text_threshold: float) -> list[Detections]:
    """Grounding DINO outputs -> detections; boxes/scores equal `post_process_grounded_object_detection`.

    logits (B, Q, T) per query and text token; pred_boxes (B, Q, 4) cxcywh relative; sizes (B, 2)
    (H, W); token_class (B, C, T) bool, True where token t belongs to class c's name. A box's score
    is its best token (as the library); its class is the class holding its best class token, kept
    when that token's probability exceeds text_threshold (the library's phrase rule, per class).
    """
    probs = logits.sigmoid()  # (B, Q, T)
    scores = probs.max(-1).values  # (B, Q)
    per_class = (probs[:, :, None, :] * token_class[:, None].to(probs)).amax(-1)  # (B, Q, C)
    class_score, labels = per_class.max(-1)  # (B, Q)
    h, w = sizes.to(pred_boxes).unbind(-1)
    boxes = _corners(pred_boxes) * torch.stack([w, h, w, h], -1)[:, None]  # (B, Q, 4) pixels
    keep = (scores > box_threshold) & (class_score > text_threshold)
    return [Detections(boxes[b][keep[b]], scores[b][keep[b]], labels[b][keep[b]]) for b in range(len(logits))]


def grounding_prompt(names: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """"cat. dog." and the character span of each name in it (Grounding DINO's prompt form)."""
    text, spans = "", []
    for name in names:
        start = len(text) + (1 if text else 0)
        text = f"{text} {name.lower()}." if text else f"{name.lower()}."
        spans.append((start, start + len(name)))
    return text, spans


def token_class_map(offsets: torch.Tensor, spans: list[list[tuple[int, int]]], n_tokens: int,
                    n_classes: int) -> torch.Tensor:
    """(B, C, T) bool: token t (char offsets (B, L, 2)) lies inside class c's span; T >= L."""
    out = torch.zeros((len(spans), n_classes, n_tokens), dtype=torch.bool)
    for b, image_spans in enumerate(spans):
        start, end = offsets[b, :, 0], offsets[b, :, 1]  # (L,)
        real = end > start  # special and padding tokens have empty offsets
        for c, (lo, hi) in enumerate(image_spans):
            out[b, c, : len(start)] = real & (start >= lo) & (end <= hi)
    return out


def load_detector(kind: str, path: str, device: str):
    """(processor, model) for `kind` "grounding_dino" | "owlv2" from a local folder."""
    if kind == "owlv2":
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        processor, model = Owlv2Processor.from_pretrained(path), Owlv2ForObjectDetection.from_pretrained(path)
    elif kind == "grounding_dino":
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        processor, model = AutoProcessor.from_pretrained(path), AutoModelForZeroShotObjectDetection.from_pretrained(path)
    else:
        raise ValueError(f"unknown detector {kind!r}; choose 'grounding_dino' or 'owlv2'")
    return processor, model.eval().to(device)


@torch.no_grad()
def detect(kind: str, processor, model, images: list[np.ndarray], names: list[list[str]],
           box_threshold: float, text_threshold: float) -> list[Detections]:
    """Run the detector once on the batch and post-process on its device (boxes unclipped)."""
    device = model.device
    sizes = torch.tensor([im.shape[:2] for im in images], device=device)  # (B, 2) H, W
    if kind == "owlv2":
        inputs = processor(text=names, images=images, truncation=True, return_tensors="pt").to(device)
        out = model(**inputs)
        return owlv2_detections(out.logits, out.pred_boxes, sizes, [len(n) for n in names], box_threshold)
    prompts = [grounding_prompt(n) for n in names]
    texts = [text for text, _ in prompts]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt").to(device)
    out = model(**inputs)
    offsets = processor.tokenizer(texts, padding=True, return_offsets_mapping=True,
                                  return_tensors="pt")["offset_mapping"]  # (B, L, 2)
    token_class = token_class_map(offsets, [s for _, s in prompts], out.logits.shape[-1], max(map(len, names)))
    return grounding_detections(out.logits, out.pred_boxes, sizes, token_class.to(device),
                                box_threshold, text_threshold)


def tidy_detections(det: Detections, height: int, width: int, iou: float, per_class: int) -> Detections:
    """Clip to the image, drop empty boxes, NMS within each class, keep the best `per_class`."""
    from torchvision.ops import batched_nms

    boxes = det.boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, labels = boxes[ok], det.scores[ok], det.labels[ok]
    order = batched_nms(boxes.float(), scores.float(), labels, iou)  # by decreasing score
    counts: dict[int, int] = {}
    keep = []
    for i in order.tolist():
        label = int(labels[i])
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            keep.append(i)
    index = torch.tensor(keep, dtype=torch.long, device=boxes.device)
    return Detections(boxes[index], scores[index], labels[index])


# --- Rendering: semantic map, box map, tags ----------------------------------------------------


def render_outputs(key: str, names: list[str], boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   masks: np.ndarray, height: int, width: int, box_style: str = "fill",
                   box_line_width: int = 0, box_labels: bool = True) -> dict[str, Any]:
    """The annotator's output columns for one image from its boxes and masks.

    names: class names (entity order); boxes (N, 4) xyxy pixels; scores (N,); labels (N,) index
    into names; masks (N, H, W) bool, one per box. Classes without a box are dropped.
    """
    present = [c for c in range(len(names)) if np.any(labels == c)]
    colours = choose_colours(key, len(present))
    area = {c: int(np.any(masks[labels == c], axis=0).sum()) for c in present}
    semantic = np.zeros((height, width, 3), dtype=np.uint8)
    for c in sorted(present, key=lambda c: -area[c]):  # stable: ties keep entity order
        semantic[np.any(masks[labels == c], axis=0)] = colours[present.index(c)].rgb
    box_rgb = [colours[present.index(int(c))].rgb for c in labels]
    texts = [label_text(names[int(c)], float(s)) for c, s in zip(labels, scores, strict=True)] if box_labels else None
    box_map = render_box_map(height, width, boxes, box_rgb, texts, box_style, box_line_width)
    classes, semantic_tags, box_tags = [], [], []
    for colour, c in zip(colours, present, strict=True):
        visible = int(np.all(semantic == colour.rgb, axis=-1).sum())
        if visible:
            semantic_tags.append(mask_tag(colour, names[c]))
        box_tags.append(box_tag(colour, names[c]))
        classes.append({"name": names[c], "colour": colour.hex, "colour_name": colour.name,
                        "boxes": [[round(float(v), 2) for v in b] for b in boxes[labels == c]],
                        "scores": [round(float(s), 4) for s in scores[labels == c]],
                        "mask_area": area[c], "visible_area": visible})
    return {"semantic": encode_png(semantic), "boxes": encode_png(box_map),
            "semantic_tags": " ".join(semantic_tags), "box_tags": " ".join(box_tags),
            "classes_json": json.dumps(classes), "n_classes": len(present)}


def class_names(row: dict[str, Any], vocabulary: tuple[str, ...], limit: int) -> list[str]:
    """Entity names of the row (or the vocabulary): cleaned, unique (case-insensitive), at most `limit`."""
    entities = row.get("entities.entities")
    source = list(entities) if entities is not None else list(vocabulary)
    names, seen = [], set()
    for raw in source:
        name = clean_class_name(str(raw))
        if name and name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names[:limit]


# --- The annotator -----------------------------------------------------------------------------


@dataclass
class SegmentAnnotator(Annotator):
    """Semantic map + box map + colour tags per image (module docstring has the full contract)."""

    name: ClassVar[str] = "segment"
    version: ClassVar[str] = "2"  # 2: filled, labelled boxes (the released style); 1: outlines
    output_schema: ClassVar[pa.Schema] = pa.schema([
        pa.field("semantic", pa.binary()),
        pa.field("boxes", pa.binary()),
        pa.field("semantic_tags", pa.string()),
        pa.field("box_tags", pa.string()),
        pa.field("classes_json", pa.string()),
        pa.field("n_classes", pa.int32()),
    ])
    requires: ClassVar[tuple[str, ...]] = ()
    optional_requires: ClassVar[tuple[str, ...]] = ("entities",)  # "entities.entities" when that store exists
    conditions: ClassVar[tuple[ConditionSpec, ...]] = (
        ConditionSpec(SEMANTICMAP2IMAGE, "semantic", "png", "semantic_tags"),
        ConditionSpec(BOUNDINGBOX2IMAGE, "boxes", "png", "box_tags"),
    )

    detector: str = "grounding_dino"  # "grounding_dino" | "owlv2"
    detector_id: str = "IDEA-Research/grounding-dino-tiny"  # hub id in the HF cache, or a local dir
    sam_model_type: str = "vit_h"  # a SAM_ARCHS key
    sam_checkpoint: str = ""  # a .pth state-dict file, or a folder / hub id holding exactly one
    vocabulary: tuple[str, ...] = ()  # class names for rows without an entities annotation
    box_threshold: float = 0.3
    text_threshold: float = 0.25  # Grounding DINO only
    nms_iou: float = 0.5
    max_boxes_per_class: int = 4
    max_classes: int = MAX_CLASSES
    box_style: str = "fill"  # "fill" (the released model's style) | "outline"
    box_line_width: int = 0  # outline only; 0: max(2, min(H, W) // 200)
    box_labels: bool = True  # the white "name: score" label above each box
    num_gpus: float = 1.0
    batch_size: int = 8

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("detector", self.detector_id), ("SAM", self.sam_checkpoint)]

    def setup(self) -> None:
        if not 1 <= self.max_classes <= MAX_CLASSES:
            raise ValueError(f"max_classes must be in 1..{MAX_CLASSES}, got {self.max_classes}")
        if self.box_style not in BOX_STYLES:
            raise ValueError(f"box_style must be one of {BOX_STYLES}, got {self.box_style!r}")
        self._det_ckpt = resolve_checkpoint(self.detector_id, "detector")
        self._sam_ckpt = resolve_checkpoint(self.sam_checkpoint, "SAM")
        self._device = pick_device(self.num_gpus)
        self._processor, self._detector = load_detector(self.detector, self._det_ckpt.path, self._device)
        self._sam = load_sam(self.sam_model_type, self._sam_ckpt.path, self._device)

    def model_id(self) -> str:
        return f"{self.detector_id} + {self.sam_checkpoint}"

    def model_revision(self) -> str:
        ckpts = (getattr(self, "_det_ckpt", None), getattr(self, "_sam_ckpt", None))
        return "+".join(c.revision if c else "" for c in ckpts)

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        results: list[dict[str, Any] | RowError | None] = [None] * len(rows)
        names = [class_names(row, self.vocabulary, self.max_classes) for row in rows]
        todo = [i for i in range(len(rows)) if names[i]]
        for i in set(range(len(rows))) - set(todo):
            results[i] = RowError("no entity names (no entities annotation and an empty vocabulary)", "no_entities")
        images = [rows[i]["image"] for i in todo]
        found = detect(self.detector, self._processor, self._detector, images, [names[i] for i in todo],
                       self.box_threshold, self.text_threshold) if todo else []
        found = [tidy_detections(d, *im.shape[:2], self.nms_iou, self.max_boxes_per_class)
                 for d, im in zip(found, images, strict=True)]
        hits = [j for j, d in enumerate(found) if len(d.boxes)]
        for j in set(range(len(todo))) - set(hits):
            results[todo[j]] = RowError(f"no box above threshold {self.box_threshold} for {names[todo[j]]}", "no_entities")
        masks = sam_masks(self._sam, [images[j] for j in hits], [found[j].boxes for j in hits]) if hits else []
        for j, mask in zip(hits, masks, strict=True):
            i, d = todo[j], found[j]
            results[i] = self.render(rows[i]["key"], names[i], d, mask)
        return results

    def segment_boxes(self, key: str, image: np.ndarray, names: list[str], det: Detections) -> dict[str, Any]:
        """The boxes -> masks -> maps half of `annotate`, for known boxes of one image."""
        return self.render(key, names, det, sam_masks(self._sam, [image], [det.boxes])[0])

    def render(self, key: str, names: list[str], det: Detections, masks: np.ndarray) -> dict[str, Any]:
        height, width = masks.shape[1:]
        return render_outputs(str(key), names, det.boxes.cpu().numpy(), det.scores.cpu().numpy(),
                              det.labels.cpu().numpy(), masks, height, width, self.box_style, self.box_line_width,
                              self.box_labels)
