"""Diffusion samplers (DDIM, DDPM, SDEdit), schedules and noise providers.

The samplers are checked on a Gaussian data law ``x0 ~ N(mu, sigma^2)`` per pixel, whose optimal
noise predictor is analytic, ``E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab sigma^2 + 1 - ab)``.
Every update is then affine in ``x``, so the exact law of the discretised sampler follows from a
float64 recursion of the mean and variance (an independent slow reference): the Monte Carlo
moments must match it within a few standard errors, and it must converge to ``(mu, sigma^2)`` as
the number of steps grows (first order: the error falls about 4x from 250 to 1000 steps).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import flows, samplers
from irwarp.samplers import FrameNoise, make_provider

MU, SIGMA2 = 0.5, 0.09
SHAPE = (6, 32, 32, 4)  # B, H, W, C: n = 24576 i.i.d. samples of the pixel law
KEY = jax.random.key(0)


def gaussian_eps(schedule, mu=MU, s2=SIGMA2):
    """The optimal noise predictor for x0 ~ N(mu, s2) per pixel."""

    def apply_fn(params, x, t):
        del params
        ab = schedule.alphas_cumprod[t][:, None, None, None]
        return jnp.sqrt(1.0 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * s2 + 1.0 - ab)

    return apply_fn


def exact_law(schedule, num_steps, sampler, eta, strength=1.0, mu=MU, s2=SIGMA2):
    """Mean and variance of the discretised sampler's output (float64 recursion, no JAX)."""
    abt = np.asarray(schedule.alphas_cumprod, np.float64)
    taus = samplers.timesteps(schedule.num_timesteps, num_steps, strength)
    ab, abp = abt[taus], np.append(abt[taus[1:]], 1.0)
    if strength == 1.0:
        m, v = 0.0, 1.0  # x_T = noise
    else:  # SDEdit of an input drawn from the data law
        m, v = math.sqrt(ab[0]) * mu, ab[0] * s2 + 1.0 - ab[0]
    for a, ap in zip(ab, abp, strict=True):
        c = math.sqrt(1 - a) / (a * s2 + 1 - a)  # eps = c x - c sqrt(a) mu
        ax0, bx0 = (1 - math.sqrt(1 - a) * c) / math.sqrt(a), math.sqrt(1 - a) * c * mu
        if sampler == "ddim":
            var = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
            d = math.sqrt(max(1 - ap - var, 0.0))
            A = math.sqrt(ap) * ax0 + d * c
            B = math.sqrt(ap) * bx0 - d * c * math.sqrt(a) * mu
        else:
            al = a / ap
            cx0 = math.sqrt(ap) * (1 - al) / (1 - a)
            A = cx0 * ax0 + math.sqrt(al) * (1 - ap) / (1 - a)
            B = cx0 * bx0
            var = (1 - ap) / (1 - a) * (1 - al)
        m, v = A * m + B, A * A * v + var
    return m, v


def _noise(key, num_steps, shape=SHAPE):
    return samplers.FreshProvider().init(key, shape, num_steps)


def _check_moments(x, m, v, num_se=5.0):
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    assert abs(x.mean() - m) < num_se * math.sqrt(v / n), (x.mean(), m)
    assert abs(x.var() - v) < num_se * v * math.sqrt(2.0 / n), (x.var(), v)


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("make", [samplers.linear_schedule, samplers.cosine_schedule])
def test_schedules_are_decreasing_in_unit_interval(make):
    s = make(200)
    ab = np.asarray(s.alphas_cumprod)
    assert ab.shape == (200,) and s.num_timesteps == 200 and s.prediction == "eps"
    assert np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0


def test_schedule_formulas():
    lin = np.asarray(samplers.linear_schedule(10, 0.1, 0.5).alphas_cumprod)
    np.testing.assert_allclose(lin, np.cumprod(1 - np.linspace(0.1, 0.5, 10)), rtol=1e-6)
    cos = np.asarray(samplers.cosine_schedule(1000, s=0.008).alphas_cumprod)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(cos[499], f(0.5) / f(0.0), rtol=1e-5)


