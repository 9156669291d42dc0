"""The ray-cast terrain of the 3D camera experiment (``experiments/terrain.py``).

The depth of each pixel must put its point on the height field
``y = ground - amplitude sin(2 pi x / L) sin(2 pi z / L)`` (world ``y`` down), the sky must be
NaN, and bad arguments must raise ``ValueError``. Rays are recomputed here in numpy from the
intrinsics, sharing no code with irwarp.
"""

import numpy as np
import pytest

from experiments import terrain
from irwarp import flows

H, W = 24, 32


def _k():
    return flows.intrinsics(40.0, 44.0, 15.5, 12.25)


def _rays(k):
    y, x = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    rays = np.stack(
        [(x - float(k[0, 2])) / float(k[0, 0]), (y - float(k[1, 2])) / float(k[1, 1])], -1
    )
    return np.concatenate([rays, np.ones((H, W, 1))], -1)


def test_terrain_depth_lies_on_the_surface():
    k = _k()
    rays = _rays(k)
    e = flows.look_at(np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.4, 4.0]))
    z = np.asarray(
        terrain.terrain_depth(H, W, k, e, ground=1.0, amplitude=0.3, wavelength=2.0, far=30.0)
    )
    hit = np.isfinite(z)
    assert 0.2 < hit.mean() < 1.0  # ground below, sky above
    pts = (z[..., None] * rays) @ np.asarray(e[:3, :3])  # R^T X (the eye is at the origin)
    g = 1.0 - 0.3 * np.sin(np.pi * pts[..., 0]) * np.sin(np.pi * pts[..., 2])
    np.testing.assert_allclose(pts[..., 1][hit], g[hit], atol=1e-3)
    assert (rays @ np.asarray(e[:3, :3]))[..., 1][~hit].max() < 0.2  # the sky looks up-ish


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"h": 0}, "positive integer"),
        ({"intrinsics": np.eye(2)}, "intrinsics"),
        ({"world_to_cam": np.eye(3)}, r"\(4, 4\) or \(3, 4\)"),
        ({"steps": 1}, "steps"),
        ({"bisections": -1}, "bisections"),
        ({"wavelength": 0.0}, "wavelength"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = {"h": 4, "w": 4, "intrinsics": _k(), "world_to_cam": np.eye(4)}
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        terrain.terrain_depth(
            args["h"], args["w"], args["intrinsics"], args["world_to_cam"], **options
        )
