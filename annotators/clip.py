"""CLIP annotator: an image embedding per image and its similarity with the caption (issue 13).

Output columns (one row per catalog row of kind "image" or "subject_image"):
- `embedding` (binary): the CLIP image embedding (the vision tower's pooled output through the visual
  projection), L2-normalised, stored as little-endian float16, `embedding_dim` values (`decode_embedding`).
- `embedding_dim` (int32): its length (768 for ViT-L/14, the model the aesthetic predictor expects).
- `clip_score` (float32): cosine similarity in [-1, 1] of the L2-normalised image and text embeddings of the
  catalog caption (`caption_original`), as CLIP's own logits before the x100 temperature; no clamp at 0 and
  no x100 (so `clip_score>=0.2` reads like the LAION / DataComp thresholds); null when there is no caption.
- `clip_score_dense` (float32): the same with the dense caption of the `caption` store when it exists and
  that row is "ok"; null otherwise.
Texts are tokenised with the checkpoint's tokenizer, truncated to its model_max_length (77 for CLIP).

The model is a transformers CLIPModel checkpoint (hub id in the local HF cache or a local folder with the
tokenizer and preprocessor_config.json), loaded through `resolve_checkpoint`; its id and revision are each
row's model_id / model_revision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.core.weights import Checkpoint, pick_device, resolve_checkpoint

EMBEDDING_DTYPE = np.dtype("<f2")
CAPTION_STORE = "caption"


def encode_embedding(vector: np.ndarray) -> bytes:
    """(d,) float vector -> little-endian float16 bytes (how `embedding` is stored)."""
    return np.asarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embedding(data: bytes) -> np.ndarray:
    """Stored `embedding` bytes -> (d,) float32 vector."""
    return np.frombuffer(data, dtype=EMBEDDING_DTYPE).astype(np.float32)


def embedding_matrix(column: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """(rows with an embedding (m,) int64, their embeddings (m, d) float32) of an `embedding` column."""
    present = np.array([i for i, data in enumerate(column) if data is not None], dtype=np.int64)
    if not present.size:
        return present, np.zeros((0, 0), np.float32)
    return present, np.stack([decode_embedding(column[i]) for i in present])


@dataclass
class ClipAnnotator(Annotator):
    """CLIP image embedding + image-text similarity. Fields are the whole configuration."""

    name: ClassVar[str] = "clip"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image")
    optional_requires: ClassVar[tuple[str, ...]] = (CAPTION_STORE,)
    output_schema: ClassVar[pa.Schema] = pa.schema(
        [
            pa.field("embedding", pa.binary()),
            pa.field("embedding_dim", pa.int32()),
            pa.field("clip_score", pa.float32()),
            pa.field("clip_score_dense", pa.float32()),
        ]
    )

    model: str = "openai/clip-vit-large-patch14"
    num_gpus: float = 1.0
    batch_size: int = 32
    half: bool = True  # fp16 weights on CUDA (CPU always runs float32)

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("CLIP", self.model)]

    def setup(self) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self._checkpoint = resolve_checkpoint(self.model, "CLIP")
        self._device = pick_device(self.num_gpus)
        dtype = torch.float16 if self.half and self._device == "cuda" else torch.float32
        self._processor = AutoImageProcessor.from_pretrained(self._checkpoint.path)
        self._tokenizer = AutoTokenizer.from_pretrained(self._checkpoint.path)
        self._model = CLIPModel.from_pretrained(self._checkpoint.path, dtype=dtype).to(self._device).eval()

    def model_id(self) -> str:
        return self._checkpoint.model_id if self._checkpoint else self.model

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def image_embeddings(self, images: list[np.ndarray]) -> Any:
        """(n, d) float32 L2-normalised image embeddings (a torch tensor on the model's device)."""
        import torch

        if self._model is None:
            self.setup()
        dtype = next(self._model.parameters()).dtype
        pixels = self._processor(images=list(images), return_tensors="pt")["pixel_values"]  # (n, 3, h, w)
        with torch.inference_mode():
            pooled = self._model.vision_model(pixel_values=pixels.to(self._device, dtype)).pooler_output  # (n, w)
            embeds = self._model.visual_projection(pooled).float()  # (n, d)
        return torch.nn.functional.normalize(embeds, dim=-1)

    def text_embeddings(self, texts: list[str]) -> Any:
        """(n, d) float32 L2-normalised text embeddings of `texts` (truncated to the tokenizer's limit)."""
        import torch

        if self._model is None:
            self.setup()
        tokens = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self._device)
        with torch.inference_mode():
            pooled = self._model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
            embeds = self._model.text_projection(pooled).float()  # (n, d)
        return torch.nn.functional.normalize(embeds, dim=-1)

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        images = self.image_embeddings([row["image"] for row in rows])  # (n, d)
        scores = {}
        for column, texts in (("clip_score", [_text(row.get("caption_original")) for row in rows]),
                              ("clip_score_dense", [_dense_caption(row) for row in rows])):
            scores[column] = self._similarities(images, texts)
        out: list[dict[str, Any] | RowError] = []
        vectors = images.cpu().numpy()
        for i, vector in enumerate(vectors):
            out.append({"embedding": encode_embedding(vector), "embedding_dim": int(vector.shape[0]),
                        "clip_score": scores["clip_score"][i], "clip_score_dense": scores["clip_score_dense"][i]})
        return out

    def _similarities(self, images: Any, texts: list[str | None]) -> list[float | None]:
        """Cosine of each image with its text; None where the text is None."""
        rows = [i for i, text in enumerate(texts) if text is not None]
        found: list[float | None] = [None] * len(texts)
        if rows:
            text = self.text_embeddings([texts[i] for i in rows])  # (m, d)
            cosine = (images[rows] * text).sum(dim=-1).cpu().tolist()
            for i, value in zip(rows, cosine, strict=True):
                found[i] = float(np.float32(value))
        return found


def _text(value: Any) -> str | None:
    text = (value or "").strip() if isinstance(value, str) or value is None else str(value)
    return text or None


def _dense_caption(row: dict[str, Any]) -> str | None:
    if row.get(f"{CAPTION_STORE}.status") != "ok":
        return None
    return _text(row.get(f"{CAPTION_STORE}.caption"))
