"""Integral downsampling: exact block sums, N(0, 1) preserved, commutes with warping."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import resample


def _noise(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _slow_downsample(x: np.ndarray, k: int) -> np.ndarray:
    """Obviously-correct reference: loop over blocks."""
    *lead, h, w, c = x.shape
    out = np.zeros((*lead, h // k, w // k, c), np.float64)
    for a in range(h // k):
        for b in range(w // k):
            block = x[..., a * k : (a + 1) * k, b * k : (b + 1) * k, :]
            out[..., a, b, :] = block.sum(axis=(-3, -2)) / k
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_matches_slow_reference(k):
    x = np.asarray(_noise(0, (2, 12, 24, 3)))
    y = resample.downsample(jnp.asarray(x), k)
    assert y.shape == (2, 12 // k, 24 // k, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), _slow_downsample(x, k), rtol=1e-5, atol=1e-5)


def test_jit_matches_eager():
    x = _noise(1, (16, 16, 2))
    eager = resample.downsample(x, 4)
    jitted = jax.jit(resample.downsample, static_argnums=1)(x, 4)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=1e-6)


def test_keeps_standard_normal():
    """i.i.d. N(0, 1) in -> i.i.d. N(0, 1) out, with SE-derived tolerances (5 SE)."""
    x = _noise(2, (8, 128, 128, 4))
    y = resample.downsample(x, 8)  # (8, 16, 16, 4): 8192 values
    checks = irwarp.stats.whiteness_checks(y)
    assert checks["all"], (checks, irwarp.stats.summary(y))


def test_keeps_standard_normal_after_warp():
    """Downsampling warped (grid, rotation) noise stays N(0, 1): warp and downsample compose."""
    x = _noise(3, (4, 64, 64, 4))
    y = irwarp.warp(jax.random.key(4), x, irwarp.flows.rotation(64, 64, 7.0), method="grid")
    z = resample.downsample(y, 4)
    checks = irwarp.stats.whiteness_checks(z)
    assert checks["all"], (checks, irwarp.stats.summary(z))


def test_block_variance_is_k_squared():
    """Each output is sum / k of k^2 unit-variance values: variance 1 exactly (over many draws)."""
    x = _noise(5, (4096, 4, 4, 1))
    y = np.asarray(resample.downsample(x, 4)).ravel()
    n = y.size
    assert abs(y.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(y.mean()) < 5 / np.sqrt(n)


@pytest.mark.parametrize("method", ["grid", "particle"])
@pytest.mark.parametrize("dx,dy", [(1, 0), (-2, 0), (0, 1), (0, -1), (1, -1), (-1, 2)])
def test_commutes_with_integer_translation(method, dx, dy):
    """downsample(warp(x, k d)) == warp(downsample(x), d) wherever the source block is inside;
    only the blocks that enter the frame (fresh noise) may differ."""
    k, h, w, c = 4, 24, 32, 2
    x = _noise(6, (h, w, c))
    fine = irwarp.warp(
        jax.random.key(7), x, irwarp.flows.translation(h, w, k * dx, k * dy), method=method
    )
    a = np.asarray(resample.downsample(fine, k))
    hc, wc = h // k, w // k
    b = np.asarray(
        irwarp.warp(
            jax.random.key(8),
            resample.downsample(x, k),
            irwarp.flows.translation(hc, wc, dx, dy),
            method=method,
        )
    )
    ii, jj = np.meshgrid(np.arange(hc), np.arange(wc), indexing="ij")
    inside = (ii + dy >= 0) & (ii + dy < hc) & (jj + dx >= 0) & (jj + dx < wc)
    np.testing.assert_allclose(a[inside], b[inside], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[~inside], b[~inside])  # entering blocks: independent fresh noise


def test_dtype_is_kept():
    x = _noise(9, (8, 8, 2), jnp.bfloat16)
    y = resample.downsample(x, 2)
    assert y.dtype == jnp.bfloat16 and y.shape == (4, 4, 2)


def test_downsample_flow():
    flow = irwarp.flows.translation(8, 12, 4.0, -2.0)
    coarse = resample.downsample_flow(flow, 4)
    assert coarse.shape == (2, 3, 2)
    np.testing.assert_allclose(np.asarray(coarse), np.broadcast_to([1.0, -0.5], (2, 3, 2)))
    masked = irwarp.flows.mask_flow(flow, jnp.ones((8, 12), bool).at[5, 6].set(False))
    coarse = np.asarray(resample.downsample_flow(masked, 4))
    assert np.isnan(coarse[1, 1]).all() and np.isfinite(np.delete(coarse.reshape(6, 2), 4, 0)).all()


@pytest.mark.parametrize(
    "shape,k,match",
    [
        ((12, 10, 2), 4, r"\(12, 10, 2\) cannot be downsampled by k = 4"),
        ((12, 12, 2), 0, "positive integer"),
        ((12, 12, 2), 1.5, "positive integer"),
        ((12, 12), 2, r"\(\.\.\., H, W, C\)"),
    ],
)
def test_bad_input(shape, k, match):
    with pytest.raises(ValueError, match=match):
        resample.downsample(jnp.zeros(shape), k)


def test_integer_noise_is_rejected():
    with pytest.raises(ValueError, match="floating"):
        resample.downsample(jnp.zeros((4, 4, 1), jnp.int32), 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 2\)"):
        resample.downsample_flow(jnp.zeros((4, 4, 3)), 2)


def test_library_imports_without_the_video_extras():
    """irwarp.video, .pipeline and .resample import without OpenCV/imageio; using OpenCV then
    says what to install."""
    script = (
        "import sys\n"
        "for m in ('cv2', 'imageio', 'imageio_ffmpeg', 'skvideo'): sys.modules[m] = None\n"
        "import irwarp, irwarp.video, irwarp.pipeline, irwarp.resample\n"
        "try:\n"
        "    irwarp.video.flow_estimator('dis')\n"
        "except ImportError as e:\n"
        "    assert 'pip install opencv-python-headless' in str(e), e\n"
        "    print('OK')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- causal temporal layout


def _slow_causal(x: np.ndarray, k: int, mode: str) -> np.ndarray:
    """Reference for the causal layout T = 1 + k m: frame 0 alone, then groups of k (loops)."""
    t = x.shape[0]
    out = [x[0].astype(np.float64)]
    for j in range(1, (t - 1) // k + 1):
        group = x[k * (j - 1) + 1 : k * j + 1].astype(np.float64)
        if mode == "subsample":
            out.append(x[k * j].astype(np.float64))  # video frame k j: the last of its group
        elif mode == "integral":
            out.append(group.sum(0) / np.sqrt(k))
        else:
            out.append(group.mean(0))
    return np.stack(out)


@pytest.mark.parametrize("mode", resample.TEMPORAL_MODES)
@pytest.mark.parametrize("t,k", [(49, 4), (9, 4), (1, 4), (7, 3), (5, 1), (13, 2)])
def test_causal_layout_matches_reference(mode, t, k):
    x = np.asarray(_noise(20, (t, 2, 4, 6, 3)))
    z = resample.temporal_compress(jnp.asarray(x), k, mode=mode, causal=True)
    assert z.shape == (1 + (t - 1) // k, 2, 4, 6, 3) and z.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(z), _slow_causal(x, k, mode), rtol=1e-5, atol=1e-5)
    if mode == "subsample":  # latent frame j is video frame k j, bit for bit
        np.testing.assert_array_equal(np.asarray(z), x[::k])
    # Another time axis gives the same numbers.
    moved = resample.temporal_compress(
        jnp.moveaxis(jnp.asarray(x), 0, 2), k, mode=mode, axis=2, causal=True
    )
    np.testing.assert_allclose(np.asarray(jnp.moveaxis(moved, 2, 0)), np.asarray(z), atol=1e-6)


def test_causal_49_frames_to_13_and_the_plain_layout_is_unchanged():
    x = _noise(21, (48, 4, 4, 2))
    for mode in resample.TEMPORAL_MODES:  # the existing layout: identical outputs
        plain = resample.temporal_compress(x, 4, mode=mode)
        assert plain.shape == (12, 4, 4, 2)
        assert np.array_equal(
            np.asarray(plain), np.asarray(resample.temporal_compress(x, 4, mode=mode, causal=False))
        )
    np.testing.assert_array_equal(resample.temporal_compress(x, 4), x[::4])
    y = _noise(22, (49, 4, 4, 2))
    assert resample.temporal_compress(y, 4, causal=True).shape == (13, 4, 4, 2)
    with pytest.raises(ValueError, match=r"T = 49.*causal=True"):
        resample.temporal_compress(y, 4)  # the plain layout still asks for a multiple of k
    with pytest.raises(ValueError, match=r"1 \+ k m.*T = 48"):
        resample.temporal_compress(x, 4, causal=True)
    with pytest.raises(ValueError, match="causal"):
        resample.temporal_compress(y, 4, causal="yes")


def test_causal_subsample_of_a_warped_video_keeps_standard_normal():
    """Each latent frame of 49 warped frames (13 latents) is an input frame: exactly N(0, 1)."""
    h = w = 32
    flows = jnp.broadcast_to(irwarp.flows.translation(h, w, 0.3, -0.2), (48, h, w, 2))
    x0 = _noise(23, (h, w, 4))
    frames = irwarp.warp_sequence(jax.random.key(24), x0, flows, method="grid")
    z = resample.temporal_compress(frames, 4, causal=True)
    assert z.shape == (13, h, w, 4)
    for j in range(13):
        assert irwarp.stats.whiteness_checks(z[j])["all"], (j, irwarp.stats.summary(z[j]))
    assert irwarp.stats.whiteness_checks(z, frame_axes=0)["all"]
