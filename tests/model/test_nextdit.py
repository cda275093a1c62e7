"""Next-DiT: released parameter layout, token order, per-view conditioning, RoPE, attention layout."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import math  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from onegen.model.nextdit import (  # noqa: E402
    PRESETS,
    Attention,
    apply_rope,
    build_model,
    load_model_checkpoint,
    patchify,
    rope_angles,
    rope_positions,
    save_checkpoint,
    timestep_embedding,
    unpatchify,
)

LAYOUT = Path(__file__).parent / "data" / "onediffusion-2.8b-state-dict.txt"


def released_layout() -> dict[str, tuple[int, ...]]:
    """name -> shape from the released checkpoint listing, layers.0.* expanded to all 16 layers."""
    layout = {}
    for line in LAYOUT.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split(" ", 1)
        dims = tuple(int(d) for d in shape.strip("() ").split(",") if d.strip())
        names = [name.replace("layers.0.", f"layers.{i}.") for i in range(16)] if name.startswith("layers.0.") else [name]
        layout.update(dict.fromkeys(names, dims))
    return layout




@pytest.fixture(scope="module")
def meta_2p8b():
    with torch.device("meta"):
        return build_model("onediffusion-2.8b")


@torch.no_grad()
def randomize(model, gate: float = 0.0, seed: int = 0):
    """Give every parameter non-trivial values (init zeroes modulation and output); gates set to `gate`."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("attention.gate"):
            p.fill_(gate)
        elif p.dim() == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def inputs(views=2, batch=2, hw=(4, 6), length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 16, views, *hw, generator=g)
    t = torch.rand(batch, views, generator=g) * 1000
    caption = torch.randn(batch, length, 32, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1:, 3:] = False  # later samples have padding
    return latents, t, caption, mask


# --------------------------------------------------------------------------- released layout


def test_2p8b_preset_has_released_names_and_shapes(meta_2p8b):
    expected = released_layout()
    got = {k: tuple(v.shape) for k, v in meta_2p8b.state_dict().items()}
    assert got == expected
    assert len(got) == 382
    assert sum(p.numel() for p in meta_2p8b.parameters()) == 2_800_389_184
    cfg = PRESETS["onediffusion-2.8b"]
    assert (cfg.head_dim, cfg.ffn_hidden, cfg.cond_width, cfg.patch_dim) == (120, 10240, 1024, 64)


def test_2p8b_loads_a_state_dict_of_released_shapes_strictly(meta_2p8b):
    state = {name: torch.empty(shape, device="meta") for name, shape in released_layout().items()}
    result = meta_2p8b.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    state.pop("layers.15.attention.gate")
    with pytest.raises(RuntimeError, match="layers.15.attention.gate"):
        meta_2p8b.load_state_dict(state, strict=True, assign=True)


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("patch", [(1, 2, 2), (2, 2, 2)])
def test_patchify_order_and_exact_inverse(patch):
    B, C, V, H, W = 2, 3, 4, 4, 6
    x = torch.randn(B, C, V, H, W)
    tokens = patchify(x, patch)
    pT, pH, pW = patch
    grid = (V // pT, H // pH, W // pW)
    assert tokens.shape == (B, math.prod(grid), pT * pH * pW * C)
    for v in range(grid[0]):
        for i in range(grid[1]):
            for j in range(grid[2]):
                n = (v * grid[1] + i) * grid[2] + j  # view-major, then row, then column
                for t in range(pT):
                    for a in range(pH):
                        for b in range(pW):
                            f = ((t * pH + a) * pW + b) * C  # features (pT, pH, pW, C), channels last
                            expected = x[:, :, v * pT + t, i * pH + a, j * pW + b]
                            assert torch.equal(tokens[:, n, f:f + C], expected)
    assert torch.equal(unpatchify(tokens, patch, grid), x)


@pytest.mark.parametrize("views", [1, 2, 4])
def test_output_shape_for_1_2_4_views(views):
    model = randomize(build_model("tiny"), gate=0.3)
    latents, t, caption, mask = inputs(views=views)
    with torch.no_grad():
        out = model(latents, t, caption, mask)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert out.abs().mean() > 1e-3  # randomized weights: a real, non-zero prediction


def test_a_sample_without_caption_tokens_gets_no_text_and_no_nan():
    model = randomize(build_model("tiny"), gate=0.5)
    latents, t, caption, mask = inputs()
    empty = mask.clone()
    empty[1] = False
    with torch.no_grad():
        out = model(latents, t, caption, empty)
        model.softcap = 30.0
        capped = model(latents, t, caption, empty)
    assert torch.isfinite(out).all() and torch.isfinite(capped).all()


def test_fresh_model_starts_with_closed_text_gates_and_zero_output():
    model = build_model("tiny")
    assert all(torch.equal(layer.attention.gate, torch.zeros(4)) for layer in model.layers)
    latents, t, caption, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model(latents, t, caption, mask), torch.zeros_like(latents))


