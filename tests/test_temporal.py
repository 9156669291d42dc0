"""Temporal compression of noise videos (irwarp.resample.temporal_compress).

Laws tested (derivations in the docstring of ``temporal_compress``):

- ``subsample`` returns input frames, so a warped video stays exactly i.i.d. N(0, 1) per frame;
- ``integral`` (sum / sqrt(k)) is N(0, 1) and white for independent frames, has variance
  ``1 + (2/k) sum_{i<j} corr_ij`` per pixel (``k`` for a static scene) and, for a rigid shift of one
  pixel per frame, lag-1 spatial correlation ``(k - 1) / k`` along the motion;
- ``mean`` (sum / k) has variance ``1 / k`` for independent frames and keeps a static scene.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import resample

H = W = 32


def _slow(x: np.ndarray, k: int, mode: str) -> np.ndarray:
    """Loop over groups (axis 0): the obviously-correct reference."""
    out = []
    for g in range(x.shape[0] // k):
        group = x[g * k : (g + 1) * k].astype(np.float64)
        if mode == "subsample":
            out.append(group[0])
        elif mode == "integral":
            out.append(group.sum(0) / np.sqrt(k))
        else:
            out.append(group.sum(0) / k)
    return np.stack(out)


@pytest.mark.parametrize("mode", resample.TEMPORAL_MODES)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_slow_reference(mode, k):
    x = jax.random.normal(jax.random.key(0), (6, 2, 5, 4, 3))
    y = resample.temporal_compress(x, k, mode=mode)
    assert y.shape == (6 // k, 2, 5, 4, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), _slow(np.asarray(x), k, mode), rtol=1e-5, atol=1e-6)
    # The time axis can sit anywhere.
    xt = jnp.moveaxis(x, 0, 2)
    for axis in (2, -3):
        z = resample.temporal_compress(xt, k, mode=mode, axis=axis)
        np.testing.assert_allclose(np.asarray(jnp.moveaxis(z, 2, 0)), np.asarray(y), atol=1e-6)
    f = jax.jit(functools.partial(resample.temporal_compress, k=k, mode=mode))
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(y), atol=1e-6)


@pytest.fixture(scope="module")
def warped_video():
    """(8, 4, 32, 32, 4): grid warp of 4 noise images along a translation of (0.3, -0.2) px and a
    1.5-degree rotation per frame (7 flows)."""
    flows = jnp.stack(
        [irwarp.flows.translation(H, W, 0.3, -0.2)] * 4 + [irwarp.flows.rotation(H, W, 1.5)] * 3
    )
    x0 = jax.random.normal(jax.random.key(1), (4, H, W, 4))
    return irwarp.warp_sequence(jax.random.key(2), x0, flows, method="grid")


@pytest.mark.parametrize("k", [2, 4])
def test_subsampling_a_warped_video_keeps_standard_normal(warped_video, k):
    z = resample.temporal_compress(warped_video, k, mode="subsample")
    assert z.shape == (8 // k, 4, H, W, 4)
    np.testing.assert_array_equal(np.asarray(z), np.asarray(warped_video[::k]))
    # One check per output frame: frames of a warped video are correlated with each other, so
    # pooling them would break the independence the KS and SE tolerances assume.
    for g in range(z.shape[0]):
        checks = irwarp.stats.whiteness_checks(z[g])
        assert checks["all"], (g, checks, irwarp.stats.summary(z[g]))


def test_integral_of_independent_frames_keeps_standard_normal():
    x = jax.random.normal(jax.random.key(3), (8, 4, H, W, 4))  # fresh noise every frame
    for k in (2, 4):
        z = resample.temporal_compress(x, k, mode="integral")
        checks = irwarp.stats.whiteness_checks(z)
        assert checks["all"], (k, checks, irwarp.stats.summary(z))


def test_integral_of_a_warped_video_is_not_standard_normal(warped_video):
    """Coherent frames add up: the variance exceeds 1 (the documented caveat), measurably."""
    z = resample.temporal_compress(warped_video, 4, mode="integral")
    var = float(jnp.var(z))
    n = z.size
    # Per-pixel correlation of consecutive frames is about 0.5 here, so Var is about 1 + 1.5 * 0.5.
    assert var > 1.0 + 10 * np.sqrt(2.0 / n), var
    assert not irwarp.stats.whiteness_checks(z)["all"]


def test_integral_along_a_one_pixel_shift_has_the_predicted_correlation():
    """Exact shift by one pixel per frame: per-pixel variance 1 (no overlap at a pixel) and lag-1
    correlation (k - 1) / k along x (the sum of k shifted copies)."""
    k, t = 4, 8
    flows = jnp.broadcast_to(irwarp.flows.translation(H, W, -1.0, 0.0), (t - 1, H, W, 2))
    x0 = jax.random.normal(jax.random.key(4), (4, H, W, 4))
    video = irwarp.warp_sequence(jax.random.key(5), x0, flows, method="grid")
    z = resample.temporal_compress(video, k, mode="integral")
    n = z.size
    assert abs(float(jnp.var(z)) - 1.0) < 5 * np.sqrt(2.0 / n)
    ac_x, ac_y = irwarp.stats.autocorr(z, 1)
    se = 1.0 / np.sqrt(n)
    assert abs(float(ac_x) - (k - 1) / k) < 10 * se, float(ac_x)
    assert abs(float(ac_y)) < 5 * se, float(ac_y)


def test_static_scene_integral_has_variance_k_and_mean_keeps_it():
    x0 = jax.random.normal(jax.random.key(6), (H, W, 4))
    video = jnp.broadcast_to(x0, (8, H, W, 4))
    for k in (2, 4):
        integral = resample.temporal_compress(video, k, mode="integral")
        np.testing.assert_allclose(
            np.asarray(integral),
            np.broadcast_to(np.sqrt(k) * np.asarray(x0), integral.shape),
            rtol=1e-5,
            atol=1e-5,
        )
        mean = resample.temporal_compress(video, k, mode="mean")
        np.testing.assert_allclose(np.asarray(mean), np.broadcast_to(x0, mean.shape), atol=1e-6)


@pytest.mark.parametrize("k", [2, 4])
def test_mean_of_independent_frames_has_variance_one_over_k(k):
    x = jax.random.normal(jax.random.key(7), (8, 4, H, W, 4))
    z = resample.temporal_compress(x, k, mode="mean")
    n = z.size
    var = float(jnp.var(z))
    assert abs(var - 1.0 / k) < 5 * np.sqrt(2.0 / n) / k, var


def test_dtype_is_kept():
    x = jax.random.normal(jax.random.key(8), (4, 4, 4, 2), jnp.bfloat16)
    for mode in resample.TEMPORAL_MODES:
        assert resample.temporal_compress(x, 2, mode=mode).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "kwargs,shape,dtype,match",
    [
        (dict(k=4), (6, 4, 4, 1), jnp.float32, r"T = 6 .* multiple of k = 4"),
        (dict(k=2, mode="median"), (6, 4, 4, 1), jnp.float32, "mode must be one of"),
        (dict(k=0), (6, 4, 4, 1), jnp.float32, "positive integer"),
        (dict(k=2, axis=4), (6, 4, 4, 1), jnp.float32, "out of range"),
        (dict(k=2, axis=1.0), (6, 4, 4, 1), jnp.float32, "static integer"),
        (dict(k=2), (6, 4, 4, 1), jnp.int32, "floating"),
    ],
)
def test_bad_inputs_raise(kwargs, shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        resample.temporal_compress(jnp.zeros(shape, dtype), **kwargs)