def test_schedule_bad_inputs():
    with pytest.raises(ValueError, match="prediction"):
        samplers.linear_schedule(prediction="score")
    with pytest.raises(ValueError, match="beta"):
        samplers.linear_schedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="num_timesteps"):
        samplers.cosine_schedule(1)


@pytest.mark.parametrize("prediction", samplers.PREDICTIONS)
def test_prediction_conversions_invert_the_target(prediction):
    k1, k2 = jax.random.split(KEY)
    x0 = jax.random.uniform(k1, (3, 4, 4, 2), minval=-1, maxval=1)
    eps = jax.random.normal(k2, x0.shape)
    s = samplers.cosine_schedule(100)
    t = jnp.array([0, 50, 99])
    xt = samplers.q_sample(x0, eps, t, s)
    ab = s.alphas_cumprod[t]
    target = samplers.model_target(x0, eps, ab, prediction)
    eps_hat, x0_hat = samplers.to_eps_x0(target, xt, ab, prediction)
    np.testing.assert_allclose(eps_hat, eps, atol=2e-3)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)


# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize(
    "sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddim", 0.5), ("ddpm", 0.0)]
)
def test_gaussian_data_exact_law_of_the_discretised_sampler(sampler, eta):
    schedule = samplers.linear_schedule()
    num_steps = 50
    x = jax.jit(
        lambda n: samplers.sample(
            gaussian_eps(schedule),
            None,
            schedule,
            n,
            num_steps=num_steps,
            sampler=sampler,
            eta=eta,
            clip_x0=None,  # the Gaussian law is not bounded by 1
        )
    )(_noise(KEY, num_steps))
    m, v = exact_law(schedule, num_steps, sampler, eta)
    _check_moments(x, m, v)
    # 50 steps are too few to reach the data law: the test can tell the two apart.
    assert v < 0.9 * SIGMA2


@pytest.mark.parametrize("make", [samplers.linear_schedule, samplers.cosine_schedule])
@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddpm", 0.0)])
def test_discretised_law_converges_to_the_data_law(make, sampler, eta):
    schedule = make(1000)
    errs = []
    for steps in (250, 1000):
        m, v = exact_law(schedule, steps, sampler, eta)
        assert abs(m - MU) < 2e-3, (steps, m)
        errs.append(abs(v - SIGMA2))
    assert errs[1] < 0.035 * SIGMA2, errs  # within 3.5% at the full 1000-step chain
    assert 2.5 < errs[0] / errs[1] < 6.0, errs  # first-order convergence


def test_ddpm_equals_ddim_eta_one_on_the_same_noise():
    schedule = samplers.cosine_schedule(1000)
    n = _noise(KEY, 20, (2, 8, 8, 3))
    run = lambda s, e: samplers.sample(  # noqa: E731
        gaussian_eps(schedule), None, schedule, n, num_steps=20, sampler=s, eta=e
    )
    np.testing.assert_allclose(run("ddpm", 0.0), run("ddim", 1.0), atol=1e-4)
    assert not np.allclose(run("ddim", 0.0), run("ddim", 1.0), atol=1e-2)


