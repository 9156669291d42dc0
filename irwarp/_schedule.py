"""Backend scheduling in one place: XLA-on-CPU devices behind one switch, a plain path elsewhere.

The geometry (:mod:`irwarp.records`, :mod:`irwarp.sheet`) and the bridge sums
(:mod:`irwarp._apply`) are written once as math and call this module only where XLA's CPU
backend wants a different schedule:

* :func:`materialize` / :func:`in_buffer`: a value computed into a buffer of its own, as the
  branch of a ``lax.cond`` on a flag XLA cannot fold (XLA's CPU pipeline drops
  ``optimization_barrier`` before fusion, so a large producer is otherwise recomputed in every
  consumer). Plain path: the value itself.
* :func:`prefix_switch`: the shortest static prefix of a packed list that holds its entries in use
  (``lax.switch``); every prefix gives the same values, so the choice only changes the cost. Plain
  path: the whole list.
* :func:`add_at` / :func:`segment_sum`: sums over repeated indices. CPU: XLA's scatter-add, which
  XLA's CPU backend runs as one sequential loop in index order (deterministic, and the fastest
  there). Plain path: a stable sort of the indices, a segmented inclusive scan of the values in
  that order and a read of each segment's last entry (a scatter with unique indices), so the
  order of every float addition is fixed by the shapes alone. On GPU, XLA runs a floating-point
  scatter-add with repeated indices with atomics in an order that changes from run to run; the
  plain path has none.

The switch is :func:`on_cpu`, built on ``jax.lax.platform_dependent``: the CPU variant when the
program is lowered for CPU, the plain one for every other platform, decided at lowering time (so
``jax.export(..., platforms=("cuda",))`` shows the plain path on any machine). Inside a branch
the choice is known while tracing, so nested devices resolve statically and the lowered module
holds one platform switch per outermost call. :func:`force` overrides the choice at trace time
(tests run the plain path on CPU with it).

What the plain path guarantees: no floating-point scatter-add over repeated indices and no
``lax.cond``/``lax.switch`` of its own, so with the same key, inputs, shapes and device a public
call gives the same bits from run to run. On CPU both paths agree bit for bit on the records, the
tail prefixes and the sheet; the noise agrees to float rounding (the plain path adds the pieces of
one cell in a different order).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "MODES",
    "force",
    "mode",
    "on_cpu",
    "scheduled",
    "batch_max",
    "in_buffer",
    "materialize",
    "prefix_switch",
    "add_at",
    "add_parts",
    "segment_sum",
]

MODES = ("cpu", "plain")

_forced: str | None = None
_tracing = threading.local()  # .mode: the schedule of the on_cpu branch being traced


def mode() -> str | None:
    """The schedule fixed at trace time (``"cpu"``, ``"plain"``), or None (chosen when lowered)."""
    return _forced or getattr(_tracing, "mode", None)


@contextlib.contextmanager
def force(which: str | None):
    """Trace every :func:`on_cpu` with one schedule (``"cpu"``, ``"plain"``; None: by platform).

    Jit caches are cleared on entry and exit, since the choice is made while tracing.
    """
    global _forced
    if which is not None and which not in MODES:
        raise ValueError(f"schedule must be one of {MODES} or None; got {which!r}")
    previous = _forced
    jax.clear_caches()
    _forced = which
    try:
        yield
    finally:
        _forced = previous
        jax.clear_caches()


def _within(which: str, fn: Callable) -> Callable:
    def branch(*args):
        previous = getattr(_tracing, "mode", None)
        _tracing.mode = which
        try:
            return fn(*args)
        finally:
            _tracing.mode = previous

    return branch


def on_cpu(cpu_fn: Callable, plain_fn: Callable, *args):
    """``cpu_fn(*args)`` where the program runs on CPU, ``plain_fn(*args)`` on any other backend.

    Chosen at lowering time (``jax.lax.platform_dependent``), unless the choice is already fixed
    while tracing (:func:`force`, or inside a branch of an enclosing call). Both must return the
    same pytree structure, shapes and dtypes.
    """
    which = mode()
    if which == "cpu":
        return cpu_fn(*args)
    if which == "plain":
        return plain_fn(*args)
    return jax.lax.platform_dependent(
        *args, cpu=_within("cpu", cpu_fn), default=_within("plain", plain_fn)
    )


def scheduled(fn: Callable) -> Callable:
    """``fn`` traced once per schedule under one :func:`on_cpu` (its devices then resolve statically).

    For a function that calls several devices of this module: the lowered module gets one platform
    switch instead of one per device.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if mode() is not None:
            return fn(*args, **kwargs)

        def call():
            return fn(*args, **kwargs)

        return on_cpu(call, lambda: call())

    return wrapper