def test_caption_tokens_reach_the_image_only_through_open_gates():
    """A caption change that keeps the masked mean (so c is unchanged) is invisible while gates are 0."""
    model = randomize(build_model("tiny"), gate=0.0)
    latents, t, caption, mask = inputs()
    delta = torch.zeros_like(caption)
    delta[:, 0], delta[:, 1] = 1.5, -1.5  # zero-mean change of real tokens
    delta[1, 4] = 7.0  # a padded token of sample 1
    other = caption + delta
    with torch.no_grad():
        same = model(latents, t, caption, mask), model(latents, t, other, mask)
        torch.testing.assert_close(same[0], same[1], atol=1e-5, rtol=1e-5)
        for layer in model.layers:
            layer.attention.gate.fill_(0.5)
        opened = model(latents, t, caption, mask), model(latents, t, other, mask)
    assert (opened[0] - opened[1]).abs().max() > 1e-2
    # padded caption tokens stay invisible with gates open: sample 1 differs only through real tokens
    only_pad = caption.clone()
    only_pad[1, 4] += 7.0
    with torch.no_grad():
        torch.testing.assert_close(model(latents, t, only_pad, mask), opened[0], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- per-token timesteps


def test_timestep_embedding_is_cos_half_then_sin_half():
    t = torch.tensor([0.0, 3.0, 999.0])
    emb = timestep_embedding(t, 256)
    k = 5
    freq = 10000.0 ** (-k / 128)
    torch.testing.assert_close(emb[:, k], torch.cos(t * freq))
    torch.testing.assert_close(emb[:, 128 + k], torch.sin(t * freq))
    assert torch.equal(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))


def modulation_of_first_block(model, *args):
    seen = []
    handle = model.layers[0].adaLN_modulation.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = model(*args)
    handle.remove()
    return seen[0], out  # (B, N, 4D)


def test_each_view_tokens_get_their_own_timestep_modulation():
    model = randomize(build_model("tiny"))
    latents, _, caption, mask = inputs(views=2, batch=1, hw=(4, 6))
    per_view = 6  # (4/2) * (6/2) tokens per view
    mod_a, _ = modulation_of_first_block(model, latents, torch.tensor([[100.0, 700.0]]), caption, mask[:1])
    mod_b, _ = modulation_of_first_block(model, latents, torch.tensor([[100.0, 200.0]]), caption, mask[:1])
    assert torch.equal(mod_a[:, :per_view], mod_b[:, :per_view])  # view 0: same t, same modulation
    assert (mod_a[:, per_view:] - mod_b[:, per_view:]).abs().min() > 0  # view 1: every token changed
    assert torch.equal(mod_a[:, 0], mod_a[:, per_view - 1])  # one t per view -> one modulation per view


def test_full_shape_timesteps_are_averaged_per_token():
    model = randomize(build_model("tiny"))
    latents, t, caption, mask = inputs(views=2, batch=1, hw=(4, 6))
    mask = mask[:1]
    full = t[:, None, :, None, None].expand(1, 16, 2, 4, 6).clone()
    wiggle = torch.tensor([30.0, -30.0]).repeat(8)[None, :, None, None, None]  # zero mean over channels
    _, out_view = modulation_of_first_block(model, latents, t, caption, mask)
    _, out_full = modulation_of_first_block(model, latents, full + wiggle, caption, mask)
    torch.testing.assert_close(out_full, out_view, atol=1e-5, rtol=1e-5)
    rows = full.clone()
    rows[:, :, :, 2:] += 250.0  # second token row of every view is noisier
    mod, _ = modulation_of_first_block(model, latents, rows, caption, mask)
    assert torch.equal(mod[:, 0], mod[:, 2]) and not torch.equal(mod[:, 0], mod[:, 3])  # row 0 vs row 1


# --------------------------------------------------------------------------- RoPE and attention


