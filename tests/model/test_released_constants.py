"""Every normalisation epsilon and constant of the released Next-DiT, pinned (docs/design.md §6a).

The released code (lehduong/OneDiffusion, onediffusion/models/denoiser/nextdit) fixes: y_embedder[0]
LayerNorm eps 1e-6; q_norm / k_norm LayerNorm default eps 1e-5; ky_norm 1e-6; the block RMSNorms
norm_eps 1e-5; the final LayerNorm 1e-6 without affine; RoPE theta 10000 with freqs
1 / theta^(arange(0, d, 6)[:d/6] / d) per axis; the timestep embedding 256 features, max period 10000,
cos half first; the caption pooled as sum(states * mask) / (mask.sum() + 1e-8). A new norm layer or a
changed constant fails here, so a deviation from the released model cannot slip in unnoticed.
"""

import math
import re

import pytest
import torch
from torch import nn

from onegen.model.nextdit import PRESETS, build_model, rope_angles, rope_positions, timestep_embedding

# (name pattern, class, eps, elementwise_affine) for every norm module of the model
NORMS = [
    (r"y_embedder\.0", nn.LayerNorm, 1e-6, True),
    (r"layers\.\d+\.attention\.q_norm", nn.LayerNorm, 1e-5, True),
    (r"layers\.\d+\.attention\.k_norm", nn.LayerNorm, 1e-5, True),
    (r"layers\.\d+\.attention\.ky_norm", nn.LayerNorm, 1e-6, True),
    (r"layers\.\d+\.(attention_norm1|attention_norm2|ffn_norm1|ffn_norm2|attention_y_norm)", nn.RMSNorm, 1e-5, True),
    (r"final_layer\.norm_final", nn.LayerNorm, 1e-6, False),
]


@pytest.fixture(scope="module")
def released():
    with torch.device("meta"):
        return build_model("onediffusion-2.8b")


def test_every_norm_has_the_released_class_and_epsilon(released):
    found = 0
    for name, module in released.named_modules():
        if not isinstance(module, nn.LayerNorm | nn.RMSNorm | nn.GroupNorm | nn.BatchNorm1d):
            continue
        match = [row for row in NORMS if re.fullmatch(row[0], name)]
        assert match, f"norm {name} ({type(module).__name__}) is not in the released architecture"
        _, cls, eps, affine = match[0]
        assert type(module) is cls, name
        assert module.eps == eps, f"{name}: eps {module.eps}, released {eps}"
        assert module.elementwise_affine == affine, name
        found += 1
    assert found == 1 + 16 * 8 + 1  # y_embedder, 8 per block (3 attention LayerNorms + 5 RMSNorms), final


def test_released_preset_constants():
    cfg = PRESETS["onediffusion-2.8b"]
    assert (cfg.hidden, cfg.depth, cfg.heads, cfg.kv_heads, cfg.caption_width) == (3840, 16, 32, 8, 2048)
    assert (cfg.patch, cfg.in_channels, cfg.norm_eps, cfg.rope_theta, cfg.t_freq_dim) == ((1, 2, 2), 16, 1e-5,
                                                                                           10000.0, 256)
    assert (cfg.head_dim, cfg.cond_width, cfg.ffn_hidden, cfg.patch_dim) == (120, 1024, 10240, 64)


def test_rope_frequencies_are_the_released_ones():
    dim, theta = 120, 10000.0
    released_freqs = 1.0 / (theta ** (torch.arange(0, dim, 6)[: dim // 6] / dim))  # (20,) as released, fp32
    grid = (2, 3, 5)
    angles = rope_angles(rope_positions(grid), dim, PRESETS["onediffusion-2.8b"].rope_theta)  # (N, 60)
    index = 0
    for v in range(grid[0]):
        for i in range(grid[1]):
            for j in range(grid[2]):
                expected = torch.cat([v * released_freqs, i * released_freqs, j * released_freqs])
                assert torch.equal(angles[index], expected), (v, i, j)
                index += 1


def test_timestep_embedding_is_the_released_one():
    t = torch.tensor([[0.0, 1.0, 250.5, 999.0]])  # (B, N)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)  # released form
    args = t[:, :, None] * freqs  # (B, N, 128)
    expected = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, N, 256)
    assert torch.equal(timestep_embedding(t, PRESETS["onediffusion-2.8b"].t_freq_dim), expected)


def test_caption_pooling_is_the_released_masked_mean():
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    caption = torch.randn(3, 7, 32)  # (B, L, Cy)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2] = False  # no caption token at all (caption dropout)
    t = torch.full((3, 1), 500.0)  # (B, V)
    c = model.condition(t, torch.Size((3, 16, 1, 2, 2)), caption, mask)  # (B, 1 token, cond)
    m = mask[..., None].float()
    pooled = (caption * m).sum(dim=1) / (m.sum(dim=1) + 1e-8)  # released: epsilon, not a clamp
    with torch.no_grad():
        expected = model.t_embedder(t) + model.y_embedder(pooled)[:, None]  # (B, 1, cond)
    torch.testing.assert_close(c, expected, rtol=1e-6, atol=1e-6)
