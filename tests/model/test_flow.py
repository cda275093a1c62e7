"""Flow matching: time warp, per-view sigma, loss masking, exact Euler sampling, CFG, overfitting."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from onegen.model.flow import flow_loss, resolution_shift, sample_euler, sample_sigma, shift_sigma  # noqa: E402
from onegen.model.nextdit import build_model  # noqa: E402


def test_shift_sigma_fixes_ends_and_moves_towards_noise():
    s = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_sigma(s, 1.0), s)
    shifted = shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:-1] > s[1:-1]).all() and (shifted.diff() > 0).all()
    assert shift_sigma(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2


def test_resolution_shift_follows_token_count():
    assert resolution_shift(256) == pytest.approx(math.exp(0.5))
    assert resolution_shift(4096) == pytest.approx(math.exp(1.15))
    assert resolution_shift(1024) < resolution_shift(2048)


def test_sigma_is_logit_normal_per_view_with_shift():
    sigma = sample_sigma(4000, 3, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert sigma.shape == (4000, 3) and (sigma > 0).all() and (sigma < 1).all()
    assert (sigma[:, 0] != sigma[:, 1]).all()  # independent per view
    assert sigma.median().item() == pytest.approx(0.75, abs=0.02)  # median of logit-normal is 0.5, shifted


class Oracle:
    """The exact flow for a single data point x0: v = (x_sigma - x0) / sigma, from t = 1000 sigma.

    View `bad_view` gets a wrong answer (1000), so the loss shows whether that view is counted.
    """

    def __init__(self, x0, bad_view=None):
        self.x0, self.bad_view, self.calls = x0, bad_view, []

    def __call__(self, x, t, caption, mask):
        self.calls.append((x.clone(), t.clone()))
        s = (t / 1000).clamp(min=1e-12)[:, None, :, None, None]
        v = (x - self.x0) / s
        if self.bad_view is not None:
            v[:, :, self.bad_view] = 1000.0
        return v


def test_flow_loss_keeps_condition_views_clean_and_out_of_the_loss():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 4, 4, generator=g)
    caption, mask = torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)
    generate = torch.tensor([[True, False]] * 3)
    oracle = Oracle(x0, bad_view=1)
    loss = flow_loss(oracle, x0, caption, mask, generate, generator=torch.Generator().manual_seed(1))
    assert loss.item() < 1e-8  # exact on the generated view; the wrong condition view is not counted
    x_in, t_in = oracle.calls[0]
    assert torch.equal(x_in[:, :, 1], x0[:, :, 1]) and torch.equal(t_in[:, 1], torch.zeros(3))
    assert (t_in[:, 0] > 0).all() and (t_in[:, 0] <= 1000).all()
    # the same noise and sigma replayed from the seed reproduce the model input
    g1 = torch.Generator().manual_seed(1)
    sigma = sample_sigma(3, 2, 3.0, g1)
    noise = torch.randn(x0.shape, generator=g1)
    s = sigma[:, None, 0, None, None]
    torch.testing.assert_close(x_in[:, :, 0], (1 - s) * x0[:, :, 0] + s * noise[:, :, 0])
    # training every view counts the wrong one
    all_views = flow_loss(Oracle(x0, bad_view=1), x0, caption, mask, None, generator=torch.Generator().manual_seed(1))
    assert all_views.item() > 1e4


class TwoTargets(Oracle):
    """Exact flow towards target_pos when caption[:, 0, 0] > 0, else towards target_neg."""

    def __init__(self, target_pos, target_neg):
        super().__init__(None)
        self.pos, self.neg = target_pos, target_neg

    def __call__(self, x, t, caption, mask):
        n = x.shape[0] // self.pos.shape[0]  # 2 when CFG batches both branches
        is_pos = caption[:, 0, 0, None, None, None, None] > 0
        self.x0 = torch.where(is_pos, self.pos.repeat(n, 1, 1, 1, 1), self.neg.repeat(n, 1, 1, 1, 1))
        return super().__call__(x, t, caption, mask)


@pytest.fixture
def scene():
    g = torch.Generator().manual_seed(0)
    shape = (2, 4, 3, 4, 4)
    target_pos, target_neg = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    clean = torch.randn(shape, generator=g)
    generate = torch.tensor([[True, False, True], [True, True, False]])
    noise = torch.randn(shape, generator=g)
    caption, neg = torch.ones(2, 6, 8), -torch.ones(2, 3, 8)
    return target_pos, target_neg, clean, generate, noise, caption, neg


def test_sampler_lands_on_the_target_and_holds_conditions_clean(scene):
    target_pos, target_neg, clean, generate, noise, caption, _ = scene
    model = TwoTargets(target_pos, target_neg)
    out = sample_euler(model, noise, clean, generate, caption, torch.ones(2, 6, dtype=torch.bool), steps=8)
    gen = generate[:, None, :, None, None].expand_as(out)
    torch.testing.assert_close(out[gen], target_pos[gen], atol=1e-4, rtol=1e-4)
    assert torch.equal(out[~gen], clean[~gen])  # exactly the clean condition latents
    assert len(model.calls) == 8
    for x_in, t_in in model.calls:
        assert torch.equal(x_in[~gen], clean[~gen]) and torch.equal(t_in[~generate], torch.zeros(2))
    assert torch.equal(model.calls[0][1][generate], torch.full((4,), 1000.0))


def test_sampler_cfg_extrapolates_from_the_negative_prompt(scene):
    target_pos, target_neg, clean, generate, noise, caption, neg = scene
    model = TwoTargets(target_pos, target_neg)
    out = sample_euler(model, noise, clean, generate, caption, torch.ones(2, 6, dtype=torch.bool),
                       neg_caption=neg, neg_mask=torch.ones(2, 3, dtype=torch.bool), steps=6, cfg_scale=2.0,
                       cond_last_timestep=True)
    gen = generate[:, None, :, None, None].expand_as(out)
    expected = target_neg + 2.0 * (target_pos - target_neg)  # linear field: CFG moves the end point
    torch.testing.assert_close(out[gen], expected[gen], atol=1e-4, rtol=1e-4)
    assert torch.equal(out[~gen], clean[~gen])
    last_t = 1000 * 3 * (1 / 6) / (1 + 2 * (1 / 6))  # shifted sigma of the last step, shift 3
    gen2 = torch.cat([gen, gen])
    for x_in, t_in in model.calls:
        assert x_in.shape[0] == 4  # both branches in one call, image conditions kept in both
        assert torch.equal(x_in[~gen2], torch.cat([clean, clean])[~gen2])
        torch.testing.assert_close(t_in[~torch.cat([generate, generate])], torch.full((4,), last_t))




def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model("tiny")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 2, 4, 4, generator=g)
    caption, mask = torch.randn(2, 6, 32, generator=g), torch.ones(2, 6, dtype=torch.bool)
    generate = torch.tensor([[True, False], [True, True]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        # the same sigma and noise every step: a fixed regression problem the model must memorise
        loss = flow_loss(model, x0, caption, mask, generate, generator=torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