@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddpm", 0.0)])
def test_v_and_x0_predictions_give_the_eps_result(sampler, eta):
    base = samplers.linear_schedule(1000)
    eps_fn = gaussian_eps(base)
    n = _noise(KEY, 25, (2, 8, 8, 3))
    ref = samplers.sample(eps_fn, None, base, n, num_steps=25, sampler=sampler)

    def as_prediction(prediction):
        def apply_fn(params, x, t):
            ab = base.alphas_cumprod[t][:, None, None, None]
            eps = eps_fn(params, x, t)
            x0 = (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
            return samplers.model_target(x0, eps, base.alphas_cumprod[t], prediction)

        return apply_fn

    for prediction in ("v", "x0"):
        s = base.replace(prediction=prediction)
        out = samplers.sample(as_prediction(prediction), None, s, n, num_steps=25, sampler=sampler)
        np.testing.assert_allclose(out, ref, atol=5e-4, err_msg=prediction)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_sdedit_of_data_keeps_the_data_law(sampler):
    schedule = samplers.cosine_schedule(1000)
    k1, k2 = jax.random.split(KEY)
    x_init = MU + math.sqrt(SIGMA2) * jax.random.normal(k1, SHAPE)
    x = samplers.sample(
        gaussian_eps(schedule),
        None,
        schedule,
        _noise(k2, 40),
        num_steps=40,
        sampler=sampler,
        x_init=x_init,
        strength=0.5,
        clip_x0=None,  # the Gaussian law is not bounded by 1
    )
    m, v = exact_law(schedule, 40, sampler, 1.0 if sampler == "ddpm" else 0.0, strength=0.5)
    _check_moments(x, m, v)


def test_sdedit_with_tiny_strength_returns_the_input():
    schedule = samplers.linear_schedule()
    x_init = jax.random.uniform(KEY, (2, 8, 8, 3), minval=-1, maxval=1)
    for sampler in samplers.SAMPLERS:
        out = samplers.sample(
            gaussian_eps(schedule),
            None,
            schedule,
            _noise(jax.random.key(1), 1, x_init.shape),
            num_steps=1,
            sampler=sampler,
            x_init=x_init,
            strength=1e-4,
        )
        assert float(jnp.max(jnp.abs(out - x_init))) < 0.05


def test_timesteps_and_repeated_steps_are_harmless():
    np.testing.assert_array_equal(samplers.timesteps(1000, 5), [999, 749, 500, 250, 0])
    np.testing.assert_array_equal(samplers.timesteps(1000, 3, strength=0.5), [499, 250, 0])
    assert samplers.timesteps(10, 4, strength=0.1).tolist() == [0, 0, 0, 0]
    schedule = samplers.linear_schedule(10, 0.01, 0.2)
    x_init = jax.random.uniform(KEY, (1, 4, 4, 1))
    n = _noise(KEY, 4, x_init.shape)
    one, four = (
        samplers.sample(
            gaussian_eps(schedule),
            None,
            schedule,
            FrameNoise(n.initial, n.steps[:s]),
            num_steps=s,
            sampler="ddpm",
            x_init=x_init,
            strength=0.1,
        )
        for s in (1, 4)
    )
    np.testing.assert_allclose(one, four, atol=1e-6)


def test_clip_x0_bounds_the_output():
    schedule = samplers.linear_schedule()
    wide = gaussian_eps(schedule, mu=0.0, s2=4.0)
    x = samplers.sample(
        wide, None, schedule, _noise(KEY, 10, (2, 8, 8, 1)), num_steps=10, clip_x0=1.0
    )
    assert float(jnp.max(jnp.abs(x))) <= 1.0 + 1e-6
    x = samplers.sample(
        wide, None, schedule, _noise(KEY, 10, (2, 8, 8, 1)), num_steps=10, clip_x0=None
    )
    assert float(jnp.max(jnp.abs(x))) > 1.5


def test_sample_jit_matches_eager_and_is_reproducible():
    schedule = samplers.cosine_schedule(100)
    fn = gaussian_eps(schedule)
    run = lambda n: samplers.sample(fn, None, schedule, n, num_steps=8, sampler="ddpm")  # noqa: E731
    n = _noise(KEY, 8, (2, 8, 8, 3))
    np.testing.assert_allclose(jax.jit(run)(n), run(n), atol=1e-5)
    np.testing.assert_array_equal(run(_noise(KEY, 8, (2, 8, 8, 3))), run(n))
    assert not np.allclose(run(_noise(jax.random.key(5), 8, (2, 8, 8, 3))), run(n))


def test_sample_bad_inputs():
    schedule = samplers.linear_schedule(100)
    fn = gaussian_eps(schedule)
    n = _noise(KEY, 4, (2, 8, 8, 3))
    ok = dict(num_steps=4)
    with pytest.raises(ValueError, match="unknown sampler"):
        samplers.sample(fn, None, schedule, n, sampler="euler", **ok)
    for strength in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strength"):
            samplers.sample(fn, None, schedule, n, x_init=n.initial, strength=strength, **ok)
    with pytest.raises(ValueError, match="needs x_init"):
        samplers.sample(fn, None, schedule, n, strength=0.5, **ok)
    with pytest.raises(ValueError, match="x_init"):
        samplers.sample(fn, None, schedule, n, x_init=n.initial[:1], strength=0.5, **ok)
    with pytest.raises(ValueError, match="per-step noise"):
        samplers.sample(fn, None, schedule, n, sampler="ddpm", num_steps=5)
    with pytest.raises(ValueError, match="eta"):
        samplers.sample(fn, None, schedule, n, eta=-1.0, **ok)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        samplers.sample(fn, None, schedule, FrameNoise(n.initial[0], n.steps[:, 0]), **ok)
    with pytest.raises(ValueError, match="num_steps"):
        samplers.sample(fn, None, schedule, n, num_steps=0)


# ----------------------------------------------------------------------------- providers

# chang2 stands for Chang et al.'s method: the same code as chang4, a quarter of the compile time.
ALL = ("fresh", "fixed", "nearest", "bilinear", "chang2", "grid", "particle", "lagrangian")
WHITE = ("fresh", "fixed", "chang2", "grid", "particle", "lagrangian")
# One compilation per provider and shape: the provider is static, the flow and t are traced.
NEXT = jax.jit(lambda p, key, prev, t, flow: p.next(key, prev, t, flow), static_argnums=0)


def _init(shape=(2, 16, 16, 3), steps=3, key=KEY):
    return make_provider("fixed").init(key, shape, steps)


@pytest.mark.parametrize("name", ("grid", "particle", "nearest", "bilinear"))
def test_identity_flow_warped_equals_fixed(name):
    prev = _init()
    ident = flows.identity(16, 16)
    fixed = NEXT(make_provider("fixed"), KEY, prev, 1, ident)
    warped = NEXT(make_provider(name), KEY, prev, 1, ident)
    if name in ("grid", "particle", "nearest"):
        np.testing.assert_array_equal(warped.initial, fixed.initial)
        np.testing.assert_array_equal(warped.steps, fixed.steps)
    else:
        np.testing.assert_allclose(warped.stacked(), fixed.stacked(), atol=1e-5)
    only = NEXT(make_provider(name, warp_initial_only=True), KEY, prev, 1, ident)
    np.testing.assert_allclose(only.initial, fixed.initial, atol=1e-5)
    assert not np.allclose(only.steps, fixed.steps)


@pytest.mark.parametrize("name", ALL)
def test_providers_are_reproducible_by_key_and_white(name):
    p = make_provider(name)
    h = w = 16
    flow = flows.rotation(h, w, 4.0) + flows.translation(h, w, 0.4, -0.3)
    runs = []
    for key in (KEY, KEY, jax.random.key(7)):
        noise = p.init(key, (6, h, w, 3), 4)
        for t in (1, 2):
            noise = NEXT(p, key, noise, t, flow)
        runs.append(noise.stacked())
    assert runs[0].shape == (5, 6, h, w, 3)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])
    checks = irwarp.stats.whiteness_checks(runs[0])
    if name in WHITE:
        assert checks["all"], (name, checks)
        # The S + 1 fields are independent: steps as channels, no cross-channel correlation.
        by_step = jnp.moveaxis(runs[0], 0, -2).reshape(6, h, w, 5 * 3)
        assert irwarp.stats.whiteness_checks(by_step)["max_cross"], name
    elif name == "bilinear":  # the resampling baseline loses variance and smooths
        assert not checks["var"] and float(jnp.var(runs[0])) < 0.9
    else:  # nearest keeps the marginal N(0, 1) but copies values
        assert checks["mean"] and checks["ks"]


