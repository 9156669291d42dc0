"""The Brownian-bridge sums of a partition record: ``S_s`` by source, then ``Y_d`` by destination.

``Y_d = sum_s inc_ds / sqrt(A_d)`` with order-free bridge increments
``inc_ds = a_ds X_s + z_ds - a_ds S_s``, ``z_ds = sqrt(a_ds) g_ds`` and
``S_s = sum_d z_ds + sqrt(1 - sum_d a_ds) g_s`` (docs/DESIGN.md section 2); fresh N(0, 1) where
``A_d = 0``. The sums over repeated indices and the tail's static prefixes are scheduled by
:mod:`irwarp._schedule` (scatter-adds and a ``lax.switch`` on CPU; sorted segment sums and the whole
tail elsewhere).

Differentiability: the output is differentiable in the areas wherever they are positive; a piece
of area exactly 0 (padding, cells outside the image, float noise set to 0) has a zero (stopped)
gradient, since ``sqrt`` is not differentiable there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from irwarp import _random, _schedule
from irwarp.records import PartitionRecord

# Unused remainders of a cell below this are treated as 0 (about 100 float32 ulps at 1).
_REMAINDER_EPS = 1e-5


@jax.custom_jvp
def _sqrt0(a: jax.Array) -> jax.Array:
    """``sqrt(a)`` for ``a >= 0``, with a zero derivative at 0 (instead of ``inf * 0 = NaN``).

    The value is ``jnp.sqrt`` itself, so the forward computation (and its bits) is unchanged.
    """
    return jnp.sqrt(a)


@_sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    root = jnp.sqrt(a)
    pos = a > 0
    return root, jnp.where(pos, 0.5 / jnp.where(pos, root, 1.0), 0.0) * da


def tail_sizes(record: PartitionRecord) -> tuple[int, ...]:
    """Static tail prefixes that :func:`apply_flat` may process: 1 and 4 blocks, or all of it."""
    total = record.num_pieces - record.num_head
    if record.tail_count is None or total == 0:
        return (total,)
    block = max(1, record.tail_block)
    return tuple(sorted({min(block, total), min(4 * block, total), total}))


@_schedule.scheduled
def apply_flat(
    key: jax.Array, x: jax.Array, record: PartitionRecord, tail: int | None = None
) -> jax.Array:
    """Warp float32 noise ``(*G, F)`` by ``record`` (grid ``G = record.shape``, 2D or 3D).

    The Brownian-bridge scatter of docs/DESIGN.md section 2 over the ``prod(G)`` flat cells, in two
    passes: ``S_s`` (the sum of each source's piece normals and remainder) by sums over the
    sources, then ``Y_d`` by gathers and sums over the destinations. The structured head is
    processed slot by slot: ``n`` pieces whose source (layout ``"src"``) or destination
    (``"dst"``, ``"dst_slot"``) is the identity, so that side is a plain elementwise add, and on
    CPU each sum is written per slot so XLA fuses the gathers into one loop per output instead of
    keeping ``(M, F)`` temporaries (and a ``reduce`` over a reshaped axis, which it does not
    vectorise). A record with a packed tail (``tail_count``) has its tail applied, on CPU, with
    the shortest static prefix that holds every piece in use (:func:`tail_sizes`,
    :func:`irwarp._schedule.prefix_switch` around the tail's part only), elsewhere whole; the
    tail's normals come in fixed blocks, so every prefix gives the same values and the choice only
    changes the cost. A static ``tail`` forces that prefix (tests).
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
    zeros = (jnp.zeros((n, f), jnp.float32), jnp.zeros((n,), jnp.float32))
    s_sum, a_src = _source_sums(zeros, parts)
    y_a = zeros

    def finish(tail: int, s_sum, a_src, y, a_dst):
        """Adds the first ``tail`` tail pieces and the remainders; the tail's part of ``Y``."""
        tail_parts = []
        if tail:
            rows = record.tail_block if record.tail_count is not None else None
            g = _random.normals(k_tail, tail, f, block_rows=rows)
            sl = slice(head, head + tail)
            tail_parts.append((record.src[sl], record.dst[sl], record.area[sl], g))
        s_sum, a_src = _source_sums((s_sum, a_src), tail_parts)
        if not record.normalized:
            # sqrt is steep at 0: a remainder within float noise of 0 (a fully used source) is 0,
            # so rounding in the areas cannot turn into visible noise (and jit matches eager).
            remainder = 1.0 - a_src
            remainder = jnp.where(remainder > _REMAINDER_EPS, remainder, 0.0)
            s_sum = s_sum + _sqrt0(remainder)[:, None] * _random.normals(k_rest, n, f)
        y, a_dst = _increments(x, s_sum, tail_parts, y, a_dst)
        return s_sum, y, a_dst

    if tail is not None:
        s_sum, y, a_dst = finish(tail, s_sum, a_src, *y_a)
    else:
        s_sum, y, a_dst = _schedule.prefix_switch(
            record.tail_count,
            tail_sizes(record),
            lambda t: functools.partial(finish, t),
            s_sum,
            a_src,
            *y_a,
        )
    y, a_dst = _increments(x, s_sum, parts, y, a_dst)
    if fresh is None:
        fresh = _random.normals(k_fresh, n, f)
    ok = (a_dst > 0)[:, None]
    y = jnp.where(ok, y / jnp.sqrt(jnp.where(ok, a_dst[:, None], 1.0)), fresh)
    return y.reshape(tuple(record.shape) + (f,))


def _source_sums(totals, parts):
    """``(S, A_src)`` plus the piece normals ``z = sqrt(a) g`` and areas of ``parts`` by source."""
    return _schedule.add_parts(
        totals, [(src, (_sqrt0(a)[:, None] * g, a)) for src, _, a, g in parts]
    )


def _add_at(total: jax.Array, index: jax.Array | None, values: jax.Array) -> jax.Array:
    """``total`` plus ``values`` summed into rows ``index`` (``None``: the identity).

    Scheduled by :func:`irwarp._schedule.add_at` (a scatter-add on CPU, sorted sums elsewhere).
    """
    return _schedule.add_at(total, index, values)


def _increments(x, s_sum, parts, y, a_dst):
    """Adds the bridge increments ``a X_s + z - a S_s`` of ``parts`` to ``Y`` and ``A_d``."""
    sums = []
    for src, dst, area, g in parts:
        x_src = x if src is None else x[src]
        s_src = s_sum if src is None else s_sum[src]
        a = area[:, None]
        inc = a * x_src + (_sqrt0(a) * g - a * s_src)
        # A piece that is its whole cell (area 1) is exactly that cell's value. Under jit, XLA may
        # evaluate z once inside the s_sum reduction and once here with different rounding, which
        # would leave a 1-ulp residue and break the exact identity / integer shifts (DESIGN 4.1).
        inc = jnp.where(a == 1.0, x_src, inc)
        sums.append((dst, (inc, area)))
    return _schedule.add_parts((y, a_dst), sums)
