"""Flow matching: time warp, the joint per-view objective, clean conditions, the released sampling schedule,
exact Euler sampling, CFG, overfitting."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import math  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from onegen.model.flow import (  # noqa: E402
    ScheduleConfig,
    clean_conditions,
    dynamic_mu,
    fixed_sigmas,
    flow_loss,
    release_schedule,
    sample_euler,
    sample_sigma,
    shift_sigma,
)
from onegen.model.nextdit import build_model  # noqa: E402


def test_shift_sigma_fixes_ends_and_moves_towards_noise():
    s = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_sigma(s, 1.0), s)
    shifted = shift_sigma(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:-1] > s[1:-1]).all() and (shifted.diff() > 0).all()
    assert shift_sigma(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2


def _hand_schedule(steps: int, tokens: float, base=(256, 0.5), top=(4096, 1.15)) -> list[float]:
    """The released img2img schedule written out: mu linear in tokens, exp(mu) time shift of
    linspace(1, 1/N, N), then 0."""
    mu = base[1] + (top[1] - base[1]) / (top[0] - base[0]) * (tokens - base[0])
    grid = [1 - k / steps for k in range(steps)]  # 1, ..., 1/N
    shifted = [math.exp(mu) / (math.exp(mu) + (1 / s - 1)) for s in grid]
    return shifted + [0.0]


@pytest.mark.parametrize("views", [1, 2, 8])
def test_release_schedule_matches_the_hand_computed_one(views):
    steps, tokens_per_view = 6, 256  # 256 px views: 32 x 32 latents, 2 x 2 patches
    generate = torch.tensor([[True] * views + [False] * 2])  # (1, V): the condition views do not count
    sigmas = release_schedule(generate, tokens_per_view, steps)  # (1, steps + 1)
    expected = torch.tensor(_hand_schedule(steps, views * tokens_per_view))
    torch.testing.assert_close(sigmas[0], expected, rtol=1e-6, atol=1e-7)
    assert dynamic_mu(views * 256) == pytest.approx({1: 0.5, 2: 0.5 + 0.65 * 256 / 3840, 8: 0.5 + 0.65 * 1792 / 3840}[views])
    # another scheduler config (as read from a checkpoint) moves mu; noise_scale scales the tokens
    config = ScheduleConfig.from_scheduler_config({"base_shift": 0.3, "max_shift": 1.0, "max_image_seq_len": 2048,
                                                   "shift": 3.0, "_class_name": "FlowMatchEulerDiscreteScheduler"})
    other = release_schedule(generate, tokens_per_view, steps, config, noise_scale=0.5)
    torch.testing.assert_close(other[0], torch.tensor(_hand_schedule(steps, 0.5 * views * 256, (256, 0.3), (2048, 1.0))),
                               rtol=1e-6, atol=1e-7)


def test_release_schedule_equals_diffusers_flow_match_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    steps = 10
    for views in (1, 3):
        mu = dynamic_mu(views * 1024, ScheduleConfig.from_scheduler_config(dict(scheduler.config)))
        scheduler.set_timesteps(sigmas=list(torch.linspace(1, 1 / steps, steps).numpy()), mu=mu)
        ours = release_schedule(torch.ones(1, views, dtype=torch.bool), 1024, steps)[0]
        torch.testing.assert_close(ours, scheduler.sigmas.float(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(1000 * ours[:-1], scheduler.timesteps.float(), rtol=1e-6, atol=1e-4)


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


def _loss_inputs():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 4, 4, generator=g)  # (B, C, V, H, W)
    return x0, torch.randn(3, 5, 8), torch.ones(3, 5, dtype=torch.bool)


def test_flow_loss_noises_every_view_with_its_own_sigma_and_counts_every_view():
    x0, caption, mask = _loss_inputs()
    oracle = Oracle(x0)
    out = flow_loss(oracle, x0, caption, mask, generator=torch.Generator().manual_seed(1))
    assert out.loss.item() < 1e-8 and out.errors.shape == (3, 2) and out.in_loss.all()
    x_in, t_in = oracle.calls[0]
    g1 = torch.Generator().manual_seed(1)  # replay: sigma for every view first, then the noise
    sigma, noise = sample_sigma(3, 2, 3.0, g1), torch.randn(x0.shape, generator=g1)
    torch.testing.assert_close(t_in, 1000 * sigma)
    assert (t_in[:, 0] != t_in[:, 1]).all() and (t_in > 0).all()  # independent, no view clean
    s = sigma[:, None, :, None, None]
    torch.testing.assert_close(x_in, (1 - s) * x0 + s * noise)  # each view noised at its own level
    # a wrong answer on either view shows in the loss: both views are in it, weighted equally
    for view in (0, 1):
        bad = flow_loss(Oracle(x0, bad_view=view), x0, caption, mask, generator=torch.Generator().manual_seed(1))
        assert bad.loss.item() > 1e4
        assert (bad.errors[:, view] > 1e5).all() and (bad.errors[:, 1 - view] < 1e-8).all()
        torch.testing.assert_close(bad.loss, bad.errors.mean())
        torch.testing.assert_close(bad.per_sample(), bad.errors.mean(1))


def test_per_view_sigma_reaches_the_tokens_of_its_view():
    model = build_model("tiny")
    seen = []
    model.t_embedder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x0 = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))  # 6 tokens per view
    with torch.no_grad():
        flow_loss(model, x0, torch.randn(2, 4, 32), torch.ones(2, 4, dtype=torch.bool),
                  generator=torch.Generator().manual_seed(3))
    sigma = sample_sigma(2, 3, 3.0, torch.Generator().manual_seed(3))  # (B, V)
    expected = (1000 * sigma).repeat_interleave(6, dim=1)  # (B, N): view-major tokens
    torch.testing.assert_close(seen[0], expected)


def test_clean_condition_prob_one_is_the_old_behaviour():
    x0, caption, mask = _loss_inputs()
    conditions = torch.tensor([[False, True]] * 3)  # view 1 is the condition
    clean = clean_conditions(conditions, 1.0)
    oracle = Oracle(x0, bad_view=1)
    out = flow_loss(oracle, x0, caption, mask, clean, generator=torch.Generator().manual_seed(1))
    assert out.loss.item() < 1e-8  # exact on the generated view; the wrong condition view is not counted
    assert torch.equal(out.in_loss, ~conditions) and (out.errors[:, 1] > 1e5).all()
    x_in, t_in = oracle.calls[0]
    assert torch.equal(x_in[:, :, 1], x0[:, :, 1]) and torch.equal(t_in[:, 1], torch.zeros(3))
    assert (t_in[:, 0] > 0).all() and (t_in[:, 0] <= 1000).all()


def test_clean_conditions_picks_whole_rows_with_the_given_probability():
    conditions = torch.tensor([[False, True, True]] * 4000)
    assert not clean_conditions(conditions, 0.0).any()
    clean = clean_conditions(conditions, 0.3, torch.Generator().manual_seed(0))
    rows = clean.any(1)
    assert torch.equal(clean, conditions & rows[:, None])  # all conditions of a chosen row, nothing else
    assert rows.float().mean().item() == pytest.approx(0.3, abs=0.03)
    again = clean_conditions(conditions, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(clean, again)


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
    out = sample_euler(model, noise, clean, generate, caption, torch.ones(2, 6, dtype=torch.bool), steps=8,
                       sigmas=fixed_sigmas(8, 3.0), cond_last_timestep=False)
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
                       sigmas=fixed_sigmas(6, 3.0))
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




def test_sampler_defaults_to_the_released_schedule_per_row(scene):
    target_pos, target_neg, clean, generate, noise, caption, _ = scene  # row 0: 2 generated views, row 1: 2
    generate = torch.tensor([[True, False, False], [True, True, False]])
    model = TwoTargets(target_pos, target_neg)
    out = sample_euler(model, noise, clean, generate, caption, torch.ones(2, 6, dtype=torch.bool), steps=5)
    gen = generate[:, None, :, None, None].expand_as(out)
    torch.testing.assert_close(out[gen], target_pos[gen], atol=1e-4, rtol=1e-4)
    tokens = 4 * 4 // 4  # 4 x 4 latents, 2 x 2 patches
    rows = [torch.tensor(_hand_schedule(5, n * tokens)) for n in (1, 2)]
    for i, (_, t_in) in enumerate(model.calls):
        for row in range(2):
            torch.testing.assert_close(t_in[row][generate[row]], (1000 * rows[row][i]).expand(int(generate[row].sum())))
            # condition views: the schedule's last timestep, as the released sampler feeds them
            torch.testing.assert_close(t_in[row][~generate[row]], (1000 * rows[row][4]).expand(int((~generate[row]).sum())))


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
        loss = flow_loss(model, x0, caption, mask, ~generate, generator=torch.Generator().manual_seed(1)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