def test_warped_provider_is_one_warp_of_the_stacked_noise():
    prev = _init()
    flow = flows.rotation(16, 16, 7.0)
    t = 3
    k_warp = jax.random.split(jax.random.fold_in(KEY, t), 3)[2]
    got = NEXT(make_provider("grid"), KEY, prev, t, flow)
    ref = jax.jit(lambda k, x, f: irwarp.warp(k, x, f, method="grid"))(k_warp, prev.stacked(), flow)
    np.testing.assert_allclose(got.stacked(), ref, atol=1e-6)


@pytest.mark.parametrize("name", ("grid", "particle", "nearest", "lagrangian"))
def test_warped_noise_moves_with_the_content(name):
    p = make_provider(name)
    prev = p.init(KEY, (2, 16, 16, 3), 3)  # as _init(): no new compilation
    old = np.asarray(prev.stacked())
    n = 16
    for dx, dy in [(2, 0), (-1, 0), (0, 3), (0, -2)]:
        # The content moves by (dx, dy) px: the backward flow is (-dx, -dy).
        new = np.asarray(NEXT(p, KEY, prev, 1, flows.translation(n, n, -dx, -dy)).stacked())
        rows = slice(max(dy, 0), n + min(dy, 0))
        cols = slice(max(dx, 0), n + min(dx, 0))
        src_rows = slice(max(-dy, 0), n + min(-dy, 0))
        src_cols = slice(max(-dx, 0), n + min(-dx, 0))
        np.testing.assert_allclose(
            new[..., rows, cols, :],
            old[..., src_rows, src_cols, :],
            atol=1e-5,
            err_msg=f"{dx},{dy}",
        )


