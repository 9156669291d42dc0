"""Noise warping: applying partition records and the public ``warp`` entry points.

Images ``(..., H, W, C)`` with 2D flows ``(..., H, W, 2)`` and volumes ``(..., D, H, W, C)``
with 3D flows ``(..., D, H, W, 3)`` go through the same entry points: the flow's last axis
(2 or 3) says which. In 3D, :func:`warp` supports ``method="particle"`` and
:func:`warp_forward` the splat (:mod:`irwarp.records3d`).

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

from irwarp import _layout, baselines, records, records3d, sheet

# The bridge sums live in irwarp._apply; re-exported under their old names (tests use them).
from irwarp._apply import (  # noqa: F401
    _REMAINDER_EPS,
    _add_at,
    _apply_flat,
    _increments,
    _tail_sizes,
)
from irwarp.records import PartitionRecord

__all__ = ["apply_record", "warp", "warp_forward", "warp_sequence", "METHODS", "METHODS3D"]


def _grid(key, x, flow, *, capacity=3, edge_points=2):
    rec = records.grid_record(flow, capacity=capacity, edge_points=edge_points)
    return _apply_flat(key, x, rec)


def _particle(key, x, flow):
    return _apply_flat(key, x, records.particle_record(flow))


def _particle3d(key, x, flow):
    return _apply_flat(key, x, records3d.particle3d_record(flow))


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
# Methods of warp() for volumes (3D flows); warp_forward() and warp_sequence(method="splat") splat.
_METHODS3D: dict[str, Callable] = {"particle": _particle3d}
METHODS3D: tuple[str, ...] = tuple(_METHODS3D)


def _check_method(method: str, options: dict, nd: int = 2) -> Callable:
    if nd == 3:
        if method not in _METHODS3D:
            raise ValueError(
                f"method {method!r} is not supported for volumes (a flow whose last axis is 3); "
                f"supported in 3D: {', '.join(METHODS3D)} (and 'splat' via warp_forward / "
                "warp_sequence)"
            )
        if options:
            raise ValueError(
                f"unknown option(s) {sorted(options)} for method {method!r} in 3D; allowed: none"
            )
        return _METHODS3D[method]
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    unknown = set(options) - _OPTIONS[method]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[method])) or "none"
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}"
        )
    return _METHODS[method]


def _check_noise(noise: jax.Array, nd: int = 2) -> jax.Array:
    noise = jnp.asarray(noise)
    if noise.ndim < nd + 1:
        want = "(..., H, W, C)" if nd == 2 else "(..., D, H, W, C) for a 3D flow"
        raise ValueError(f"noise must have shape {want}; got {noise.shape}")
    if not jnp.issubdtype(noise.dtype, jnp.floating):
        raise ValueError(f"noise must be a floating-point array; got dtype {noise.dtype}")
    return noise


def _check_flow_for(noise: jax.Array, flow: jax.Array, name: str = "flow") -> jax.Array:
    """Validates a 2D ``(..., H, W, 2)`` or 3D ``(..., D, H, W, 3)`` flow against the noise.

    The flow's last axis says how many spatial axes there are (``nd``); after this check
    ``flow.shape[-1] == nd`` and the noise has at least ``nd + 1`` axes.
    """
    flow = jnp.asarray(flow)
    nd = 3 if flow.ndim >= 1 and flow.shape[-1] == 3 else 2
    if flow.ndim < nd + 1 or flow.shape[-1] != nd:
        raise ValueError(
            f"{name} must have shape (H, W, 2) or (..., H, W, 2) for images, or (D, H, W, 3) or "
            f"(..., D, H, W, 3) for volumes; got {flow.shape}"
        )
    if jnp.issubdtype(flow.dtype, jnp.complexfloating) or flow.dtype == jnp.bool_:
        raise ValueError(f"{name} must be real-valued; got dtype {flow.dtype}")
    _check_noise(noise, nd)
    grid = "(H, W)" if nd == 2 else "(D, H, W)"
    if flow.shape[-nd - 1 : -1] != noise.shape[-nd - 1 : -1]:
        raise ValueError(
            f"{name} and noise must share {grid}; got {name} {flow.shape} and noise {noise.shape}"
        )
    if flow.ndim > nd + 1 and flow.shape[: -nd - 1] != noise.shape[: -nd - 1]:
        raise ValueError(
            f"a batched {name} must have the noise's leading dimensions; got {name} "
            f"{flow.shape} for noise {noise.shape}"
        )
    return flow


def apply_record(key: jax.Array, noise: jax.Array, record: PartitionRecord) -> jax.Array:
    """Warp noise with a precomputed partition record.

    ``Y_d = sum_s inc_ds / sqrt(A_d)`` with Brownian-bridge increments ``inc_ds`` of ``X_s``
    (order-free sampling, one ``segment_sum`` per side); fresh N(0, 1) where ``A_d = 0``. One record
    serves every channel and every leading (batch) dimension: they are folded into one feature axis
    and each gets independent bridges from ``key``. A 3D record (``record.shape == (D, H, W)``,
    from :mod:`irwarp.records3d`) warps volumes ``(..., D, H, W, C)`` the same way.

    Args:
      key: PRNG key (typed or legacy).
      noise: ``(..., H, W, C)`` floating noise, or ``(..., D, H, W, C)`` for a 3D record;
        computed in float32, returned in its dtype.
      record: a :class:`~irwarp.records.PartitionRecord` for the grid ``(H, W)`` or
        ``(D, H, W)`` (unbatched; ``jax.vmap`` over records for per-example flows).

    Returns:
      Warped noise of the noise's shape.

    References:
      Deng et al. 2025 (arXiv:2411.01212); DESIGN.md section 2.
    """
    if not isinstance(record, PartitionRecord):
        raise ValueError(f"record must be a PartitionRecord; got {type(record).__name__}")
    nd = len(record.shape)
    noise = _check_noise(noise, nd)
    if record.area.ndim != 1:
        raise ValueError(
            f"apply_record takes an unbatched record (area of shape (M,)); got {record.area.shape}"
            "; use jax.vmap for per-example records"
        )
    if tuple(noise.shape[-nd - 1 : -1]) != tuple(record.shape):
        want = "(..., H, W, C)" if nd == 2 else "(..., D, H, W, C)"
        raise ValueError(
            f"noise {want} must match the record's grid {record.shape}; got {noise.shape}"
        )
    x, unfold = _layout.fold(noise, nd)
    return unfold(_apply_flat(key, x, record))


def _dispatch(key, noise, flow, fn, options):
    """Fold leading dims into features for a shared flow; vmap over them for a batched flow.

    ``nd = flow.shape[-1]`` spatial axes (2 or 3).
    """
    nd = flow.shape[-1]
    if flow.ndim == nd + 1:
        x, unfold = _layout.fold(noise, nd)
        return unfold(fn(key, x, flow.astype(jnp.float32), **options))
    lead = noise.shape[: -nd - 1]
    nb = 1
    for d in lead:
        nb *= d
    keys = jax.random.split(key, nb)
    xs = noise.reshape((nb,) + noise.shape[-nd - 1 :])
    fs = flow.reshape((nb,) + flow.shape[-nd - 1 :]).astype(jnp.float32)

    def one(k, xi, fi):
        x, unfold = _layout.fold(xi, nd)
        return unfold(fn(k, x, fi, **options))

    return jax.vmap(one)(keys, xs, fs).reshape(noise.shape)


def warp(
    key: jax.Array, noise: jax.Array, flow: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp integral noise along a backward flow.

    ``Y_d = W(psi(cell_d)) / sqrt(|psi(cell_d)|)`` where ``X_s = W(cell_s)`` and
    ``psi(p) = p + flow(p)`` maps frame ``t+1`` into frame ``t`` (DESIGN.md sections 1-3).

    Volumes work the same way, one axis more: a flow whose last axis has length 3 is a 3D flow
    ``(dx, dy, dz)`` over voxels ``(k, i, j)`` (the unit cube ``[j, j+1] x [i, i+1] x [k, k+1]``),
    and the noise is ``(..., D, H, W, C)``; only ``method="particle"`` (trilinear overlaps,
    :func:`irwarp.records3d.particle3d_record`) is supported there.

    Args:
      key: PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      noise: ``(..., H, W, C)`` i.i.d. N(0, 1) noise of frame ``t``, or ``(..., D, H, W, C)``
        with a 3D flow.
      flow: ``(H, W, 2)`` backward flow of frame ``t+1``, shared by all leading dims, or
        ``(..., H, W, 2)`` with the noise's leading dims (one flow per example); for volumes
        ``(D, H, W, 3)`` or ``(..., D, H, W, 3)``.
      method: one of ``"grid"`` (exact areas; options ``capacity``, ``edge_points``),
        ``"particle"``, ``"chang"`` (options ``upsample=N``, ``capacity``), ``"nearest"``,
        ``"bilinear"``, ``"fixed"``, ``"fresh"``; for volumes only ``"particle"``
        (:data:`METHODS3D`).
      **options: method options (static).

    Returns:
      Warped noise of frame ``t+1``, of the noise's shape and dtype. NaN/Inf flow pixels (voxels)
      are disoccluded and get fresh noise; the output is finite for finite noise.

    Raises:
      ValueError: on an unknown method or option, a method not supported in 3D, wrong ranks or
        shapes, or integer noise.

    References:
      Deng et al. 2025 (arXiv:2411.01212); Chang et al. 2024 (ICLR) for ``"chang"``.
    """
    noise = _check_noise(noise)
    flow = _check_flow_for(noise, flow)
    fn = _check_method(method, options, flow.shape[-1])
    return _dispatch(key, noise, flow, fn, options)


