"""The default of irwarp.samplers.sample for image data (issue 18 item 11).

Without clipping, the clean-image estimate ``x0 = (x - sqrt(1 - ab) eps) / sqrt(ab)`` at the first
steps of a 1000-step cosine schedule (``ab`` near 0) amplifies the denoiser's error by up to
``1 / sqrt(ab)``: the shipped denoiser then gives pixel values in the thousands. Image data lives
in ``[-1, 1]``, so the default clips the estimate there (``clip_x0=1.0``); ``None`` turns it off.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from irwarp import samplers
from irwarp.samplers import unet

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def shipped():
    apply_fn, params, schedule, _ = unet.load_denoiser()
    return jax.jit(apply_fn), params, schedule


def test_default_clips_x0_to_the_image_range():
    for fn in (samplers.sample, samplers.sample_video, samplers.sample_video_chunk):
        assert inspect.signature(fn).parameters["clip_x0"].default == 1.0, fn.__name__


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_shipped_denoiser_gives_pixels_in_range_by_default(shipped, sampler):
    apply_fn, params, schedule = shipped
    noise = samplers.FreshProvider().init(KEY, (1, 16, 16, 3), 20)
    run = lambda **kw: np.asarray(  # noqa: E731
        samplers.sample(apply_fn, params, schedule, noise, num_steps=20, sampler=sampler, **kw)
    )
    x = run()
    assert np.isfinite(x).all() and np.abs(x).max() <= 1.0 + 1e-6, np.abs(x).max()
    assert x.std() > 0.1  # an image, not a constant
    np.testing.assert_array_equal(x, run(clip_x0=1.0))
    # Unclipped (the former default): far outside the data range.
    assert np.abs(run(clip_x0=None)).mean() > 10.0


def test_video_sampler_default_is_clipped_too():
    schedule = samplers.linear_schedule(100)

    def wide(params, x, t):  # the optimal eps for x0 ~ N(0, 4): estimates far beyond [-1, 1]
        del params
        ab = schedule.alphas_cumprod[t][:, None, None, None]
        return jnp.sqrt(1.0 - ab) * x / (4.0 * ab + 1.0 - ab)

    flows = jnp.zeros((2, 8, 8, 2))
    run = lambda **kw: samplers.sample_video(  # noqa: E731
        KEY,
        wide,
        None,
        schedule,
        samplers.make_provider("grid"),
        flows=flows,
        shape=(2, 8, 8, 1),
        num_steps=6,
        **kw,
    )
    assert float(jnp.max(jnp.abs(run()))) <= 1.0 + 1e-6
    assert float(jnp.max(jnp.abs(run(clip_x0=None)))) > 1.5
