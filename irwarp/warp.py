"""Noise warping: applying partition records and the public ``warp`` entry points.

All randomness of irwarp lives here (and in :mod:`irwarp.bridge` / :mod:`irwarp.baselines`). The
warp of noise ``X`` by a record is ``Y_d = sum_s inc_ds / sqrt(A_d)`` where ``inc_ds`` are Brownian
bridge increments of ``X_s`` over the pieces of cell ``s`` and ``A_d = sum_s a_ds``; pixels with
``A_d = 0`` (disoccluded) get fresh N(0, 1) noise (DESIGN.md section 2).

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from irwarp import baselines, records
from irwarp.records import PartitionRecord

__all__ = ["apply_record", "warp", "warp_forward", "warp_sequence", "METHODS"]

# Unused remainders of a cell below this are treated as 0 (about 100 float32 ulps at 1).
_REMAINDER_EPS = 1e-5
# Random numbers are drawn in blocks of this many (see _normals).
_NORMAL_BLOCK = 1 << 20


def _grid(key, x, flow, *, capacity=3, edge_points=2):
    rec = records.grid_record(flow, capacity=capacity, edge_points=edge_points)
    return _apply_flat(key, x, rec)


def _particle(key, x, flow):
    return _apply_flat(key, x, records.particle_record(flow))


_METHODS: dict[str, Callable] = {
    "grid": _grid,
    "particle": _particle,
    "chang": baselines.chang_warp,
    "nearest": baselines.nearest_warp,
    "bilinear": baselines.bilinear_warp,
    "fixed": baselines.fixed_warp,
    "fresh": baselines.fresh_warp,
}
METHODS: tuple[str, ...] = tuple(_METHODS)
_OPTIONS: dict[str, frozenset[str]] = {
    "grid": frozenset({"capacity", "edge_points"}),
    "particle": frozenset(),
    "chang": frozenset({"upsample", "capacity"}),
    "nearest": frozenset(),
    "bilinear": frozenset(),
    "fixed": frozenset(),
    "fresh": frozenset(),
}


def _check_method(method: str, options: dict) -> Callable:
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[method])) or "none"
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}"
        )
    return _METHODS[method]


def _check_noise(noise: jax.Array) -> jax.Array:
    noise = jnp.asarray(noise)
    if noise.ndim < 3:
        raise ValueError(f"noise must have shape (..., H, W, C); got {noise.shape}")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    return noise


def _check_flow_for(noise: jax.Array, flow: jax.Array, name: str = "flow") -> jax.Array:
    flow = jnp.asarray(flow)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (H, W, 2) or (..., H, W, 2); got {flow.shape}")
    if jnp.issubdtype(flow.dtype, jnp.complexfloating) or flow.dtype == jnp.bool_:
        raise ValueError(f"{name} must be real-valued; got dtype {flow.dtype}")
    if flow.shape[-3:-1] != noise.shape[-3:-1]:
        raise ValueError(
            f"{name} and noise must share (H, W); got {name} {flow.shape} and noise {noise.shape}"
        )
    if flow.ndim > 3 and flow.shape[:-3] != noise.shape[:-3]:
        raise ValueError(
            f"a batched {name} must have the noise's leading dimensions; got {name} "
            f"{flow.shape} for noise {noise.shape}"
        )
    return flow


def _fold(noise: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``(..., H, W, C)`` -> float32 ``(H, W, L*C)`` and the inverse map back to the input dtype."""
    shape, dtype = noise.shape, noise.dtype
    lead = shape[:-3]
    h, w, c = shape[-3:]
    x = noise.astype(jnp.float32).reshape((-1, h, w, c))
    x = jnp.moveaxis(x, 0, 2).reshape(h, w, -1)

    def unfold(y: jax.Array) -> jax.Array:
        y = jnp.moveaxis(y.reshape(h, w, -1, c), 2, 0).reshape(lead + (h, w, c))
        return y.astype(dtype)

    return x, unfold