def _splat(key, x, forward_flow):
    return _apply_flat(key, x, records.splat_record(forward_flow))


def _splat3d(key, x, forward_flow):
    return _apply_flat(key, x, records3d.splat3d_record(forward_flow))


def warp_forward(key: jax.Array, noise: jax.Array, forward_flow: jax.Array) -> jax.Array:
    """Warp noise by forward-splatting old pixels along a forward flow (the splat variant).

    Old pixel ``s`` is a unit square centred at ``centre_s + forward_flow(s)``; its bilinear
    overlaps with the new cells, divided by their in-image sum, are its pieces. Volumes work the
    same way with a 3D forward flow ``(..., D, H, W, 3)`` and trilinear overlaps
    (:func:`irwarp.records3d.splat3d_record`).

    Args:
      key: PRNG key.
      noise: ``(..., H, W, C)`` noise of frame ``t``, or ``(..., D, H, W, C)`` with a 3D flow.
      forward_flow: ``(H, W, 2)`` or ``(..., H, W, 2)``: where pixel ``(i, j)`` of frame ``t`` goes;
        for volumes ``(D, H, W, 3)`` or ``(..., D, H, W, 3)``.

    Returns:
      Noise of frame ``t+1`` of the noise's shape, exactly i.i.d. N(0, 1) for any flow.

    Raises:
      ValueError: on wrong ranks or shapes, or integer noise.

    References:
      DESIGN.md section 3 (forward splat).
    """
    noise = _check_noise(noise)
    forward_flow = _check_flow_for(noise, forward_flow, "forward_flow")
    fn = _splat3d if forward_flow.shape[-1] == 3 else _splat
    return _dispatch(key, noise, forward_flow, fn, {})


