"""Gaussianity and temporal-coherence diagnostics for warped noise, as pure functions.

A warped noise frame should be i.i.d. N(0, 1) over pixels and channels (DESIGN.md section 4,
point 2) and, for a coherent warp, strongly correlated with the previous frame resampled along
the flow. The functions here measure both:

- marginal law: :func:`moments`, :func:`ks_normal`;
- whiteness: :func:`autocorr`, :func:`autocorr_map`, :func:`cross_channel_corr`,
  :func:`max_cross_channel_corr`, :func:`radial_power_spectrum`;
- temporal coherence: :func:`temporal_correlation`;
- a results-table row and pass/fail checks with tolerances derived from the sample size:
  :func:`summary`, :func:`whiteness_checks` (and :func:`whiteness_tolerances`);
- volumes ``(..., D, H, W, C)`` (3D warps): :func:`autocorr3d` (along x, y and z),
  :func:`radial_power_spectrum3d`, :func:`temporal_correlation3d`, :func:`summary3d`,
  :func:`whiteness_checks3d` and :func:`whiteness_tolerances3d`. The rank-agnostic
  :func:`moments`, :func:`ks_normal` and :func:`cross_channel_corr` serve volumes as they are.

Noise is channels-last ``(..., H, W, C)``; every leading dimension (batch ``B``, frames ``T``)
is pooled as more samples (:func:`whiteness_checks` judges frames apart with ``frame_axes``).
Flow is backward flow ``(H, W, 2)`` with vectors ``(dx, dy)``: pixel ``(i, j)`` of frame ``t+1``
came from ``(j + 0.5 + dx, i + 0.5 + dy)`` in frame ``t``.
Statistics are computed in float32 whatever the input float dtype and returned as float32.

Everything except :func:`summary`, :func:`whiteness_checks` and :func:`whiteness_tolerances`
(which return Python scalars for tables and assertions) is pure jnp code, wrapped in ``jax.jit``
(one compilation per input shape) with ``lag``, ``num_bins`` and ``mode`` static; the functions
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
from irwarp.flows3d import sample_trilinear, voxel_centres
from irwarp.records3d import sanitize_flow3d

__all__ = [
    "autocorr",
    "autocorr3d",
    "autocorr_map",
    "cross_channel_corr",
    "ks_normal",
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


# --------------------------------------------------------------------------------------------
# Validation helpers (run at trace time; free under jit).
# --------------------------------------------------------------------------------------------


def _check_noise(x: jax.Array, name: str = "x") -> jax.Array:
    """Validates ``(..., H, W, C)`` floating noise and returns it as float32."""
    x = jnp.asarray(x)
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


def _flatten_leading(x: jax.Array) -> jax.Array:
    """``(..., H, W, C)`` -> ``(L, H, W, C)`` with ``L`` the product of the leading dims."""
    return x.reshape((-1,) + x.shape[-3:])


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
    big = jnp.maximum(lam, _KS_SWITCH)
    sign = jnp.where(k % 2 == 1, 1.0, -1.0)
    q_big = 2.0 * jnp.sum(sign * jnp.exp(-2.0 * k**2 * big**2))
    small = jnp.clip(lam, 1e-3, _KS_SWITCH)
    theta = jnp.sum(jnp.exp(-((2.0 * k - 1.0) ** 2) * jnp.pi**2 / (8.0 * small**2)))
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
    n = x.size
    cdf = norm.cdf(jnp.sort(x.reshape(-1)))
    k = jnp.arange(1, n + 1, dtype=jnp.float32)
    d_plus = jnp.max(k / n - cdf)
    d_minus = jnp.max(cdf - (k - 1.0) / n)
    stat = jnp.maximum(d_plus, d_minus)
    sqrt_n = math.sqrt(n)
    p_value = _kolmogorov_sf((sqrt_n + 0.12 + 0.11 / sqrt_n) * stat)
    return stat, p_value


# --------------------------------------------------------------------------------------------
# Whiteness.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("lag",))
def autocorr(x: jax.Array, lag: int = 1) -> tuple[jax.Array, jax.Array]:
    """Spatial autocorrelation at ``lag`` along x (columns) and y (rows), pooled.

    ``corr_x = Pearson(x[..., i, j, c], x[..., i, j + lag, c])`` and
    ``corr_y = Pearson(x[..., i, j, c], x[..., i + lag, j, c])`` over all pairs inside the frame,
    all leading dims and channels. For white noise each is ~N(0, 1/n_pairs), with
    ``n_pairs = L H (W - lag) C`` (resp. ``L (H - lag) W C``).

    Args:
      x: noise ``(..., H, W, C)``, any float dtype.
      lag: static shift in pixels, ``1 <= lag < min(H, W)``.

    Returns:
      ``(corr_x, corr_y)``: float32 scalars.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point, or ``lag`` is out of range.
    """
    x = _check_noise(x)
    h, w = x.shape[-3], x.shape[-2]
    _check_lag(lag, w, "W", x.shape)
    _check_lag(lag, h, "H", x.shape)
    corr_x = _pearson(x[..., :, :-lag, :], x[..., :, lag:, :])
    corr_y = _pearson(x[..., :-lag, :, :], x[..., lag:, :, :])
    return corr_x, corr_y


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


def _radial_bins(h: int, w: int, num_bins: int) -> tuple[jax.Array, jax.Array]:
    """Bin index ``(H, W)`` of each FFT frequency and the bin centres ``(num_bins,)``.

    Radius ``r = sqrt(fx^2 + fy^2)`` in cycles per pixel; bins split ``[0, 0.5]`` evenly (``r``
    = 0.5 belongs to the last bin); frequencies with ``r > 0.5`` (the corners) get index
    ``num_bins`` and are dropped.
    """
    fy = jnp.fft.fftfreq(h).astype(jnp.float32)
    fx = jnp.fft.fftfreq(w).astype(jnp.float32)
    radius = jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    index = jnp.minimum(jnp.floor(radius * (2.0 * num_bins)).astype(jnp.int32), num_bins - 1)
    index = jnp.where(radius > 0.5, num_bins, index)
    centres = (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) * (0.5 / num_bins)
    return index, centres


@functools.partial(jax.jit, static_argnames=("num_bins",))
def radial_power_spectrum(x: jax.Array, num_bins: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Radially averaged power spectrum, normalised so that white N(0, 1) noise gives ~1.

    ``P(k) = |FFT2(x)[k]|^2 / (H W)`` per image and channel, averaged over leading dims, channels
    and the frequencies ``k`` whose radius ``|k|`` (cycles per pixel) falls in each of
    ``num_bins`` equal bins of ``[0, 0.5]``; corner frequencies with ``|k| > 0.5`` are left out.
    For white noise ``E P(k) = 1`` at every ``k`` (including DC, since the mean is not removed).
    A bin with no frequency (possible only for ``num_bins`` larger than the default) is NaN.

    Args:
      x: noise ``(..., H, W, C)``, any float dtype.
      num_bins: static number of radial bins; default ``max(min(H, W) // 2, 1)``.

    Returns:
      ``(freqs, power)``: float32 ``(num_bins,)`` bin centres in cycles per pixel and the mean
      power in each bin.

    Raises:
      ValueError: if ``x`` has rank < 3 or is not floating point, or ``num_bins`` < 1.
    """
    x = _check_noise(x)
    h, w = x.shape[-3], x.shape[-2]
    if num_bins is None:
        num_bins = max(min(h, w) // 2, 1)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a static Python int >= 1; got {num_bins!r}")
    spectrum = jnp.fft.fft2(x, axes=(-3, -2))
    power = jnp.mean(jnp.abs(spectrum) ** 2 / (h * w), axis=-1)  # (..., H, W)
    power = jnp.mean(power.reshape((-1, h, w)), axis=0)  # (H, W)
    index, freqs = _radial_bins(h, w, num_bins)
    total = jax.ops.segment_sum(power.reshape(-1), index.reshape(-1), num_segments=num_bins + 1)
    count = jax.ops.segment_sum(
        jnp.ones((h * w,), jnp.float32), index.reshape(-1), num_segments=num_bins + 1
    )
    return freqs, total[:num_bins] / count[:num_bins]


# --------------------------------------------------------------------------------------------
# Temporal coherence.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("mode",))
def temporal_correlation(
    prev: jax.Array,
    cur: jax.Array,
    flow: jax.Array,
    *,
    mode: str = "bilinear",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Pearson correlation between ``cur`` and ``prev`` resampled along the backward flow.

    ``rho = Pearson(cur[..., d, c], prev(psi(centre_d))[..., c])`` with
    ``psi(centre_d) = centre_d + flow[d]``, pooled over valid pixels ``d``, leading dims and
    channels. ``prev(p)`` is the bilinear interpolation between pixel centres (``"bilinear"``,
    clamped to the edge) or the value of the cell containing ``p`` (``"nearest"``). A pixel is
    excluded when its flow is non-finite, when ``psi(centre_d)`` falls outside the frame
    ``[0, W) x [0, H)``, or where ``mask`` is False. With an exact warp of integral noise the
    value is 1 for integer translations; for a fractional shift ``s`` along one axis it is
    ``1 - s`` in ``"nearest"`` mode (``s < 1/2``) and ``sqrt((1 - s)^2 + s^2)`` in ``"bilinear"``
    mode (0.707 at ``s = 1/2``: bilinear resampling lowers the variance of ``prev``). Compare
    methods under the same mode rather than against 1.

    Args:
      prev: frame ``t`` noise ``(..., H, W, C)``, any float dtype.
      cur: frame ``t+1`` noise, same shape as ``prev``.
      flow: backward flow of frame ``t+1``, ``(H, W, 2)`` with vectors ``(dx, dy)`` in pixels.
      mode: static, ``"bilinear"`` or ``"nearest"``.
      mask: optional ``(H, W)`` boolean; pixels where it is False are excluded.

    Returns:
      float32 scalar in ``[-1, 1]``; NaN when no pixel is valid or either side is constant.

    Raises:
      ValueError: on rank < 3 or non-float noise, ``prev``/``cur`` shape mismatch, a flow that
        is not ``(H, W, 2)``, a mask that is not ``(H, W)``, or an unknown ``mode``.
    """
    prev = _check_noise(prev, "prev")
    cur = _check_noise(cur, "cur")
    if prev.shape != cur.shape:
        raise ValueError(
            f"prev and cur must have the same shape (..., H, W, C); got prev {prev.shape} and "
            f"cur {cur.shape}"
        )
    h, w, c = prev.shape[-3:]
    flow = jnp.asarray(flow)
    if flow.shape != (h, w, 2):
        raise ValueError(
            f"flow must have shape (H, W, 2) = {(h, w, 2)} to match noise {prev.shape}; got "
            f"{flow.shape}"
        )
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (h, w):
            raise ValueError(
                f"mask must have shape (H, W) = {(h, w)} to match noise {prev.shape}; got "
                f"{mask.shape}"
            )

    flow = sanitize_flow(flow, h, w)
    cx, cy = pixel_centres(h, w)
    px = cx + flow[..., 0]
    py = cy + flow[..., 1]
    valid = jnp.isfinite(px) & jnp.isfinite(py)
    valid &= (px >= 0.0) & (px < w) & (py >= 0.0) & (py < h)
    if mask is not None:
        valid &= mask.astype(bool)
    px = jnp.where(valid, px, 0.5)
    py = jnp.where(valid, py, 0.5)

    prev = _flatten_leading(prev)  # (L, H, W, C)
    cur = _flatten_leading(cur)
    num = prev.shape[0]
    if mode == "bilinear":
        image = jnp.transpose(prev, (1, 2, 0, 3)).reshape(h, w, num * c)
        warped = sample_bilinear(image, px, py).reshape(h, w, num, c)
        warped = jnp.transpose(warped, (2, 0, 1, 3))
    else:
        cols = jnp.clip(jnp.floor(px).astype(jnp.int32), 0, w - 1)
        rows = jnp.clip(jnp.floor(py).astype(jnp.int32), 0, h - 1)
        warped = prev[:, rows, cols, :]
    weight = jnp.broadcast_to(valid[None, :, :, None], cur.shape).astype(jnp.float32)
    return _pearson(cur, warped, weight)


# --------------------------------------------------------------------------------------------
# Results-table row and pass/fail checks.
# --------------------------------------------------------------------------------------------


def summary(x: jax.Array) -> dict[str, float]:
    """One results-table row of Gaussianity and whiteness statistics, as Python floats.

    Keys: ``mean``, ``var`` (:func:`moments`), ``ks``, ``ks_p`` (:func:`ks_normal`), ``ac_x``,
    ``ac_y`` (:func:`autocorr` at lag 1), ``max_cross`` (:func:`max_cross_channel_corr`).

    Args:
      x: noise ``(..., H, W, C)`` with ``H, W >= 2``, any float dtype.

    Returns:
      Dict of Python floats (not jit-able: it converts to host scalars).

    Raises:
      ValueError: if ``x`` has rank < 3, is not floating point, or ``H`` or ``W`` is < 2.
    """
    x = _check_noise(x)
    mom = moments(x)
    ks, ks_p = ks_normal(x)
    ac_x, ac_y = autocorr(x, 1)
    return {
        "mean": float(mom["mean"]),
        "var": float(mom["var"]),
        "ks": float(ks),
        "ks_p": float(ks_p),
        "ac_x": float(ac_x),
        "ac_y": float(ac_y),
        "max_cross": float(max_cross_channel_corr(x)),
    }


def whiteness_tolerances(
    shape: tuple[int, ...], num_se: float = 5.0, ks_alpha: float = 1e-3
) -> dict[str, float]:
    """Tolerances used by :func:`whiteness_checks` for noise of ``shape`` ``(..., H, W, C)``.

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
      shape: static shape ``(..., H, W, C)`` of the noise, rank >= 3.
      num_se: number of standard errors allowed.
      ks_alpha: smallest acceptable KS p-value.

    Returns:
      Dict of Python floats ``mean``, ``var``, ``ac_x``, ``ac_y``, ``max_cross``, ``ks_p``.

    Raises:
      ValueError: if ``shape`` has rank < 3.
    """
    shape = tuple(int(s) for s in shape)
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
    return {
        "mean": num_se / math.sqrt(n),
        "var": num_se * math.sqrt(2.0 / n),
        "ac_x": num_se / math.sqrt(max(pairs_x, 1)),
        "ac_y": num_se / math.sqrt(max(pairs_y, 1)),
        "max_cross": z_pairs / math.sqrt(leading * h * w),
        "ks_p": float(ks_alpha),
    }


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


def _check_volume(x: jax.Array, name: str = "x") -> jax.Array:
    """Validates ``(..., D, H, W, C)`` floating noise and returns it as float32."""
    x = jnp.asarray(x)
    if x.ndim < 4:
        raise ValueError(
            f"{name} must be a volume of shape (..., D, H, W, C) (rank >= 4); got shape "
            f"{x.shape} (rank {x.ndim})"
        )
    return _check_noise(x, name)


@functools.partial(jax.jit, static_argnames=("lag",))
def autocorr3d(x: jax.Array, lag: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Spatial autocorrelation of volumes at ``lag`` along x (columns), y (rows) and z (depth).

    ``corr_z = Pearson(x[..., k, i, j, c], x[..., k + lag, i, j, c])`` over all pairs inside the
    volume, all leading dims and channels (likewise ``corr_x``, ``corr_y`` as in
    :func:`autocorr`). For white noise each is ~N(0, 1/n_pairs), e.g.
    ``n_pairs = L (D - lag) H W C`` for ``corr_z``.

    Args:
      x: noise ``(..., D, H, W, C)``, any float dtype.
      lag: static shift in voxels, ``1 <= lag < min(D, H, W)``.

    Returns:
      ``(corr_x, corr_y, corr_z)``: float32 scalars.

    Raises:
      ValueError: if ``x`` has rank < 4 or is not floating point, or ``lag`` is out of range.
    """
    x = _check_volume(x)
    d, h, w = x.shape[-4:-1]
    _check_lag(lag, w, "W", x.shape)
    _check_lag(lag, h, "H", x.shape)
    _check_lag(lag, d, "D", x.shape)
    corr_x = _pearson(x[..., :, :, :-lag, :], x[..., :, :, lag:, :])
    corr_y = _pearson(x[..., :, :-lag, :, :], x[..., :, lag:, :, :])
    corr_z = _pearson(x[..., :-lag, :, :, :], x[..., lag:, :, :, :])
    return corr_x, corr_y, corr_z


@functools.partial(jax.jit, static_argnames=("num_bins",))
def radial_power_spectrum3d(
    x: jax.Array, num_bins: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Radially averaged 3D power spectrum of volumes, normalised so white N(0, 1) noise gives ~1.

    ``P(k) = |FFT3(x)[k]|^2 / (D H W)`` per volume and channel, averaged over leading dims,
    channels and the frequencies whose radius ``|k|`` (cycles per voxel) falls in each of
    ``num_bins`` equal bins of ``[0, 0.5]``; frequencies with ``|k| > 0.5`` are left out. For white
    noise ``E P(k) = 1`` everywhere. An empty bin is NaN.

    Args:
      x: noise ``(..., D, H, W, C)``, any float dtype.
      num_bins: static number of bins; default ``max(min(D, H, W) // 2, 1)``.

    Returns:
      ``(freqs, power)``: float32 ``(num_bins,)`` bin centres and mean power per bin.

    Raises:
      ValueError: if ``x`` has rank < 4 or is not floating point, or ``num_bins`` < 1.
    """
    x = _check_volume(x)
    d, h, w = x.shape[-4:-1]
    if num_bins is None:
        num_bins = max(min(d, h, w) // 2, 1)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a static Python int >= 1; got {num_bins!r}")
    n = d * h * w
    spectrum = jnp.fft.fftn(x, axes=(-4, -3, -2))
    power = jnp.mean(jnp.abs(spectrum) ** 2 / n, axis=-1)
    power = jnp.mean(power.reshape((-1, d, h, w)), axis=0)
    fz = jnp.fft.fftfreq(d).astype(jnp.float32)
    fy = jnp.fft.fftfreq(h).astype(jnp.float32)
    fx = jnp.fft.fftfreq(w).astype(jnp.float32)
    radius = jnp.sqrt(fz[:, None, None] ** 2 + fy[None, :, None] ** 2 + fx[None, None, :] ** 2)
    index = jnp.minimum(jnp.floor(radius * (2.0 * num_bins)).astype(jnp.int32), num_bins - 1)
    index = jnp.where(radius > 0.5, num_bins, index).reshape(-1)
    freqs = (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) * (0.5 / num_bins)
    total = jax.ops.segment_sum(power.reshape(-1), index, num_segments=num_bins + 1)
    count = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), index, num_segments=num_bins + 1)
    return freqs, total[:num_bins] / count[:num_bins]


@functools.partial(jax.jit, static_argnames=("mode",))
def temporal_correlation3d(
    prev: jax.Array,
    cur: jax.Array,
    flow: jax.Array,
    *,
    mode: str = "trilinear",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Pearson correlation between ``cur`` and ``prev`` resampled along a 3D backward flow.

    ``rho = Pearson(cur[..., d, c], prev(psi(centre_d))[..., c])`` with
    ``psi(centre_d) = centre_d + flow[d]``, pooled over valid voxels, leading dims and channels.
    ``prev(p)`` is the trilinear interpolation between voxel centres (``"trilinear"``, clamped to
    the edge) or the value of the voxel containing ``p`` (``"nearest"``). A voxel is excluded when
    its flow is non-finite, ``psi(centre_d)`` falls outside ``[0, W) x [0, H) x [0, D)``, or
    ``mask`` is False there. An exact warp gives 1 for integer translations; as in 2D, fractional
    motion lowers the value (trilinear resampling lowers the variance of ``prev``).

    Args:
      prev: frame ``t`` noise ``(..., D, H, W, C)``, any float dtype.
      cur: frame ``t+1`` noise, same shape.
      flow: backward flow of frame ``t+1``, ``(D, H, W, 3)``, vectors ``(dx, dy, dz)``.
      mode: static, ``"trilinear"`` or ``"nearest"``.
      mask: optional ``(D, H, W)`` boolean; voxels where it is False are excluded.

    Returns:
      float32 scalar in ``[-1, 1]``; NaN when no voxel is valid or a side is constant.

    Raises:
      ValueError: on rank < 4 or non-float noise, mismatched shapes, a flow that is not
        ``(D, H, W, 3)``, a mask that is not ``(D, H, W)`` or an unknown ``mode``.
    """
    prev = _check_volume(prev, "prev")
    cur = _check_volume(cur, "cur")
    if prev.shape != cur.shape:
        raise ValueError(
            f"prev and cur must have the same shape (..., D, H, W, C); got prev {prev.shape} "
            f"and cur {cur.shape}"
        )
    d, h, w, c = prev.shape[-4:]
    flow = jnp.asarray(flow)
    if flow.shape != (d, h, w, 3):
        raise ValueError(
            f"flow must have shape (D, H, W, 3) = {(d, h, w, 3)} to match noise {prev.shape}; "
            f"got {flow.shape}"
        )
    if mode not in _MODES3D:
        raise ValueError(f"mode must be one of {_MODES3D}; got {mode!r}")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (d, h, w):
            raise ValueError(
                f"mask must have shape (D, H, W) = {(d, h, w)} to match noise {prev.shape}; got "
                f"{mask.shape}"
            )
    flow = sanitize_flow3d(flow)
    cx, cy, cz = voxel_centres(d, h, w)
    px, py, pz = cx + flow[..., 0], cy + flow[..., 1], cz + flow[..., 2]
    valid = jnp.isfinite(px) & jnp.isfinite(py) & jnp.isfinite(pz)
    valid &= (px >= 0.0) & (px < w) & (py >= 0.0) & (py < h) & (pz >= 0.0) & (pz < d)
    if mask is not None:
        valid &= mask.astype(bool)
    px, py, pz = (jnp.where(valid, p, 0.5) for p in (px, py, pz))

    prev = prev.reshape((-1, d, h, w, c))
    cur = cur.reshape((-1, d, h, w, c))
    num = prev.shape[0]
    if mode == "trilinear":
        field = jnp.transpose(prev, (1, 2, 3, 0, 4)).reshape(d, h, w, num * c)
        warped = sample_trilinear(field, px, py, pz).reshape(d, h, w, num, c)
        warped = jnp.transpose(warped, (3, 0, 1, 2, 4))
    else:
        cols = jnp.clip(jnp.floor(px).astype(jnp.int32), 0, w - 1)
        rows = jnp.clip(jnp.floor(py).astype(jnp.int32), 0, h - 1)
        deps = jnp.clip(jnp.floor(pz).astype(jnp.int32), 0, d - 1)
        warped = prev[:, deps, rows, cols, :]
    weight = jnp.broadcast_to(valid[None, ..., None], cur.shape).astype(jnp.float32)
    return _pearson(cur, warped, weight)


def summary3d(x: jax.Array) -> dict[str, float]:
    """One results-table row for volumes: :func:`summary`'s keys plus ``ac_z``.

    Keys: ``mean``, ``var``, ``ks``, ``ks_p``, ``ac_x``, ``ac_y``, ``ac_z`` (:func:`autocorr3d`
    at lag 1) and ``max_cross``.

    Args:
      x: noise ``(..., D, H, W, C)`` with ``D, H, W >= 2``, any float dtype.

    Returns:
      Dict of Python floats (not jit-able).

    Raises:
      ValueError: if ``x`` has rank < 4, is not floating point, or ``D``, ``H`` or ``W`` is < 2.
    """
    x = _check_volume(x)
    mom = moments(x)
    ks, ks_p = ks_normal(x)
    ac_x, ac_y, ac_z = autocorr3d(x, 1)
    return {
        "mean": float(mom["mean"]),
        "var": float(mom["var"]),
        "ks": float(ks),
        "ks_p": float(ks_p),
        "ac_x": float(ac_x),
        "ac_y": float(ac_y),
        "ac_z": float(ac_z),
        "max_cross": float(max_cross_channel_corr(x)),
    }


def whiteness_tolerances3d(
    shape: tuple[int, ...], num_se: float = 5.0, ks_alpha: float = 1e-3
) -> dict[str, float]:
    """Tolerances of :func:`whiteness_checks3d` for volumes of ``shape`` ``(..., D, H, W, C)``.

    The derivations of :func:`whiteness_tolerances`, with the depth axis as one more leading
    sample axis for ``mean``, ``var``, ``ac_x``, ``ac_y``, ``max_cross`` and ``ks_p``, plus
    ``ac_z``: ``num_se / sqrt(L (D - 1) H W C)``.

    Args:
      shape: static shape ``(..., D, H, W, C)``, rank >= 4.
      num_se: number of standard errors allowed.
      ks_alpha: smallest acceptable KS p-value.

    Returns:
      Dict of Python floats ``mean``, ``var``, ``ac_x``, ``ac_y``, ``ac_z``, ``max_cross``,
      ``ks_p``.

    Raises:
      ValueError: if ``shape`` has rank < 4.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 4:
        raise ValueError(f"shape must be (..., D, H, W, C) (rank >= 4); got {shape}")
    tol = whiteness_tolerances(shape, num_se, ks_alpha)
    d, h, w, c = shape[-4:]
    leading = math.prod(shape[:-4])
    tol["ac_z"] = num_se / math.sqrt(max(leading * (d - 1) * h * w * c, 1))
    return tol


def whiteness_checks3d(
    x: jax.Array, num_se: float = 5.0, ks_alpha: float = 1e-3
) -> dict[str, bool]:
    """Pass/fail checks that a volume looks i.i.d. N(0, 1), tolerances from the sample size.

    :func:`whiteness_checks` plus ``ac_z``: ``|corr_z| <= num_se / sqrt(n_pairs_z)``. See
    :func:`whiteness_tolerances3d`.

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
    x = _check_volume(x)
    row = summary3d(x)
    tol = whiteness_tolerances3d(x.shape, num_se, ks_alpha)
    checks = {
        "mean": abs(row["mean"]) <= tol["mean"],
        "var": abs(row["var"] - 1.0) <= tol["var"],
        "ac_x": abs(row["ac_x"]) <= tol["ac_x"],
        "ac_y": abs(row["ac_y"]) <= tol["ac_y"],
        "ac_z": abs(row["ac_z"]) <= tol["ac_z"],
        "max_cross": row["max_cross"] <= tol["max_cross"],
        "ks": row["ks_p"] > tol["ks_p"],
    }
    checks["all"] = all(checks.values())
    return checks
