"""Aesthetic annotator: the LAION aesthetic predictor on the stored CLIP ViT-L/14 embeddings (issue 13).

Output columns (one row per catalog row of kind "image" or "subject_image"):
- `score` (float32): the predicted aesthetic rating, on the 1-10 scale of the AVA / SAC / LAION-Logos ratings
  the predictor was fitted to (LAION-Aesthetics v2 keeps images at >= 5, 6 or 6.5).
A row whose `clip` annotation is not "ok" gets status "no_embedding".

The predictor is christophschuhmann/improved-aesthetic-predictor's MLP (`AestheticMLP`: Linear 768-1024,
Dropout, Linear 1024-128, Dropout, Linear 128-64, Dropout, Linear 64-16, Linear 16-1, no activations; e.g.
`sac+logos+ava1-l14-linearMSE.pth`), loaded from a local file (`torch.load`, weights only). It reads the `clip`
store's embedding instead of running CLIP again: the annotator `requires` "clip", which must have been made
with ViT-L/14 for real weights (openai/clip-vit-large-patch14); the embedding length must equal the MLP's
input width, else the batch fails loudly. The embedding is L2-normalised again in float32 (as the
predictor's own code does) before the MLP. model_id records the MLP path; the CLIP id is in the clip store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from onegen.annotators.base import Annotator, RowError
from onegen.annotators.clip import decode_embedding
from onegen.core.weights import Checkpoint, pick_device, resolve_checkpoint

CLIP_STORE = "clip"
LAION_AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"


def aesthetic_mlp(input_dim: int = 768) -> Any:
    """The LAION improved-aesthetic-predictor MLP; state-dict keys layers.{0,2,4,6,7}.{weight,bias}."""
    from torch import nn

    return nn.Sequential(
        nn.Linear(input_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
    )  # fmt: skip


def load_aesthetic_mlp(path: str) -> Any:
    """The MLP from a .pth state dict (keys with or without the `layers.` prefix), in eval mode."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    if "0.weight" not in state:
        raise ValueError(f"{path} is not a LAION aesthetic MLP state dict (keys: {sorted(state)[:5]}...)")
    model = aesthetic_mlp(int(state["0.weight"].shape[1]))
    model.load_state_dict(state)
    return model.eval()


@dataclass
class AestheticAnnotator(Annotator):
    """LAION aesthetic score from the `clip` store's embedding. Fields are the whole configuration."""

    name: ClassVar[str] = "aesthetic"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("image", "subject_image")
    requires: ClassVar[tuple[str, ...]] = (CLIP_STORE,)
    decode_images: ClassVar[bool] = False
    output_schema: ClassVar[pa.Schema] = pa.schema([pa.field("score", pa.float32())])

    model: str = LAION_AESTHETIC_FILE  # a local .pth path
    num_gpus: float = 0.0  # a 1M-parameter MLP: CPU is enough
    batch_size: int = 256

    _checkpoint: Checkpoint | None = field(default=None, init=False, repr=False)
    _mlp: Any = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)

    def checkpoints(self) -> list[tuple[str, str]]:
        return [("aesthetic MLP", self.model)]

    def setup(self) -> None:
        self._checkpoint = resolve_checkpoint(self.model, "aesthetic MLP")
        self._device = pick_device(self.num_gpus)
        self._mlp = load_aesthetic_mlp(self._checkpoint.path).to(self._device)

    def model_id(self) -> str:
        return self._checkpoint.model_id if self._checkpoint else self.model

    def model_revision(self) -> str:
        return self._checkpoint.revision if self._checkpoint else ""

    def scores(self, embeddings: np.ndarray) -> list[float]:
        """Aesthetic score per (n, d) CLIP image embedding (re-normalised here)."""
        import torch

        if self._mlp is None:
            self.setup()
        width = self._mlp[0].in_features
        if embeddings.shape[1] != width:
            raise ValueError(f"CLIP embeddings have {embeddings.shape[1]} values but the aesthetic MLP takes {width}: "
                             "annotate clip with the model the MLP was fitted on (ViT-L/14 for the LAION file)")
        x = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32)).to(self._device)  # (n, d)
        with torch.inference_mode():
            return self._mlp(torch.nn.functional.normalize(x, dim=-1))[:, 0].cpu().tolist()

    def annotate(self, rows: list[dict[str, Any]]) -> list[dict[str, Any] | RowError]:
        usable = [i for i, row in enumerate(rows) if row.get(f"{CLIP_STORE}.status") == "ok"]
        out: list[dict[str, Any] | RowError] = [
            RowError(f"clip annotation is {rows[i].get(f'{CLIP_STORE}.status')!r}", "no_embedding") for i in range(len(rows))
        ]
        if usable:
            embeddings = np.stack([decode_embedding(rows[i][f"{CLIP_STORE}.embedding"]) for i in usable])  # (m, d)
            for i, score in zip(usable, self.scores(embeddings), strict=True):
                out[i] = {"score": float(np.float32(score))}
        return out
