"""Gaussianity, whiteness and temporal-coherence diagnostics (irwarp.stats).

Test noise comes from NumPy generators with fixed seeds (no per-shape compilation). Statistical
assertions use fixed seeds and tolerances of a few standard errors derived from the
sample size; exact quantities are compared against slow NumPy references on the same draws.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irwarp import stats

SHAPE = (8, 32, 32, 4)
N = math.prod(SHAPE)


def _white(seed, shape=SHAPE):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _smooth_x(x):
    """2-tap circular average along x, rescaled to unit variance: lag-1 x-correlation is 0.5."""
    return (x + np.roll(x, -1, axis=-2)) / np.float32(math.sqrt(2.0))


def _smooth_y(x):
    return (x + np.roll(x, -1, axis=-3)) / np.float32(math.sqrt(2.0))


# ------------------------------------------------------------------------------------------
# White noise passes; each kind of departure fails the check that is meant to catch it.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_noise_passes_every_check(seed):
    checks = stats.whiteness_checks(_white(seed))
    assert checks == {k: True for k in ("mean", "var", "ac_x", "ac_y", "max_cross", "ks", "all")}


def test_moments_match_numpy_and_standard_errors():
    x = _white(0)
    mom = stats.moments(x)
    ref = np.asarray(x, np.float64)
    np.testing.assert_allclose(mom["mean"], ref.mean(), atol=1e-6)
    np.testing.assert_allclose(mom["var"], ref.var(), rtol=1e-5)
    np.testing.assert_allclose(mom["mean_se"], 1 / math.sqrt(N), rtol=1e-6)
    np.testing.assert_allclose(mom["var_se"], math.sqrt(2 / N), rtol=1e-6)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in mom.values())


def test_ks_matches_reference_statistic_and_kolmogorov_p_value():
    scipy_special = pytest.importorskip("scipy.special")
    scipy_stats = pytest.importorskip("scipy.stats")
    for x in (_white(3, (2, 16, 16, 3)), 1.1 * _white(4, (2, 16, 16, 3)) + 0.05):
        stat, p = stats.ks_normal(x)
        sample = np.sort(np.asarray(x, np.float64).ravel())
        n = sample.size
        cdf = scipy_stats.norm.cdf(sample)
        k = np.arange(1, n + 1)
        d_ref = max((k / n - cdf).max(), (cdf - (k - 1) / n).max())
        np.testing.assert_allclose(stat, d_ref, atol=2e-6)
        lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d_ref
        np.testing.assert_allclose(p, scipy_special.kolmogorov(lam), atol=1e-4)


def test_kolmogorov_survival_function_across_both_series_forms():
    scipy_special = pytest.importorskip("scipy.special")
    lam = np.array([0.0, 0.05, 0.3, 0.6, 0.9, 1.17, 1.18, 1.19, 1.5, 2.0, 3.0, 50.0])
    got = np.asarray(jax.jit(jax.vmap(stats._kolmogorov_sf))(jnp.asarray(lam, jnp.float32)))
    np.testing.assert_allclose(got, scipy_special.kolmogorov(lam), atol=2e-6)
    assert np.all((got >= 0) & (got <= 1))


def test_uniform_noise_fails_ks_only():
    x = np.random.default_rng(5).uniform(-math.sqrt(3), math.sqrt(3), SHAPE).astype(np.float32)
    checks = stats.whiteness_checks(x)
    assert not checks["ks"] and not checks["all"]
    assert checks["mean"] and checks["var"] and checks["ac_x"] and checks["ac_y"]
    assert stats.ks_normal(x)[1] < 1e-3


def test_smoothing_in_x_fails_ac_x_but_not_ac_y():
    x = _smooth_x(_white(6))
    checks = stats.whiteness_checks(x)
    assert not checks["ac_x"] and checks["ac_y"] and not checks["all"]
    ac_x, ac_y = stats.autocorr(x)
    n_pairs = SHAPE[0] * SHAPE[1] * (SHAPE[2] - 1) * SHAPE[3]
    assert abs(float(ac_x) - 0.5) < 5 / math.sqrt(n_pairs)
    # Lag 2 is beyond the filter's reach: white again.
    assert abs(float(stats.autocorr(x, lag=2)[0])) < 5 / math.sqrt(n_pairs)
    # Symmetric: smoothing in y is seen in y only.
    ac_x, ac_y = stats.autocorr(_smooth_y(_white(6)))
    assert abs(float(ac_y) - 0.5) < 5 / math.sqrt(n_pairs) and abs(float(ac_x)) < 0.03


def test_autocorr_matches_numpy_reference():
    x = np.asarray(_white(7, (3, 9, 11, 2)), np.float64)
    for lag in (1, 3):
        ac_x, ac_y = stats.autocorr(x.astype(np.float32), lag=lag)
        ref_x = np.corrcoef(x[..., :, :-lag, :].ravel(), x[..., :, lag:, :].ravel())[0, 1]
        ref_y = np.corrcoef(x[..., :-lag, :, :].ravel(), x[..., lag:, :, :].ravel())[0, 1]
        np.testing.assert_allclose([ac_x, ac_y], [ref_x, ref_y], atol=1e-5)


def test_channel_copy_gives_cross_correlation_one():
    x = _white(8)
    x[..., 1] = x[..., 0]
    corr = stats.cross_channel_corr(x)
    assert corr.shape == (4, 4)
    np.testing.assert_allclose(corr, corr.T, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(corr), 1.0, atol=1e-5)
    np.testing.assert_allclose(corr[0, 1], 1.0, atol=1e-5)
    np.testing.assert_allclose(stats.max_cross_channel_corr(x), 1.0, atol=1e-5)
    assert not stats.whiteness_checks(x)["max_cross"]
    ref = np.corrcoef(np.asarray(x, np.float64).reshape(-1, 4), rowvar=False)
    np.testing.assert_allclose(corr, ref, atol=1e-5)


def test_single_channel_has_zero_cross_correlation():
    x = _white(9, (4, 16, 16, 1))
    assert float(stats.max_cross_channel_corr(x)) == 0.0
    assert stats.cross_channel_corr(x).shape == (1, 1)
    assert stats.whiteness_tolerances(x.shape)["max_cross"] == pytest.approx(5 / 32)


def test_scaled_or_shifted_noise_fails_the_moment_checks():
    x = _white(10)
    scaled = stats.whiteness_checks(1.1 * x)
    assert not scaled["var"] and scaled["mean"] and not scaled["all"]
    shifted = stats.whiteness_checks(x + 0.05)  # 0.05 is ~9 standard errors of the mean
    assert not shifted["mean"] and shifted["var"] and not shifted["all"]


def test_tolerances_are_standard_errors_of_the_sample_size():
    tol = stats.whiteness_tolerances(SHAPE, num_se=5.0)
    b, h, w, c = SHAPE
    assert tol["mean"] == pytest.approx(5 / math.sqrt(N))
    assert tol["var"] == pytest.approx(5 * math.sqrt(2 / N))
    assert tol["ac_x"] == pytest.approx(5 / math.sqrt(b * h * (w - 1) * c))
    # Bonferroni over the 6 channel pairs: a little more than 5 SE, much less than 6.
    z = tol["max_cross"] * math.sqrt(b * h * w)
    assert 5.0 < z < 5.6
    assert stats.whiteness_tolerances((16, 16, 2))["max_cross"] == pytest.approx(5 / 16)


# ------------------------------------------------------------------------------------------
# Per-pixel correlation map.
# ------------------------------------------------------------------------------------------


def _autocorr_map_reference(x, lag):
    x = np.asarray(x, np.float64).reshape((-1,) + x.shape[-3:])
    _, h, w, _ = x.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            jn = j + lag if j + lag < w else j - lag
            i_n = i + lag if i + lag < h else i - lag
            a = x[:, i, j, :].ravel()
            out[i, j] = 0.5 * (
                np.corrcoef(a, x[:, i, jn, :].ravel())[0, 1]
                + np.corrcoef(a, x[:, i_n, j, :].ravel())[0, 1]
            )
    return out


def test_autocorr_map_matches_numpy_reference():
    x = _smooth_x(_white(11, (40, 6, 7, 2)))
    for lag in (1, 2):
        got = stats.autocorr_map(x, lag=lag)
        assert got.shape == (6, 7)
        np.testing.assert_allclose(got, _autocorr_map_reference(x, lag), atol=1e-5)


def test_autocorr_map_shows_where_noise_stops_being_white():
    num, h, w, c = 256, 16, 16, 4
    x = _white(12, (num, h, w, c))
    se = 1 / math.sqrt(2 * num * c)
    white_map = stats.autocorr_map(x)
    assert float(np.max(np.abs(white_map))) < 5 * se
    # Smooth the left half in x only (circularly within it): correlation 0.5 in x, 0 in y, so
    # the map reads 0.25 there and ~0 in the right half.
    left = _smooth_x(x[..., :, : w // 2, :])
    mixed = stats.autocorr_map(np.concatenate([left, x[..., :, w // 2 :, :]], axis=-2))
    interior_left = mixed[:, : w // 2 - 1]
    np.testing.assert_allclose(interior_left, 0.25, atol=5 * se)
    assert float(np.max(np.abs(mixed[:, w // 2 + 1 :]))) < 5 * se


# ------------------------------------------------------------------------------------------
# Temporal correlation along the flow.
# ------------------------------------------------------------------------------------------

TSHAPE = (3, 16, 20, 2)


def _constant_flow(dx, dy, h=TSHAPE[1], w=TSHAPE[2]):
    return np.broadcast_to(np.array([dx, dy], np.float32), (h, w, 2))


def _shifted(prev, dx, dy, seed):
    """cur[i, j] = prev[i + dy, j + dx] where that pixel exists, fresh noise elsewhere."""
    prev = np.asarray(prev)
    cur = _white(seed, prev.shape)
    h, w = prev.shape[-3:-1]
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                cur[..., i, j, :] = prev[..., i + dy, j + dx, :]
    return cur


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_temporal_correlation_of_a_frame_with_itself_is_one(mode):
    x = _white(13, TSHAPE)
    rho = stats.temporal_correlation(x, x, _constant_flow(0.0, 0.0), mode=mode)
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("dx, dy", [(2, -3), (-1, 4)])
def test_temporal_correlation_follows_the_backward_flow_convention(mode, dx, dy):
    prev = _white(14, TSHAPE)
    cur = _shifted(prev, dx, dy, 15)
    rho = stats.temporal_correlation(prev, cur, _constant_flow(dx, dy), mode=mode)
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)
    # The wrong direction and swapped axes see (almost) independent noise.
    n = math.prod(TSHAPE)
    for wrong in (_constant_flow(-dx, -dy), _constant_flow(dy, dx)):
        assert abs(float(stats.temporal_correlation(prev, cur, wrong, mode=mode))) < 6 / math.sqrt(
            n / 2
        )


def test_temporal_correlation_of_independent_noise_is_near_zero():
    prev, cur = _white(16, SHAPE), _white(17, SHAPE)
    flow = _constant_flow(0.3, -0.7, SHAPE[1], SHAPE[2])
    for mode in ("bilinear", "nearest"):
        rho = stats.temporal_correlation(prev, cur, flow, mode=mode)
        assert abs(float(rho)) < 5 / math.sqrt(N * 0.9)


def test_temporal_correlation_excludes_masked_nonfinite_and_outside_pixels():
    prev = _white(18, TSHAPE)
    dx, dy = 3, 1
    cur = _shifted(prev, dx, dy, 19)
    flow = np.array(_constant_flow(dx, dy))
    # Garbage in cur where the flow is NaN / Inf or the mask is off: it must not count.
    flow[0:4, 0:5] = np.nan
    flow[5, 6, 0] = np.inf
    mask = np.ones(TSHAPE[1:3], bool)
    mask[10:14, 2:8] = False
    cur[..., 0:4, 0:5, :] = 100.0
    cur[..., 5, 6, :] = -50.0
    cur[..., 10:14, 2:8, :] = 7.0
    for mode in ("bilinear", "nearest"):
        rho = stats.temporal_correlation(prev, cur, flow, mode=mode, mask=mask)
        np.testing.assert_allclose(rho, 1.0, atol=1e-6)
    # With no valid pixel at all the correlation is undefined.
    rho = stats.temporal_correlation(prev, cur, _constant_flow(100.0, 0.0))
    assert np.isnan(float(rho))


def _resample_reference(prev, px, py, mode):
    """Slow reference lookup of prev (..., H, W, C) at points (px, py) (H, W), per pixel."""
    h, w = prev.shape[-3:-1]
    out = np.zeros(prev.shape, np.float64)
    for i in range(h):
        for j in range(w):
            x, y = px[i, j], py[i, j]
            if mode == "nearest":
                out[..., i, j, :] = prev[..., int(np.floor(y)), int(np.floor(x)), :]
                continue
            u = min(max(x - 0.5, 0.0), w - 1.0)  # between centres, clamped to the edge
            v = min(max(y - 0.5, 0.0), h - 1.0)
            j0, i0 = min(int(u), w - 2), min(int(v), h - 2)
            tx, ty = u - j0, v - i0
            out[..., i, j, :] = (
                (1 - tx) * (1 - ty) * prev[..., i0, j0, :]
                + tx * (1 - ty) * prev[..., i0, j0 + 1, :]
                + (1 - tx) * ty * prev[..., i0 + 1, j0, :]
                + tx * ty * prev[..., i0 + 1, j0 + 1, :]
            )
    return out


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_temporal_correlation_matches_reference_lookup_for_fractional_flow(mode):
    h, w = TSHAPE[1:3]
    prev = _white(20, TSHAPE)
    flow = np.random.default_rng(21).uniform(-2.5, 2.5, (h, w, 2)).astype(np.float32)
    cx, cy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    px, py = cx + flow[..., 0], cy + flow[..., 1]
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    assert 0.5 < inside.mean() < 1.0  # some targets fall outside and must be left out
    cur = _resample_reference(prev, np.where(inside, px, 0.5), np.where(inside, py, 0.5), mode)
    cur = np.where(inside[..., None], cur, 1e3).astype(np.float32)
    rho = stats.temporal_correlation(prev, cur, flow, mode=mode)
    np.testing.assert_allclose(rho, 1.0, atol=1e-5)
    # The other lookup reads different values at fractional points.
    other = "nearest" if mode == "bilinear" else "bilinear"
    assert float(stats.temporal_correlation(prev, cur, flow, mode=other)) < 0.9


# ------------------------------------------------------------------------------------------
# Radial power spectrum.
# ------------------------------------------------------------------------------------------


def _radial_reference(x, num_bins):
    x = np.asarray(x, np.float64)
    h, w = x.shape[-3:-1]
    power = np.abs(np.fft.fft2(x, axes=(-3, -2))) ** 2 / (h * w)
    power = power.reshape((-1, h, w, x.shape[-1])).mean(axis=(0, 3))
    fy, fx = np.fft.fftfreq(h), np.fft.fftfreq(w)
    radius = np.hypot(fy[:, None], fx[None, :])
    out, counts = np.zeros(num_bins), np.zeros(num_bins, int)
    for i in range(h):
        for j in range(w):
            r = radius[i, j]
            if r <= 0.5:
                b = min(int(r / 0.5 * num_bins), num_bins - 1)
                out[b] += power[i, j]
                counts[b] += 1
    return out / counts, counts


def test_radial_power_spectrum_of_white_noise_is_flat():
    x = _white(21)
    freqs, power = stats.radial_power_spectrum(x)
    num_bins = SHAPE[1] // 2
    assert freqs.shape == power.shape == (num_bins,)
    np.testing.assert_allclose(freqs, (np.arange(num_bins) + 0.5) / (2 * num_bins), atol=1e-7)
    ref, counts = _radial_reference(x, num_bins)
    np.testing.assert_allclose(power, ref, rtol=1e-4)
    # Each |F_k|^2 / (H W) has mean 1 and variance <= 2 (chi-square with 1 or 2 d.o.f. / d.o.f.);
    # F_k and F_-k are conjugates, so a bin holds about count / 2 independent values per image.
    images = SHAPE[0] * SHAPE[3]
    se = np.sqrt(2.0 / (images * np.maximum(counts / 2, 1)))
    assert np.all(np.abs(np.asarray(power) - 1.0) < 5 * se)


def test_radial_power_spectrum_of_smoothed_noise_is_low_pass():
    x = _smooth_y(_smooth_x(_white(22)))
    _, power = stats.radial_power_spectrum(x)
    power = np.asarray(power)
    # |H(f)|^2 = (1 + cos 2 pi fx)(1 + cos 2 pi fy): 4 at DC, 0 at the Nyquist corner.
    assert power[1:4].mean() > 3.0
    assert power[-1] < 0.2
    assert np.all(np.diff(power[3:]) < 0)


def test_radial_power_spectrum_custom_bins_and_rectangles():
    x = _white(23, (2, 8, 12, 3))
    for num_bins in (4,):
        freqs, power = stats.radial_power_spectrum(x, num_bins=num_bins)
        assert freqs.shape == (num_bins,)
        np.testing.assert_allclose(power, _radial_reference(x, num_bins)[0], rtol=1e-4)
    # More bins than frequencies: empty bins are NaN, never a division error.
    _, power = stats.radial_power_spectrum(x, num_bins=40)
    assert np.isnan(np.asarray(power)).any() and np.isfinite(np.asarray(power)).any()


# ------------------------------------------------------------------------------------------
# Volumes: the same functions with ndim=3.
# ------------------------------------------------------------------------------------------

VSHAPE = (2, 5, 6, 7, 2)  # (L, D, H, W, C), all extents different


def test_autocorr_of_volumes_matches_numpy_reference():
    x = np.asarray(_white(31, VSHAPE), np.float64)
    for lag in (1, 2):
        got = stats.autocorr(x.astype(np.float32), lag=lag, ndim=3)
        want = []
        for axis in (-2, -3, -4):  # x, y, z
            a = np.take(x, range(x.shape[axis] - lag), axis=axis)
            b = np.take(x, range(lag, x.shape[axis]), axis=axis)
            want.append(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_volume_seen_as_images_gives_the_same_x_and_y_statistics():
    """ndim=3 adds the z axis; x and y are computed by the same code on the same pairs."""
    x = _white(32, VSHAPE)
    ac3, ac2 = stats.autocorr(x, ndim=3), stats.autocorr(x)
    assert len(ac3) == 3 and len(ac2) == 2
    np.testing.assert_array_equal(np.asarray(ac3[:2]), np.asarray(ac2))
    tol3 = stats.whiteness_tolerances(VSHAPE, ndim=3)
    assert {k: v for k, v in tol3.items() if k != "ac_z"} == stats.whiteness_tolerances(VSHAPE)
    lead, d, h, w, c = VSHAPE
    assert tol3["ac_z"] == pytest.approx(5.0 / math.sqrt(lead * (d - 1) * h * w * c))
    row3, row2 = stats.summary(x, ndim=3), stats.summary(x)
    assert set(row3) == set(row2) | {"ac_z"}
    assert {k: v for k, v in row3.items() if k != "ac_z"} == row2


def test_radial_power_spectrum_of_volumes_matches_numpy_reference():
    x = _white(33, VSHAPE)
    num_bins = 3
    xd = np.asarray(x, np.float64)
    d, h, w = VSHAPE[1:4]
    power = np.abs(np.fft.fftn(xd, axes=(-4, -3, -2))) ** 2 / (d * h * w)
    power = power.reshape((-1, d, h, w, VSHAPE[-1])).mean(axis=(0, 4))
    fz, fy, fx = np.meshgrid(*(np.fft.fftfreq(n) for n in (d, h, w)), indexing="ij")
    radius = np.sqrt(fz**2 + fy**2 + fx**2)
    want = np.zeros(num_bins)
    counts = np.zeros(num_bins)
    for r, pw in zip(radius.ravel(), power.ravel(), strict=True):
        if r <= 0.5:
            b = min(int(r / 0.5 * num_bins), num_bins - 1)
            want[b] += pw
            counts[b] += 1
    freqs, got = stats.radial_power_spectrum(x, num_bins, ndim=3)
    np.testing.assert_allclose(freqs, (np.arange(num_bins) + 0.5) * 0.5 / num_bins, rtol=1e-6)
    np.testing.assert_allclose(got, want / counts, rtol=1e-4)


@pytest.mark.parametrize("mode", ("trilinear", "nearest"))
def test_temporal_correlation_of_volumes_follows_the_flow_along_z(mode):
    """cur = prev shifted by one voxel in depth: the backward flow dz = -1 gives exactly 1."""
    prev = _white(34, VSHAPE)
    cur = jnp.roll(prev, 1, axis=-4)  # cur[k] = prev[k - 1]
    d, h, w = VSHAPE[1:4]
    back = jnp.zeros((d, h, w, 3)).at[..., 2].set(-1.0)
    rho = float(stats.temporal_correlation(prev, cur, back, mode=mode, ndim=3))
    assert rho == pytest.approx(1.0, abs=1e-5)
    wrong = float(stats.temporal_correlation(prev, cur, -back, mode=mode, ndim=3))
    assert abs(wrong) < 0.2


def test_temporal_correlation_of_volumes_with_planar_flow_equals_images():
    """A flow with dz = 0 and the same (dx, dy) in every slice: the 2D value (nearest mode)."""
    prev, cur = _white(35, VSHAPE), _white(36, VSHAPE)
    cur = 0.6 * cur + 0.8 * jnp.roll(prev, (1, -1), axis=(-3, -2))
    d, h, w = VSHAPE[1:4]
    flow2 = jnp.broadcast_to(jnp.array([1.3, -0.7]), (h, w, 2))
    flow3 = jnp.concatenate([flow2, jnp.zeros((h, w, 1))], -1)
    flow3 = jnp.broadcast_to(flow3, (d, h, w, 3))
    rho3 = stats.temporal_correlation(prev, cur, flow3, mode="nearest", ndim=3)
    rho2 = stats.temporal_correlation(prev, cur, flow2, mode="nearest")
    np.testing.assert_allclose(rho3, rho2, rtol=1e-5)
    assert float(rho2) > 0.5


def test_volume_arguments_are_checked():
    x = _white(37, VSHAPE)
    d, h, w = VSHAPE[1:4]
    with pytest.raises(ValueError, match=r"\(\.\.\., D, H, W, C\) \(rank >= 4\)"):
        stats.autocorr(x[0, 0], ndim=3)
    with pytest.raises(ValueError, match="ndim must be 2 .* or 3"):
        stats.radial_power_spectrum(x, ndim=1)
    with pytest.raises(ValueError, match=r"\(D, H, W, 3\) = \(5, 6, 7, 3\)"):
        stats.temporal_correlation(x, x, jnp.zeros((h, w, 2)), ndim=3)
    with pytest.raises(ValueError, match="mode must be one of"):
        stats.temporal_correlation(x, x, jnp.zeros((d, h, w, 3)), mode="bilinear", ndim=3)
    with pytest.raises(ValueError, match=r"mask must have shape \(D, H, W\)"):
        stats.temporal_correlation(x, x, jnp.zeros((d, h, w, 3)), mask=jnp.ones((h, w)), ndim=3)
    with pytest.raises(ValueError, match=r"rank >= 4"):
        stats.whiteness_tolerances((4, 4, 2), ndim=3)


# ------------------------------------------------------------------------------------------
# Summary, dtypes, validation, jit.
# ------------------------------------------------------------------------------------------


def test_summary_is_a_row_of_python_floats():
    row = stats.summary(_white(24))
    assert list(row) == ["mean", "var", "ks", "ks_p", "ac_x", "ac_y", "max_cross"]
    assert all(type(v) is float for v in row.values())
    assert all(type(v) is bool for v in stats.whiteness_checks(_white(24)).values())


def test_half_precision_inputs_are_computed_in_float32():
    x = _white(25, (4, 16, 16, 2))
    mom = stats.moments(x.astype(jnp.bfloat16))
    assert mom["mean"].dtype == jnp.float32
    np.testing.assert_allclose(mom["var"], stats.moments(x)["var"], rtol=1e-2)
    rho = stats.temporal_correlation(
        x.astype(np.float16), x.astype(np.float16), np.zeros((16, 16, 2), np.float16)
    )
    assert rho.dtype == jnp.float32
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)


def test_bad_inputs_raise_value_error_naming_shapes():
    good = _white(26, (2, 8, 8, 2))
    flow = np.zeros((8, 8, 2), np.float32)
    rank2 = np.zeros((8, 8), np.float32)
    fns = [
        stats.moments,
        stats.ks_normal,
        stats.autocorr,
        stats.autocorr_map,
        stats.cross_channel_corr,
        stats.max_cross_channel_corr,
        stats.radial_power_spectrum,
        stats.summary,
        stats.whiteness_checks,
    ]
    for fn in fns:
        with pytest.raises(ValueError, match=r"\(8, 8\)"):
            fn(rank2)
        with pytest.raises(ValueError, match="int32"):
            fn(np.zeros((2, 8, 8, 2), np.int32))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        stats.temporal_correlation(rank2, rank2, flow)
    with pytest.raises(ValueError, match="int32"):
        stats.temporal_correlation(good.astype(np.int32), good, flow)
    with pytest.raises(ValueError, match=r"\(8, 8, 2\).*\(8, 9, 2\)"):
        stats.temporal_correlation(good, good, np.zeros((8, 9, 2)))
    with pytest.raises(ValueError, match=r"\(8, 8, 2\).*\(2, 8, 8, 2\)"):
        stats.temporal_correlation(good, good, np.zeros((2, 8, 8, 2)))
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 2\).*\(2, 8, 8, 3\)"):
        stats.temporal_correlation(good, np.zeros((2, 8, 8, 3), np.float32), flow)
    with pytest.raises(ValueError, match=r"\(8, 8\).*\(8, 7\)"):
        stats.temporal_correlation(good, good, flow, mask=np.ones((8, 7), bool))
    with pytest.raises(ValueError, match="mode"):
        stats.temporal_correlation(good, good, flow, mode="cubic")
    for lag in (0, -1, 1.0, True, 8):
        with pytest.raises(ValueError, match="lag"):
            stats.autocorr(good, lag=lag)
    with pytest.raises(ValueError, match="lag"):
        stats.autocorr_map(good, lag=5)
    for num_bins in (0, 2.5):
        with pytest.raises(ValueError, match="num_bins"):
            stats.radial_power_spectrum(good, num_bins=num_bins)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        stats.whiteness_tolerances((8, 8))


def _jit_cases():
    x = _smooth_x(_white(27, (2, 8, 8, 3)))
    prev = _white(28, (2, 8, 8, 3))
    flow = _constant_flow(0.4, -1.3, 8, 8)
    mask = np.arange(8)[:, None] + np.arange(8)[None, :] > 3
    fast = [
        (stats.moments, (x,), {}),
        (stats.autocorr, (x,), {"lag": 2}),
        (stats.autocorr_map, (x,), {"lag": 1}),
        (stats.cross_channel_corr, (x,), {}),
        (stats.max_cross_channel_corr, (x,), {}),
        (stats.temporal_correlation, (prev, x, flow), {"mode": "nearest", "mask": mask}),
    ]
    slow = [
        (stats.ks_normal, (x,), {}),
        (stats.radial_power_spectrum, (x,), {"num_bins": 3}),
        (stats.temporal_correlation, (prev, x, flow), {"mode": "bilinear"}),
    ]
    return fast, slow


def _assert_jit_matches_op_by_op(cases):
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for fn, args, kwargs in cases:
        jax.tree.map(close, fn(*args, **kwargs), fn.__wrapped__(*args, **kwargs))


def test_jit_matches_eager():
    """The public functions are jit-wrapped: compare with running them op by op, un-jitted."""
    fast, _ = _jit_cases()
    _assert_jit_matches_op_by_op(fast)
    # Inside a caller's jit, with the static options and the mask closed over.
    _, (prev, x, flow), kwargs = fast[-1]
    outer = jax.jit(lambda a, b: stats.temporal_correlation(a, b, flow, **kwargs))
    np.testing.assert_allclose(
        outer(prev, x), stats.temporal_correlation(prev, x, flow, **kwargs), atol=1e-6
    )


def test_jit_matches_eager_slow_functions():
    """ks_normal, radial_power_spectrum, bilinear temporal_correlation (many ops each)."""
    _, slow = _jit_cases()
    _assert_jit_matches_op_by_op(slow)