def _normals(key: jax.Array, m: int, f: int) -> jax.Array:
    """``(m, f)`` i.i.d. N(0, 1) float32, drawn in blocks of about 2^20 numbers.

    Block ``c`` uses ``fold_in(key, c)``; the block size is a fixed function of ``f``, so the draws
    depend only on ``(key, m, f)``. On CPU, threefry over one huge array runs out of cache and is
    about twice as slow per number as over 2^20-number blocks.
    """
    rows = max(1, _NORMAL_BLOCK // f)
    if m <= rows:
        return jax.random.normal(key, (m, f), jnp.float32)
    nblocks = -(-m // rows)
    blocks = jax.lax.map(
        lambda c: jax.random.normal(jax.random.fold_in(key, c), (rows, f), jnp.float32),
        jnp.arange(nblocks),
    )
    return blocks.reshape(nblocks * rows, f)[:m]


def _apply_flat(key: jax.Array, x: jax.Array, record: PartitionRecord) -> jax.Array:
    """Warp float32 noise ``(H, W, F)`` by ``record``; the Brownian-bridge scatter of section 2."""
    h, w = record.shape
    n = h * w
    f = x.shape[-1]
    x = x.reshape(n, f)
    area = record.area[:, None]
    k_piece, k_rest, k_fresh = jax.random.split(key, 3)
    g = _normals(k_piece, record.num_pieces, f)
    z = jnp.sqrt(area) * g
    if record.layout == "src":
        s_sum = z.reshape(n, record.fanout, f).sum(1)
    else:
        s_sum = jax.ops.segment_sum(z, record.src, num_segments=n)
    if not record.normalized:
        a_src = jax.ops.segment_sum(record.area, record.src, num_segments=n)
        # sqrt is steep at 0: a remainder within float noise of 0 (a fully used source) is 0, so
        # rounding in the areas cannot turn into visible noise (and jit matches eager).
        remainder = 1.0 - a_src
        remainder = jnp.where(remainder > _REMAINDER_EPS, remainder, 0.0)
        rest = jnp.sqrt(remainder)[:, None]
        s_sum = s_sum + rest * _normals(k_rest, n, f)
    inc = area * x[record.src] + (z - area * s_sum[record.src])
    if record.layout == "dst":
        y = inc.reshape(n, record.fanout, f).sum(1)
        a_dst = record.area.reshape(n, record.fanout).sum(1)
        # A pixel with A_d = 0 has only zero-area pieces, whose normals are used nowhere else:
        # the first one is its fresh noise, at no extra random cost.
        fresh = g.reshape(n, record.fanout, f)[:, 0]
    else:
        y = jax.ops.segment_sum(inc, record.dst, num_segments=n)
        a_dst = jax.ops.segment_sum(record.area, record.dst, num_segments=n)
        fresh = _normals(k_fresh, n, f)
    ok = (a_dst > 0)[:, None]
    y = jnp.where(ok, y / jnp.sqrt(jnp.where(ok, a_dst[:, None], 1.0)), fresh)
    return y.reshape(h, w, f)


def apply_record(key: jax.Array, noise: jax.Array, record: PartitionRecord) -> jax.Array:
    """Warp noise with a precomputed partition record.

    ``Y_d = sum_s inc_ds / sqrt(A_d)`` with Brownian-bridge increments ``inc_ds`` of ``X_s``
    (order-free sampling, one ``segment_sum`` per side); fresh N(0, 1) where ``A_d = 0``. One record
    serves every channel and every leading (batch) dimension: they are folded into one feature axis
    and each gets independent bridges from ``key``.

    Args:
      key: PRNG key (typed or legacy).
      noise: ``(..., H, W, C)`` floating noise; computed in float32, returned in its dtype.
      record: a :class:`~irwarp.records.PartitionRecord` for the grid ``(H, W)`` (unbatched;
        ``jax.vmap`` over records for per-example flows).

    Returns:
      ``(..., H, W, C)`` warped noise.

    References:
      Deng et al. 2025 (arXiv:2411.01212); DESIGN.md section 2.
    """
    noise = _check_noise(noise)
    if not isinstance(record, PartitionRecord):
        raise ValueError(f"record must be a PartitionRecord; got {type(record).__name__}")
    if record.area.ndim != 1:
        raise ValueError(
            f"apply_record takes an unbatched record (area of shape (M,)); got {record.area.shape}"
            "; use jax.vmap for per-example records"
        )
    if tuple(noise.shape[-3:-1]) != tuple(record.shape):
        raise ValueError(
            f"noise (..., H, W, C) must match the record's grid {record.shape}; got {noise.shape}"
        )
    x, unfold = _fold(noise)
    return unfold(_apply_flat(key, x, record))


def _dispatch(key, noise, flow, fn, options):
    """Fold leading dims into features for a shared flow; vmap over them for a batched flow."""
    if flow.ndim == 3:
        x, unfold = _fold(noise)
        return unfold(fn(key, x, flow.astype(jnp.float32), **options))
    lead = noise.shape[:-3]
    nb = 1
    for d in lead:
        nb *= d
    keys = jax.random.split(key, nb)
    xs = noise.reshape((nb,) + noise.shape[-3:])
    fs = flow.reshape((nb,) + flow.shape[-3:]).astype(jnp.float32)

    def one(k, xi, fi):
        x, unfold = _fold(xi)
        return unfold(fn(k, x, fi, **options))

    return jax.vmap(one)(keys, xs, fs).reshape(noise.shape)


def warp(
    key: jax.Array, noise: jax.Array, flow: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp integral noise along a backward flow.

    ``Y_d = W(psi(cell_d)) / sqrt(|psi(cell_d)|)`` where ``X_s = W(cell_s)`` and
    ``psi(p) = p + flow(p)`` maps frame ``t+1`` into frame ``t`` (DESIGN.md sections 1-3).

    Args:
      key: PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      noise: ``(..., H, W, C)`` i.i.d. N(0, 1) noise of frame ``t``.
      flow: ``(H, W, 2)`` backward flow of frame ``t+1``, shared by all leading dims, or
        ``(..., H, W, 2)`` with the noise's leading dims (one flow per example).
      method: one of ``"grid"`` (exact areas; options ``capacity``, ``edge_points``),
        ``"particle"``, ``"chang"`` (options ``upsample=N``, ``capacity``), ``"nearest"``,
        ``"bilinear"``, ``"fixed"``, ``"fresh"``.
      **options: method options (static).

    Returns:
      ``(..., H, W, C)`` warped noise of frame ``t+1`` in the noise's dtype. NaN/Inf flow pixels are
      disoccluded and get fresh noise; the output is finite for finite noise.

    Raises:
      ValueError: on an unknown method or option, wrong ranks or shapes, or integer noise.

    References:
      Deng et al. 2025 (arXiv:2411.01212); Chang et al. 2024 (ICLR) for ``"chang"``.
    """
    fn = _check_method(method, options)
    noise = _check_noise(noise)
    flow = _check_flow_for(noise, flow)
    return _dispatch(key, noise, flow, fn, options)


def _splat(key, x, forward_flow):
    return _apply_flat(key, x, records.splat_record(forward_flow))


def warp_forward(key: jax.Array, noise: jax.Array, forward_flow: jax.Array) -> jax.Array:
    """Warp noise by forward-splatting old pixels along a forward flow (the splat variant).

    Args:
      key: PRNG key.
      noise: ``(..., H, W, C)`` noise of frame ``t``.
      forward_flow: ``(H, W, 2)`` or ``(..., H, W, 2)``: where pixel ``(i, j)`` of frame ``t`` goes.

    Returns:
      ``(..., H, W, C)`` noise of frame ``t+1``, exactly i.i.d. N(0, 1) for any flow.

    References:
      DESIGN.md section 3 (forward splat).
    """
    noise = _check_noise(noise)
    forward_flow = _check_flow_for(noise, forward_flow, "forward_flow")
    return _dispatch(key, noise, forward_flow, _splat, {})


def warp_sequence(
    key: jax.Array, noise0: jax.Array, flows: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp noise frame after frame along a sequence of backward flows with ``lax.scan``.

    Frame ``t >= 1`` is ``warp(fold_in(key, t), frame_{t-1}, flows[t-1])``, so frame ``t`` depends
    only on ``(key, t)`` and the previous frame, not on the sequence length.

    Args:
      key: PRNG key.
      noise0: ``(..., H, W, C)`` noise of frame 0.
      flows: ``(T, H, W, 2)`` backward flows; ``flows[t-1]`` maps frame ``t`` into frame ``t-1``.
      method: any method of :func:`warp`, or ``"splat"`` with forward flows.
      **options: method options.

    Returns:
      ``(T + 1, ..., H, W, C)`` noise; frame 0 is ``noise0``.
    """
    noise0 = _check_noise(noise0)
    flows = jnp.asarray(flows)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"flows must have shape (T, H, W, 2); got {flows.shape}")
    if method == "splat":
        if options:
            raise ValueError(f"method 'splat' takes no options; got {sorted(options)}")
        step = warp_forward
    else:
        _check_method(method, options)
        step = functools.partial(warp, method=method, **options)
    _check_flow_for(noise0, flows[0])

    def body(prev, inputs):
        t, flow = inputs
        nxt = step(jax.random.fold_in(key, t), prev, flow)
        return nxt, nxt

    ts = jnp.arange(1, flows.shape[0] + 1)
    _, frames = jax.lax.scan(body, noise0, (ts, flows))
    return jnp.concatenate([noise0[None], frames], axis=0)
