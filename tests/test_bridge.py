"""Brownian-bridge increments: exact sums and the conditional law of docs/DESIGN.md section 2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp.bridge import bridge_from_normals

R = 200_000  # draws for the statistical checks


def _sequential_bridge(rng, total, areas):
    """Slow reference: sequential sampling with remaining value r and remaining time tau."""
    out = np.zeros(len(areas))
    r, tau = total, 1.0
    for k, a in enumerate(areas):
        if a <= 0:
            continue
        mean = r * a / tau
        var = a * (tau - a) / tau
        out[k] = mean + np.sqrt(max(var, 0.0)) * rng.standard_normal()
        r -= out[k]
        tau -= a
    return out


def test_increments_sum_to_total_when_areas_fill_the_cell():
    key = jax.random.key(0)
    areas = jnp.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    total = jnp.array([1.5, -0.3, 2.0])
    inc = irwarp.bridge_increments(key, total, areas)
    np.testing.assert_allclose(inc.sum(-1), total, atol=1e-5)
    # A single piece of area 1 is the whole cell: exactly the total, zero-area pieces exactly 0.
    assert inc[2, 0] == total[2]
    assert jnp.all(inc[2, 1:] == 0.0)


def test_conditional_mean_and_covariance():
    areas = np.array([0.1, 0.3, 0.2, 0.15])  # sums to 0.75 < 1: a remainder is left over
    x = 1.7
    inc = irwarp.bridge_increments(
        jax.random.key(1), jnp.full((R,), x), jnp.broadcast_to(jnp.asarray(areas), (R, 4))
    )
    inc = np.asarray(inc, np.float64)
    mean_expected = areas * x
    cov_expected = np.diag(areas) - np.outer(areas, areas)
    var = np.diag(cov_expected)
    se_mean = np.sqrt(var / R)
    assert np.all(np.abs(inc.mean(0) - mean_expected) < 5 * se_mean)
    cov = np.cov(inc, rowvar=False)
    se_cov = np.sqrt((np.outer(var, var) + cov_expected**2) / R)
    assert np.all(np.abs(cov - cov_expected) < 5 * se_cov)


def test_order_free_matches_sequential_reference_law():
    """Same conditional law as sequential sampling in any order of the pieces."""
    areas = np.array([0.05, 0.4, 0.25])
    x = -0.8
    rng = np.random.default_rng(0)
    n = 40_000
    seq = np.stack([_sequential_bridge(rng, x, areas) for _ in range(n)])
    perm = np.array([2, 0, 1])
    inc = irwarp.bridge_increments(
        jax.random.key(2), jnp.full((n,), x), jnp.broadcast_to(jnp.asarray(areas[perm]), (n, 3))
    )
    inc = np.asarray(inc, np.float64)[:, np.argsort(perm)]
    var = areas * (1 - areas)
    se = np.sqrt(2 * var / n)
    assert np.all(np.abs(inc.mean(0) - seq.mean(0)) < 5 * se)
    assert np.all(np.abs(inc.var(0) - seq.var(0)) < 5 * np.sqrt(2 * 2 * var**2 / n))


def test_unconditional_increments_are_independent_with_variance_area():
    areas = np.array([0.2, 0.5, 0.3])
    k1, k2 = jax.random.split(jax.random.key(3))
    total = jax.random.normal(k1, (R,))
    inc = np.asarray(
        irwarp.bridge_increments(k2, total, jnp.broadcast_to(jnp.asarray(areas), (R, 3))),
        np.float64,
    )
    cov = np.cov(inc, rowvar=False)
    se = np.sqrt((np.outer(areas, areas) + np.diag(areas**2)) / R)
    assert np.all(np.abs(cov - np.diag(areas)) < 5 * se)


def test_bridge_from_normals_identity_piece_is_exact():
    x = jnp.array([0.3, -1.1])
    areas = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    g = jnp.array([[0.7, -0.2], [1.3, 0.4]])
    inc = bridge_from_normals(x, areas, g, jnp.array([5.0, 5.0]))
    np.testing.assert_array_equal(inc, jnp.array([[0.3, 0.0], [0.0, -1.1]]))


def test_same_key_same_result_different_key_different_result():
    areas = jnp.full((10, 3), 0.2)
    total = jnp.linspace(-1, 1, 10)
    a = irwarp.bridge_increments(jax.random.key(5), total, areas)
    b = irwarp.bridge_increments(jax.random.key(5), total, areas)
    c = irwarp.bridge_increments(jax.random.key(6), total, areas)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    legacy = irwarp.bridge_increments(jax.random.PRNGKey(5), total, areas)
    assert legacy.shape == a.shape


def test_bad_shapes_raise():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="total.shape"):
        irwarp.bridge_increments(key, jnp.zeros((3,)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="scalar"):
        irwarp.bridge_increments(key, jnp.zeros(()), jnp.zeros(()))
