"""Gaussianity and temporal-coherence diagnostics for warped noise, as pure functions.

A warped noise frame should be i.i.d. N(0, 1) over pixels and channels (docs/DESIGN.md section 4,
point 2) and, for a coherent warp, strongly correlated with the previous frame resampled along
the flow. The functions here measure both:

- marginal law: :func:`moments`, :func:`ks_normal` (:func:`ks_normal_sorted` for a sorted sample);
- whiteness: :func:`autocorr`, :func:`autocorr_map`, :func:`cross_channel_corr`,
  :func:`max_cross_channel_corr`, :func:`radial_power_spectrum`;
- temporal coherence: :func:`temporal_correlation`;
- a results-table row and pass/fail checks with tolerances derived from the sample size:
  :func:`summary`, :func:`whiteness_checks` (and :func:`whiteness_tolerances`);
- volumes ``(..., D, H, W, C)`` (3D warps): the same functions with ``ndim=3``
  (:func:`autocorr` along x, y and z, :func:`radial_power_spectrum`,
  :func:`temporal_correlation` with a ``(D, H, W, 3)`` flow, :func:`summary`,
  :func:`whiteness_tolerances`), and :func:`whiteness_checks3d`. The rank-agnostic
  :func:`moments`, :func:`ks_normal` and :func:`cross_channel_corr` serve volumes as they are.
  The old names :func:`autocorr3d`, :func:`radial_power_spectrum3d`,
  :func:`temporal_correlation3d`, :func:`summary3d` and :func:`whiteness_tolerances3d` are kept
  as deprecated aliases.

Noise is channels-last ``(..., H, W, C)``; every leading dimension (batch ``B``, frames ``T``)
is pooled as more samples (:func:`whiteness_checks` judges frames apart with ``frame_axes``).
Flow is backward flow ``(H, W, 2)`` with vectors ``(dx, dy)``: pixel ``(i, j)`` of frame ``t+1``
came from ``(j + 0.5 + dx, i + 0.5 + dy)`` in frame ``t``.
Statistics are computed in float32 whatever the input float dtype and returned as float32.

Everything except :func:`summary`, :func:`whiteness_checks` and :func:`whiteness_tolerances`
(which return Python scalars for tables and assertions) is pure jnp code, wrapped in ``jax.jit``
(one compilation per input shape) with ``lag``, ``num_bins``, ``mode`` and ``ndim`` static; the functions
can also be called inside a caller's ``jit`` or ``vmap``. Shape checks run at trace time.

References:
  Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models, ICLR 2025
  (arXiv:2411.01212): the Gaussianity and temporal-coherence evaluation of warped noise.
  Stephens, EDF statistics for goodness of fit, JASA 69 (1974) (KS small-sample correction).
"""

from __future__ import annotations

import functools
import math
import numbers
import statistics

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from irwarp._sampling import pixel_centres, sample_bilinear, sanitize_flow
from irwarp.flows import sample_trilinear, voxel_centres
from irwarp.records import sanitize_flow3d

__all__ = [
    "autocorr",
    "autocorr3d",
    "autocorr_map",
    "cross_channel_corr",
    "ks_normal",
    "ks_normal_sorted",
    "max_cross_channel_corr",
    "moments",
    "radial_power_spectrum",
    "radial_power_spectrum3d",
    "summary",
    "summary3d",
    "temporal_correlation",
    "temporal_correlation3d",
    "whiteness_checks",
    "whiteness_checks3d",
    "whiteness_tolerances",
    "whiteness_tolerances3d",
]

_KS_TERMS = 16  # terms of the Kolmogorov series; both forms below converge to < 1e-30 by then
_KS_SWITCH = 1.18  # lambda at which the two series forms are switched (both are accurate there)
_MODES = ("bilinear", "nearest")
_MODES3D = ("trilinear", "nearest")
_AXES = ("W", "H", "D")  # the extent along x, y, z (array axes -2, -3, -4 of the noise)
_NOISE_SHAPES = {2: "(..., H, W, C)", 3: "(..., D, H, W, C)"}


# --------------------------------------------------------------------------------------------
# Validation helpers (run at trace time; free under jit).
# --------------------------------------------------------------------------------------------


def _check_ndim(ndim) -> int:
    if isinstance(ndim, bool) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 (images) or 3 (volumes); got {ndim!r}")
    return int(ndim)


def _check_noise(x: jax.Array, name: str = "x", ndim: int = 2) -> jax.Array:
    """Validates ``(..., H, W, C)`` (``ndim`` 2) or ``(..., D, H, W, C)`` (``ndim`` 3) floating
    noise and returns it as float32."""
    x = jnp.asarray(x)
    if _check_ndim(ndim) == 3 and x.ndim < 4:
        raise ValueError(
            f"{name} must be a volume of shape (..., D, H, W, C) (rank >= 4); got shape "
            f"{x.shape} (rank {x.ndim})"
        )
    if x.ndim < 3:
        raise ValueError(
            f"{name} must have shape (..., H, W, C) (rank >= 3); got shape {x.shape} "
            f"(rank {x.ndim})"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a floating-point array of shape (..., H, W, C); got dtype "
            f"{x.dtype} with shape {x.shape}"
        )
    return x.astype(jnp.float32)