# ----------------------------------------------------------------------------- lagrangian


def _lagrangian_frames(p, key, noise, fl):
    out = [noise.stacked()]
    for t in range(1, fl.shape[0] + 1):
        noise = NEXT(p, key, noise, t, fl[t - 1])
        out.append(noise.stacked())
    return jnp.stack(out), noise


def test_lagrangian_identity_flow_equals_fixed_across_keyframes():
    p = make_provider("lagrangian", keyframe_every=2)
    noise = p.init(KEY, (2, 16, 16, 3), 3)
    np.testing.assert_array_equal(noise.stacked(), _init().stacked())
    got, _ = _lagrangian_frames(p, KEY, noise, jnp.zeros((3, 16, 16, 2)))
    for t in range(4):  # frames 1..3 cross the keyframe at t = 2: still bit-equal to fixed
        np.testing.assert_array_equal(got[t], got[0], err_msg=str(t))
    q = make_provider("lagrangian", depth=2, warp_initial_only=True)
    only = NEXT(q, KEY, q.init(KEY, (2, 16, 16, 3), 3), 1, flows.identity(16, 16))
    assert only.state.keyframe.shape == (1, 2, 16, 16, 3)
    np.testing.assert_array_equal(only.initial, noise.initial)
    assert not np.allclose(only.steps, noise.steps)


def test_lagrangian_is_the_sheet_sequence_of_the_stacked_noise():
    """The provider's frames are irwarp.sheet.lagrangian_sequence of frame 0's stack with key
    k_warp of frame 0, keyframe restarts included (same sheets, same composed flows)."""
    p = make_provider("lagrangian", keyframe_every=2)
    noise = p.init(KEY, (2, 16, 16, 3), 3)
    fl = jnp.stack([flows.rotation(16, 16, 5.0) + flows.translation(16, 16, 0.3, -0.2)] * 3)
    got, last = _lagrangian_frames(p, KEY, noise, fl)
    k_sheet = jax.random.split(jax.random.fold_in(KEY, 0), 3)[2]
    ref = irwarp.sheet.lagrangian_sequence(k_sheet, noise.stacked(), fl, keyframe_every=2)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # State after frame 3: keyframe = frame 2, composed flow = flow of frame 3 alone.
    np.testing.assert_allclose(last.state.keyframe, ref[2], atol=1e-6)
    np.testing.assert_allclose(last.state.total_flow, flows.compose(jnp.zeros_like(fl[0]), fl[2]))


