"""The counter-based normals of irwarp._random and the packed tail of grid records."""

import importlib

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

import irwarp
from irwarp import _random

apply_module = importlib.import_module("irwarp._apply")


def test_threefry_matches_jax():
    k = jax.random.randint(jax.random.key(0), (2, 64), 0, 2**31 - 1).astype(jnp.uint32)
    x = jax.random.randint(jax.random.key(1), (2, 64), 0, 2**31 - 1).astype(jnp.uint32)
    ours = _random.threefry_words(k[0], k[1], x[0], x[1])
    ref = jax.vmap(lambda kk, xx: jex_random.threefry_2x32(kk, xx))(k.T, x.T)
    np.testing.assert_array_equal(np.stack(ours, -1), np.asarray(ref))


def test_uniform_normal_is_the_quantile_of_every_level():
    """All 2^23 levels against scipy's float64 quantile of the level's centre; odd symmetry."""
    k = np.arange(2**23, dtype=np.uint32)
    fn = jax.jit(_random.uniform_normal)
    g = np.asarray(fn(jnp.asarray(k << 9)), np.float64)
    exact = sps.norm.ppf((2.0 * k + 1.0) * 2.0**-24)
    assert np.all(np.isfinite(g)) and np.abs(g).max() < 5.3
    np.testing.assert_array_equal(g, -g[::-1])
    np.testing.assert_allclose(g, exact, rtol=1e-6, atol=1e-6)
    # The low 9 bits of a word are not used.
    np.testing.assert_array_equal(g[:1000], np.asarray(fn(jnp.asarray((k[:1000] << 9) | 511))))


def test_normals_law_and_determinism():
    key = jax.random.key(3)
    g = _random.normals(key, 50_000, 4)
    assert g.shape == (50_000, 4) and g.dtype == jnp.float32
    np.testing.assert_array_equal(g, _random.normals(key, 50_000, 4))
    assert not np.array_equal(g, _random.normals(jax.random.key(4), 50_000, 4))
    flat = np.asarray(g, np.float64).reshape(-1)
    se = 1.0 / np.sqrt(flat.size)
    assert abs(flat.mean()) < 5 * se
    assert abs(flat.var() - 1.0) < 5 * np.sqrt(2.0) * se
    assert sps.kstest(flat, "norm").pvalue > 1e-3
    # Neighbours along both axes are uncorrelated.
    for a, b in ((flat[:-1], flat[1:]), (np.asarray(g)[:, 0], np.asarray(g)[:, 1])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_normals_blocks_are_prefixes():
    key = jax.random.key(5)
    short = _random.normals(key, 30, 3, block_rows=8)
    long = _random.normals(key, 100, 3, block_rows=8)
    np.testing.assert_array_equal(short, long[:30])


def test_normals_vmap_over_keys_equals_loop():
    keys = jax.random.split(jax.random.key(6), 3)
    batched = jax.vmap(lambda k: _random.normals(k, 17, 2))(keys)
    for b in range(3):
        np.testing.assert_array_equal(batched[b], _random.normals(keys[b], 17, 2))


def _tail_flows(h, w):
    return {
        "none": irwarp.flows.translation(h, w, 0.3, -0.2),
        "some": irwarp.flows.rotation(h, w, 25.0),
        # Zoom-out by 1/0.7 at 45 degrees: most polygons span 3 x 3 cells.
        "all": irwarp.flows.compose(
            irwarp.flows.rotation(h, w, 45.0), irwarp.flows.zoom(h, w, 0.7)
        ),
    }


@pytest.fixture
def small_grids_switch(monkeypatch):
    """Tail prefixes (lax.switch) even on the small grids of these tests."""
    monkeypatch.setattr(irwarp.records, "_TAIL_SWITCH_MIN_PIXELS", 0)


@pytest.mark.parametrize("name", ["none", "some", "all"])
def test_grid_tail_prefixes_give_identical_output(name, small_grids_switch):
    h, w = 24, 20
    rec = irwarp.grid_record(_tail_flows(h, w)[name])
    head, count = rec.num_head, int(rec.tail_count)
    # Everything past the pieces in use is zero padding.
    assert float(jnp.abs(rec.area[head + count :]).sum()) == 0.0
    if name == "none":
        assert count == 0
    if name == "all":
        assert count > 4 * rec.tail_block  # only the whole tail holds it
    x = jax.random.normal(jax.random.key(0), (h, w, 3))
    key = jax.random.key(1)
    full = apply_module.apply_flat(key, x, rec, rec.num_pieces - head)
    sizes = [s for s in apply_module.tail_sizes(rec) if s >= count]
    assert sizes
    assert len(apply_module.tail_sizes(rec)) == 3  # the switch is exercised
    # Op by op, every prefix that holds the pieces in use gives the same bits.
    for s in sizes:
        np.testing.assert_array_equal(apply_module.apply_flat(key, x, rec, s), full)
    # apply_record picks one prefix under lax.switch, compiled: equal up to float rounding.
    np.testing.assert_allclose(irwarp.apply_record(key, x, rec), full, rtol=0, atol=2e-6)
    np.testing.assert_allclose(jax.jit(irwarp.apply_record)(key, x, rec), full, rtol=0, atol=2e-6)


def test_grid_tail_vmap_over_flows_equals_loop(small_grids_switch):
    h, w = 24, 20
    flows = jnp.stack(list(_tail_flows(h, w).values()))
    x = jax.random.normal(jax.random.key(2), (3, h, w, 2))
    keys = jax.random.split(jax.random.key(3), 3)
    counts = [int(irwarp.grid_record(f).tail_count) for f in flows]
    assert len(set(counts)) == 3  # three different tails in one batch
    batched = jax.jit(jax.vmap(lambda k, xi, f: irwarp.warp(k, xi, f, method="grid")))(
        keys, x, flows
    )
    for b in range(3):
        one = irwarp.warp(keys[b], x[b], flows[b], method="grid")
        np.testing.assert_allclose(batched[b], one, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n,f,slots", [(6, 4, 4), (5, 3, 4), (7, 2, 1), (3, 1, 3), (4, 3, 2)])
def test_normal_slots_are_blocks_of_one_draw(n, f, slots):
    key = jax.random.key(11)
    full = _random.normals(key, slots * n, f)
    parts = jax.jit(lambda k: _random.normal_slots(k, n, f, slots))(key)
    assert len(parts) == slots
    for s, part in enumerate(parts):
        np.testing.assert_array_equal(part, full[s * n : (s + 1) * n])