def _check_lag(lag: int, extent: int, what: str, shape: tuple[int, ...]) -> int:
    if isinstance(lag, bool) or not isinstance(lag, int):
        raise ValueError(f"lag must be a static Python int >= 1; got {lag!r}")
    if lag < 1:
        raise ValueError(f"lag must be >= 1; got {lag}")
    if lag >= extent:
        raise ValueError(
            f"lag {lag} needs {what} > {lag}; got x of shape {shape} ({what} = {extent})"
        )
    return lag


def _flatten_leading(x: jax.Array, ndim: int = 2) -> jax.Array:
    """``(..., *S, C)`` -> ``(L, *S, C)`` with ``L`` the product of the leading dims."""
    return x.reshape((-1,) + x.shape[-ndim - 1 :])


def _sizes(x: jax.Array, ndim: int) -> tuple[int, ...]:
    """The grid ``S`` of noise ``(..., *S, C)``: ``(H, W)`` or ``(D, H, W)``."""
    return tuple(x.shape[-ndim - 1 : -1])


def _shifted(x: jax.Array, axis: int, start: int, stop: int | None) -> jax.Array:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _pearson(a: jax.Array, b: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Pearson correlation of paired samples ``a``, ``b`` (same shape), optionally weighted 0/1.

    ``rho = sum (a - mean a)(b - mean b) / sqrt(sum (a - mean a)^2 sum (b - mean b)^2)``; NaN when
    either side has zero variance or no sample has weight.
    """
    if weight is None:
        weight = jnp.ones_like(a)
    a = jnp.where(weight > 0, a, 0.0)
    b = jnp.where(weight > 0, b, 0.0)
    count = jnp.sum(weight)
    ma = jnp.sum(weight * a) / count
    mb = jnp.sum(weight * b) / count
    da = weight * (a - ma)
    db = weight * (b - mb)
    cov = jnp.sum(da * db)
    return cov / jnp.sqrt(jnp.sum(da * da) * jnp.sum(db * db))


# --------------------------------------------------------------------------------------------
# Marginal law.
# --------------------------------------------------------------------------------------------


@jax.jit
def moments(x: jax.Array) -> dict[str, jax.Array]:
    """Sample mean and variance of all elements, with their standard errors under N(0, 1).

    ``mean = (1/n) sum x``, ``var = (1/n) sum (x - mean)^2``; for i.i.d. N(0, 1) data
    ``SE(mean) = 1/sqrt(n)`` and ``SE(var) = sqrt(2/n)`` (the variance of a chi-square_n / n).

    Args:
      x: noise ``(..., H, W, C)``, any float dtype.

    Returns:
      Dict of float32 scalars ``'mean'``, ``'var'``, ``'mean_se'``, ``'var_se'``.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point.
    """
    x = _check_noise(x)
    n = x.size
    mean = jnp.mean(x)
    var = jnp.mean(jnp.square(x - mean))
    return {
        "mean": mean,
        "var": var,
        "mean_se": jnp.float32(1.0 / math.sqrt(n)),
        "var_se": jnp.float32(math.sqrt(2.0 / n)),
    }


def _kolmogorov_sf(lam: jax.Array) -> jax.Array:
    """Asymptotic Kolmogorov survival function ``Q(lam) = P(sup|B(t)| > lam)`` (Brownian bridge).

    ``Q = 2 sum_k (-1)^(k-1) exp(-2 k^2 lam^2)`` for ``lam >= 1.18``, and the Jacobi-theta form
    ``Q = 1 - sqrt(2 pi)/lam sum_k exp(-(2k-1)^2 pi^2 / (8 lam^2))`` below, which converges fast
    for small ``lam``; each truncated at 16 terms. Clipped to ``[0, 1]``.
    """
    k = jnp.arange(1, _KS_TERMS + 1, dtype=jnp.float32)
    lam = jnp.asarray(lam, jnp.float32)
    big = jnp.maximum(lam, _KS_SWITCH)[..., None]
    sign = jnp.where(k % 2 == 1, 1.0, -1.0)
    q_big = 2.0 * jnp.sum(sign * jnp.exp(-2.0 * k**2 * big**2), axis=-1)
    small = jnp.clip(lam, 1e-3, _KS_SWITCH)
    theta = jnp.sum(
        jnp.exp(-((2.0 * k - 1.0) ** 2) * jnp.pi**2 / (8.0 * small[..., None] ** 2)), axis=-1
    )
    q_small = 1.0 - jnp.sqrt(2.0 * jnp.pi) / small * theta
    q = jnp.where(lam >= _KS_SWITCH, q_big, q_small)
    return jnp.clip(q, 0.0, 1.0)


@jax.jit
def ks_normal(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One-sample Kolmogorov-Smirnov test of all elements of ``x`` against N(0, 1).

    ``D = max_k max(k/n - Phi(x_(k)), Phi(x_(k)) - (k-1)/n)`` over the sorted sample
    ``x_(1) <= ... <= x_(n)``; ``p = Q((sqrt(n) + 0.12 + 0.11/sqrt(n)) D)`` with ``Q`` the
    asymptotic Kolmogorov survival function and Stephens' small-sample correction.

    Args:
      x: noise ``(..., H, W, C)``, any float dtype (all elements are pooled).

    Returns:
      ``(statistic, p_value)``: float32 scalars; ``p_value`` in ``[0, 1]``.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point.
    """
    x = _check_noise(x)
    return ks_normal_sorted(jnp.sort(x.reshape(-1)))


@jax.jit
def ks_normal_sorted(values: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`ks_normal` of a sample sorted already, ``(..., n)`` ascending along the last axis.

    For callers that sort elsewhere (e.g. ``numpy.sort`` on the host, several times faster than
    XLA's sort on CPU for large samples); leading axes are independent samples.

    Returns:
      ``(statistic, p_value)`` of shape ``values.shape[:-1]``, float32.
    """
    v = jnp.asarray(values, jnp.float32)
    n = v.shape[-1]
    cdf = norm.cdf(v)
    k = jnp.arange(1, n + 1, dtype=jnp.float32)
    d_plus = jnp.max(k / n - cdf, axis=-1)
    d_minus = jnp.max(cdf - (k - 1.0) / n, axis=-1)
    stat = jnp.maximum(d_plus, d_minus)
    sqrt_n = math.sqrt(n)
    p_value = _kolmogorov_sf((sqrt_n + 0.12 + 0.11 / sqrt_n) * stat)
    return stat, p_value


# --------------------------------------------------------------------------------------------
# Whiteness.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("lag", "ndim"))
def autocorr(x: jax.Array, lag: int = 1, *, ndim: int = 2) -> tuple[jax.Array, ...]:
    """Spatial autocorrelation at ``lag`` along x (columns), y (rows) and, for volumes, z (depth).

    ``corr_x = Pearson(x[..., i, j, c], x[..., i, j + lag, c])``,
    ``corr_y = Pearson(x[..., i, j, c], x[..., i + lag, j, c])`` and, with ``ndim=3``,
    ``corr_z = Pearson(x[..., k, i, j, c], x[..., k + lag, i, j, c])``, over all pairs inside the
    grid, all leading dims and channels. For white noise each is ~N(0, 1/n_pairs), with
    ``n_pairs = L H (W - lag) C`` for ``corr_x`` of images (the extent along the axis minus
    ``lag``, times everything else).

    Args:
      x: noise ``(..., H, W, C)``, or ``(..., D, H, W, C)`` with ``ndim=3``; any float dtype.
      lag: static shift in cells, ``1 <= lag < min(H, W)`` (``min(D, H, W)`` for volumes).
      ndim: static number of spatial axes: 2 (images) or 3 (volumes).

    Returns:
      ``(corr_x, corr_y)``, or ``(corr_x, corr_y, corr_z)`` with ``ndim=3``: float32 scalars.

    Raises:
      ValueError: if ``x`` has rank < ``ndim + 1`` or is not floating point, or ``lag`` is out of
        range.
    """
    x = _check_noise(x, ndim=ndim)
    sizes = _sizes(x, ndim)
    for c in range(ndim):
        _check_lag(lag, sizes[-1 - c], _AXES[c], x.shape)
    return tuple(
        _pearson(_shifted(x, -2 - c, None, -lag), _shifted(x, -2 - c, lag, None))
        for c in range(ndim)
    )


@functools.partial(jax.jit, static_argnames=("lag",))
def autocorr_map(x: jax.Array, lag: int = 1) -> jax.Array:
    """Per-pixel spatial correlation map, over many samples in the leading dims and channels.

    Each pixel is standardised over the samples, ``z = (x - m_ij) / s_ij`` with ``m_ij``, ``s_ij``
    the mean and standard deviation of pixel ``(i, j)`` over leading dims and channels; then
    ``map_ij = mean_samples (z_ij z_{i, j+lag} + z_ij z_{i+lag, j}) / 2``: the average of the
    Pearson correlations with the right and the lower neighbour. In the last ``lag`` columns
    (rows) the left (upper) neighbour is used instead. White noise gives ~0 everywhere, with a
    standard error of about ``1/sqrt(2 L C)`` per pixel (``L`` = product of leading dims).

    Args:
      x: noise ``(..., H, W, C)``, any float dtype; needs many samples ``L * C`` to be useful.
      lag: static neighbour distance, ``1 <= lag`` and ``2 lag <= min(H, W)``.

    Returns:
      ``(H, W)`` float32 map; NaN at pixels whose value does not vary over the samples.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point, or ``lag`` is out of range.
    """
    x = _check_noise(x)
    h, w = x.shape[-3], x.shape[-2]
    _check_lag(lag, w, "W", x.shape)
    _check_lag(lag, h, "H", x.shape)
    if 2 * lag > min(h, w):
        raise ValueError(
            f"autocorr_map needs 2 * lag <= min(H, W) so that every pixel has a neighbour; "
            f"got lag {lag} and x of shape {x.shape}"
        )
    x = _flatten_leading(x)
    mean = jnp.mean(x, axis=(0, 3), keepdims=True)
    std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=(0, 3), keepdims=True))
    z = (x - mean) / std
    cols = jnp.arange(w)
    rows = jnp.arange(h)
    nb_cols = jnp.where(cols + lag < w, cols + lag, cols - lag)
    nb_rows = jnp.where(rows + lag < h, rows + lag, rows - lag)
    z_h = z[:, :, nb_cols, :]
    z_v = z[:, nb_rows, :, :]
    return 0.5 * jnp.mean(z * z_h + z * z_v, axis=(0, 3))


@jax.jit
def cross_channel_corr(x: jax.Array) -> jax.Array:
    """Correlation matrix across channels, pooling pixels and leading dims as samples.

    ``R_cd = Pearson(x[..., c], x[..., d])``; for white noise the off-diagonal entries are
    ~N(0, 1/m) with ``m = L H W`` samples per channel.

    Args:
      x: noise ``(..., H, W, C)``, any float dtype.

    Returns:
      ``(C, C)`` float32 symmetric matrix in ``[-1, 1]`` (NaN rows/columns for constant channels).

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point.
    """
    x = _check_noise(x)
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    centred = flat - jnp.mean(flat, axis=0)
    cov = (
        jnp.einsum("nc,nd->cd", centred, centred, precision=jax.lax.Precision.HIGHEST)
        / flat.shape[0]
    )
    std = jnp.sqrt(jnp.diagonal(cov))
    return jnp.clip(cov / (std[:, None] * std[None, :]), -1.0, 1.0)


@jax.jit
def max_cross_channel_corr(x: jax.Array) -> jax.Array:
    """Largest absolute off-diagonal entry of :func:`cross_channel_corr`.

    ``max_{c != d} |R_cd|``; 0 when ``C == 1``.

    Args:
      x: noise ``(..., H, W, C)``, any float dtype.

    Returns:
      float32 scalar in ``[0, 1]``.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point.
    """
    x = _check_noise(x)
    c = x.shape[-1]
    if c == 1:
        return jnp.float32(0.0)
    corr = cross_channel_corr(x)
    off_diagonal = ~jnp.eye(c, dtype=bool)
    return jnp.max(jnp.where(off_diagonal, jnp.abs(corr), 0.0))


def _radial_bins(sizes: tuple[int, ...], num_bins: int) -> tuple[jax.Array, jax.Array]:
    """Bin index ``S`` of each FFT frequency of a grid ``S`` and the bin centres ``(num_bins,)``.

    Radius ``r = sqrt(fx^2 + fy^2)`` (``+ fz^2`` for volumes) in cycles per cell; bins split
    ``[0, 0.5]`` evenly (``r`` = 0.5 belongs to the last bin); frequencies with ``r > 0.5`` (the
    corners) get index ``num_bins`` and are dropped.
    """
    nd = len(sizes)
    squares = 0.0
    for axis, n in enumerate(sizes):  # outermost axis first: fy^2 + fx^2, fz^2 + fy^2 + fx^2
        f = jnp.fft.fftfreq(n).astype(jnp.float32)
        f = f.reshape([-1 if a == axis else 1 for a in range(nd)])
        squares = f**2 if axis == 0 else squares + f**2
    radius = jnp.sqrt(squares)
    index = jnp.minimum(jnp.floor(radius * (2.0 * num_bins)).astype(jnp.int32), num_bins - 1)
    index = jnp.where(radius > 0.5, num_bins, index)
    centres = (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) * (0.5 / num_bins)
    return index, centres


@functools.partial(jax.jit, static_argnames=("num_bins", "ndim"))
def radial_power_spectrum(
    x: jax.Array, num_bins: int | None = None, *, ndim: int = 2
) -> tuple[jax.Array, jax.Array]:
    """Radially averaged power spectrum, normalised so that white N(0, 1) noise gives ~1.

    ``P(k) = |FFT2(x)[k]|^2 / (H W)`` per image and channel (``|FFT3(x)[k]|^2 / (D H W)`` per
    volume with ``ndim=3``), averaged over leading dims, channels and the frequencies ``k`` whose
    radius ``|k|`` (cycles per cell) falls in each of ``num_bins`` equal bins of ``[0, 0.5]``;
    corner frequencies with ``|k| > 0.5`` are left out. For white noise ``E P(k) = 1`` at every
    ``k`` (including DC, since the mean is not removed). A bin with no frequency (possible only
    for ``num_bins`` larger than the default) is NaN.

    Args:
      x: noise ``(..., H, W, C)``, or ``(..., D, H, W, C)`` with ``ndim=3``; any float dtype.
      num_bins: static number of radial bins; default ``max(min(H, W) // 2, 1)``
        (``min(D, H, W)`` for volumes).
      ndim: static number of spatial axes: 2 (images) or 3 (volumes).

    Returns:
      ``(freqs, power)``: float32 ``(num_bins,)`` bin centres in cycles per pixel and the mean
      power in each bin.

    Raises:
      ValueError: if ``x`` has rank < ``ndim + 1`` or is not floating point, or ``num_bins`` < 1.
    """
    x = _check_noise(x, ndim=ndim)
    sizes = _sizes(x, ndim)
    if num_bins is None:
        num_bins = max(min(sizes) // 2, 1)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a static Python int >= 1; got {num_bins!r}")
    n = math.prod(sizes)
    spectrum = jnp.fft.fftn(x, axes=tuple(range(-ndim - 1, -1)))
    power = jnp.mean(jnp.abs(spectrum) ** 2 / n, axis=-1)  # (..., *S)
    power = jnp.mean(power.reshape((-1, *sizes)), axis=0)  # S
    index, freqs = _radial_bins(sizes, num_bins)
    total = jax.ops.segment_sum(power.reshape(-1), index.reshape(-1), num_segments=num_bins + 1)
    count = jax.ops.segment_sum(
        jnp.ones((n,), jnp.float32), index.reshape(-1), num_segments=num_bins + 1
    )
    return freqs, total[:num_bins] / count[:num_bins]


# --------------------------------------------------------------------------------------------
# Temporal coherence.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("mode", "ndim"))
def temporal_correlation(
    prev: jax.Array,
    cur: jax.Array,
    flow: jax.Array,
    *,
    mode: str | None = None,
    mask: jax.Array | None = None,
    ndim: int = 2,
) -> jax.Array:
    """Pearson correlation between ``cur`` and ``prev`` resampled along the backward flow.

    ``rho = Pearson(cur[..., d, c], prev(psi(centre_d))[..., c])`` with
    ``psi(centre_d) = centre_d + flow[d]``, pooled over valid cells ``d``, leading dims and
    channels. ``prev(p)`` is the bilinear (trilinear for volumes) interpolation between cell
    centres (``"bilinear"`` / ``"trilinear"``, clamped to the edge) or the value of the cell
    containing ``p`` (``"nearest"``). A cell is excluded when its flow is non-finite, when
    ``psi(centre_d)`` falls outside the frame ``[0, W) x [0, H)`` (``x [0, D)`` for volumes), or
    where ``mask`` is False. With an exact warp of integral noise the value is 1 for integer
    translations; for a fractional shift ``s`` along one axis it is ``1 - s`` in ``"nearest"``
    mode (``s < 1/2``) and ``sqrt((1 - s)^2 + s^2)`` in ``"bilinear"`` mode (0.707 at
    ``s = 1/2``: linear resampling lowers the variance of ``prev``). Compare methods under the
    same mode rather than against 1.

    Args:
      prev: frame ``t`` noise ``(..., H, W, C)``, or ``(..., D, H, W, C)`` with ``ndim=3``; any
        float dtype.
      cur: frame ``t+1`` noise, same shape as ``prev``.
      flow: backward flow of frame ``t+1``, ``(H, W, 2)`` with vectors ``(dx, dy)`` in pixels, or
        ``(D, H, W, 3)`` with ``(dx, dy, dz)`` for volumes.
      mode: static, ``"bilinear"`` (images) / ``"trilinear"`` (volumes) or ``"nearest"``;
        default (None): the linear one of the rank.
      mask: optional ``(H, W)`` (``(D, H, W)``) boolean; cells where it is False are excluded.
      ndim: static number of spatial axes: 2 (images) or 3 (volumes).

    Returns:
      float32 scalar in ``[-1, 1]``; NaN when no cell is valid or either side is constant.

    Raises:
      ValueError: on rank < ``ndim + 1`` or non-float noise, ``prev``/``cur`` shape mismatch, a
        flow that is not ``(H, W, 2)`` (``(D, H, W, 3)``), a mask of the wrong shape, or an
        unknown ``mode``.
    """
    ndim = _check_ndim(ndim)
    letters = ("(..., H, W, C)", "(H, W, 2)", "(H, W)", _MODES)
    if ndim == 3:
        letters = ("(..., D, H, W, C)", "(D, H, W, 3)", "(D, H, W)", _MODES3D)
    noise_shape, flow_shape, grid_shape, modes = letters
    prev = _check_noise(prev, "prev", ndim)
    cur = _check_noise(cur, "cur", ndim)
    if prev.shape != cur.shape:
        raise ValueError(
            f"prev and cur must have the same shape {noise_shape}; got prev {prev.shape} and "
            f"cur {cur.shape}"
        )
    sizes = _sizes(prev, ndim)
    c = prev.shape[-1]
    flow = jnp.asarray(flow)
    if flow.shape != (*sizes, ndim):
        raise ValueError(
            f"flow must have shape {flow_shape} = {(*sizes, ndim)} to match noise {prev.shape}; "
            f"got {flow.shape}"
        )
    if mode is None:
        mode = modes[0]
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}; got {mode!r}")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != sizes:
            raise ValueError(
                f"mask must have shape {grid_shape} = {sizes} to match noise {prev.shape}; got "
                f"{mask.shape}"
            )

    if ndim == 2:
        flow = sanitize_flow(flow, *sizes)
        centres = pixel_centres(*sizes)
    else:
        flow = sanitize_flow3d(flow)
        centres = voxel_centres(*sizes)
    # Points (x, y[, z]) and, per component, the extent along it (W, H[, D]).
    points = [centres[k] + flow[..., k] for k in range(ndim)]
    extents = sizes[::-1]
    valid = functools.reduce(jnp.logical_and, [jnp.isfinite(p) for p in points])
    for p, n in zip(points, extents, strict=True):
        valid &= (p >= 0.0) & (p < n)
    if mask is not None:
        valid &= mask.astype(bool)
    points = [jnp.where(valid, p, 0.5) for p in points]

    prev = _flatten_leading(prev, ndim)  # (L, *S, C)
    cur = _flatten_leading(cur, ndim)
    num = prev.shape[0]
    if mode != "nearest":
        # Samples and channels as the field's features: (*S, L * C).
        field = jnp.transpose(prev, (*range(1, ndim + 1), 0, ndim + 1)).reshape(*sizes, num * c)
        if ndim == 2:
            warped = sample_bilinear(field, *points)
        else:
            warped = sample_trilinear(field, *points)
        warped = jnp.moveaxis(warped.reshape(*sizes, num, c), ndim, 0)
    else:
        cells = [
            jnp.clip(jnp.floor(p).astype(jnp.int32), 0, n - 1)
            for p, n in zip(points, extents, strict=True)
        ]
        warped = prev[(slice(None), *cells[::-1])]
    weight = jnp.broadcast_to(valid[None, ..., None], cur.shape).astype(jnp.float32)
    return _pearson(cur, warped, weight)


# --------------------------------------------------------------------------------------------
# Results-table row and pass/fail checks.
# --------------------------------------------------------------------------------------------


def summary(x: jax.Array, *, ndim: int = 2) -> dict[str, float]:
    """One results-table row of Gaussianity and whiteness statistics, as Python floats.

    Keys: ``mean``, ``var`` (:func:`moments`), ``ks``, ``ks_p`` (:func:`ks_normal`), ``ac_x``,
    ``ac_y`` and, with ``ndim=3``, ``ac_z`` (:func:`autocorr` at lag 1), ``max_cross``
    (:func:`max_cross_channel_corr`).

    Args:
      x: noise ``(..., H, W, C)`` with ``H, W >= 2``, or ``(..., D, H, W, C)`` with
        ``D, H, W >= 2`` and ``ndim=3``; any float dtype.
      ndim: number of spatial axes: 2 (images) or 3 (volumes).

    Returns:
      Dict of Python floats (not jit-able: it converts to host scalars).

    Raises:
      ValueError: if ``x`` has rank < ``ndim + 1``, is not floating point, or a spatial extent
        is < 2.
    """
    x = _check_noise(x, ndim=ndim)
    mom = moments(x)
    ks, ks_p = ks_normal(x)
    corrs = autocorr(x, 1, ndim=ndim)
    row = {
        "mean": float(mom["mean"]),
        "var": float(mom["var"]),
        "ks": float(ks),
        "ks_p": float(ks_p),
    }
    for axis, corr in zip("xyz", corrs, strict=False):
        row[f"ac_{axis}"] = float(corr)
    row["max_cross"] = float(max_cross_channel_corr(x))
    return row


def whiteness_tolerances(
    shape: tuple[int, ...], num_se: float = 5.0, ks_alpha: float = 1e-3, *, ndim: int = 2
) -> dict[str, float]:
    """Tolerances used by :func:`whiteness_checks` for noise of ``shape`` ``(..., H, W, C)``.

    With ``ndim=3`` (volumes ``(..., D, H, W, C)``, :func:`whiteness_checks3d`) the depth axis is
    one more leading sample axis for every key below, and ``ac_z`` is added:
    ``num_se / sqrt(L (D - 1) H W C)``.

    With ``n = L H W C`` elements (``L`` = product of leading dims), each statistic of i.i.d.
    N(0, 1) noise is asymptotically normal with a known standard error, and the tolerance is
    ``num_se`` of them:

    - ``mean``: ``num_se / sqrt(n)``;
    - ``var`` (deviation from 1): ``num_se * sqrt(2 / n)``;
    - ``ac_x``, ``ac_y``: ``num_se / sqrt(n_pairs)``, ``n_pairs = L H (W-1) C`` (resp.
      ``L (H-1) W C``); lag-1 products of white noise are uncorrelated, so the sample
      correlation has variance ``1/n_pairs``;
    - ``max_cross``: each of the ``P = C (C-1) / 2`` off-diagonal correlations is ~N(0, 1/m),
      ``m = L H W``; the bound is ``z_P / sqrt(m)`` with ``z_P`` the Bonferroni-corrected
      quantile ``P(|N(0,1)| > z_P) = P(|N(0,1)| > num_se) / P``, so the maximum has the same
      false-alarm rate as a single ``num_se`` check (``z_P = num_se`` for ``P = 1``);
    - ``ks_p``: the KS p-value must exceed ``ks_alpha``.

    At ``num_se = 5`` each check fails white noise with probability below ~6e-7.

    Args:
      shape: static shape ``(..., H, W, C)`` of the noise, rank >= 3 (``(..., D, H, W, C)``,
        rank >= 4, with ``ndim=3``).
      num_se: number of standard errors allowed.
      ks_alpha: smallest acceptable KS p-value.
      ndim: number of spatial axes: 2 (images) or 3 (volumes).

    Returns:
      Dict of Python floats ``mean``, ``var``, ``ac_x``, ``ac_y``, ``max_cross``, ``ks_p`` (and
      ``ac_z`` with ``ndim=3``).

    Raises:
      ValueError: if ``shape`` has rank < ``ndim + 1``.
    """
    shape = tuple(int(s) for s in shape)
    if _check_ndim(ndim) == 3 and len(shape) < 4:
        raise ValueError(f"shape must be (..., D, H, W, C) (rank >= 4); got {shape}")
    if len(shape) < 3:
        raise ValueError(f"shape must be (..., H, W, C) (rank >= 3); got {shape}")
    h, w, c = shape[-3:]
    leading = math.prod(shape[:-3])
    n = leading * h * w * c
    pairs_x = leading * h * (w - 1) * c
    pairs_y = leading * (h - 1) * w * c
    num_pairs = c * (c - 1) // 2
    if num_pairs > 0:
        tail = statistics.NormalDist().cdf(-num_se) / num_pairs
        z_pairs = -statistics.NormalDist().inv_cdf(tail) if tail > 0 else float(num_se)
    else:
        z_pairs = float(num_se)
    tol = {
        "mean": num_se / math.sqrt(n),
        "var": num_se * math.sqrt(2.0 / n),
        "ac_x": num_se / math.sqrt(max(pairs_x, 1)),
        "ac_y": num_se / math.sqrt(max(pairs_y, 1)),
        "max_cross": z_pairs / math.sqrt(leading * h * w),
        "ks_p": float(ks_alpha),
    }
    if ndim == 3:
        d = shape[-4]
        outer = math.prod(shape[:-4])
        tol["ac_z"] = num_se / math.sqrt(max(outer * (d - 1) * h * w * c, 1))
    return tol


def _check_frame_axes(frame_axes, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Normalised leading axes of ``shape`` ``(..., H, W, C)`` that index frames."""
    if frame_axes is None:
        return ()
    axes = (frame_axes,) if isinstance(frame_axes, numbers.Integral) else frame_axes
    try:
        axes = tuple(axes)
    except TypeError:
        axes = None
    lead = len(shape) - 3
    if axes is None or any(
        isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes
    ):
        raise ValueError(
            f"frame_axes must be None, an int or a tuple of ints (leading axes of x); got "
            f"{frame_axes!r}"
        )
    out = []
    for a in axes:
        if not -len(shape) <= a < len(shape) or int(a) % len(shape) >= lead:
            raise ValueError(
                f"frame_axes must name leading axes of x (..., H, W, C), i.e. axes 0..{lead - 1} "
                f"(or {-len(shape)}..{-4}); got {frame_axes!r} for x of shape {shape}"
            )
        out.append(int(a) % len(shape))
    if len(set(out)) != len(out):
        raise ValueError(f"frame_axes must not repeat an axis; got {frame_axes!r}")
    return tuple(sorted(out))


def _family_se(num_se: float, count: int) -> float:
    """``z`` with ``P(|N(0,1)| > z) = P(|N(0,1)| > num_se) / count`` (Bonferroni; ``count = 1``:
    ``num_se`` itself)."""
    if count <= 1:
        return float(num_se)
    tail = statistics.NormalDist().cdf(-num_se) / count
    return -statistics.NormalDist().inv_cdf(tail) if tail > 0 else float(num_se)


def _pass_fail(row: dict[str, float], tol: dict[str, float]) -> dict[str, bool]:
    return {
        "mean": abs(row["mean"]) <= tol["mean"],
        "var": abs(row["var"] - 1.0) <= tol["var"],
        "ac_x": abs(row["ac_x"]) <= tol["ac_x"],
        "ac_y": abs(row["ac_y"]) <= tol["ac_y"],
        "max_cross": row["max_cross"] <= tol["max_cross"],
        "ks": row["ks_p"] > tol["ks_p"],
    }


def whiteness_checks(
    x: jax.Array, num_se: float = 5.0, ks_alpha: float = 1e-3, *, frame_axes=None
) -> dict[str, bool]:
    """Pass/fail checks that ``x`` looks i.i.d. N(0, 1), with tolerances from the sample size.

    ``mean``: ``|mean| <= num_se / sqrt(n)``; ``var``: ``|var - 1| <= num_se sqrt(2/n)``;
    ``ac_x``/``ac_y``: ``|corr| <= num_se / sqrt(n_pairs)``; ``max_cross``: largest off-diagonal
    channel correlation within a Bonferroni-corrected bound over the ``C (C-1) / 2`` pairs;
    ``ks``: KS p-value ``> ks_alpha``. See :func:`whiteness_tolerances` for the derivations.

    Which samples are pooled. By default (``frame_axes=None``) all ``n = L H W C`` elements of
    ``x`` form one sample: the leading dims (``L`` their product) are taken as independent
    draws, e.g. a batch ``B`` of independent noises or fresh noise per frame. The tolerances
    assume that independence, so a stack of *warped* frames ``(T, H, W, C)``, which are
    correlated in time by design, can fail on healthy noise (the pooled KS test sees ``T``
    near-copies as ``T`` times more data). Name the time axis in ``frame_axes`` to judge such a
    stack frame by frame: each index of the ``frame_axes`` (``F`` frames in all, the product of
    their sizes) is judged on its own sample, pooling only the other leading axes with its
    ``H W C`` elements (for ``(T, B, H, W, C)`` with ``frame_axes=0``: the ``B`` independent
    batch elements of one frame). A check passes when it passes in every frame, at tolerances
    Bonferroni-corrected over the ``F`` frames (``num_se`` becomes ``z_F`` with
    ``P(|N(0,1)| > z_F) = P(|N(0,1)| > num_se) / F``, ``ks_alpha`` becomes ``ks_alpha / F``), so
    the whole stack has about the false-alarm rate of one check on one frame; a stack whose
    frames each pass the default check on their own therefore passes. With ``F = 1`` the result
    is the pooled one.

    Args:
      x: noise ``(..., H, W, C)`` with ``H, W >= 2``, any float dtype.
      num_se: number of standard errors allowed per check (default 5).
      ks_alpha: smallest acceptable KS p-value (default 1e-3).
      frame_axes: ``None`` (pool everything), or an int or tuple of ints naming leading axes of
        ``x`` (not ``H``, ``W``, ``C``) whose indices are frames to judge separately; negative
        values count from the end.

    Returns:
      Dict of Python bools ``mean``, ``var``, ``ac_x``, ``ac_y``, ``max_cross``, ``ks`` and
      ``all`` (their conjunction). A NaN statistic fails its check.

    Raises:
      ValueError: if ``x`` has rank < 3, is not floating point, or ``H`` or ``W`` is < 2, or if
        ``frame_axes`` does not name distinct leading axes.
    """
    x = _check_noise(x)
    axes = _check_frame_axes(frame_axes, x.shape)
    if not axes:
        checks = _pass_fail(summary(x), whiteness_tolerances(x.shape, num_se, ks_alpha))
    else:
        rest = [a for a in range(x.ndim) if a not in axes]
        frames = jnp.transpose(x, axes + tuple(rest))
        count = math.prod(x.shape[a] for a in axes)
        if count == 0:
            raise ValueError(f"frame_axes {frame_axes!r} of x {x.shape} hold no frames")
        frames = frames.reshape((count,) + frames.shape[len(axes) :])
        tol = whiteness_tolerances(frames.shape[1:], _family_se(num_se, count), ks_alpha / count)
        per_frame = [_pass_fail(summary(frames[f]), tol) for f in range(count)]
        checks = {k: all(c[k] for c in per_frame) for k in per_frame[0]}
    checks["all"] = all(checks.values())
    return checks


# --------------------------------------------------------------------------------------------
# Volumes (3D warps): noise (..., D, H, W, C), flow (D, H, W, 3) with vectors (dx, dy, dz).
# --------------------------------------------------------------------------------------------


def whiteness_checks3d(
    x: jax.Array, num_se: float = 5.0, ks_alpha: float = 1e-3
) -> dict[str, bool]:
    """Pass/fail checks that a volume looks i.i.d. N(0, 1), tolerances from the sample size.

    :func:`whiteness_checks` plus ``ac_z``: ``|corr_z| <= num_se / sqrt(n_pairs_z)``, from
    :func:`summary` and :func:`whiteness_tolerances` with ``ndim=3``.

    Args:
      x: noise ``(..., D, H, W, C)`` with ``D, H, W >= 2``, any float dtype.
      num_se: number of standard errors allowed per check (default 5).
      ks_alpha: smallest acceptable KS p-value (default 1e-3).

    Returns:
      Dict of Python bools ``mean``, ``var``, ``ac_x``, ``ac_y``, ``ac_z``, ``max_cross``, ``ks``
      and ``all``. A NaN statistic fails its check.

    Raises:
      ValueError: if ``x`` has rank < 4, is not floating point, or ``D``, ``H`` or ``W`` is < 2.
    """
    x = _check_noise(x, ndim=3)
    row = summary(x, ndim=3)
    tol = whiteness_tolerances(x.shape, num_se, ks_alpha, ndim=3)
    checks = {"mean": abs(row["mean"]) <= tol["mean"], "var": abs(row["var"] - 1.0) <= tol["var"]}
    for key in ("ac_x", "ac_y", "ac_z"):
        checks[key] = abs(row[key]) <= tol[key]
    checks["max_cross"] = row["max_cross"] <= tol["max_cross"]
    checks["ks"] = row["ks_p"] > tol["ks_p"]
    checks["all"] = all(checks.values())
    return checks


# Deprecated 3D names, kept for compatibility: the rank-generic functions with ndim=3.


def autocorr3d(x: jax.Array, lag: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Deprecated alias: ``autocorr(x, lag, ndim=3)`` (:func:`autocorr`)."""
    return autocorr(x, lag, ndim=3)


def radial_power_spectrum3d(
    x: jax.Array, num_bins: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Deprecated alias: ``radial_power_spectrum(x, num_bins, ndim=3)``."""
    return radial_power_spectrum(x, num_bins, ndim=3)


def temporal_correlation3d(
    prev: jax.Array,
    cur: jax.Array,
    flow: jax.Array,
    *,
    mode: str = "trilinear",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Deprecated alias: ``temporal_correlation(prev, cur, flow, mode=mode, mask=mask, ndim=3)``."""
    return temporal_correlation(prev, cur, flow, mode=mode, mask=mask, ndim=3)


def summary3d(x: jax.Array) -> dict[str, float]:
    """Deprecated alias: ``summary(x, ndim=3)`` (:func:`summary`, with the key ``ac_z``)."""
    return summary(x, ndim=3)


def whiteness_tolerances3d(
    shape: tuple[int, ...], num_se: float = 5.0, ks_alpha: float = 1e-3
) -> dict[str, float]:
    """Deprecated alias: ``whiteness_tolerances(shape, num_se, ks_alpha, ndim=3)``."""
    return whiteness_tolerances(shape, num_se, ks_alpha, ndim=3)