# --------------------------------------------------------------------------------------------------
# Materialising conditionals (CPU only).


@jax.custom_batching.custom_vmap
def batch_max(value: jax.Array) -> jax.Array:
    """Identity on a scalar; under ``vmap`` the maximum over the batch, returned unbatched.

    Lets a data-dependent ``lax.switch`` / ``lax.cond`` stay one branch for a whole batch instead of
    becoming a ``select`` over every branch (what ``vmap`` does with a batched index). Callers use
    it only where every branch gives the same values, so it changes the cost, not the result.
    """
    return value


@batch_max.def_vmap
def _batch_max_vmap(axis_size, in_batched, value):
    del axis_size
    if not in_batched[0]:
        return value, False
    # An empty batch (vmap over zero examples) has no maximum; any value serves it.
    return jnp.max(value, initial=_lowest(value.dtype)), False


def _lowest(dtype):
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    if jnp.issubdtype(dtype, jnp.floating):
        return -jnp.inf
    return False


def _in_buffer_cpu(fn: Callable, *args, always: jax.Array):
    keep = batch_max(jnp.logical_not(always).astype(jnp.int32)) == 0

    def zeros(*a):
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *a))

    return jax.lax.cond(keep, fn, zeros, *args)


def in_buffer(fn: Callable, *args, always: jax.Array):
    """``fn(*args)``; on CPU computed apart, into result buffers of its own.

    XLA's CPU pipeline drops ``optimization_barrier`` before fusion, so a large elementwise
    producer gets fused into each of its consumers and recomputed there (into a scatter, that is
    its scalar loop: measured 6x slower than computing the values first; a hash fused into its
    consumers, 4x). A conditional's branch is a computation of its own, so on CPU ``fn`` runs as
    the branch of a ``lax.cond`` on ``always``: a boolean scalar the caller guarantees true but XLA
    cannot prove true (e.g. ``probe == probe`` for a float ``probe`` known to be finite). The other
    branch, never taken, gives zeros. Under ``vmap`` the flag is one for the whole batch
    (:func:`batch_max`), so the cond stays a cond. Plain path: ``fn(*args)``.
    """
    return on_cpu(functools.partial(_in_buffer_cpu, fn, always=always), fn, *args)


def materialize(tree, probe: jax.Array):
    """``tree`` (already computed); on CPU in buffers of its own. ``probe``: a finite float.

    See :func:`in_buffer`: the identity as the branch, on ``probe == probe``.
    """
    return in_buffer(lambda t: t, tree, always=probe == probe)


# --------------------------------------------------------------------------------------------------
# Static prefixes (CPU only).


def prefix_switch(count: jax.Array, sizes: Sequence[int], branch: Callable, *operands):
    """``branch(s)(*operands)`` for the shortest static ``s`` in ``sizes`` with ``s >= count``.

    ``sizes`` ascending, the last one the whole list (always enough); the caller guarantees that
    every ``s >= count`` gives the same values. CPU: one ``lax.switch`` on the batch-wide
    ``count`` (:func:`batch_max`). Plain path: ``branch(sizes[-1])(*operands)``.
    """
    sizes = tuple(sizes)

    def cpu(*ops):
        if len(sizes) == 1:
            return branch(sizes[0])(*ops)
        c = batch_max(count)
        index = sum((c > s).astype(jnp.int32) for s in sizes[:-1])
        return jax.lax.switch(index, [branch(s) for s in sizes], *ops)

    return on_cpu(cpu, lambda *ops: branch(sizes[-1])(*ops), *operands)


# --------------------------------------------------------------------------------------------------
# Sums over repeated indices.


