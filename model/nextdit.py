"""OneDiffusion Next-DiT (docs/design.md §6, §6a), one file, parameter names of the released checkpoint.

Forward contract:
    model(latents, timesteps, caption, caption_mask) -> v
    latents      (B, C, V, H, W)  VAE latents, C = in_channels (16), V views, H and W divisible by the patch
    timesteps    (B, V) per view, or (B, C, V, H, W) like the latents; t = 1000 * sigma in [0, 1000]
                 (sigma = 1 is pure noise). Either form is patchified and averaged per token, so each
                 token has its own t and therefore its own modulation.
    caption      (B, L, caption_width) text-encoder states (T5)
    caption_mask (B, L) bool, True on real tokens
    v            (B, C, V, H, W) predicted velocity noise - data, same dtype as the parameters

Token layout: tokens run view-major, then row, then column; a token's features are (pT, pH, pW, C),
channels last. 3D RoPE positions are (view, row, column) and restart at row 0, column 0 in every view.

RoPE for other head widths: each axis gets head_dim / 6 frequencies 1 / theta^(k * 6 / head_dim),
k = 0 .. head_dim/6 - 1 (20 at head_dim 120, as released); head_dim must be a multiple of 6, so the
small presets use head_dim 96 ("small", 16 per axis) and 24 ("tiny", 4 per axis).

Soft-capped attention logits (cap * tanh(logits / cap)): the released bf16 path uses 30, its fp32
path none. SDPA has no soft-cap, so with `softcap` set the attention is computed explicitly. The cap
is a run-time choice (`NextDiT(config, softcap=30.0)` or `model.softcap = 30.0`), not part of the
config, so it never makes two checkpoints incompatible.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onegen.core.errors import UserError


@dataclass(frozen=True)
class NextDiTConfig:
    """Architecture of a Next-DiT; the defaults are the released 2.8B model."""

    hidden: int = 3840
    depth: int = 16
    heads: int = 32
    kv_heads: int = 8
    caption_width: int = 2048
    patch: tuple[int, int, int] = (1, 2, 2)  # (views, rows, columns) per token
    in_channels: int = 16
    multiple_of: int = 256  # SwiGLU width: int(2/3 * 4 * hidden) * multiplier, rounded up to this
    ffn_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    t_freq_dim: int = 256

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"hidden {self.hidden} / heads {self.heads} / kv_heads {self.kv_heads} do not divide")
        if self.head_dim % 6:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 6 (2 x 3 RoPE axes)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def cond_width(self) -> int:
        """Width of the conditioning vector c (t-embedding + pooled caption)."""
        return min(self.hidden, 1024)

    @property
    def ffn_hidden(self) -> int:
        width = int(2 * 4 * self.hidden / 3)
        if self.ffn_multiplier is not None:
            width = int(self.ffn_multiplier * width)
        return self.multiple_of * math.ceil(width / self.multiple_of)

    @property
    def patch_dim(self) -> int:
        return math.prod(self.patch) * self.in_channels


PRESETS: dict[str, NextDiTConfig] = {
    "onediffusion-2.8b": NextDiTConfig(),
    "small": NextDiTConfig(hidden=768, depth=12, heads=8, kv_heads=4),
    "tiny": NextDiTConfig(hidden=96, depth=2, heads=4, kv_heads=2, caption_width=32, multiple_of=32),
}


# --------------------------------------------------------------------------- patches and positions


def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, V, H, W) -> (B, N, pT*pH*pW*C); tokens view-major, then row, then column."""
    B, C, V, H, W = x.shape
    pT, pH, pW = patch
    x = x.reshape(B, C, V // pT, pT, H // pH, pH, W // pW, pW)  # (B, C, V', pT, H', pH, W', pW)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (B, V', H', W', pT, pH, pW, C)
    return x.reshape(B, -1, pT * pH * pW * C)  # (B, N, P)


def unpatchify(tokens: torch.Tensor, patch: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Exact inverse of `patchify`: (B, N, pT*pH*pW*C) and grid (V', H', W') -> (B, C, V, H, W)."""
    pT, pH, pW = patch
    B, _, P = tokens.shape
    x = tokens.reshape(B, *grid, pT, pH, pW, P // (pT * pH * pW))  # (B, V', H', W', pT, pH, pW, C)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, V', pT, H', pH, W', pW)
    return x.reshape(B, -1, grid[0] * pT, grid[1] * pH, grid[2] * pW)  # (B, C, V, H, W)


def rope_positions(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """(N, 3) integer (view, row, column) of every token; each view starts again at row 0, column 0."""
    axes = [torch.arange(n, device=device) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3)


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """(N, 3) positions -> (N, head_dim/2) rotation angles, laid out [view | row | column]."""
    exponent = torch.arange(0, head_dim, 6, device=positions.device)[: head_dim // 6] / head_dim  # (F,) float32
    freqs = 1.0 / theta**exponent  # (F,) float32, computed as the released code does (bit for bit)
    return (positions.float()[:, :, None] * freqs).reshape(positions.shape[0], -1)  # (N, 3F)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent feature pairs (2i, 2i+1) of (B, N, heads, head_dim) by (N, head_dim/2) angles."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)  # (B, N, h, d/2, 2)
    x0, x1 = pairs.unbind(-1)  # (B, N, h, d/2) each
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]  # (1, N, 1, d/2)
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (B, N, h, d/2, 2)
    return out.flatten(-2).type_as(x)  # (B, N, h, d)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """(...,) timesteps -> (..., dim) sinusoidal features, cos half first, then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[..., None] * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (..., dim)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
           softcap: float | None) -> torch.Tensor:
    """Attention of (B, h, N, d) queries over (B, h, S, d) keys; mask (B, 1, 1, S) bool or None."""
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, d)
    logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, h, N, S)
    logits = softcap * torch.tanh(logits / softcap)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(dim=-1).to(v.dtype) @ v  # (B, h, N, d)


# --------------------------------------------------------------------------- layers


class Attention(nn.Module):
    """Self-attention over image tokens fused with gated attention over caption tokens."""

    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        kv_width = cfg.kv_heads * cfg.head_dim
        self.gate = nn.Parameter(torch.zeros(cfg.heads))  # zero: the text branch starts switched off
        self.wq = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.wk = nn.Linear(cfg.hidden, kv_width, bias=False)
        self.wv = nn.Linear(cfg.hidden, kv_width, bias=False)
        self.wk_y = nn.Linear(cfg.caption_width, kv_width, bias=False)
        self.wv_y = nn.Linear(cfg.caption_width, kv_width, bias=False)
        self.wo = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.q_norm = nn.LayerNorm(cfg.hidden)  # over the whole projected width, before RoPE
        self.k_norm = nn.LayerNorm(kv_width)
        self.ky_norm = nn.LayerNorm(kv_width, eps=1e-6)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, angles: torch.Tensor,
                softcap: float | None = None) -> torch.Tensor:
        B, N, D = x.shape
        L, rep = y.shape[1], self.heads // self.kv_heads
        q = self.q_norm(self.wq(x)).view(B, N, self.heads, self.head_dim)  # (B, N, h, d)
        k = self.k_norm(self.wk(x)).view(B, N, self.kv_heads, self.head_dim)  # (B, N, hkv, d)
        v = self.wv(x).view(B, N, self.kv_heads, self.head_dim)  # (B, N, hkv, d)
        q, k = apply_rope(q, angles).transpose(1, 2), apply_rope(k, angles).transpose(1, 2)  # (B, h|hkv, N, d)
        # image kv heads are interleaved: query head i reads kv head i // rep
        k = k.repeat_interleave(rep, dim=1)  # (B, h, N, d)
        v = v.transpose(1, 2).repeat_interleave(rep, dim=1)  # (B, h, N, d)
        out = attend(q, k, v, None, softcap)  # (B, h, N, d)

        # caption kv heads are tiled: query head i reads kv head i % hkv; no RoPE on text
        ky = self.ky_norm(self.wk_y(y)).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, hkv, L, d)
        vy = self.wv_y(y).view(B, L, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, hkv, L, d)
        ky, vy = ky.repeat(1, rep, 1, 1), vy.repeat(1, rep, 1, 1)  # (B, h, L, d)
        has_text = y_mask.any(dim=1)  # (B,) a row with no caption token gets no text output, not NaN
        mask = (y_mask | ~has_text[:, None])[:, None, None, :]  # (B, 1, 1, L)
        out_y = attend(q, ky, vy, mask, softcap)  # (B, h, N, d)
        gate = torch.tanh(self.gate).view(1, -1, 1, 1) * has_text.view(-1, 1, 1, 1)  # (B, h, 1, 1)
        out = (out + out_y * gate.to(out_y.dtype)).transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.wo(out)  # (B, N, D)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.hidden, bias=False)
        self.w3 = nn.Linear(cfg.hidden, cfg.ffn_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # (B, N, D)


class Block(nn.Module):
    """Sandwich-normed block, per-token adaLN with 4 chunks, tanh gates, no shift."""

    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm1 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.attention_norm2 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.ffn_norm1 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.ffn_norm2 = nn.RMSNorm(cfg.hidden, eps=cfg.norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_width, 4 * cfg.hidden))
        self.attention_y_norm = nn.RMSNorm(cfg.caption_width, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, c: torch.Tensor,
                angles: torch.Tensor, softcap: float | None = None) -> torch.Tensor:
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(4, dim=-1)  # (B, N, D) each
        h = self.attention(self.attention_norm1(x) * (1 + scale_msa), self.attention_y_norm(y), y_mask,
                           angles, softcap)  # (B, N, D)
        x = x + torch.tanh(gate_msa) * self.attention_norm2(h)  # (B, N, D)
        h = self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp))  # (B, N, D)
        return x + torch.tanh(gate_mlp) * self.ffn_norm2(h)  # (B, N, D)


