"""Safety / quality probabilities from image-classification checkpoints: NSFW and watermark (issue 13).

Output column of both (one row per catalog row of the annotator's kinds):
- `score` (float32): the softmax probability, in [0, 1], of the checkpoint's label named `label`
  (case-insensitive match against config.id2label; a checkpoint without exactly one such label fails setup).
For a multiview scene (NSFW only) the score is the maximum over its views: one unsafe view flags the scene.

- `NsfwAnnotator` ("nsfw"): every image, ID photo and scene; default checkpoint Falconsai/nsfw_image_detection
  (a ViT fine-tuned for labels "normal" / "nsfw"). The ID set drops photos above the build's threshold before
  the 4-photo rule (pipelines.task_selection.nsfw_exclusions).
- `WatermarkAnnotator` ("watermark"): optional; there is no default checkpoint, pass one with
  `--set watermark.model=<id or path>` and its label with `--set watermark.label=...`.
Both load through transformers' AutoModelForImageClassification + AutoImageProcessor from a hub id in the
local HF cache or a local folder; model id and revision are recorded per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.core.weights import Checkpoint, pick_device, resolve_checkpoint


@dataclass
class ImageClassifierScore(Annotator):
    """Probability of one label of an image classifier. Subclasses set name, kinds and defaults."""

    output_schema: ClassVar[pa.Schema] = pa.schema([pa.field("score", pa.float32())])
    what: ClassVar[str] = "image classifier"

    model: str = ""
    label: str = ""
    num_gpus: float = 1.0
    batch_size: int = 32

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _index: int = field(default=-1, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [(self.what, self.model)]

    def setup(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self._checkpoint = resolve_checkpoint(self.model, self.what)
        self._device = pick_device(self.num_gpus)
        self._processor = AutoImageProcessor.from_pretrained(self._checkpoint.path)
        model = AutoModelForImageClassification.from_pretrained(self._checkpoint.path)
        matches = [i for i, name in model.config.id2label.items() if str(name).lower() == self.label.lower()]
        if len(matches) != 1:
            raise ValueError(f"{self.what} {self.model!r} has no single label {self.label!r} "
                             f"(its labels: {sorted(model.config.id2label.values())}); set {self.name}.label")
        self._index = int(matches[0])
        self._model = model.to(self._device).eval()

    def model_id(self) -> str:
        return self._checkpoint.model_id if self._checkpoint else self.model

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def probabilities(self, images: list[np.ndarray]) -> list[float]:
        """Probability of `label` per (H, W, 3) uint8 image (softmax over the classifier's labels)."""
        import torch

        if self._model is None:
            self.setup()
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            inputs = self._processor(images=list(images[start : start + self.batch_size]), return_tensors="pt")
            with torch.inference_mode():
                logits = self._model(pixel_values=inputs["pixel_values"].to(self._device)).logits  # (n, labels)
            scores += logits.float().softmax(dim=-1)[:, self._index].cpu().tolist()
        return scores

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        images, owner = [], []
        for i, row in enumerate(rows):
            views = row.get("view_images") if row.get("kind") == "scene" else [row.get("image")]
            for view in views or []:
                if view is not None:
                    images.append(view)
                    owner.append(i)
        per_row: list[list[float]] = [[] for _ in rows]
        for i, score in zip(owner, self.probabilities(images) if images else [], strict=True):
            per_row[i].append(score)
        return [{"score": float(np.float32(max(s)))} if s else RowError("no image to classify") for s in per_row]


@dataclass
class NsfwAnnotator(ImageClassifierScore):
    """NSFW probability of every image (max over a scene's views)."""

    name: ClassVar[str] = "nsfw"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image", "scene")
    what: ClassVar[str] = "NSFW classifier"

    model: str = "Falconsai/nsfw_image_detection"
    label: str = "nsfw"


@dataclass
class WatermarkAnnotator(ImageClassifierScore):
    """Watermark probability; no default checkpoint (optional annotator)."""

    name: ClassVar[str] = "watermark"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image")
    what: ClassVar[str] = "watermark classifier"

    model: str = ""
    label: str = "watermark"