def test_rope_positions_restart_per_view_and_angles_per_axis():
    grid = (3, 2, 4)
    pos = rope_positions(grid)
    expected = [(v, i, j) for v in range(3) for i in range(2) for j in range(4)]
    assert [tuple(p) for p in pos.tolist()] == expected
    angles = rope_angles(pos, head_dim=120)
    freqs = torch.tensor([10000.0 ** (-k / 20) for k in range(20)])
    n = 1 * 8 + 1 * 4 + 3  # view 1, row 1, column 3
    torch.testing.assert_close(angles[n], torch.cat([1 * freqs, 1 * freqs, 3 * freqs]))
    # the first token of view 1 sits at row 0, column 0: only its view angle is non-zero
    torch.testing.assert_close(angles[8], torch.cat([freqs, torch.zeros(40)]))


def test_rope_preserves_norms_and_depends_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 24, 4, 24, generator=g), torch.randn(2, 24, 4, 24, generator=g)
    pos = rope_positions((2, 3, 4))
    rq = apply_rope(q, rope_angles(pos, 24))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    assert not torch.allclose(rq, q)
    shifted = pos + torch.tensor([5, 2, 7])
    dots = (rq * apply_rope(k, rope_angles(pos, 24))).sum(-1)
    dots_shifted = (apply_rope(q, rope_angles(shifted, 24)) * apply_rope(k, rope_angles(shifted, 24))).sum(-1)
    torch.testing.assert_close(dots, dots_shifted, atol=1e-4, rtol=1e-4)


def reference_attention(attn, x, y, y_mask, angles):
    """Head by head: image kv head h // rep (interleaved), caption kv head h % kv_heads (tiled)."""
    B, N, _ = x.shape
    H, Hkv, d = attn.heads, attn.kv_heads, attn.head_dim
    q = apply_rope(attn.q_norm(attn.wq(x)).view(B, N, H, d), angles)
    k = apply_rope(attn.k_norm(attn.wk(x)).view(B, N, Hkv, d), angles)
    v = attn.wv(x).view(B, N, Hkv, d)
    ky, vy = attn.ky_norm(attn.wk_y(y)).view(B, -1, Hkv, d), attn.wv_y(y).view(B, -1, Hkv, d)
    heads = []
    for h in range(H):
        self_w = torch.softmax(q[:, :, h] @ k[:, :, h // (H // Hkv)].transpose(1, 2) / math.sqrt(d), -1)
        text_logits = q[:, :, h] @ ky[:, :, h % Hkv].transpose(1, 2) / math.sqrt(d)
        text_w = torch.softmax(text_logits.masked_fill(~y_mask[:, None], -torch.inf), -1)
        heads.append(self_w @ v[:, :, h // (H // Hkv)] + torch.tanh(attn.gate[h]) * (text_w @ vy[:, :, h % Hkv]))
    return attn.wo(torch.cat(heads, dim=-1))


def test_attention_head_layout_matches_a_per_head_reference():
    cfg = PRESETS["tiny"]
    attn = randomize(Attention(cfg))
    with torch.no_grad():
        attn.gate.copy_(torch.tensor([0.9, -0.4, 0.2, 1.3]))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(2, 12, 96, generator=g), torch.randn(2, 5, 32, generator=g)
        y_mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
        angles = rope_angles(rope_positions((3, 2, 2)), cfg.head_dim)
        torch.testing.assert_close(attn(x, y, y_mask, angles), reference_attention(attn, x, y, y_mask, angles),
                                   atol=1e-5, rtol=1e-5)


def test_softcap_path_equals_sdpa_when_cap_is_huge_and_caps_when_small():
    model = randomize(build_model("tiny"), gate=0.7)
    args = inputs()
    with torch.no_grad():
        plain = model(*args)
        model.softcap = 1e9
        torch.testing.assert_close(model(*args), plain, atol=1e-5, rtol=1e-4)
        model.softcap = 0.1
        assert (model(*args) - plain).abs().max() > 1e-3


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_refuses_another_preset(tmp_path):
    model = randomize(build_model("tiny"), gate=0.2)
    path = tmp_path / "tiny.pt"
    save_checkpoint(model, path, "tiny")
    loaded = load_model_checkpoint(path, "tiny")
    args = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*args), model(*args))
    with pytest.raises(ValueError, match="holds preset .tiny., not .small."):
        load_model_checkpoint(path, "small")
    with pytest.raises(ValueError, match="is not preset 'small'"):
        save_checkpoint(model, tmp_path / "bad.pt", "small")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_softcapped_cuda_forward_tracks_fp32():
    """The reference's bf16 path (soft-cap 30) on GPU stays close to the fp32 SDPA path."""
    model = randomize(build_model("tiny"), gate=0.5).cuda()
    args = [a.cuda() for a in inputs(views=4, hw=(16, 16))]
    with torch.no_grad():
        ref = model(*args)
        model.to(torch.bfloat16).softcap = 30.0
        out = model(*args)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean()