class TimestepEmbedder(nn.Module):
    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.freq_dim = cfg.t_freq_dim
        self.mlp = nn.Sequential(nn.Linear(cfg.t_freq_dim, cfg.cond_width), nn.SiLU(),
                                 nn.Linear(cfg.cond_width, cfg.cond_width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = timestep_embedding(t, self.freq_dim)  # (B, N, 256) float32
        return self.mlp(freqs.to(self.mlp[0].weight.dtype))  # (B, N, cond)


class FinalLayer(nn.Module):
    def __init__(self, cfg: NextDiTConfig):
        super().__init__()
        self.norm_final = nn.LayerNorm(cfg.hidden, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(cfg.hidden, cfg.patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_width, cfg.hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale = self.adaLN_modulation(c)  # (B, N, D)
        return self.linear(self.norm_final(x) * (1 + scale))  # (B, N, P)


# --------------------------------------------------------------------------- model


class NextDiT(nn.Module):
    """The OneDiffusion denoiser; see the module docstring for the forward contract."""

    def __init__(self, config: NextDiTConfig, softcap: float | None = None):
        super().__init__()
        self.config, self.softcap = config, softcap
        self.x_embedder = nn.Linear(config.patch_dim, config.hidden)
        self.t_embedder = TimestepEmbedder(config)
        self.y_embedder = nn.Sequential(nn.LayerNorm(config.caption_width, eps=1e-6),  # released: 1e-6 here
                                        nn.Linear(config.caption_width, config.cond_width))
        self.layers = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.final_layer = FinalLayer(config)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Lumina-Next / DiT init: xavier linears, zero modulation and output, so blocks start as identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for linear in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.y_embedder[1]):
            nn.init.normal_(linear.weight, std=0.02)
        for layer in self.layers:
            nn.init.zeros_(layer.adaLN_modulation[1].weight)
            nn.init.zeros_(layer.adaLN_modulation[1].bias)
            nn.init.zeros_(layer.attention.gate)
        for linear in (self.final_layer.adaLN_modulation[1], self.final_layer.linear):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def condition(self, timesteps: torch.Tensor, latent_shape: torch.Size, caption: torch.Tensor,
                  caption_mask: torch.Tensor) -> torch.Tensor:
        """c (B, N, cond): embedding of each token's mean t + Linear(LayerNorm(masked mean caption))."""
        B, C, V, H, W = latent_shape
        if timesteps.dim() == 2:  # (B, V) per view -> the latents' shape
            timesteps = timesteps[:, None, :, None, None].expand(B, C, V, H, W)
        t_tok = patchify(timesteps.float(), self.config.patch).mean(dim=-1)  # (B, N)
        mask = caption_mask.float()[..., None]  # (B, L, 1)
        pooled = (caption.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # (B, Cy), fp32 sum
        pooled = pooled.to(self.y_embedder[1].weight.dtype)
        return self.t_embedder(t_tok) + self.y_embedder(pooled)[:, None]  # (B, N, cond)

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, caption: torch.Tensor,
                caption_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        B, C, V, H, W = latents.shape
        grid = (V // cfg.patch[0], H // cfg.patch[1], W // cfg.patch[2])
        if C != cfg.in_channels or (grid[0] * cfg.patch[0], grid[1] * cfg.patch[1], grid[2] * cfg.patch[2]) != (V, H, W):
            raise ValueError(f"latents {tuple(latents.shape)} do not fit channels {cfg.in_channels} / patch {cfg.patch}")
        dtype = self.x_embedder.weight.dtype
        x = self.x_embedder(patchify(latents.to(dtype), cfg.patch))  # (B, N, D)
        caption = caption.to(dtype)  # (B, L, Cy)
        c = self.condition(timesteps, latents.shape, caption, caption_mask)  # (B, N, cond)
        angles = rope_angles(rope_positions(grid, latents.device), cfg.head_dim, cfg.rope_theta)  # (N, d/2)
        for layer in self.layers:
            x = layer(x, caption, caption_mask, c, angles, self.softcap)  # (B, N, D)
        x = self.final_layer(x, c)  # (B, N, P)
        return unpatchify(x, cfg.patch, grid)  # (B, C, V, H, W)


# --------------------------------------------------------------------------- checkpoints


def build_model(preset: str, softcap: float | None = None) -> NextDiT:
    if preset not in PRESETS:
        raise KeyError(f"unknown Next-DiT preset {preset!r}; known: {sorted(PRESETS)}")
    return NextDiT(PRESETS[preset], softcap=softcap)


def save_checkpoint(model: NextDiT, path: str | Path, preset: str) -> None:
    """Write {preset, config, state_dict} to `path` (torch.save); the model must be that preset."""
    if PRESETS.get(preset) != model.config:
        raise ValueError(f"model config {model.config} is not preset {preset!r}")
    payload = {"preset": preset, "config": dataclasses.asdict(model.config), "state_dict": model.state_dict()}
    torch.save(payload, str(path))


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint holds another preset (or another architecture) than the one asked for."""


def checkpoint_info(path: str | Path) -> dict:
    """{"preset", "config", "scheduler" (dict or None)} of a `save_checkpoint` .pt or an exported .safetensors."""
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if "preset" not in meta:
            raise CheckpointMismatch(f"{path} has no onegen metadata (preset); export it with `onegen export`")
        return {"preset": meta["preset"], "config": json.loads(meta["config"]),
                "scheduler": json.loads(meta.get("scheduler") or "null"), "train_config": json.loads(
                    meta.get("train_config") or "{}")}
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    return {"preset": payload["preset"], "config": payload["config"], "scheduler": payload.get("scheduler"),
            "train_config": {}, "state_dict": payload["state_dict"]}


def check_preset(info: dict, preset: str, path: str | Path) -> None:
    """Refuse, in one line, a checkpoint whose preset or architecture is not `preset`'s."""
    saved = info["preset"]
    saved_config = NextDiTConfig(**{**info["config"], "patch": tuple(info["config"]["patch"])})
    if saved != preset:
        raise CheckpointMismatch(f"checkpoint {path} holds preset {saved!r}, not {preset!r}")
    if saved_config != PRESETS.get(preset):
        raise CheckpointMismatch(f"checkpoint {path} holds a {saved!r} of another architecture than today's preset")


def load_model_checkpoint(path: str | Path, preset: str, map_location: str | torch.device = "cpu",
                          softcap: float | None = None) -> NextDiT:
    """Build preset `preset` and load a `save_checkpoint` .pt or an exported .safetensors into it (strict,
    weights only, no pickle); refuse another preset's file (`CheckpointMismatch`)."""
    info = checkpoint_info(path)
    check_preset(info, preset, path)
    if "state_dict" in info:
        state = info["state_dict"]
    else:
        from safetensors.torch import load_file

        state = load_file(str(path), device=str(map_location))
    model = build_model(preset, softcap=softcap)
    model.load_state_dict(state, strict=True)
    return model