def _sorted_sums(index: jax.Array, values, num_segments: int):
    """Segment sums of each leaf of ``values`` (leading axis ``M``) by ``index``, without atomics.

    Stable sort of ``index`` (ties by position), segmented inclusive scan of the values in that
    order (``lax.associative_scan``: a fixed tree of additions for fixed shapes), and each
    segment's total read at its last entry, written by a scatter with unique indices. Indices
    outside ``[0, num_segments)`` are dropped.
    """
    m = index.shape[0]
    leaves, treedef = jax.tree_util.tree_flatten(values)
    if m == 0:
        return jax.tree_util.tree_unflatten(
            treedef, [jnp.zeros((num_segments,) + v.shape[1:], v.dtype) for v in leaves]
        )
    pos = jnp.arange(m, dtype=jnp.int32)
    key, order = jax.lax.sort((index.astype(jnp.int32), pos), num_keys=1, is_stable=True)
    start = jnp.concatenate([jnp.ones((1,), bool), key[1:] != key[:-1]])
    last = jnp.concatenate([key[1:] != key[:-1], jnp.ones((1,), bool)])
    ok = last & (key >= 0) & (key < num_segments)
    # Distinct targets: a segment's last entry, or a distinct index past the end (dropped).
    target = jnp.where(ok, key, num_segments + pos)

    def combine(a, b):
        (fa, va), (fb, vb) = a, b

        def step(x, y):
            return jnp.where(fb.reshape(fb.shape + (1,) * (y.ndim - 1)), y, x + y)

        return fa | fb, [step(x, y) for x, y in zip(va, vb, strict=True)]

    sorted_leaves = [v[order] for v in leaves]
    _, scanned = jax.lax.associative_scan(combine, (start, sorted_leaves))
    out = [
        jnp.zeros((num_segments,) + s.shape[1:], s.dtype)
        .at[target]
        .set(s, mode="drop", unique_indices=True)
        for s in scanned
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def add_parts(total, parts: Sequence[tuple[jax.Array | None, object]]):
    """``total`` plus each part's ``values`` summed into its rows ``index`` (``None``: identity).

    ``total`` and every part's ``values`` are matching pytrees (leaves sharing the part's index,
    leading axis the part's length). CPU: one ``.at[index].add`` per part and leaf, in order (XLA's
    CPU scatter is a sequential loop). Plain path: the identity parts added in order, then the
    indexed parts concatenated and summed by one sort (:func:`_sorted_sums`).
    """
    parts = list(parts)
    if all(index is None for index, _ in parts):
        for _, values in parts:
            total = jax.tree_util.tree_map(lambda t, v: t + v, total, values)
        return total

    def cpu(total, parts):
        for index, values in parts:
            if index is None:
                total = jax.tree_util.tree_map(lambda t, v: t + v, total, values)
            else:
                total = jax.tree_util.tree_map(
                    lambda t, v, index=index: t.at[index].add(v), total, values
                )
        return total

    def plain(total, parts):
        indexed = [(index, values) for index, values in parts if index is not None]
        for index, values in parts:
            if index is None:
                total = jax.tree_util.tree_map(lambda t, v: t + v, total, values)
        n = jax.tree_util.tree_leaves(total)[0].shape[0]
        index = jnp.concatenate([i for i, _ in indexed])
        values = jax.tree_util.tree_map(
            lambda *v: jnp.concatenate(v), *[values for _, values in indexed]
        )
        sums = _sorted_sums(index, values, n)
        return jax.tree_util.tree_map(lambda t, s: t + s, total, sums)

    return on_cpu(cpu, plain, total, parts)


def add_at(total, index: jax.Array | None, values):
    """``total`` plus ``values`` summed into rows ``index`` (``None``: the identity).

    ``total`` and ``values`` are matching pytrees (one leaf or several sharing ``index``).
    CPU: ``total.at[index].add(values)`` per leaf. Plain path: ``total`` plus the sorted segment
    sums of ``values`` (:func:`_sorted_sums`, one sort for all the leaves).
    """
    return add_parts(total, [(index, values)])


def segment_sum(data: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """``jax.ops.segment_sum(data, segment_ids, num_segments)``; deterministic off CPU.

    CPU: ``jax.ops.segment_sum`` (a scatter-add). Plain path: :func:`_sorted_sums`.
    """

    def cpu(data):
        return jax.ops.segment_sum(data, segment_ids, num_segments=num_segments)

    return on_cpu(cpu, lambda data: _sorted_sums(segment_ids, data, num_segments), data)
