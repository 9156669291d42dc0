"""Conditional integral upsampling (irwarp.resample.upsample, upsample_flow) and resolution consistency.

``upsample(key, x, k)`` samples the ``k x k`` children of each coarse value ``X`` from their law
given ``sum(children) / k = X``: mean ``X / k``, covariance ``I - 11^T / k^2``. Downsampling returns
``X`` up to float32 rounding (bit-exactness is impossible in float32 for generic draws; the bound
tested here is derived in the docstring of ``upsample``), and the children of N(0, 1) input are
i.i.d. N(0, 1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import resample

U = 2.0**-24  # float32 unit roundoff


def _noise(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _blocks(y: np.ndarray, k: int) -> np.ndarray:
    """``(..., kH, kW, C)`` -> ``(..., H, W, k*k, C)`` children per coarse pixel (slow reference)."""
    *lead, hk, wk, c = y.shape
    h, w = hk // k, wk // k
    out = np.empty((*lead, h, w, k * k, c), y.dtype)
    for a in range(h):
        for b in range(w):
            out[..., a, b, :, :] = y[..., a * k : (a + 1) * k, b * k : (b + 1) * k, :].reshape(
                (*lead, k * k, c)
            )
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_downsample_inverts_upsample(k):
    """downsample(upsample(x)) == x up to float32 rounding of the block sums.

    Bound: the children's exact sum differs from k X by at most (k^2 + 1) u sum|children| (rounding
    of the sum of the others, of k X and of the remainder), and downsample's float32 sum adds at
    most (k^2 - 1) u sum|children|; divide by k. The plain formula without the remainder child is
    also checked to be within the bound, and the exact (float64) sum to be much tighter.
    """
    x = _noise(0, (3, 6, 5, 2))
    y = resample.upsample(jax.random.key(1), x, k)
    assert y.shape == (3, 6 * k, 5 * k, 2) and y.dtype == jnp.float32
    kids = _blocks(np.asarray(y, np.float64), k)
    abs_sum = np.abs(kids).sum(-2)
    xs = np.asarray(x, np.float64)
    exact = kids.sum(-2) / k  # float64: the children's sum, free of downsample's rounding
    assert np.all(np.abs(exact - xs) <= (k * k + 1) * U * (abs_sum + k * np.abs(xs)) / k)
    back = np.asarray(resample.downsample(y, k), np.float64)
    assert np.all(np.abs(back - xs) <= 2 * k * k * U * (abs_sum + k * np.abs(xs)) / k)
    # Within a couple of float32 ulps of N(0, 1) values in absolute terms.
    assert np.max(np.abs(back - xs)) < 1e-6


def test_k1_is_the_identity():
    x = _noise(2, (4, 4, 3))
    assert jnp.array_equal(resample.upsample(jax.random.key(0), x, 1), x)


def test_children_conditional_law():
    """Given X, each child has mean X / k and variance 1 - 1/k^2; two children covary -1/k^2."""
    k, n = 2, 20000
    x = jnp.full((n, 1, 1, 1), 1.7)
    kids = np.asarray(resample.upsample(jax.random.key(3), x, k)).reshape(n, k * k)
    mean = kids.mean(0)
    var = 1.0 - 1.0 / k**2
    assert np.all(np.abs(mean - 1.7 / k) < 5 * np.sqrt(var / n)), mean
    cov = np.cov(kids.T)
    assert np.all(np.abs(np.diag(cov) - var) < 5 * var * np.sqrt(2.0 / n)), np.diag(cov)
    off = cov[~np.eye(k * k, dtype=bool)]
    assert np.all(np.abs(off + 1.0 / k**2) < 5 * np.sqrt(2.0 / n)), off
    np.testing.assert_allclose(kids.sum(1) / k, 1.7, atol=1e-5)


@pytest.mark.parametrize("k", [2, 4])
def test_upsampled_noise_is_white_at_the_fine_scale(k):
    x = _noise(4, (4, 64 // k, 64 // k, 4))
    y = resample.upsample(jax.random.key(5), x, k)
    checks = irwarp.stats.whiteness_checks(y)
    assert checks["all"], (checks, irwarp.stats.summary(y))


def test_upsampling_deterministic_noise_is_not_white():
    """The whiteness check can fail: children of a constant field share their mean X / k."""
    y = resample.upsample(jax.random.key(6), jnp.full((1, 16, 16, 4), 3.0), 4)
    assert not irwarp.stats.whiteness_checks(y)["all"]


def test_reproducible_by_key():
    x = _noise(7, (2, 8, 8, 2))
    a = resample.upsample(jax.random.key(8), x, 3)
    b = resample.upsample(jax.random.key(8), x, 3)
    c = resample.upsample(jax.random.key(9), x, 3)
    assert jnp.array_equal(a, b)
    assert not np.allclose(np.asarray(a), np.asarray(c))
    jitted = jax.jit(resample.upsample, static_argnums=2)(jax.random.key(8), x, 3)
    # Under jit XLA may round the remainder child differently (a few ulps).
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(a), atol=1e-5)


def test_dtype_is_kept():
    y = resample.upsample(jax.random.key(0), _noise(1, (4, 4, 2), jnp.bfloat16), 2)
    assert y.dtype == jnp.bfloat16 and y.shape == (8, 8, 2)


@pytest.mark.parametrize("method,dx,dy", [("grid", 1, 0), ("particle", 0, -1), ("particle", -1, 0)])
def test_warp_at_high_resolution_commutes_with_integer_translation(method, dx, dy):
    """downsample(warp_fine(upsample(x), k d)) == warp_coarse(x, d) inside: the recommended path
    for latent models agrees exactly with the coarse warp where both are exact copies."""
    k, h, w = 4, 8, 10
    x = _noise(10, (h, w, 2))
    fine = resample.upsample(jax.random.key(11), x, k)
    flow_c = irwarp.flows.translation(h, w, dx, dy)
    flow_f = resample.upsample_flow(flow_c, k)
    np.testing.assert_allclose(
        np.asarray(flow_f), np.broadcast_to(k * np.asarray(flow_c)[0, 0], flow_f.shape), atol=1e-6
    )
    a = np.asarray(
        resample.downsample(irwarp.warp(jax.random.key(12), fine, flow_f, method=method), k)
    )
    b = np.asarray(irwarp.warp(jax.random.key(13), x, flow_c, method=method))
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    inside = (ii + dy >= 0) & (ii + dy < h) & (jj + dx >= 0) & (jj + dx < w)
    np.testing.assert_allclose(a[inside], b[inside], atol=1e-5)


def test_warp_at_high_resolution_then_downsample_is_white():
    k = 2
    x = _noise(14, (4, 16, 16, 4))
    fine = resample.upsample(jax.random.key(15), x, k)
    flow = resample.upsample_flow(irwarp.flows.rotation(16, 16, 9.0), k)
    y = resample.downsample(irwarp.warp(jax.random.key(16), fine, flow, method="grid"), k)
    checks = irwarp.stats.whiteness_checks(y)
    assert checks["all"], (checks, irwarp.stats.summary(y))


def test_upsample_flow_describes_the_same_motion():
    k = 3
    coarse = irwarp.flows.rotation(12, 16, 11.0)
    fine = np.asarray(resample.upsample_flow(coarse, k))
    ref = np.asarray(irwarp.flows.rotation(12 * k, 16 * k, 11.0))
    # Inside the coarse centre lattice the bilinear interpolation of an affine flow is exact.
    m = k // 2 + 1
    np.testing.assert_allclose(fine[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-4)
    back = np.asarray(resample.downsample_flow(jnp.asarray(fine), k))
    np.testing.assert_allclose(back[1:-1, 1:-1], np.asarray(coarse)[1:-1, 1:-1], atol=1e-4)
    # Batched flows and NaN (disoccluded) pixels.
    masked = irwarp.flows.nan_patch(coarse, 4, 4, 3, 3)
    both = np.asarray(resample.upsample_flow(jnp.stack([coarse, masked]), k))
    assert both.shape == (2, 12 * k, 16 * k, 2)
    np.testing.assert_allclose(both[0], fine, atol=1e-6)
    assert np.isnan(both[1, 5 * k + 1, 5 * k + 1]).all() and np.isfinite(both[1, :k]).all()


@pytest.mark.parametrize(
    "call,match",
    [
        (
            lambda: resample.upsample(jax.random.key(0), jnp.zeros((4, 4)), 2),
            r"\(\.\.\., H, W, C\)",
        ),
        (lambda: resample.upsample(jax.random.key(0), jnp.zeros((4, 4, 1)), 0), "positive integer"),
        (
            lambda: resample.upsample(jax.random.key(0), jnp.zeros((4, 4, 1)), 2.0),
            "positive integer",
        ),
        (
            lambda: resample.upsample(jax.random.key(0), jnp.zeros((4, 4, 1), jnp.int32), 2),
            "floating",
        ),
        (lambda: resample.upsample_flow(jnp.zeros((4, 4, 3)), 2), r"\(\.\.\., H, W, 2\)"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
