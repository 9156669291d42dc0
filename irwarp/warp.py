"""Noise warping: the built-in methods, applying partition records, the public ``warp`` calls.

Images ``(..., H, W, C)`` with 2D flows ``(..., H, W, 2)`` and volumes ``(..., D, H, W, C)``
with 3D flows ``(..., D, H, W, 3)`` go through the same entry points: the flow's last axis
(2 or 3) says which. Which methods support which rank is declared in the method registry
(:mod:`irwarp.methods`), where this module registers the built-in methods.

All randomness of irwarp lives here (and in :mod:`irwarp.bridge` / :mod:`irwarp.baselines` /
:mod:`irwarp.sheet`). The warp of noise ``X`` by a record is ``Y_d = sum_s inc_ds / sqrt(A_d)``
where ``inc_ds`` are Brownian bridge increments of ``X_s`` over the pieces of cell ``s`` and
``A_d = sum_s a_ds``; pixels with ``A_d = 0`` (disoccluded) get fresh N(0, 1) noise
(DESIGN.md section 2).

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

from irwarp import _layout, _random, baselines, records, records3d, sheet
from irwarp import methods as methods_lib
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

# Unused remainders of a cell below this are treated as 0 (about 100 float32 ulps at 1).
_REMAINDER_EPS = 1e-5


def _tail_sizes(record: PartitionRecord) -> tuple[int, ...]:
    """Static tail prefixes that :func:`_apply_flat` may process: 1 and 4 blocks, or all of it."""
    total = record.num_pieces - record.num_head
    if record.tail_count is None or total == 0:
        return (total,)
    block = max(1, record.tail_block)
    return tuple(sorted({min(block, total), min(4 * block, total), total}))


def _apply_flat(
    key: jax.Array, x: jax.Array, record: PartitionRecord, tail: int | None = None
) -> jax.Array:
    """Warp float32 noise ``(*G, F)`` by ``record`` (grid ``G = record.shape``, 2D or 3D).

    The Brownian-bridge scatter of DESIGN.md section 2 over the ``prod(G)`` flat cells, in two
    passes: ``S_s`` (the sum of each source's piece normals and remainder) by scatter-adds, then
    ``Y_d`` by gathers. The structured head is processed slot by slot: ``n`` pieces whose source
    (layout ``"src"``) or destination (``"dst"``, ``"dst_slot"``) is the identity, so that side
    needs no scatter, and each sum is written per slot so XLA's CPU backend fuses the gathers into
    one loop per output instead of keeping ``(M, F)`` temporaries (and a ``reduce`` over a
    reshaped axis, which it does not vectorise). A record with a packed tail (``tail_count``) has
    its tail applied with the shortest static prefix that holds every piece in use
    (:func:`_tail_sizes`, one ``lax.switch`` around the tail's part only); the tail's normals come
    in fixed blocks, so every prefix gives the same values and the choice only changes the cost.
    A static ``tail`` forces that prefix (tests).
    """
    n = math.prod(record.shape)
    f = x.shape[-1]
    x = x.reshape(n, f)
    head = record.num_head
    k_piece, k_rest, k_fresh, k_tail = jax.random.split(key, 4)
    parts = []  # (src or None for the identity, dst or None, area, normals), n rows each
    fresh = None
    if head:
        k = record.fanout
        gs = _random.normal_slots(k_piece, n, f, k)  # slot-major, whatever the layout
        src, dst, area = record.src[:head], record.dst[:head], record.area[:head]
        for slot, g in enumerate(gs):
            if record.layout == "dst_slot":
                sl = slice(slot * n, (slot + 1) * n)
                parts.append((src[sl], None, area[sl], g))
            elif record.layout == "dst":
                parts.append((src[slot::k], None, area[slot::k], g))
            else:  # "src"
                parts.append((None, dst[slot::k], area[slot::k], g))
        if record.layout in ("dst", "dst_slot"):
            # A pixel with A_d = 0 has only zero-area head pieces, whose normals are used nowhere
            # else: the first one is its fresh noise, at no extra random cost.
            fresh = parts[0][3]
    s_sum = jnp.zeros((n, f), jnp.float32)
    a_src = jnp.zeros((n,), jnp.float32)
    for src, _, a, g in parts:
        s_sum = _add_at(s_sum, src, jnp.sqrt(a)[:, None] * g)
        a_src = _add_at(a_src, src, a)
    y = jnp.zeros((n, f), jnp.float32)
    a_dst = jnp.zeros((n,), jnp.float32)

    def finish(tail: int, s_sum, a_src, y, a_dst):
        """Adds the first ``tail`` tail pieces and the remainders; the tail's part of ``Y``."""
        tail_parts = []
        if tail:
            rows = record.tail_block if record.tail_count is not None else None
            g = _random.normals(k_tail, tail, f, block_rows=rows)
            sl = slice(head, head + tail)
            tail_parts.append((record.src[sl], record.dst[sl], record.area[sl], g))
        for src, _, a, g in tail_parts:
            s_sum = _add_at(s_sum, src, jnp.sqrt(a)[:, None] * g)
            a_src = _add_at(a_src, src, a)
        if not record.normalized:
            # sqrt is steep at 0: a remainder within float noise of 0 (a fully used source) is 0,
            # so rounding in the areas cannot turn into visible noise (and jit matches eager).
            remainder = 1.0 - a_src
            remainder = jnp.where(remainder > _REMAINDER_EPS, remainder, 0.0)
            s_sum = s_sum + jnp.sqrt(remainder)[:, None] * _random.normals(k_rest, n, f)
        y, a_dst = _increments(x, s_sum, tail_parts, y, a_dst)
        return s_sum, y, a_dst

    sizes = _tail_sizes(record) if tail is None else (tail,)
    if len(sizes) == 1:
        s_sum, y, a_dst = finish(sizes[0], s_sum, a_src, y, a_dst)
    else:
        count = _layout.batch_max(record.tail_count)
        index = sum((count > s).astype(jnp.int32) for s in sizes[:-1])
        branches = [functools.partial(finish, s) for s in sizes]
        s_sum, y, a_dst = jax.lax.switch(index, branches, s_sum, a_src, y, a_dst)
    y, a_dst = _increments(x, s_sum, parts, y, a_dst)
    if fresh is None:
        fresh = _random.normals(k_fresh, n, f)
    ok = (a_dst > 0)[:, None]
    y = jnp.where(ok, y / jnp.sqrt(jnp.where(ok, a_dst[:, None], 1.0)), fresh)
    return y.reshape(tuple(record.shape) + (f,))


def _add_at(total: jax.Array, index: jax.Array | None, values: jax.Array) -> jax.Array:
    """``total`` plus ``values`` scattered to rows ``index`` (``None``: the identity)."""
    if index is None:
        return total + values
    return total.at[index].add(values)


def _increments(x, s_sum, parts, y, a_dst):
    """Adds the bridge increments ``a X_s + z - a S_s`` of ``parts`` to ``Y`` and ``A_d``."""
    for src, dst, area, g in parts:
        x_src = x if src is None else x[src]
        s_src = s_sum if src is None else s_sum[src]
        a = area[:, None]
        inc = a * x_src + (jnp.sqrt(a) * g - a * s_src)
        # A piece that is its whole cell (area 1) is exactly that cell's value. Under jit, XLA may
        # evaluate z once inside the s_sum reduction and once here with different rounding, which
        # would leave a 1-ulp residue and break the exact identity / integer shifts (DESIGN 4.1).
        inc = jnp.where(a == 1.0, x_src, inc)
        y = _add_at(y, dst, inc)
        a_dst = _add_at(a_dst, dst, area)
    return y, a_dst


# --------------------------------------------------------------------------------------------------
# The built-in methods, each declared once.


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
    return _apply_flat(key, x, builder(flow, **options))


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
      Deng et al. 2025 (arXiv:2411.01212); DESIGN.md section 2.
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
    return unfold(_apply_flat(key, x, record))


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
      DESIGN.md section 3 (forward splat).
    """
    key = check_key(key)
    noise = check_noise(noise)
    forward_flow = check_flow_for(noise, forward_flow, "forward_flow")
    m, opts = _resolve("splat", {}, forward_flow.shape[-1], "forward")
    if noise.size == 0:
        return noise
    return _warp_jit(key, noise, forward_flow, method=m, options=opts)