def test_lagrangian_half_pixel_steps_compose_to_an_exact_copy():
    """Two frames moving content by (0.5, -0.5) px: frame 2 is frame 0 moved by exactly (1, -1)
    px (composed flow, one sheet), while chained grid warping resamples twice."""
    n = 16
    p = make_provider("lagrangian")
    noise = p.init(KEY, (2, n, n, 3), 3)
    fl = jnp.stack([flows.translation(n, n, -0.5, 0.5)] * 2)
    got, _ = _lagrangian_frames(p, KEY, noise, fl)
    old, new = np.asarray(got[0]), np.asarray(got[2])
    np.testing.assert_allclose(new[..., 0 : n - 1, 1:n, :], old[..., 1:n, 0 : n - 1, :], atol=1e-5)
    grid = make_provider("grid")
    chained = NEXT(grid, KEY, NEXT(grid, KEY, _init(), 1, fl[0]), 2, fl[1]).stacked()
    assert not np.allclose(np.asarray(chained)[..., 0 : n - 1, 1:n, :], old[..., 1:n, 0 : n - 1, :])


def test_provider_bad_inputs():
    with pytest.raises(ValueError, match="unknown noise provider"):
        make_provider("lagrange")
    with pytest.raises(ValueError, match="options|option"):
        make_provider("grid", upsample=3)
    with pytest.raises(ValueError, match="takes no options"):
        make_provider("fixed", capacity=3)
    with pytest.raises(ValueError, match="upsample"):
        make_provider("chang4", upsample=2)
    prev = _init()
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        make_provider("grid").next(KEY, prev, 1, flows.identity(8, 16))
    with pytest.raises(ValueError, match="shape"):
        make_provider("grid").init(KEY, (16, 16), 2)
    with pytest.raises(ValueError, match="num_steps"):
        make_provider("grid").init(KEY, (16, 16, 3), -1)
    with pytest.raises(ValueError, match="SheetState"):
        make_provider("lagrangian").next(KEY, prev, 1, flows.identity(16, 16))
    with pytest.raises(ValueError, match="depth"):
        make_provider("lagrangian", depth=-1)
    with pytest.raises(ValueError, match="keyframe_every"):
        make_provider("lagrangian", keyframe_every=0)
    with pytest.raises(ValueError, match="options"):
        make_provider("lagrangian", upsample=2)


def test_register_provider():
    samplers.register_provider(
        "grid_fine",
        lambda **o: samplers.WarpedProvider("grid", (("capacity", 3), ("edge_points", 4)), **o),
    )
    try:
        assert make_provider("grid_fine").options == (("capacity", 3), ("edge_points", 4))
    finally:
        del samplers.PROVIDERS["grid_fine"]


# ----------------------------------------------------------------------------- video

VIDEO_SCHEDULE = samplers.cosine_schedule(100)
VIDEO_FN = gaussian_eps(VIDEO_SCHEDULE)
VIDEO = jax.jit(
    lambda p, key, frames, fl, sampler, eta: samplers.sample_video(
        key,
        VIDEO_FN,
        None,
        VIDEO_SCHEDULE,
        p,
        frames=frames,
        flows=fl,
        num_steps=3,
        sampler=sampler,
        eta=eta,
        strength=0.6,
    ),
    static_argnums=(0, 4, 5),
)


def _video_inputs(t=5, shape=(1, 8, 8, 2)):
    frames = jax.random.uniform(KEY, (t,) + shape, minval=-1, maxval=1)
    return frames, jnp.stack([flows.translation(8, 8, -0.5, 0.25)] * (t - 1))


def test_video_identity_flow_warped_equals_fixed():
    frames, _ = _video_inputs()
    ident = jnp.zeros((4, 8, 8, 2))
    fixed = VIDEO(make_provider("fixed"), KEY, frames, ident, "ddpm", 0.0)
    assert fixed.shape == frames.shape
    # The noise is bit-equal (test_identity_flow_warped_equals_fixed); the samples agree up to
    # rounding, as XLA may fuse the sampler differently around different providers.
    np.testing.assert_allclose(
        VIDEO(make_provider("grid"), KEY, frames, ident, "ddpm", 0.0), fixed, atol=1e-5
    )
    # ...and a warp that moves the noise changes them.
    moved = VIDEO(make_provider("grid"), KEY, frames, ident + 1.0, "ddpm", 0.0)
    assert not np.allclose(moved[1:], fixed[1:], atol=1e-3)


