"""Warped noise is i.i.d. N(0, 1) (docs/DESIGN.md section 4, item 2) on the whole flow zoo.

Every statistic is checked by ``irwarp.stats.whiteness_checks`` with tolerances of 5 standard errors
derived from the sample size, on fixed keys.
"""

import functools

import jax
import numpy as np
import pytest

import irwarp
from irwarp import flows, stats

H, W, C = 24, 32, 64
ZOO = flows.zoo(H, W)
INJECTIVE = sorted(set(ZOO) - flows.DEGENERATE)
ALL = sorted(ZOO)


@functools.cache
def _jitted(method):
    if method == "splat":
        return jax.jit(irwarp.warp_forward)
    kw = {"upsample": 4} if method == "chang" else {}
    return jax.jit(functools.partial(irwarp.warp, method=method, **kw))


def _warp(method, name, seed=0):
    key = jax.random.fold_in(jax.random.key(seed), ALL.index(name))
    k_noise, k_warp = jax.random.split(key)
    x = jax.random.normal(k_noise, (H, W, C))
    return _jitted(method)(k_warp, x, ZOO[name])


def _failures(y):
    checks = stats.whiteness_checks(y)
    return {k: v for k, v in checks.items() if not v}


@pytest.mark.parametrize("name", INJECTIVE)
@pytest.mark.parametrize("method", ("grid", "chang"))
def test_exact_area_methods_are_white_on_injective_flows(method, name):
    assert _failures(_warp(method, name)) == {}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("method", ("particle", "splat"))
def test_particle_and_splat_are_white_on_every_flow(method, name):
    assert _failures(_warp(method, name)) == {}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "method", ("grid", "chang", "nearest", "bilinear", "fixed", "fresh", "particle", "splat")
)
def test_output_is_finite_on_every_flow(method, name):
    assert np.all(np.isfinite(np.asarray(_warp(method, name, seed=1))))


def test_grid_failsafe_keeps_unit_variance_on_degenerate_flows():
    """The fail-safe divides oversubscribed sources, so marginals stay N(0, 1) even when folding."""
    for name in ("fold_over", "collapse", "nan_patch", "leave_frame"):
        y = _warp("grid", name)
        checks = stats.whiteness_checks(y)
        assert checks["mean"] and checks["var"] and checks["ks"], (name, checks)


def test_baselines_fail_where_expected():
    """Bilinear lowers the variance; nearest duplicates values under zoom-in. The checks see it."""
    bil = stats.whiteness_checks(_warp("bilinear", "translation"))
    assert not bil["var"]
    y = np.asarray(_warp("nearest", "zoom_in"))
    assert np.unique(y).size < 0.8 * y.size
    assert not stats.whiteness_checks(y)["all"]
