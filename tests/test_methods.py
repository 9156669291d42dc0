"""The method registry (irwarp.methods): one declaration per method, read by every entry point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import baselines, methods, pipeline, samplers

KEY = jax.random.key(3)
H, W, C = 8, 10, 2
NOISE = jax.random.normal(KEY, (H, W, C))
FLOW = irwarp.flows.rotation(H, W, 4.0) + 0.3


def test_builtin_methods_are_declared_once():
    names = methods.method_names()
    assert set(names) >= {
        "grid",
        "particle",
        "chang",
        "nearest",
        "bilinear",
        "fixed",
        "fresh",
        "splat",
        "lagrangian",
    }
    assert methods.method_names(rank=3) == ("particle", "splat")
    assert methods.method_names(kind="keyframe") == ("lagrangian",)
    assert methods.method_names(flow="forward") == ("splat",)
    assert irwarp.METHODS == methods.method_names(rank=2, kind="chain", flow="backward")
    grid = methods.get_method("grid")
    assert grid.defaults == {"capacity": 3, "edge_points": 2}
    assert methods.get_method("lagrangian").defaults == {
        "depth": irwarp.sheet.DEFAULT_DEPTH,
        "capacity": irwarp.sheet.DEFAULT_CAPACITY,
        "keyframe_every": None,
    }


@pytest.mark.parametrize(
    "spec, want",
    [
        ("grid", ("grid", {})),
        ("chang4", ("chang", {"upsample": 4})),
        ("chang16", ("chang", {"upsample": 16})),
        ("lagrangian3", ("lagrangian", {"depth": 3})),
        ("splat", ("splat", {})),
    ],
)
def test_parse_method(spec, want):
    assert methods.parse_method(spec) == want


@pytest.mark.parametrize("spec", ["grid4", "chang", "lagrange", "chang0", "lagrangian13", "", 4])
def test_parse_method_rejects(spec):
    if spec == "chang":  # a plain registered name parses; the check is the options'
        assert methods.parse_method(spec) == ("chang", {})
        return
    with pytest.raises(ValueError, match="method|must be an integer"):
        methods.parse_method(spec)


def test_resolve_checks_options_rank_and_flow():
    grid = methods.get_method("grid")
    assert grid.resolve({"capacity": 4}) == {"capacity": 4, "edge_points": 2}
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['upsample'\].*capacity"):
        grid.resolve({"upsample": 2})
    with pytest.raises(ValueError, match="capacity must be an integer >= 1; got 0"):
        grid.resolve({"capacity": 0})
    with pytest.raises(ValueError, match="capacity must be an integer"):
        grid.resolve({"capacity": True})
    with pytest.raises(ValueError, match="rank 3"):
        grid.resolve({}, rank=3)
    with pytest.raises(ValueError, match="takes a forward flow"):
        methods.get_method("splat").resolve({}, flow="backward")
    with pytest.raises(ValueError, match="hashable"):
        methods.freeze_options({"capacity": [3]})


def test_entry_points_reject_like_the_registry():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        irwarp.warp(KEY, NOISE, FLOW, method="nope")
    with pytest.raises(ValueError, match="warps whole sequences"):
        irwarp.warp(KEY, NOISE, FLOW, method="lagrangian")
    with pytest.raises(ValueError, match="forward flow"):
        irwarp.warp(KEY, NOISE, FLOW, method="splat")
    with pytest.raises(ValueError, match="capacity must be an integer"):
        irwarp.warp(KEY, NOISE, FLOW, method="grid", capacity=[3])
    with pytest.raises(ValueError, match="capacity must be an integer"):
        pipeline.warp_chunk(KEY, NOISE, FLOW[None], 1, method="grid", capacity=[3])
    with pytest.raises(ValueError, match="unknown option"):
        irwarp.warp_sequence(KEY, NOISE, FLOW[None], method="lagrangian", upsample=2)
    with pytest.raises(ValueError, match="unknown noise provider"):
        samplers.make_provider("nope")


def _double_nearest(key, x, flow):
    """A toy method for the registration test: nearest resampling, then the identity."""
    return baselines.nearest_warp(key, x, flow)


def test_register_method_reaches_every_entry_point():
    method = methods.Method(
        "toy_nearest",
        options={"unused": methods.Option(1, methods.integer(0))},
        warp={2: lambda key, x, flow, unused: _double_nearest(key, x, flow)},
        summary="nearest, registered by a test",
    )
    irwarp.register_method(method)
    try:
        with pytest.raises(ValueError, match="registered already"):
            irwarp.register_method(method)
        want = irwarp.warp(KEY, NOISE, FLOW, method="nearest")
        got = irwarp.warp(KEY, NOISE, FLOW, method="toy_nearest", unused=2)
        np.testing.assert_array_equal(got, want)
        flows = jnp.stack([FLOW, FLOW])
        seq = irwarp.warp_sequence(KEY, NOISE, flows, method="toy_nearest")
        np.testing.assert_array_equal(
            seq, irwarp.warp_sequence(KEY, NOISE, flows, method="nearest")
        )
        chunk = pipeline.warp_chunk(KEY, NOISE, flows, 1, method="toy_nearest")
        np.testing.assert_array_equal(chunk, seq[1:])
        provider = samplers.make_provider("toy_nearest", unused=0)
        assert provider.options == (("unused", 0),)
        prev = provider.init(KEY, (H, W, C), 1)
        nxt = provider.next(KEY, prev, 1, FLOW)
        ref = samplers.make_provider("nearest").next(KEY, prev, 1, FLOW)
        np.testing.assert_array_equal(nxt.stacked(), ref.stacked())
        with pytest.raises(ValueError, match="integer >= 0"):
            irwarp.warp(KEY, NOISE, FLOW, method="toy_nearest", unused=-1)
    finally:
        methods._REGISTRY.pop("toy_nearest")
    with pytest.raises(ValueError, match="unknown method"):
        irwarp.warp(KEY, NOISE, FLOW, method="toy_nearest")


def test_register_method_rejects_bad_declarations():
    with pytest.raises(ValueError, match="Method"):
        irwarp.register_method("grid")
    with pytest.raises(ValueError, match="name"):
        methods.Method("Bad Name", warp={2: _double_nearest})
    with pytest.raises(ValueError, match="warp= or record="):
        methods.Method("toy", ranks=(2, 3), warp={2: _double_nearest})
    with pytest.raises(ValueError, match="reads as 'chang'"):
        irwarp.register_method(methods.Method("chang8", warp={2: _double_nearest}))
    with pytest.raises(ValueError, match="kind"):
        methods.Method("toy", kind="other", warp={2: _double_nearest})
