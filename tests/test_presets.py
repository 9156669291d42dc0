"""irwarp.presets: the latent layout of each model, as data (pure logic, no video, no warp).

The frame arithmetic is checked against :func:`irwarp.resample.temporal_compress`, the function
that makes latent frames from video frames: a preset's ``latent_frames``, ``used_frames`` and
``video_frame`` must say what that function does with the same frames.
"""

import dataclasses

import numpy as np
import pytest

from irwarp import presets, resample

# The VAE factors the presets must keep (docs/presets.md): name -> (channels, spatial, temporal,
# causal).
EXPECTED = {
    "cogvideox": (16, 8, 4, True),
    "wan": (16, 8, 4, True),
    "hunyuan": (16, 8, 4, True),
    "ltx": (128, 32, 8, True),
    "sd": (4, 8, 1, False),
    "animatediff": (4, 8, 1, False),
    "none": (None, 1, 1, False),
}
# A non-causal video VAE with a temporal factor (no preset has one; the rules must still hold).
PLAIN4 = presets.LatentPreset("plain4", 8, 8, 4, False, 1, "test", "test")
ALL = [*presets.PRESETS.values(), PLAIN4]


def _ids(p):
    return p.name


def test_presets_table():
    assert presets.preset_names() == tuple(EXPECTED)
    for name, (channels, spatial, temporal, causal) in EXPECTED.items():
        p = presets.get_preset(name)
        assert (p.name, p.channels, p.spatial, p.temporal, p.causal) == (
            name,
            channels,
            spatial,
            temporal,
            causal,
        )
        assert p.spatial % p.warp_scale == 0, name  # the warp grid refines the latent grid
        assert p.pipeline and p.source
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.get_preset("cogvideox").channels = 4


def test_get_preset_unknown_names_the_known():
    with pytest.raises(ValueError, match=r"unknown preset 'cogvideo'; known: cogvideox, wan"):
        presets.get_preset("cogvideo")


@pytest.mark.parametrize(
    "name, frames, latent, used",
    [
        ("cogvideox", 0, 0, 0),
        ("cogvideox", 1, 1, 1),
        ("cogvideox", 4, 1, 1),
        ("cogvideox", 5, 2, 5),
        ("cogvideox", 9, 3, 9),
        ("cogvideox", 49, 13, 49),  # CogVideoX's 49 frames -> 13 latent frames
        ("cogvideox", 52, 13, 49),
        ("ltx", 17, 3, 17),
        ("ltx", 121, 16, 121),  # LTX-Video's 121 frames -> 16 latent frames
        ("ltx", 24, 3, 17),
        ("sd", 7, 7, 7),
        ("none", 3, 3, 3),
    ],
)
def test_latent_frames_known_values(name, frames, latent, used):
    p = presets.get_preset(name)
    assert p.latent_frames(frames) == latent
    assert p.used_frames(frames) == used


@pytest.mark.parametrize("p", ALL, ids=_ids)
def test_frame_arithmetic_matches_temporal_compress(p):
    """For every length: the used frames are what temporal_compress takes, its output has
    latent_frames frames, and under "subsample" latent frame j is video frame video_frame(j)."""
    for t in range(1, 40):
        m, used = p.latent_frames(t), p.used_frames(t)
        assert used <= t
        assert p.latent_frames(used) == m  # trimming to the used frames loses no latent frame
        if m == 0:
            assert used == 0 and t < p.temporal
            continue
        # frame t carries the value t, so the output says which video frame each latent frame is
        x = np.broadcast_to(np.arange(used, dtype=np.float32)[:, None, None, None], (used, 2, 2, 1))
        if p.temporal == 1:
            z = x
        else:
            z = np.asarray(resample.temporal_compress(x, p.temporal, causal=p.causal))
        assert z.shape[0] == m, t
        np.testing.assert_array_equal(z[:, 0, 0, 0], [p.video_frame(j) for j in range(m)])
        # one more latent frame needs exactly `temporal` more video frames
        assert p.latent_frames(used + p.temporal) == m + 1
        assert p.latent_frames(used + p.temporal - 1) == m


@pytest.mark.parametrize("p", ALL, ids=_ids)
def test_min_frames_is_two_latent_frames(p):
    n = p.min_frames()
    assert p.latent_frames(n) == 2
    assert p.latent_frames(n - 1) == 1


@pytest.mark.parametrize(
    "name, size, latent",
    [("cogvideox", (480, 720), (60, 90)), ("ltx", (512, 768), (16, 24)), ("none", (5, 7), (5, 7))],
)
def test_latent_size(name, size, latent):
    assert presets.get_preset(name).latent_size(size) == latent


@pytest.mark.parametrize(
    "name, size, fix",
    [
        ("cogvideox", (100, 150), "96x144"),
        ("cogvideox", (4, 64), "8x64"),  # smaller than one latent pixel: round up to one
        ("ltx", (480, 720), "480x704"),
    ],
)
def test_latent_size_not_divisible_names_the_size_to_pass(name, size, fix):
    p = presets.get_preset(name)
    with pytest.raises(ValueError) as e:
        p.latent_size(size)
    msg = str(e.value)
    assert f"spatial factor {p.spatial}" in msg and f"got {size}" in msg
    assert msg.endswith(f"pass --size {fix}")
    h, w = (int(v) for v in fix.split("x"))
    assert p.latent_size((h, w)) == (h // p.spatial, w // p.spatial)  # the advice works
