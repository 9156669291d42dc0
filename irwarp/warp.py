"""Noise warping: the built-in methods, applying partition records, the public ``warp`` calls.

Images ``(..., H, W, C)`` with 2D flows ``(..., H, W, 2)`` and volumes ``(..., D, H, W, C)``
with 3D flows ``(..., D, H, W, 3)`` go through the same entry points: the flow's last axis
(2 or 3) says which. Which methods support which rank is declared in the method registry
(:mod:`irwarp.methods`), where this module registers the built-in methods.

All randomness of irwarp lives here (and in :mod:`irwarp.bridge` / :mod:`irwarp.baselines` /
:mod:`irwarp.sheet`). The warp of noise ``X`` by a record is ``Y_d = sum_s inc_ds / sqrt(A_d)``
where ``inc_ds`` are Brownian bridge increments of ``X_s`` over the pieces of cell ``s`` and
``A_d = sum_s a_ds``; pixels with ``A_d = 0`` (disoccluded) get fresh N(0, 1) noise
(docs/DESIGN.md section 2).

The public calls compile themselves: :func:`warp`, :func:`warp_forward` and :func:`apply_record`
check their arguments in Python (before any work) and then run one ``jax.jit``-compiled function
with the method and its options static, so calling them as they are is as fast as wrapping them
in ``jax.jit``; inside a caller's ``jit``, ``vmap`` or ``lax.scan`` they are inlined as usual.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from irwarp import _layout, baselines, records, records3d, sheet
from irwarp import methods as methods_lib
from irwarp._apply import apply_flat
from irwarp._inputs import check_flow_for, check_key, check_noise
from irwarp.methods import Method, Option, integer, positive_real
from irwarp.records import PartitionRecord

__all__ = [
    "METHODS",
    "METHODS3D",
    "apply_record",
    "chain_step",
    "chain_warp_fn",
    "warp",
    "warp_forward",
]


def _lagrangian_frame(key, keyframe, total_flow, t, *, depth, capacity):
    return sheet.lagrangian_frame(
        key, keyframe, total_flow, depth=depth, capacity=capacity, frame=t, return_info=True
    )


def _register_builtins() -> None:
    reg = methods_lib.register_method
    reg(
        Method(
            "grid",
            options={"capacity": Option(3, integer(1)), "edge_points": Option(2, integer(1))},
            record={2: records.grid_record},
            summary="exact polygon/cell areas, Brownian-bridge increments (Deng et al.)",
        )
    )
    reg(
        Method(
            "particle",
            ranks=(2, 3),
            record={2: records.particle_record, 3: records3d.particle3d_record},
            summary="unit square at psi(centre), bilinear overlaps, per-source normalisation",
        )
    )
    reg(
        Method(
            "chang",
            options={"upsample": Option(4, integer(1)), "capacity": Option(3, integer(2))},
            warp={2: baselines.chang_warp},
            shorthand="upsample",
            summary="Chang et al. 2024: N x N conditional upsampling + rasterisation",
        )
    )
    for name, fn, summary in (
        ("nearest", baselines.nearest_warp, "resample the old noise at psi(centre), nearest"),
        ("bilinear", baselines.bilinear_warp, "resample the old noise at psi(centre), bilinear"),
        ("fixed", baselines.fixed_warp, "the same noise every frame"),
        ("fresh", baselines.fresh_warp, "new noise every frame"),
    ):
        reg(Method(name, warp={2: fn}, summary=summary))
    reg(
        Method(
            "splat",
            flow="forward",
            ranks=(2, 3),
            record={2: records.splat_record, 3: records3d.splat3d_record},
            summary="forward splat of old pixels along a forward flow",
        )
    )
    reg(
        Method(
            "lagrangian",
            kind="keyframe",
            options={
                "depth": Option(sheet.DEFAULT_DEPTH, integer(0, sheet.MAX_DEPTH)),
                "capacity": Option(sheet.DEFAULT_CAPACITY, positive_real),
            },
            frame=_lagrangian_frame,
            shorthand="depth",
            summary="no chaining: the keyframe's virtual Brownian sheet over the composed pre-image",
        )
    )


_register_builtins()

# Backward-flow chain methods of warp() when irwarp was imported (the registry is the live list).
METHODS: tuple[str, ...] = methods_lib.method_names(rank=2, kind="chain", flow="backward")
METHODS3D: tuple[str, ...] = methods_lib.method_names(rank=3, kind="chain", flow="backward")


def chain_warp_fn(method: Method, rank: int) -> Callable:
    """``fn(key, x, flow, **options)`` of a chain method on folded ``(*G, F)`` float32 noise.

    A method declared with a partition-record builder warps by applying that record.
    """
    if method.kind != "chain":
        raise ValueError(f"method {method.name!r} is a {method.kind} method: it has no warp step")
    if method.warp is not None and rank in method.warp:
        return method.warp[rank]
    return functools.partial(_record_warp, method.record[rank])


def _record_warp(builder, key, x, flow, **options):
    return apply_flat(key, x, builder(flow, **options))


def _dispatch(key, noise, flow, fn, options):
    """Fold leading dims into features for a shared flow; vmap over them for a batched flow.

    ``nd = flow.shape[-1]`` spatial axes (2 or 3).
    """
    nd = flow.shape[-1]
    if flow.ndim == nd + 1:
        x, unfold = _layout.fold(noise, nd)
        return unfold(fn(key, x, flow.astype(jnp.float32), **options))
    lead = noise.shape[: -nd - 1]
    nb = math.prod(lead)
    keys = jax.random.split(key, nb)
    xs = noise.reshape((nb,) + noise.shape[-nd - 1 :])
    fs = flow.reshape((nb,) + flow.shape[-nd - 1 :]).astype(jnp.float32)

    def one(k, xi, fi):
        x, unfold = _layout.fold(xi, nd)
        return unfold(fn(k, x, fi, **options))

    return jax.vmap(one)(keys, xs, fs).reshape(noise.shape)


def chain_step(method: Method, options: dict, key, noise, flow) -> jax.Array:
    """One warp of a chain method, uncompiled and unchecked (the noise stream's step).

    Args:
      method: a chain :class:`~irwarp.methods.Method`.
      options: its resolved options (:meth:`~irwarp.methods.Method.resolve`).
      key: PRNG key of this warp.
      noise: ``(..., *G, C)`` noise.
      flow: ``(*G, nd)`` shared or ``(..., *G, nd)`` per-example flow.

    Returns:
      The warped noise, of the noise's shape and dtype.
    """
    if noise.size == 0:
        return noise
    fn = chain_warp_fn(method, flow.shape[-1])
    return _dispatch(key, noise, flow, fn, options)


@functools.partial(jax.jit, static_argnames=("method", "options"))
def _warp_jit(key, noise, flow, *, method: Method, options: tuple):
    return chain_step(method, dict(options), key, noise, flow)


def _resolve(method, options: dict, rank: int, flow: str) -> tuple[Method, tuple]:
    m = methods_lib.get_method(method)
    if m.kind != "chain":
        raise ValueError(
            f"method {m.name!r} is a {m.kind} method: it warps whole sequences; use "
            "irwarp.warp_sequence or irwarp.noise_stream"
        )
    opts = m.resolve(options, rank=rank, flow=flow)
    return m, methods_lib.freeze_options(opts)


def apply_record(key: jax.Array, noise: jax.Array, record: PartitionRecord) -> jax.Array:
    """Warp noise with a precomputed partition record.

    ``Y_d = sum_s inc_ds / sqrt(A_d)`` with Brownian-bridge increments ``inc_ds`` of ``X_s``
    (order-free sampling, one ``segment_sum`` per side); fresh N(0, 1) where ``A_d = 0``. One record
    serves every channel and every leading (batch) dimension: they are folded into one feature axis
    and each gets independent bridges from ``key``. A 3D record (``record.shape == (D, H, W)``,
    from :mod:`irwarp.records3d`) warps volumes ``(..., D, H, W, C)`` the same way. Compiled on
    first use for each shape (no need to wrap it in ``jax.jit``).

    Args:
      key: PRNG key (typed or legacy).
      noise: ``(..., H, W, C)`` floating noise, or ``(..., D, H, W, C)`` for a 3D record;
        computed in float32, returned in its dtype.
      record: a :class:`~irwarp.records.PartitionRecord` for the grid ``(H, W)`` or
        ``(D, H, W)`` (unbatched; ``jax.vmap`` over records for per-example flows).

    Returns:
      Warped noise of the noise's shape.

    Raises:
      ValueError: on a bad key, a record that is not an unbatched :class:`PartitionRecord`, or
        noise that does not fit it.

    References:
      Deng et al. 2025 (arXiv:2411.01212); docs/DESIGN.md section 2.
    """
    if not isinstance(record, PartitionRecord):
        raise ValueError(f"record must be a PartitionRecord; got {type(record).__name__}")
    key = check_key(key)
    nd = len(record.shape)
    noise = check_noise(noise, nd)
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
    if noise.size == 0:
        return noise
    return _apply_record_jit(key, noise, record)


@jax.jit
def _apply_record_jit(key, noise, record):
    x, unfold = _layout.fold(noise, len(record.shape))
    return unfold(apply_flat(key, x, record))


def warp(
    key: jax.Array, noise: jax.Array, flow: jax.Array, *, method: str = "grid", **options
) -> jax.Array:
    """Warp integral noise along a backward flow.

    ``Y_d = W(psi(cell_d)) / sqrt(|psi(cell_d)|)`` where ``X_s = W(cell_s)`` and
    ``psi(p) = p + flow(p)`` maps frame ``t+1`` into frame ``t`` (docs/DESIGN.md sections 1-3).

    Volumes work the same way, one axis more: a flow whose last axis has length 3 is a 3D flow
    ``(dx, dy, dz)`` over voxels ``(k, i, j)`` (the unit cube ``[j, j+1] x [i, i+1] x [k, k+1]``),
    and the noise is ``(..., D, H, W, C)``; only ``method="particle"`` (trilinear overlaps,
    :func:`irwarp.records3d.particle3d_record`) is supported there.

    The call compiles itself (once per method, options, shapes and dtypes): calling it as it is
    runs as fast as ``jax.jit(functools.partial(irwarp.warp, method=...))``. It composes with a
    caller's ``jit``, ``vmap`` and ``lax.scan``.

    Args:
      key: PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``).
      noise: ``(..., H, W, C)`` i.i.d. N(0, 1) noise of frame ``t``, or ``(..., D, H, W, C)``
        with a 3D flow. Zero-size noise (e.g. ``C = 0`` or ``B = 0``) is returned as it is.
      flow: ``(H, W, 2)`` backward flow of frame ``t+1``, shared by all leading dims, or
        ``(..., H, W, 2)`` with the noise's leading dims (one flow per example); for volumes
        ``(D, H, W, 3)`` or ``(..., D, H, W, 3)``.
      method: a backward-flow chain method of the registry (:mod:`irwarp.methods`):
        ``"grid"`` (exact areas; options ``capacity``, ``edge_points``), ``"particle"``,
        ``"chang"`` (options ``upsample=N``, ``capacity``), ``"nearest"``, ``"bilinear"``,
        ``"fixed"``, ``"fresh"``, or one added with :func:`irwarp.register_method`; for volumes
        only ``"particle"`` (:data:`METHODS3D`).
      **options: method options (static, hashable).

    Returns:
      Warped noise of frame ``t+1``, of the noise's shape and dtype. NaN/Inf flow pixels (voxels)
      are disoccluded and get fresh noise; the output is finite for finite noise.

    Raises:
      ValueError: on a bad key, an unknown method or option, a method not supported in 3D, wrong
        ranks or shapes, or integer noise.

    References:
      Deng et al. 2025 (arXiv:2411.01212); Chang et al. 2024 (ICLR) for ``"chang"``.
    """
    key = check_key(key)
    noise = check_noise(noise)
    flow = check_flow_for(noise, flow)
    m, opts = _resolve(method, options, flow.shape[-1], "backward")
    if noise.size == 0:
        return noise
    return _warp_jit(key, noise, flow, method=m, options=opts)


def warp_forward(key: jax.Array, noise: jax.Array, forward_flow: jax.Array) -> jax.Array:
    """Warp noise by forward-splatting old pixels along a forward flow (the splat variant).

    Old pixel ``s`` is a unit square centred at ``centre_s + forward_flow(s)``; its bilinear
    overlaps with the new cells, divided by their in-image sum, are its pieces. Volumes work the
    same way with a 3D forward flow ``(..., D, H, W, 3)`` and trilinear overlaps
    (:func:`irwarp.records3d.splat3d_record`). Compiled on first use, like :func:`warp`.

    Args:
      key: PRNG key.
      noise: ``(..., H, W, C)`` noise of frame ``t``, or ``(..., D, H, W, C)`` with a 3D flow.
      forward_flow: ``(H, W, 2)`` or ``(..., H, W, 2)``: where pixel ``(i, j)`` of frame ``t`` goes;
        for volumes ``(D, H, W, 3)`` or ``(..., D, H, W, 3)``.

    Returns:
      Noise of frame ``t+1`` of the noise's shape, exactly i.i.d. N(0, 1) for any flow.

    Raises:
      ValueError: on a bad key, wrong ranks or shapes, or integer noise.

    References:
      docs/DESIGN.md section 3 (forward splat).
    """
    key = check_key(key)
    noise = check_noise(noise)
    forward_flow = check_flow_for(noise, forward_flow, "forward_flow")
    m, opts = _resolve("splat", {}, forward_flow.shape[-1], "forward")
    if noise.size == 0:
        return noise
    return _warp_jit(key, noise, forward_flow, method=m, options=opts)
