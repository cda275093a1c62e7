"""T5 text encoder wrapper (docs/design.md §6): prompts -> (states, mask) for the Next-DiT caption input.

`TextEncoder.load(model_id)` takes a hub id (from the offline HF cache) or a local folder through
`onegen.core.weights.resolve_checkpoint`. The folder is either a plain T5 checkpoint (config +
weights + tokenizer files) or a diffusers-style repo with `text_encoder/` and `tokenizer/` subfolders
(the OneDiffusion release layout).

Contract of `encode(prompts)`: states (B, L, D) float, mask (B, L) bool, L <= max_length (300 tokens,
the released code's length; longer prompts are truncated), padded to the longest prompt of the batch;
padded positions are False in the mask. An empty prompt list entry still yields its end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from onegen.core.weights import repo_subfolder, resolve_checkpoint

MAX_TOKENS = 300


@dataclass
class TextEncoder:
    """A loaded T5 encoder + tokenizer; `width` is the states' feature size (D)."""

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    revision: str
    max_length: int = MAX_TOKENS

    @classmethod
    def load(cls, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             max_length: int = MAX_TOKENS) -> TextEncoder:
        from transformers import AutoTokenizer, T5EncoderModel

        ckpt = resolve_checkpoint(model_id, "text encoder")
        model = T5EncoderModel.from_pretrained(repo_subfolder(ckpt.path, "text_encoder"), dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(repo_subfolder(ckpt.path, "tokenizer"))
        model.to(device).eval().requires_grad_(False)
        return cls(model, tokenizer, model_id, ckpt.revision, max_length)

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> states (B, L, D) in the model's dtype and mask (B, L) bool, on the model's device."""
        tokens = self.tokenizer(list(prompts), padding="longest", truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)  # (B, L)
        mask = tokens["attention_mask"].to(self.device).bool()  # (B, L)
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        return states, mask