def warp_sequence(
    key: jax.Array, noise0: jax.Array, flows: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp noise frame after frame along a sequence of backward flows with ``lax.scan``.

    Frame ``t >= 1`` is ``warp(fold_in(key, t), frame_{t-1}, flows[t-1])``, so frame ``t`` depends
    only on ``(key, t)`` and the previous frame, not on the sequence length.

    Volumes: ``noise0`` ``(..., D, H, W, C)`` with flows ``(T, D, H, W, 3)`` and method
    ``"particle"`` or ``"splat"``.

    Args:
      key: PRNG key.
      noise0: ``(..., H, W, C)`` noise of frame 0 (``(..., D, H, W, C)`` for volumes).
      flows: ``(T, H, W, 2)`` backward flows; ``flows[t-1]`` maps frame ``t`` into frame ``t-1``
        (``(T, D, H, W, 3)`` for volumes).
      method: any method of :func:`warp`, ``"splat"`` with forward flows, or ``"lagrangian"``
        (2D; options ``depth``, ``capacity``, ``keyframe_every``): no chaining, frame ``t``
        integrates the keyframe's virtual Brownian sheet over its pre-image under the composed
        flow, so sub-pixel motion does not drift (:func:`irwarp.sheet.lagrangian_sequence`).
      **options: method options.

    Returns:
      ``(T + 1, ...)`` noise, each frame of ``noise0``'s shape; frame 0 is ``noise0``.

    Raises:
      ValueError: on bad shapes, an unknown method or option, or a method not supported in 3D.
    """
    noise0 = _check_noise(noise0)
    flows = jnp.asarray(flows)
    nd = flows.shape[-1] if flows.ndim in (4, 5) else 0
    if flows.ndim != nd + 2 or nd not in (2, 3):
        raise ValueError(
            f"flows must have shape (T, H, W, 2), or (T, D, H, W, 3) for volumes; got {flows.shape}"
        )
    if method == "lagrangian":
        unknown = set(options) - {"depth", "capacity", "keyframe_every"}
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for method 'lagrangian'; allowed: "
                "capacity, depth, keyframe_every"
            )
        if nd != 2:
            raise ValueError(f"method 'lagrangian' takes 2D flows (T, H, W, 2); got {flows.shape}")
        return sheet.lagrangian_sequence(key, noise0, flows, **options)
    if method == "splat":
        if options:
            raise ValueError(f"method 'splat' takes no options; got {sorted(options)}")
        step = warp_forward
    else:
        _check_method(method, options, nd)
        step = functools.partial(warp, method=method, **options)
    _check_flow_for(noise0, flows[0])

    def body(prev, inputs):
        t, flow = inputs
        nxt = step(jax.random.fold_in(key, t), prev, flow)
        return nxt, nxt

    ts = jnp.arange(1, flows.shape[0] + 1)
    _, frames = jax.lax.scan(body, noise0, (ts, flows))
    return jnp.concatenate([noise0[None], frames], axis=0)
