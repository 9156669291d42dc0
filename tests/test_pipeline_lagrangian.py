"""Streaming method "lagrangian" through irwarp.pipeline: chunking, composition, occlusion, sharding."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import flows as flows_lib
from irwarp import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W, C = 8, 10, 2
# One set of static options (and a chunk length of 1 or 3) everywhere: one compilation each.
OPTS = dict(depth=2, capacity=4.0, keyframe_every=3)


def _flows(t, h, w, seed=0):
    """Smooth random backward flows with a NaN (occluded) patch."""
    coarse = 1.5 * jax.random.normal(jax.random.key(seed), (t, 3, 3, 2))
    fl = jax.image.resize(coarse, (t, h, w, 2), "linear")
    return fl.at[:, 2:4, 3:5].set(jnp.nan)


def _stream(key, x0, flows, sizes, **opts):
    state = pipeline.lagrangian_start(x0)
    frames, start = [np.asarray(x0)], 0
    for n in sizes:
        y, state = pipeline.lagrangian_chunk(key, state, flows[start : start + n], **opts)
        assert y.shape == (n, *x0.shape) and y.dtype == jnp.float32
        assert int(state.t) == start + n
        frames += list(np.asarray(y))
        start += n
    return np.stack(frames), state


def test_chunks_are_bit_identical_to_warp_sequence():
    """Frames 1..7 with keyframes at 3 and 6 (inside chunks and at a chunk boundary), occluded
    pixels, chunks of 1 and of 3, 3, 1: the same bits as irwarp.warp_sequence. Chunk boundaries
    only split the scan; each frame is the same lagrangian_frame call on the same values."""
    t = 7
    key = jax.random.key(3)
    flows = _flows(t, H, W)
    x0 = pipeline.first_frame(key, (H, W, C))
    whole = np.asarray(irwarp.warp_sequence(key, x0, flows, method="lagrangian", **OPTS))
    assert np.isfinite(whole).all()
    for sizes in ([1] * t, [3, 3, 1]):
        got, state = _stream(key, x0, flows, sizes, **OPTS)
        np.testing.assert_array_equal(got, whole, err_msg=f"chunks {sizes}")
    # After frame 6 (a keyframe) and frame 7: the keyframe is frame 6, the flow is frame 7's.
    np.testing.assert_array_equal(np.asarray(state.keyframe), whole[6])
    np.testing.assert_array_equal(np.asarray(state.total_flow), np.asarray(flows[6]))
    # A different key gives different frames (and the same frame 0).
    other, _ = _stream(jax.random.key(4), x0, flows, [3, 3, 1], **OPTS)
    assert not np.any(other[1:] == whole[1:])


def test_composed_flow_is_psi_old_after_psi_new():
    """The state's flow is compose(total, new): psi_t = psi_{t-1} o psi_new, checked against the
    closed form for an affine older flow f_a(p) = A p + c and a translation b (bilinear
    interpolation is exact for affine fields, away from the clamped border): total(p) = b +
    A (p + b) + c. The other order, f_a(p) + b, differs by A b."""
    key = jax.random.key(0)
    x0 = jax.random.normal(jax.random.key(1), (H, W, C))
    a = np.array([[0.05, -0.02], [0.03, 0.04]], np.float32)
    cvec = np.array([0.3, -0.2], np.float32)
    yy, xx = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    p = np.stack([xx, yy], -1).astype(np.float32)
    fa = p @ a.T + cvec
    b = np.array([1.0, 0.5], np.float32)
    fb = np.broadcast_to(b, (H, W, 2))
    _, state = _stream(key, x0, jnp.stack([fa, fb]), [1, 1], **OPTS)
    expected = b + (p + b) @ a.T + cvec
    inner = (slice(1, H - 2), slice(1, W - 2))  # p + b stays inside the centre lattice
    np.testing.assert_allclose(np.asarray(state.total_flow)[inner], expected[inner], atol=1e-5)
    assert np.abs((fa + b)[inner] - expected[inner]).max() > 0.04  # the orders are distinguishable
    # Two translations compose to their sum.
    _, state = _stream(key, x0, jnp.stack([fb, 2 * fb]), [1, 1], **OPTS)
    np.testing.assert_allclose(np.asarray(state.total_flow)[inner], 3 * fb[inner], atol=1e-6)


def test_occluded_pixels_get_fresh_noise():
    """Where the composed flow is non-finite the noise is fresh (it does not depend on the
    keyframe), everywhere else it comes from the keyframe's sheet. A NaN pixel of the newest flow
    makes the composed flow NaN there; a NaN patch of an older flow is bridged by compose's
    renormalised interpolation except where all 4 samples are NaN."""
    key = jax.random.key(5)
    x0 = jax.random.normal(jax.random.key(6), (H, W, C))
    x1 = jax.random.normal(jax.random.key(7), (H, W, C))
    old = jnp.full((H, W, 2), 0.25).at[2:4, 3:5].set(jnp.nan)
    new = jnp.full((H, W, 2), 0.25).at[5, 6].set(jnp.nan)
    flows = jnp.stack([old, new])
    y0, s0 = _stream(key, x0, flows, [1, 1], **OPTS)
    y1, _ = _stream(key, x1, flows, [1, 1], **OPTS)
    _, _, info = pipeline.lagrangian_chunk(
        key, pipeline.lagrangian_start(x0), flows, **OPTS, return_info=True
    )
    np.testing.assert_array_equal(np.asarray(info["fresh"]), [4, 2])
    np.testing.assert_array_equal(np.asarray(info["dropped_nodes"]), [0, 0])
    # Frame 2: p + (0.25, 0.25) sits between the centres of (i, j), (i, j+1), (i+1, j), (i+1, j+1)
    # of frame 1's composed flow; only (2, 3) has all four in the NaN patch.
    nan2 = ~np.all(np.isfinite(np.asarray(s0.total_flow)), axis=-1)
    expected = np.zeros((H, W), bool)
    expected[5, 6] = expected[2, 3] = True
    np.testing.assert_array_equal(nan2, expected)
    nan1 = ~np.all(np.isfinite(np.asarray(old)), axis=-1)
    for f, nan in ((1, nan1), (2, nan2)):
        same = np.all(y0[f] == y1[f], axis=-1)
        np.testing.assert_array_equal(same, nan, err_msg=f"frame {f}")
        assert np.isfinite(y0[f]).all()


def test_keyframe_restart_state():
    """At frame K the state's keyframe becomes frame K's noise and the composed flow restarts."""
    key = jax.random.key(2)
    x0 = pipeline.first_frame(key, (H, W, C))
    flows = _flows(4, H, W, seed=1)
    frames, state = _stream(key, x0, flows, [3], **OPTS)
    np.testing.assert_array_equal(np.asarray(state.keyframe), frames[3])
    np.testing.assert_array_equal(np.asarray(state.total_flow), 0.0)
    assert int(state.t) == 3


def test_bad_input():
    x0 = jnp.zeros((H, W, C))
    state = pipeline.lagrangian_start(x0)
    flows = jnp.zeros((2, H, W, 2))
    with pytest.raises(ValueError, match="lagrangian_chunk"):
        pipeline.warp_chunk(jax.random.key(0), x0, flows, 1, method="lagrangian")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['edge_points'\]"):
        pipeline.check_method("lagrangian", {"edge_points": 2})
    with pytest.raises(ValueError, match="depth must be an integer"):
        pipeline.check_method("lagrangian", {"depth": 2.5})
    with pytest.raises(ValueError, match="keyframe_every must be None or an integer >= 1"):
        pipeline.lagrangian_chunk(jax.random.key(0), state, flows, keyframe_every=0)
    with pytest.raises(ValueError, match=r"flows must have shape \(T, H, W, 2\) = \(T, 8, 10, 2\)"):
        pipeline.lagrangian_chunk(jax.random.key(0), state, jnp.zeros((2, H, W + 1, 2)))
    with pytest.raises(ValueError, match="state must be a StreamState"):
        pipeline.lagrangian_chunk(jax.random.key(0), x0, flows)
    with pytest.raises(ValueError, match="noise must be a floating-point"):
        pipeline.lagrangian_start(jnp.zeros((H, W, C), jnp.int32))


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import irwarp
    from irwarp import pipeline
    assert jax.device_count() == 8, jax.devices()
    b, h, w, c, t = 5, 6, 8, 2, 2  # 5 videos on 8 devices: one video on each of 5 devices
    opts = dict(depth=1, capacity=4.0, keyframe_every=1)
    keys = jax.random.split(jax.random.key(1), b)
    x0 = jax.random.normal(jax.random.key(2), (b, h, w, c))
    flows = 1.3 * jax.random.normal(jax.random.key(3), (b, t, h, w, 2))
    flows = flows.at[:, :, 1, 1].set(jnp.nan)
    out = pipeline.warp_videos(keys, x0, flows, method="lagrangian", **opts)
    assert out.shape == (b, t + 1, h, w, c)
    # Batch-sharded on the largest device count that divides B, never replicated (issue 18).
    assert len(out.sharding.device_set) == 5, out.sharding
    assert out.sharding.spec[0] == "batch", out.sharding
    assert {s.data.shape[0] for s in out.addressable_shards} == {1}
    assert out.dtype == jnp.float32
    # Equal up to float32 rounding (XLA may vectorise per-device batches differently).
    for i in range(b):
        ref = irwarp.warp_sequence(keys[i], x0[i], flows[i], method="lagrangian", **opts)
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(ref), rtol=2e-6, atol=2e-6)
    print("SHARDED_OK")
    """
)


def test_sharded_lagrangian_on_8_cpu_devices():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stderr[-3000:]


def test_compose_with_nan_matches_flows_compose():
    """The pipeline composes as irwarp.flows.compose, NaN included (equal up to 1 float32 ulp:
    XLA fuses the bilinear sampling differently inside the jitted scan than eagerly)."""
    key = jax.random.key(0)
    x0 = jax.random.normal(jax.random.key(1), (H, W, C))
    flows = _flows(2, H, W, seed=2)
    _, state = _stream(key, x0, flows, [1, 1], **OPTS)
    expected = flows_lib.compose(flows_lib.compose(jnp.zeros((H, W, 2)), flows[0]), flows[1])
    got, expected = np.asarray(state.total_flow), np.asarray(expected)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).any()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