def test_video_chunks_give_the_same_frames():
    frames, fl = _video_inputs()
    p = make_provider("grid")
    opts = dict(num_steps=3, sampler="ddpm", eta=0.0, strength=0.6)
    whole = VIDEO(p, KEY, frames, fl, "ddpm", 0.0)  # compiled already by the identity test
    noise0 = p.init(KEY, frames.shape[1:], 3)
    first = samplers.sample(VIDEO_FN, None, VIDEO_SCHEDULE, noise0, x_init=frames[0], **opts)
    chunk = jax.jit(
        lambda prev, fl, t0, f: samplers.sample_video_chunk(
            KEY, VIDEO_FN, None, VIDEO_SCHEDULE, p, prev, fl, t0, frames=f, **opts
        )
    )
    a, last = chunk(noise0, fl[:2], 1, frames[1:3])
    b, _ = chunk(last, fl[2:], 3, frames[3:])
    np.testing.assert_allclose(jnp.concatenate([first[None], a, b]), whole, atol=1e-5)


def test_lagrangian_video_chunks_give_the_same_frames_and_identity_is_fixed():
    frames, fl = _video_inputs()
    # depth 2 (compile time); keyframes at t = 2, 4: the chunk boundary t0 = 2 carries a restart.
    p = make_provider("lagrangian", depth=2, keyframe_every=2)
    opts = dict(num_steps=3, sampler="ddpm", eta=0.0, strength=0.6)
    whole = VIDEO(p, KEY, frames, fl, "ddpm", 0.0)
    noise0 = p.init(KEY, frames.shape[1:], 3)
    first = samplers.sample(VIDEO_FN, None, VIDEO_SCHEDULE, noise0, x_init=frames[0], **opts)
    chunk = jax.jit(
        lambda prev, fl, t0, f: samplers.sample_video_chunk(
            KEY, VIDEO_FN, None, VIDEO_SCHEDULE, p, prev, fl, t0, frames=f, **opts
        )
    )
    a, last = chunk(noise0, fl[:1], 1, frames[1:2])
    b, _ = chunk(last, fl[1:], 2, frames[2:])
    np.testing.assert_allclose(jnp.concatenate([first[None], a, b]), whole, atol=1e-5)
    fixed = VIDEO(make_provider("fixed"), KEY, frames, jnp.zeros_like(fl), "ddpm", 0.0)
    ident = VIDEO(p, KEY, frames, jnp.zeros_like(fl), "ddpm", 0.0)
    np.testing.assert_allclose(ident, fixed, atol=1e-5)
    assert not np.allclose(whole[1:], fixed[1:], atol=1e-3)


def test_video_generation_without_inputs_and_bad_shapes():
    frames, fl = _video_inputs(3)
    out = samplers.sample_video(
        KEY,
        VIDEO_FN,
        None,
        VIDEO_SCHEDULE,
        make_provider("fixed"),
        shape=(1, 8, 8, 2),
        flows=fl,
        num_steps=2,
    )
    assert out.shape == (3, 1, 8, 8, 2) and bool(jnp.all(jnp.isfinite(out)))
    p = make_provider("grid")
    run = lambda **kw: samplers.sample_video(  # noqa: E731
        KEY, VIDEO_FN, None, VIDEO_SCHEDULE, p, num_steps=2, strength=0.5, **kw
    )
    with pytest.raises(ValueError, match="flows"):
        run(frames=frames, flows=fl[:1])
    with pytest.raises(ValueError, match="flows"):
        run(frames=frames, flows=fl[..., :4, :])
    with pytest.raises(ValueError, match="got neither"):
        run(flows=fl)
    with pytest.raises(ValueError, match=r"\(T, B, H, W, C\)"):
        run(frames=frames[0], flows=fl)
