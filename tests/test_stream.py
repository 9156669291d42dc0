"""The noise stream (irwarp.stream): one init/step pair that every driver runs.

Drivers (warp_sequence, chunked streaming, sharded batches, the samplers' providers) must give
the stream's frames bit for bit; the public calls compile themselves and reject bad keys and
empty inputs by one rule.
"""

import functools
import importlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import pipeline, samplers

KEY = jax.random.key(11)
H, W, C = 10, 12, 2
NOISE0 = jax.random.normal(jax.random.key(1), (2, H, W, C))


def _flows(t=5, h=H, w=W):
    rot = irwarp.flows.rotation(h, w, 3.0)
    return jnp.stack([rot + 0.05 * i + 0.21 for i in range(t)])


CASES = [
    ("grid", {}),
    ("particle", {}),
    ("splat", {}),
    ("chang", {"upsample": 2}),
    ("nearest", {}),
    ("lagrangian", {"depth": 2}),
    ("lagrangian", {"depth": 2, "keyframe_every": 2}),
]


@pytest.mark.parametrize("method, options", CASES)
def test_any_chunking_equals_warp_sequence(method, options):
    flows = _flows()
    want = irwarp.warp_sequence(KEY, NOISE0, flows, method=method, **options)
    stream = irwarp.noise_stream(method, **options)
    for cuts in ((1, 4), (2, 2, 1), (5,)):
        state, got, start = stream.init(NOISE0), [NOISE0[None]], 0
        for n in cuts:
            state, frames = stream.scan(KEY, state, flows[start : start + n])
            got.append(frames.astype(NOISE0.dtype))
            start += n
        np.testing.assert_array_equal(jnp.concatenate(got), want, err_msg=f"{method} {cuts}")
    # step by step, and warp_chunk from the stream state (any method, lagrangian included)
    state = stream.init(NOISE0)
    for t in range(flows.shape[0]):
        state, frame = stream.step(KEY, state, flows[t])
        np.testing.assert_array_equal(frame.astype(NOISE0.dtype), want[t + 1])
    state = stream.init(NOISE0)
    state, _ = stream.scan(KEY, state, flows[:2])
    tail = pipeline.warp_chunk(KEY, state, flows[2:], method=method, **options)
    np.testing.assert_array_equal(tail.astype(NOISE0.dtype), want[3:])


def test_lagrangian_one_state_type():
    flows = _flows(3)
    state = pipeline.lagrangian_start(NOISE0[0])
    assert isinstance(state, irwarp.StreamState)
    assert pipeline.LagrangianState is irwarp.StreamState is samplers.SheetState
    frames, state = pipeline.lagrangian_chunk(KEY, state, flows, depth=2)
    want = irwarp.warp_sequence(KEY, NOISE0[0], flows, method="lagrangian", depth=2)
    np.testing.assert_array_equal(frames, want[1:])
    assert int(state.t) == 3 and state.keyframe.shape == (H, W, C)


def test_warp_chunk_checks_t0_and_state():
    flows = _flows(2)
    for bad in (0, -1, 1.5, True, jnp.array([1, 2])):
        with pytest.raises(ValueError, match="t0"):
            pipeline.warp_chunk(KEY, NOISE0, flows, bad)
    with pytest.raises(ValueError, match="stream state"):
        pipeline.warp_chunk(KEY, NOISE0, flows, 1, method="lagrangian")
    state = irwarp.noise_stream("grid").init(NOISE0)
    with pytest.raises(ValueError, match="after frame 0"):
        pipeline.warp_chunk(KEY, state, flows, 3)
    with pytest.raises(ValueError, match="keyframe method"):
        irwarp.noise_stream("lagrangian").scan(KEY, state, flows)


@pytest.mark.parametrize("name", ["grid", "particle", "lagrangian"])
def test_providers_take_per_example_flows(name):
    options = {"depth": 2} if name == "lagrangian" else {}
    provider = samplers.make_provider(name, **options)
    prev = provider.init(KEY, (2, H, W, C), 1)
    fl = jnp.stack([_flows(1)[0], irwarp.flows.translation(H, W, 0.4, -0.3)])
    nxt = provider.next(KEY, prev, 1, fl)
    assert nxt.initial.shape == (2, H, W, C) and nxt.steps.shape == (1, 2, H, W, C)
    keys = jax.random.split(KEY, 2)
    for b in range(2):
        stream = provider.stream
        carried = prev.stacked()[:, b]
        if name == "lagrangian":
            state = stream.init(carried)
        else:
            state = irwarp.StreamState(carried, None, jnp.int32(0))
        _, want = stream.step(keys[b], state, fl[b])
        np.testing.assert_array_equal(nxt.stacked()[:, b], want)
    if name == "lagrangian":  # the state carries one composed flow per example
        assert nxt.state.total_flow.shape == (2, H, W, 2)
        again = provider.next(KEY, nxt, 2, fl)
        assert np.isfinite(np.asarray(again.stacked())).all()


# ----------------------------------------------------------------------------- compiled calls


def test_public_calls_compile_once_per_shape():
    warp_module = importlib.import_module("irwarp.warp")  # the function irwarp.warp hides it

    noise = jax.random.normal(KEY, (3, 9, 7, 2))
    flow = irwarp.flows.rotation(9, 7, 2.0)
    irwarp.warp(KEY, noise, flow, method="particle")
    size = warp_module._warp_jit._cache_size()
    for i in range(3):
        irwarp.warp(jax.random.fold_in(KEY, i), noise + i, flow * i, method="particle")
    assert warp_module._warp_jit._cache_size() == size


