"""Exactness, direction, determinism, dtypes and bad input of the warp entry points."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp

H, W, C = 9, 11, 3
EXACT = ("grid", "particle", "splat")
ALL_BACKWARD = ("grid", "particle", "chang", "nearest", "bilinear", "fixed", "fresh")


def _noise(seed=0, shape=(H, W, C), dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _warp(method, key, x, flow, **options):
    """Backward-flow methods take ``flow``; the splat takes the forward flow of a rigid motion."""
    if method == "splat":
        return irwarp.warp_forward(key, x, -flow)
    return irwarp.warp(key, x, flow, method=method, **options)


def _const(dx, dy, h=H, w=W):
    return jnp.broadcast_to(jnp.asarray([dx, dy], jnp.float32), (h, w, 2))


@pytest.mark.parametrize("method", EXACT)
def test_identity_is_exact(method):
    x = _noise(shape=(2, H, W, C))
    y = _warp(method, jax.random.key(1), x, jnp.zeros((H, W, 2)))
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("method", EXACT)
@pytest.mark.parametrize("dx,dy", [(2, 0), (-3, 0), (0, 1), (0, -2), (1, -1), (-2, 3)])
def test_integer_translation_is_an_exact_shift(method, dx, dy):
    """Backward flow (dx, dy): new pixel (i, j) shows old pixel (i + dy, j + dx)."""
    x = np.asarray(_noise())
    y = np.asarray(_warp(method, jax.random.key(2), jnp.asarray(x), _const(dx, dy)))
    ii, jj = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    si, sj = ii + dy, jj + dx
    inside = (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
    np.testing.assert_array_equal(y[inside], x[si[inside], sj[inside]])
    # Pixels entering the frame get fresh noise: finite and not a copy of anything in x.
    entering = y[~inside]
    assert entering.size > 0 and np.all(np.isfinite(entering))
    assert not np.any(np.isin(entering, x))


@pytest.mark.parametrize("method", ("grid", "particle", "splat", "chang", "bilinear"))
@pytest.mark.parametrize("axis", (0, 1))
@pytest.mark.parametrize("sign", (1.0, -1.0))
def test_fractional_motion_moves_the_right_way(method, axis, sign):
    """A 3/8 px shift: Y correlates 5/8 with the cell under it and 3/8 with the next one along the
    flow, and 0 with the cell on the other side (DESIGN section 4, item 6). 3/8 is a multiple of
    1/16, so Chang et al. at N = 16 sees the same areas."""
    c = 4096
    x = _noise(3, (4, 5, c))
    d = [0.0, 0.0]
    d[axis] = 0.375 * sign
    flow = _const(*d, h=4, w=5)
    kw = {"upsample": 16} if method == "chang" else {}
    y = np.asarray(_warp(method, jax.random.key(4), x, flow, **kw), np.float64)
    x = np.asarray(x, np.float64)
    step = int(sign)
    i, j = 1, 2
    ahead = (i + step, j) if axis == 1 else (i, j + step)
    behind = (i - step, j) if axis == 1 else (i, j - step)
    corr = lambda s: float(np.mean(y[i, j] * x[s]))
    se = 1 / np.sqrt(c)
    if method == "bilinear":  # resampling: 5/8 X_s + 3/8 X_next, not unit variance
        assert abs(corr(ahead) - 0.375) < 5 * se
    else:
        assert abs(corr((i, j)) - 0.625) < 5 * se
        assert abs(corr(ahead) - 0.375) < 5 * se
    assert abs(corr(behind)) < 5 * se


@pytest.mark.parametrize("method", ALL_BACKWARD + ("splat",))
def test_same_key_same_output_different_key_different_output(method):
    x = _noise()
    flow = _const(0.3, -0.7)
    a = _warp(method, jax.random.key(7), x, flow)
    b = _warp(method, jax.random.key(7), x, flow)
    np.testing.assert_array_equal(a, b)
    if method != "fixed":
        c = _warp(method, jax.random.key(8), x, flow)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("method", ("grid", "particle", "chang", "bilinear"))
def test_jit_equals_eager(method):
    x = _noise()
    flow = irwarp.flows.rotation(H, W, 12.0) + _const(0.2, 0.1)
    eager = _warp(method, jax.random.key(9), x, flow)
    jitted = jax.jit(lambda k, x, f: _warp(method, k, x, f))(jax.random.key(9), x, flow)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)


def test_vmap_over_batch_equals_python_loop():
    keys = jax.random.split(jax.random.key(10), 4)
    xs = _noise(shape=(4, H, W, C))
    flows = jnp.stack([_const(0.1 * b, -0.2 * b) for b in range(4)])
    batched = jax.vmap(lambda k, x, f: irwarp.warp(k, x, f, method="grid"))(keys, xs, flows)
    for b in range(4):
        one = irwarp.warp(keys[b], xs[b], flows[b], method="grid")
        np.testing.assert_allclose(batched[b], one, atol=1e-6)


def test_batched_flow_with_leading_dims():
    x = _noise(shape=(2, 3, H, W, C))
    flows = jnp.broadcast_to(_const(1.0, 0.0), (2, 3, H, W, 2))
    y = irwarp.warp(jax.random.key(0), x, flows, method="particle")
    assert y.shape == x.shape
    np.testing.assert_array_equal(y[..., :, : W - 1, :], x[..., :, 1:, :])


def test_warp_sequence_equals_stepwise():
    x0 = _noise()
    t = 8
    flows = jnp.stack([_const(0.3 * np.cos(k), 0.25 * np.sin(k)) for k in range(t)])
    key = jax.random.key(11)
    seq = irwarp.warp_sequence(key, x0, flows, method="grid")
    assert seq.shape == (t + 1, H, W, C)
    np.testing.assert_array_equal(seq[0], x0)
    step = jax.jit(lambda k, x, f: irwarp.warp(k, x, f, method="grid"))
    frame = x0
    for k in range(1, t + 1):
        frame = step(jax.random.fold_in(key, k), frame, flows[k - 1])
        # Same draws; only XLA's fusion inside the scan may round differently.
        np.testing.assert_allclose(seq[k], frame, atol=2e-5 * k)


def test_warp_sequence_splat_and_prefix_consistency():
    """Frame t depends only on (key, t): a longer sequence starts with the shorter one."""
    x0 = _noise()
    flows = jnp.stack([_const(0.4, 0.1)] * 5)
    long = irwarp.warp_sequence(jax.random.key(1), x0, flows, method="splat")
    short = irwarp.warp_sequence(jax.random.key(1), x0, flows[:3], method="splat")
    np.testing.assert_allclose(long[:4], short, atol=1e-6)


def test_no_retracing_across_frames():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(key, x, flow):
        return irwarp.warp(key, x, flow, method="grid")

    x = _noise()
    for t in range(3):
        x = step(jax.random.fold_in(jax.random.key(0), t), x, _const(0.1 * t, 0.2))
    assert x.shape == (H, W, C)


@pytest.mark.parametrize("dtype", (jnp.bfloat16, jnp.float16))
def test_low_precision_in_low_precision_out(dtype):
    x = _noise(dtype=dtype)
    y = irwarp.warp(jax.random.key(0), x, _const(0.5, 0.25), method="grid")
    assert y.dtype == dtype
    assert jnp.all(jnp.isfinite(y.astype(jnp.float32)))
    np.testing.assert_array_equal(irwarp.warp(jax.random.key(0), x, jnp.zeros((H, W, 2))), x)


def test_legacy_and_typed_keys():
    x = _noise()
    flow = _const(0.5, 0.5)
    a = irwarp.warp(jax.random.PRNGKey(3), x, flow)
    b = irwarp.warp(jax.random.key(3), x, flow)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ALL_BACKWARD + ("splat",))
@pytest.mark.parametrize("bad", (np.nan, np.inf, -np.inf, 1e30))
def test_nonfinite_and_huge_flows_give_finite_output(method, bad):
    x = _noise()
    flow = np.zeros((H, W, 2), np.float32)
    flow[2:5, 3:6] = bad
    flow[7, 1, 0] = bad
    y = _warp(method, jax.random.key(0), x, jnp.asarray(flow))
    assert jnp.all(jnp.isfinite(y))
    if method in EXACT and not np.isfinite(bad):
        # Only the marked pixels are disoccluded; the rest of the identity flow is exact.
        marked = ~np.all(np.isfinite(flow), -1)
        np.testing.assert_array_equal(np.asarray(y)[~marked], np.asarray(x)[~marked])
        assert not np.any(np.isin(np.asarray(y)[marked], np.asarray(x)))


def test_overflow_is_reported_and_capacity_fixes_it():
    flow = irwarp.flows.zoom(16, 16, 0.35)
    small = irwarp.grid_record(flow, capacity=3)
    assert int(small.num_overflow()) > 0 and float(small.overflow_area()) > 1.0
    big = irwarp.grid_record(flow, capacity=4)
    assert int(big.num_overflow()) == 0
    # The dropped area is renormalised away: the output still has unit variance.
    y = irwarp.apply_record(jax.random.key(0), _noise(shape=(16, 16, 256)), small)
    assert abs(float(jnp.var(y)) - 1.0) < 5 * np.sqrt(2 / y.size)


def test_grid_failsafe_on_folding_flow():
    h, w = 12, 12
    flow = irwarp.flows.fold_over(h, w)
    rec = irwarp.grid_record(flow)
    assert int(rec.num_failsafe()) > 0
    per_source = jax.ops.segment_sum(rec.area, rec.src, num_segments=h * w)
    assert float(per_source.max()) <= 1.0 + 1e-5
    assert float(rec.area.min()) >= 0.0


def test_record_serves_many_noise_tensors():
    rec = irwarp.particle_record(_const(0.3, 0.2))
    for shape in ((H, W, 1), (5, H, W, 2), (2, 2, H, W, 7)):
        y = irwarp.apply_record(jax.random.key(0), _noise(shape=shape), rec)
        assert y.shape == shape


class TestBadInput:
    key = jax.random.key(0)

    def test_unknown_method_lists_known(self):
        with pytest.raises(ValueError, match="grid, particle, chang"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H, W, 2)), method="magic")

    def test_unknown_option(self):
        with pytest.raises(ValueError, match="unknown option"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H, W, 2)), method="particle", capacity=3)
        with pytest.raises(ValueError, match="unknown option"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H, W, 2)), method="grid", upsample=3)

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"\(\.\.\., H, W, C\)"):
            irwarp.warp(self.key, jnp.zeros((H, W)), jnp.zeros((H, W, 2)))
        with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
            irwarp.warp(self.key, _noise(), jnp.zeros((W, 2)))

    def test_hw_mismatch(self):
        with pytest.raises(ValueError, match="share"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H + 1, W, 2)))
        with pytest.raises(ValueError, match="share"):
            irwarp.warp_forward(self.key, _noise(), jnp.zeros((H, W + 1, 2)))

    def test_flow_last_axis(self):
        with pytest.raises(ValueError, match="got \\(9, 11, 3\\)"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H, W, 3)))

    def test_integer_noise(self):
        with pytest.raises(ValueError, match="floating"):
            irwarp.warp(self.key, jnp.zeros((H, W, C), jnp.int32), jnp.zeros((H, W, 2)))

    @pytest.mark.parametrize("n", (0, -1, 2.5))
    def test_upsample(self, n):
        with pytest.raises(ValueError, match="upsample"):
            irwarp.warp(self.key, _noise(), jnp.zeros((H, W, 2)), method="chang", upsample=n)

    def test_capacity_and_edge_points(self):
        with pytest.raises(ValueError, match="capacity"):
            irwarp.grid_record(jnp.zeros((H, W, 2)), capacity=0)
        with pytest.raises(ValueError, match="edge_points"):
            irwarp.grid_record(jnp.zeros((H, W, 2)), edge_points=0)

    def test_batched_flow_leading_mismatch(self):
        with pytest.raises(ValueError, match="leading"):
            irwarp.warp(self.key, _noise(shape=(2, H, W, C)), jnp.zeros((3, H, W, 2)))

    def test_apply_record_grid_mismatch(self):
        rec = irwarp.particle_record(jnp.zeros((H, W, 2)))
        with pytest.raises(ValueError, match="record's grid"):
            irwarp.apply_record(self.key, jnp.zeros((H, W + 2, C)), rec)

    def test_sequence_shapes(self):
        with pytest.raises(ValueError, match=r"\(T, H, W, 2\)"):
            irwarp.warp_sequence(self.key, _noise(), jnp.zeros((H, W, 2)))
