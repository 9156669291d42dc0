"""Claim 5 (temporal coherence): how much chained warping decorrelates noise that should move rigidly.

    python -m experiments.coherence --config=configs/coherence.py --workdir=DIR

Motions: constant sub-pixel translations of ``v`` px per frame (``config.speeds``, along
``config.direction_deg``) and a smooth rotation of ``config.rotation_deg`` per frame about the
centre, over ``T`` frames. Each method warps frame 0 ``X_0`` frame after frame with
``irwarp.warp_sequence`` (``splat`` with the exact forward flow). Frame ``t`` should then be frame 0
moved by the exact composed motion (``t v``, or a rotation by ``t`` times the angle).

The measure. Let ``psi_t`` be the exact backward map from frame ``t`` to frame 0 and ``a_ds`` the
exact areas of ``psi_t(cell_d)`` in the old cells (the grid record of the composed flow). The ideal
frame ``t`` is the integral noise over ``psi_t(cell_d)``, whose best prediction from ``X_0`` is
``P_d = E[Y_d | X_0] = sum_s a_ds X_s / sqrt(A_d)`` (for a translation, exactly the bilinear resample
of ``X_0`` at ``psi_t(centre_d)``). Each method's coherence is ``rho_t = corr(Y_t, P_t)`` pooled over
pixels whose pre-image lies inside the frame (and a margin), samples and channels. An exact rigid
warp reaches ``rho*_t = sqrt(mean_d sum_s a_ds^2 / A_d)`` and no function of ``X_0`` can do
better for white noise; ``rho*_t = 1`` when the total shift is a whole number of pixels (then the
ideal frame is an exact copy). The tables report the retained coherence ``rho_t / rho*_t``; for a
unit-variance ``Y_t`` it equals ``Cov(Y_t, P_t) / Var(P_t)``, the fraction of the exact covariance
with frame 0 that the method keeps: 1 for a method that moves the noise rigidly, lower when chained
resampling has blurred the integral noise into its neighbours. Methods whose output is not white
(``bilinear``, ``nearest``) can exceed 1: they copy or blend the old values instead of sampling new
white noise.

Beyond chaining. ``"lagrangian"`` (leaf level ``config.depth``) or ``"lagrangian<L>"`` is
``irwarp.warp_sequence(method="lagrangian")``: every frame integrates frame 0's virtual Brownian
sheet over its pre-image under the composed flow (``irwarp.sheet``), so it should not drift.
``"chang<N>@0"`` is its O(N^2) reference: Chang et al. applied to frame 0 at every frame with the
composed flow and the same key, i.e. one fixed ``N x N`` upsampled state of frame 0.

Also measured, per method, motion and frame: the consecutive-frame coherence ``cons_t``, the same
retained coherence with frame ``t - 1`` in the role of frame 0 and the one-step flow (1 for an
exact warp; what chained methods optimise), and whiteness (``irwarp.stats.whiteness_checks`` at
5 standard errors, ``white``). A cost table times one frame of each method on the first noise
batch (``ms`` per frame: median of ``config.cost_repeats`` calls, each alternated with a
chained grid step, so that ``x grid`` is a paired ratio) with XLA's temporary memory
(``compiled.memory_analysis().temp_size_in_bytes``): chained grid / particle (one step),
``lagrangian`` at ``config.cost_depths`` and anchored Chang at ``config.cost_upsamples`` (both from
frame 0 along the composed flow of ``config.cost_frame`` frames of the cost motion). For
``lagrangian`` it also reports what limits a frame: its bridge splits (each needs ``3 F`` normals,
``F`` = batch x channels), counted by the frame and independently from the geometry
(:func:`split_node_counts`), the time of drawing just those normals, and the same for the distinct
nodes among them (the floor of a frontier shared between neighbouring pixels); the same frame with
one sheet (``one_sheet_*``: the work that does not scale with ``F``) and the sort of the frame's
split-node ids that such a shared frontier would need to find its duplicates (``dedup_sort_*``).

Writes to the workdir: ``config.json``, ``metrics.jsonl`` (one line per method x motion x frame),
``cost.jsonl`` (one line per cost-table entry), ``summary.md`` (tables at a few frames, white
frames, consecutive coherence, cost), ``coherence.png`` (retained coherence against ``t``, one
panel per motion) and ``coherence_raw.png`` (``rho_t`` with the ideal ``rho*_t``).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import irwarp
from experiments.lib import launch, measure, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import flows as flows_lib
from irwarp import sheet, stats

# Method names beyond experiments.methods_lib.parse_method: the sheet, and Chang et al. from frame 0.
_LAGRANGIAN = re.compile(r"lagrangian(\d+)?")
_ANCHORED = re.compile(r"chang(\d+)@0")


def check_method(name: str) -> None:
    """Accepts ``"lagrangian"``, ``"lagrangian<L>"``, ``"chang<N>@0"`` and the common names."""
    if not (_LAGRANGIAN.fullmatch(name) or _ANCHORED.fullmatch(name)):
        methods_lib.parse_method(name)


def method_label(name: str, config) -> str:
    """Legend and table label of a method name."""
    m = _LAGRANGIAN.fullmatch(name)
    if m:
        return f"lagrangian L={m.group(1) or config.depth}"
    m = _ANCHORED.fullmatch(name)
    if m:
        return f"chang N={m.group(1)} from frame 0"
    return methods_lib.method_label(name)


def _keyframe_every(config):
    return int(config.keyframe_every) or None


@functools.cache
def _lagrangian_sequence(depth: int, capacity: float, every):
    return jax.jit(
        lambda key, x, bflows, fflows: irwarp.warp_sequence(
            key,
            x,
            bflows,
            method="lagrangian",
            depth=depth,
            capacity=capacity,
            keyframe_every=every,
        )
    )


@functools.cache
def _anchored_sequence(upsample: int):
    """Chang et al. from frame 0 at every frame: composed flow, one key (one upsampled state)."""

    def run(key, x, bflows, fflows):
        def body(total, flow):
            total = flows_lib.compose(total, flow)
            return total, irwarp.warp(key, x, total, method="chang", upsample=upsample)

        _, frames = jax.lax.scan(body, jnp.zeros_like(bflows[0]), bflows)
        return jnp.concatenate([x[None], frames], axis=0)

    return jax.jit(run)


def sequence_fn(name: str, config):
    """Jitted ``f(key, noise0, backward_flows, forward_flows) -> (T + 1, ...)`` for a method name."""
    m = _LAGRANGIAN.fullmatch(name)
    if m:
        depth = int(m.group(1) or config.depth)
        return _lagrangian_sequence(depth, float(config.capacity), _keyframe_every(config))
    m = _ANCHORED.fullmatch(name)
    if m:
        return _anchored_sequence(int(m.group(1)))
    return methods_lib.sequence_fn(name)


def motions(config, h: int, w: int) -> list[dict]:
    """The motions: name, per-frame backward and forward flows, and the exact total backward flows.

    Returns a list of dicts with ``name``, ``back`` and ``fwd`` ``(H, W, 2)``, and ``total``
    ``(T + 1, H, W, 2)`` (``total[t]`` maps frame ``t`` to frame 0; ``total[0]`` is 0).
    """
    t_frames = int(config.frames)
    ts = np.arange(t_frames + 1, dtype=np.float32)
    theta = math.radians(float(config.direction_deg))
    ux, uy = math.cos(theta), -math.sin(theta)  # y grows downwards: positive angles point up
    out = []
    for v in config.speeds:
        v = float(v)
        # The content moves by (v ux, v uy) per frame: backward flow is minus that.
        back = flows_lib.translation(h, w, -v * ux, -v * uy)
        total = jnp.stack([flows_lib.translation(h, w, -t * v * ux, -t * v * uy) for t in ts])
        out.append(dict(name=f"v={v:g}", speed=v, back=back, fwd=-back, total=total))
    if config.rotation_deg:
        deg = float(config.rotation_deg)
        total = jnp.stack([flows_lib.rotation(h, w, t * deg) for t in ts])
        # The forward flow of a rotation by deg is the backward flow of a rotation by -deg.
        out.append(
            dict(
                name=f"rot {deg:g} deg",
                speed=None,
                back=flows_lib.rotation(h, w, deg),
                fwd=flows_lib.rotation(h, w, -deg),
                total=total,
            )
        )
    return out


@jax.jit
def _predictor_parts(total_flow, x0):
    """``P = E[Y | X_0]`` of the exact warp ``(L, H, W, C)``, ``sum_s a^2 / A`` and ``A`` per pixel."""
    rec = irwarp.grid_record(total_flow)
    h, w = rec.shape
    n = h * w
    a_dst = jax.ops.segment_sum(rec.area, rec.dst, num_segments=n)
    a2 = jax.ops.segment_sum(rec.area**2, rec.dst, num_segments=n)
    xf = jnp.moveaxis(x0.reshape((-1, n, x0.shape[-1])), 0, 1).reshape(n, -1)  # (n, L C)
    mean = jax.ops.segment_sum(rec.area[:, None] * xf[rec.src], rec.dst, num_segments=n)
    safe = jnp.where(a_dst > 0, a_dst, 1.0)
    mean = mean / jnp.sqrt(safe)[:, None]
    mean = jnp.moveaxis(mean.reshape(n, -1, x0.shape[-1]), 1, 0).reshape(x0.shape)
    return mean, (a2 / safe).reshape(h, w), a_dst.reshape(h, w), rec.overflow


def valid_mask(total_flow: np.ndarray, a_dst: np.ndarray, overflow, margin: int) -> np.ndarray:
    """Pixels whose whole pre-image lies inside frame 0 (``A_d = 1``), away from the border."""
    h, w = a_dst.shape
    ok = (np.abs(a_dst - 1.0) < 1e-3) & (np.asarray(overflow) == 0)
    ok &= np.all(np.isfinite(total_flow), axis=-1)
    if margin > 0:
        y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        px, py = x + total_flow[..., 0], y + total_flow[..., 1]
        ok &= (px >= margin) & (px <= w - margin) & (py >= margin) & (py <= h - margin)
        ok[:margin] = ok[-margin:] = False
        ok[:, :margin] = ok[:, -margin:] = False
    return ok


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pooled Pearson correlation of ``a`` and ``b`` ``(..., H, W, C)`` over the ``(H, W)`` mask."""
    a = np.asarray(a, np.float64)[..., mask, :].ravel()
    b = np.asarray(b, np.float64)[..., mask, :].ravel()
    a = a - a.mean()
    b = b - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def draw(
    curves, motion_names, methods, labels, t_frames, wd: workdir_lib.Workdir, raw: bool
) -> str:
    ncol = min(5, len(motion_names))
    nrow = math.ceil(len(motion_names) / ncol)
    fig = media.new_figure(3.0 * ncol, 2.6 * nrow + 0.4)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    ts = np.arange(t_frames + 1)
    for k, mo in enumerate(motion_names):
        ax = axes[k // ncol][k % ncol]
        for i, m in enumerate(methods):
            c = curves[m, mo]
            ax.plot(
                ts,
                c["rho"] if raw else c["retained"],
                color=f"C{i}",
                lw=1.3,
                label=labels[m],
            )
        if raw:
            ax.plot(ts, curves[methods[0], mo]["ideal"], "k--", lw=1, label="ideal rho*")
        else:
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_title(mo, fontsize=9)
        ax.set_ylim(0.0, 1.6 if not raw else 1.05)
        if k // ncol == nrow - 1:
            ax.set_xlabel("frame t")
        if k % ncol == 0:
            ax.set_ylabel("rho_t" if raw else "rho_t / rho*_t")
    for k in range(len(motion_names), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    title = (
        "correlation of frame t with the exact rigid prediction from frame 0 (dashed: ideal)"
        if raw
        else "retained coherence: corr(Y_t, E[ideal Y_t | X_0]) / its ideal value (1 = rigid)"
    )
    fig.suptitle(title)
    return wd.save_figure(fig, "coherence_raw.png" if raw else "coherence.png")


def _paired_ms(call, base, repeats: int) -> tuple[float, float]:
    """Median ms of ``call()`` and of ``base()`` over ``repeats`` calls of each, alternated.

    One warm-up call each first. Alternating makes ``call / base`` a paired ratio on a machine
    whose speed drifts (the numbers quoted are ratios to the chained grid step).
    """
    measure.block(call())
    measure.block(base())
    times = ([], [])
    for _ in range(max(int(repeats), 1)):
        for fn, out in zip((call, base), times, strict=True):
            t0 = time.perf_counter()
            measure.block(fn())
            out.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def split_node_counts(verts, valid, depth: int, chunk: int = 1024) -> dict[str, np.ndarray]:
    """Bridge splits a lagrangian frame needs, per level, counted from the geometry alone (numpy).

    An independent count of :func:`irwarp.sheet.lagrangian_frame`'s frontier: a node of level
    ``l < L`` is split for polygon ``p`` when an edge of ``p`` meets the node's leaf-centre square
    grown by the sheet's margin (half-side ``2^-l / 2 - 2^-L / 2 + eps``) and the node lies in the
    ``3 x 3`` window of roots from the floor of ``p``'s bounding box. (A child's square lies in its
    parent's, so every such node's ancestors are split too.) ``per_polygon`` counts each node once
    per polygon that splits it, as the frame does; ``unique`` counts each node once, which is what a
    frontier shared by neighbouring pixels would split; ``single_edge`` counts the (polygon, node)
    splits that only one edge of the polygon touches; ``node_ids`` names every (polygon, node)
    split by its node (equal ids for one node of one level), what such a frontier would have to
    deduplicate.

    Args:
      verts: ``(P, V, 2)`` float32 polygon vertices ``(x, y)`` in keyframe pixels.
      valid: ``(P,)`` bool; invalid polygons split nothing.
      depth: leaf level ``L``.
      chunk: polygons per numpy pass (memory).

    Returns:
      ``{"per_polygon": (L,), "unique": (L,), "single_edge": (L,)}`` int64 counts of split nodes
      per level, and ``"node_ids"``: uint32 ``(sum of per_polygon,)``, level by level in polygon
      order.

    Raises:
      ValueError: on vertices that are not ``(P, V, 2)`` with ``V >= 3``, ``valid`` that is not
        ``(P,)``, or a depth that is not a non-negative integer.
    """
    verts = np.asarray(verts, np.float32)
    valid = np.asarray(valid, bool)
    if verts.ndim != 3 or verts.shape[1] < 3 or verts.shape[2] != 2:
        raise ValueError(f"verts must have shape (P, V, 2) with V >= 3; got {verts.shape}")
    if valid.shape != verts.shape[:1]:
        raise ValueError(f"valid must have shape (P,) = {verts.shape[:1]}; got {valid.shape}")
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer; got {depth!r}")
    window = sheet.ROOT_WINDOW
    f32 = np.float32
    ax, ay = verts[..., 0], verts[..., 1]
    bx, by = np.roll(ax, -1, axis=-1), np.roll(ay, -1, axis=-1)
    swap = (by < ay) | ((by == ay) & (bx < ax))
    ux, uy = np.where(swap, bx, ax), np.where(swap, by, ay)
    vx, vy = np.where(swap, ax, bx), np.where(swap, ay, by)
    ex, ey = vx - ux, vy - uy
    xmin, xmax, norm = np.minimum(ux, vx), np.maximum(ux, vx), np.abs(ex) + ey
    lo = np.floor(verts.min(axis=1)).astype(np.int64)  # (P, 2) window origin (x, y)
    per_polygon, unique, single, ids = [], [], [], []
    for level in range(depth):
        n = 2**level
        r = f32(0.5 * 2.0**-level - 0.5 * 2.0**-depth + sheet.SPLIT_MARGIN)
        side = f32(2.0**-level)
        span = np.arange(window * n)
        count, ones, keys = 0, 0, []
        for start in range(0, verts.shape[0], chunk):
            sl = slice(start, start + chunk)
            rows = lo[sl, 1, None] * n + span  # (p, window n) node rows at this level
            cols = lo[sl, 0, None] * n + span
            cy = ((rows + 0.5).astype(f32) * side)[:, :, None]  # (p, window n, 1)
            cx = ((cols + 0.5).astype(f32) * side)[:, None, :]  # (p, 1, window n)
            edges = np.zeros((rows.shape[0], rows.shape[1], cols.shape[1]), np.int32)
            for e in range(verts.shape[1]):
                g = [a[sl, e, None, None] for a in (xmin, xmax, ux, uy, vy, ex, ey, norm)]
                exn, exx, eux, euy, evy, eex, eey, enorm = g
                box = (exn <= cx + r) & (exx >= cx - r) & (euy <= cy + r) & (evy >= cy - r)
                line = np.abs(eex * (cy - euy) - eey * (cx - eux)) <= r * enorm
                edges += box & line
            hit = (edges > 0) & valid[sl, None, None]
            count += int(hit.sum())
            ones += int((hit & (edges == 1)).sum())
            p, i, j = np.nonzero(hit)
            keys.append((rows[p, i] << 32) + (cols[p, j] & 0xFFFFFFFF))
        per_polygon.append(count)
        single.append(ones)
        found, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        unique.append(found.size)
        ids.append(inverse.reshape(-1) + sum(unique[:-1]))
    return dict(
        per_polygon=np.asarray(per_polygon),
        unique=np.asarray(unique),
        single_edge=np.asarray(single),
        node_ids=np.concatenate(ids).astype(np.uint32) if ids else np.zeros(0, np.uint32),
    )


def _agree(costs: list[dict]) -> str:
    rows = [r for r in costs if "split_nodes" in r]
    same = sum(r["split_nodes"] == r["split_nodes_geometry"] for r in rows)
    return f"{same} of {len(rows)} rows equal"


def _split_normals(nodes: int, features: int, chunk: int = 8192):
    """A call that draws only the ``3 F`` split normals of ``nodes`` sheet nodes, as a frame does.

    In chunks of ``chunk`` nodes (``lax.map``), each materialised as in a frame: a frame splits its
    nodes level by level in blocks of a few thousand, whose normals stay in cache (one call for
    all 181K nodes of a 64x64 frame at L = 4 measured 2.5x slower than chunks of 2K to 32K).
    """
    nb = max(-(-nodes // chunk), 1)
    k1 = jax.random.bits(jax.random.key(0), (nb, chunk), jnp.uint32)
    k2 = jax.random.bits(jax.random.key(1), (nb, chunk), jnp.uint32)

    def body(args):
        a, b, probe = args
        # The probe is traced, as in a frame, so that XLA cannot fold the materialising cond.
        return sheet.split_normals(a, b, features, probe)[:, 0]

    fn = jax.jit(lambda a, b, p: jax.lax.map(body, (a, b, jnp.broadcast_to(p, (nb,)))))
    probe = jnp.float32(0.0)
    return lambda: fn(k1, k2, probe)


def _dedup_sort(ids: np.ndarray):
    """A call that sorts node ids ``(N,)`` with their positions: how duplicates would be found."""
    ids = jnp.asarray(ids, jnp.uint32)
    fn = jax.jit(lambda a: jax.lax.sort((a, jnp.arange(a.shape[0], dtype=jnp.int32)), num_keys=1))
    return lambda: fn(ids)


def _lagrangian_cost(name: str, fn, compiled, key, x0, flow, base, reps: int) -> dict:
    """The sheet's diagnostics of one frame and the floors its split normals set (cost table)."""
    row = {}
    _, info = compiled(key, x0, flow)
    row["dropped_nodes"] = int(info["dropped_nodes"])
    row["frontier_use"] = float(np.max(np.asarray(info["frontier_use"])))
    # What limits the frame: its bridge splits need 3 F normals each. Time those
    # normals alone, for the splits the frame made (one per pixel and node) and for
    # the distinct nodes among them (a frontier shared by neighbouring pixels).
    depth = int(name.split("=")[1])
    verts, valid = sheet.frame_octagons(flow)
    geo = split_node_counts(verts, valid, depth)
    features = int(np.prod(x0.shape[:-3])) * int(x0.shape[-1])
    pixels = int(np.prod(x0.shape[-3:-1]))
    row["split_nodes"] = int(info["split_nodes"])
    row["split_nodes_geometry"] = int(geo["per_polygon"].sum())
    row["unique_split_nodes"] = int(geo["unique"].sum())
    row["splits_per_px"] = row["split_nodes"] / pixels
    row["unique_splits_per_px"] = row["unique_split_nodes"] / pixels
    # Splits whose node only one edge of the pixel's polygon touches, per level.
    row["single_edge_fraction"] = (geo["single_edge"] / geo["per_polygon"]).tolist()
    for tag, nodes in (
        ("", row["split_nodes"]),
        ("unique_", row["unique_split_nodes"]),
    ):
        n_ms, g_ms = _paired_ms(_split_normals(nodes, features), base, reps)
        row[tag + "normals_ms"] = n_ms
        row[tag + "normals_vs_grid"] = n_ms / g_ms
    # The work that does not scale with F: the same frame of one sheet (F = 1),
    # still against the grid step of all F.
    one = x0.reshape((-1,) + x0.shape[-3:])[:1, ..., :1]
    single, _ = measure.compile_timed(fn, key, one, flow)
    n_ms, g_ms = _paired_ms(lambda c=single, o=one, f=flow: c(key, o, f), base, reps)
    row["one_sheet_ms"], row["one_sheet_vs_grid"] = n_ms, n_ms / g_ms
    # A frontier shared by neighbouring pixels must first find its duplicates: time
    # sorting this frame's split-node ids with their slots (XLA's sort).
    n_ms, g_ms = _paired_ms(_dedup_sort(geo["node_ids"]), base, reps)
    row["dedup_sort_ms"], row["dedup_sort_vs_grid"] = n_ms, n_ms / g_ms
    return row


def cost_rows(config, x0, mos, path: str) -> list[dict]:
    """Times one frame of each method and reads XLA's temporary memory; writes ``path`` (JSONL).

    Chained grid / particle warp one step along the per-frame flow; ``lagrangian`` (each of
    ``config.cost_depths``) and Chang et al. from frame 0 (each of ``config.cost_upsamples``) evaluate
    frame ``config.cost_frame`` of the cost motion from frame 0 along its composed flow.
    """
    mo = mos[int(config.cost_motion)]
    t = min(int(config.cost_frame), int(config.frames))
    total = mo["total"][t]
    key = jax.random.key(int(config.seed) + 1)
    cap = float(config.capacity)
    entries = [
        (m, "chained, one step", lambda k, x, f, m=m: irwarp.warp(k, x, f, method=m), mo["back"])
        for m in config.cost_chained
    ]
    for d in config.cost_depths:
        entries.append(
            (
                f"lagrangian L={d}",
                f"from frame 0, t={t}",
                lambda k, x, f, d=int(d): sheet.lagrangian_frame(
                    k, x, f, depth=d, capacity=cap, return_info=True
                ),
                total,
            )
        )
    for n in config.cost_upsamples:
        entries.append(
            (
                f"chang N={n} from frame 0",
                f"from frame 0, t={t}",
                lambda k, x, f, n=int(n): irwarp.warp(k, x, f, method="chang", upsample=n),
                total,
            )
        )
    grid_fn = functools.partial(irwarp.warp, method="grid")
    grid, grid_compile_s = measure.compile_timed(grid_fn, key, x0, mo["back"])

    def base():
        return grid(key, x0, mo["back"])

    reps = int(config.cost_repeats)
    rows = []
    with workdir_lib.JsonlWriter(path) as out:
        for name, how, fn, flow in entries:
            if name == "grid":  # the chained grid step is the baseline, compiled above
                compiled, compile_s = grid, grid_compile_s
            else:
                compiled, compile_s = measure.compile_timed(fn, key, x0, flow)
            try:
                temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
            except Exception:  # best effort: not every backend reports it
                temp_mb = math.nan
            ms, grid_ms = _paired_ms(lambda c=compiled, f=flow: c(key, x0, f), base, reps)
            row = dict(
                method=name,
                how=how,
                motion=mo["name"],
                ms=ms,
                grid_ms=grid_ms,
                vs_grid=ms / grid_ms,
                compile_s=compile_s,
                xla_temp_mb=temp_mb,
            )
            if name.startswith("lagrangian"):
                row.update(_lagrangian_cost(name, fn, compiled, key, x0, flow, base, reps))
            rows.append(row)
            out.write(row)
            logging.info(
                "cost %-26s %8.1f ms = %5.1f x grid, %7.1f MB temp",
                name,
                row["ms"],
                row["vs_grid"],
                temp_mb,
            )
    return rows


def references(config, mos: list[dict], x0) -> tuple[list, list]:
    """Per motion: ``(prediction P_t, mask, rho*_t)`` for every frame t, and the one-step
    ``(mask, ideal)`` of consecutive frames."""
    t_frames = int(config.frames)
    refs = []
    for mo in mos:
        per_t = []
        for t in range(t_frames + 1):
            pred, a2, a_dst, overflow = _predictor_parts(mo["total"][t], x0)
            mask = valid_mask(
                np.asarray(mo["total"][t]), np.asarray(a_dst), overflow, int(config.margin)
            )
            ideal = math.sqrt(float(np.mean(np.asarray(a2)[mask]))) if mask.any() else math.nan
            per_t.append((np.asarray(pred), mask, ideal))
        refs.append(per_t)
    # One-step references for the consecutive-frame coherence: the mask and ideal depend only on
    # the (constant) per-frame flow.
    steps = []
    for mo in mos:
        _, a2, a_dst, overflow = _predictor_parts(mo["back"], x0)
        mask = valid_mask(np.asarray(mo["back"]), np.asarray(a_dst), overflow, int(config.margin))
        steps.append((mask, math.sqrt(float(np.mean(np.asarray(a2)[mask])))))
    return refs, steps


def cost_table(config, costs: list[dict], shape) -> list[str]:
    """The summary lines of the cost table of one frame."""
    features = int(config.batch) * int(config.channels)
    return [
        f"### Cost of one frame ({costs[0]['motion']}; {shape} noise)",
        "",
        tables.markdown_table(
            (
                "method",
                "frame",
                "ms / frame",
                "x grid",
                "XLA temp MB",
                "compile s",
                "splits / px",
                "its normals alone: x grid",
                "distinct splits / px",
                "their normals alone: x grid",
            ),
            [
                [
                    r["method"],
                    r["how"],
                    tables.cell(r["ms"], 1),
                    tables.cell(r["vs_grid"], 1),
                    tables.cell(r["xla_temp_mb"], 1),
                    tables.cell(r["compile_s"], 1),
                    tables.cell(r.get("splits_per_px"), 1),
                    tables.cell(r.get("normals_vs_grid"), 1),
                    tables.cell(r.get("unique_splits_per_px"), 1),
                    tables.cell(r.get("unique_normals_vs_grid"), 1),
                ]
                for r in costs
            ],
        ),
        "",
        "Splits / px: bridge splits the frame made per pixel (one per pixel and node, "
        "`info['split_nodes']`; the numpy geometric count `split_node_counts` agrees: "
        f"{_agree(costs)}). Each needs 3 F normals (F = {features} sheets here); "
        "'normals alone' times drawing just those normals with the sheet's generator "
        "(materialised in chunks of 8192 nodes, as a frame's blocks are), a floor of a "
        "frame at that many splits. Distinct splits: the same nodes counted "
        "once (neighbouring pixels split the nodes on their shared edges twice), the "
        "floor of a frontier shared between pixels.",
        "",
    ]


def summary_md(config, workdir, curves, names, labels, costs, shape, figures, elapsed) -> str:
    """The summary.md text: retained coherence at a few frames, consecutive frames, whiteness
    and the cost of one frame."""
    h, w = (int(s) for s in config.size)
    methods = tuple(config.methods)
    t_frames = int(config.frames)
    report_ts = sorted({t for t in config.report_frames if 1 <= t <= t_frames} | {t_frames})
    parts = []
    for t in report_ts:
        rows = [
            [labels[m], *(tables.cell(curves[m, n]["retained"][t], 2) for n in names)]
            for m in methods
        ]
        rows.append(
            [
                "ideal rho*_t",
                *(tables.cell(curves[methods[0], n]["ideal"][t], 2) for n in names),
            ]
        )
        parts += [
            f"### t = {t}: retained coherence rho_t / rho*_t (last row: rho*_t itself)",
            "",
            tables.markdown_table(("method", *names), rows),
            "",
        ]
    parts += [
        "### Consecutive frames: mean over t of the retained coherence with frame t - 1",
        "",
        tables.markdown_table(
            ("method", *names),
            [
                [
                    labels[m],
                    *(tables.cell(float(np.mean(curves[m, n]["cons"][1:])), 2) for n in names),
                ]
                for m in methods
            ],
        ),
        "",
        f"### White frames (irwarp.stats.whiteness_checks, all checks at 5 SE) out of {t_frames}",
        "",
        tables.markdown_table(
            ("method", *names),
            [[labels[m], *(sum(curves[m, n]["white"][1:]) for n in names)] for m in methods],
        ),
        "",
    ]
    if costs:
        parts += cost_table(config, costs, shape)
    intro = (
        f"{config.batch} noise images of {h}x{w}x{config.channels}, {t_frames} frames per "
        f"motion; translations along {config.direction_deg:g} degrees. rho_t = pooled "
        "correlation of frame t with P_t = E[exact frame t | X_0] (the exact-area prediction "
        "from frame 0, which is the bilinear resample of X_0 for a translation), over pixels "
        f"whose pre-image is inside frame 0, {config.margin} px from the border. rho*_t is the "
        "ideal (an exact rigid move of integral noise); the tables divide by it, so 1 means "
        "the method moved the noise rigidly. Non-white methods (bilinear, nearest) can exceed "
        f"1. Wall time {elapsed:.0f} s."
    )
    text = "\n".join(
        [
            launch.header(
                "Claim 5: temporal coherence of chained warps",
                launch.command_line("coherence", workdir),
                intro,
            ),
            *parts,
            "## Figures",
            "",
            *(f"- `{f.rsplit('/', 1)[-1]}`" for f in figures),
        ]
    )
    return text


def run(config, workdir: str) -> dict:
    """Runs the experiment of ``config`` (configs/coherence.py) and writes into ``workdir``.

    Returns:
      ``{(method, motion): {"rho": [...], "ideal": [...], "retained": [...]}}``.
    """
    h, w = (int(s) for s in config.size)
    methods = tuple(config.methods)
    for m in methods:
        check_method(m)
    t_frames = int(config.frames)
    if t_frames < 1:
        raise ValueError(f"frames must be >= 1; got {t_frames}")
    key = jax.random.key(int(config.seed))
    k_noise, k_warp = jax.random.split(key)
    x0 = jax.random.normal(k_noise, (int(config.batch), h, w, int(config.channels)), jnp.float32)
    mos = motions(config, h, w)
    curves = {}
    t_start = time.perf_counter()
    with workdir_lib.Workdir(workdir, config, name="coherence") as wd:
        refs, steps = references(config, mos, x0)
        for mi, m in enumerate(methods):
            fn = sequence_fn(m, config)
            for k, mo in enumerate(mos):
                bflows = jnp.broadcast_to(mo["back"], (t_frames, h, w, 2))
                fflows = jnp.broadcast_to(mo["fwd"], (t_frames, h, w, 2))
                frames = np.asarray(
                    fn(jax.random.fold_in(k_warp, mi * 1000 + k), x0, bflows, fflows)
                )
                rho, ideal, retained, cons, white = [], [], [], [], []
                mask1, ideal1 = steps[k]
                for t in range(t_frames + 1):
                    pred, mask, rho_star = refs[k][t]
                    r_t = pearson(frames[t], pred, mask) if mask.any() else math.nan
                    c_t = w_t = None
                    if t >= 1:
                        prev_pred = np.asarray(_predictor_parts(mo["back"], frames[t - 1])[0])
                        c_t = pearson(frames[t], prev_pred, mask1) / ideal1
                        w_t = bool(stats.whiteness_checks(frames[t])["all"])
                    rho.append(r_t)
                    ideal.append(rho_star)
                    retained.append(r_t / rho_star)
                    cons.append(c_t)
                    white.append(w_t)
                    wd.metric(
                        dict(
                            method=m,
                            motion=mo["name"],
                            speed=mo["speed"],
                            t=t,
                            rho=r_t,
                            ideal=rho_star,
                            retained=r_t / rho_star,
                            cons=c_t,
                            white=w_t,
                            pixels=int(mask.sum()),
                        )
                    )
                curves[m, mo["name"]] = dict(
                    rho=rho, ideal=ideal, retained=retained, cons=cons, white=white
                )
                logging.info(
                    "%-13s %-12s retained t=1 %.3f, t=%d %.3f; consecutive %.3f; white %d/%d",
                    m,
                    mo["name"],
                    retained[1],
                    t_frames,
                    retained[-1],
                    float(np.mean(cons[1:])),
                    sum(white[1:]),
                    t_frames,
                )
        names = [mo["name"] for mo in mos]
        labels = {m: method_label(m, config) for m in methods}
        figures = [
            draw(curves, names, methods, labels, t_frames, wd, raw=False),
            draw(curves, names, methods, labels, t_frames, wd, raw=True),
        ]
        costs = cost_rows(config, x0, mos, wd.file("cost.jsonl")) if config.cost_depths else []
        elapsed = time.perf_counter() - t_start

        text = summary_md(config, workdir, curves, names, labels, costs, x0.shape, figures, elapsed)
        wd.write_summary(text)
    return curves


if __name__ == "__main__":
    launch.run_main("coherence", run)