@pytest.mark.parametrize("method", ["grid", "particle", "chang"])
def test_eager_equals_users_jit_and_composes(method):
    noise = jax.random.normal(KEY, (2, H, W, C))
    flow = _flows(1)[0]
    eager = irwarp.warp(KEY, noise, flow, method=method)
    jitted = jax.jit(functools.partial(irwarp.warp, method=method))(KEY, noise, flow)
    np.testing.assert_allclose(eager, jitted, atol=2e-6)
    keys = jax.random.split(KEY, 2)
    vm = jax.vmap(lambda k, x: irwarp.warp(k, x, flow, method=method))(keys, noise)
    for b in range(2):
        np.testing.assert_allclose(
            vm[b], irwarp.warp(keys[b], noise[b], flow, method=method), atol=2e-6
        )

    def body(x, t):
        y = irwarp.warp(jax.random.fold_in(KEY, t), x, flow, method=method)
        return y, y

    _, scanned = jax.lax.scan(body, noise, jnp.arange(1, 3))
    seq = irwarp.warp_sequence(KEY, noise, jnp.stack([flow, flow]), method=method)
    np.testing.assert_allclose(scanned, seq[1:], atol=2e-6)


# ----------------------------------------------------------------------------- one rule for bad input


BAD_KEYS = [0, 1.5, None, np.uint32(7), jnp.zeros((3,), jnp.uint32), jnp.zeros((2,), jnp.float32)]


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda k: type(k).__name__)
def test_every_entry_point_rejects_a_bad_key(bad):
    flow = _flows(1)[0]
    calls = [
        lambda: irwarp.warp(bad, NOISE0, flow),
        lambda: irwarp.warp_forward(bad, NOISE0, flow),
        lambda: irwarp.apply_record(bad, NOISE0, irwarp.particle_record(flow)),
        lambda: irwarp.warp_sequence(bad, NOISE0, flow[None]),
        lambda: irwarp.warp_sequence(bad, NOISE0, flow[None], method="lagrangian", depth=1),
        lambda: pipeline.warp_chunk(bad, NOISE0, flow[None], 1),
        lambda: pipeline.first_frame(bad, (H, W, C)),
        lambda: irwarp.noise_stream("grid").step(bad, irwarp.noise_stream().init(NOISE0), flow),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="key"):
            call()
    with pytest.raises(ValueError, match="single PRNG key"):
        irwarp.warp(jax.random.split(KEY, 2), NOISE0, flow)


@pytest.mark.parametrize("method", ["grid", "particle", "chang", "nearest", "fresh", "fixed"])
def test_empty_inputs_give_empty_outputs(method):
    for shape in ((H, W, 0), (0, H, W, C), (2, 0, C)):
        h, w = shape[-3], shape[-2]
        noise = jnp.zeros(shape, jnp.float32)
        flow = jnp.zeros((h, w, 2), jnp.float32)
        out = irwarp.warp(KEY, noise, flow, method=method)
        assert out.shape == shape and out.dtype == noise.dtype
    # B = 0 with a batched flow
    out = irwarp.warp(KEY, jnp.zeros((0, H, W, C)), jnp.zeros((0, H, W, 2)), method=method)
    assert out.shape == (0, H, W, C)
    # vmap over zero keys
    keys = jax.random.split(KEY, 0)
    out = jax.vmap(lambda k: irwarp.warp(k, NOISE0[0], _flows(1)[0], method=method))(keys)
    assert out.shape == (0, H, W, C)


@pytest.mark.parametrize("method, options", CASES)
def test_zero_flows_give_frame_zero_for_every_method(method, options):
    out = irwarp.warp_sequence(KEY, NOISE0, jnp.zeros((0, H, W, 2)), method=method, **options)
    np.testing.assert_array_equal(out, NOISE0[None])


# ----------------------------------------------------------------------------- sharding

_SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import irwarp
    from irwarp import pipeline
    assert jax.device_count() == 4, jax.devices()
    h, w, c = 8, 10, 2
    for b in (3, 6, 4, 5):
        keys = jax.random.split(jax.random.key(0), b)
        x0 = jax.random.normal(jax.random.key(1), (b, h, w, c))
        fl = jnp.broadcast_to(irwarp.flows.rotation(h, w, 3.0) + 0.2, (b, 2, h, w, 2))
        out = pipeline.warp_videos(keys, x0, fl, method="particle")
        spec = out.sharding.spec
        devices = len(out.sharding.device_set)
        expect = max(d for d in range(1, 5) if b % d == 0)
        assert devices == expect, (b, devices)
        assert spec[0] is not None or devices == 1, (b, spec)
        per_device = {s.data.shape[0] for s in out.addressable_shards}
        assert per_device == {b // expect}, (b, per_device)
        for i in range(b):
            want = irwarp.warp_sequence(keys[i], x0[i], fl[i], method="particle")
            np.testing.assert_allclose(out[i], want, atol=1e-5)
    print("ok")
    """
)


def test_warp_videos_is_batch_sharded_for_any_batch():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    res = subprocess.run(
        [sys.executable, "-c", _SHARDING_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
