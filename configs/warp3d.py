"""3D warping: a rotating noise volume and a camera fly-through over a terrain depth map.

Run (about 4 minutes on 2 CPU cores):

    python -m experiments.warp3d --config=configs/warp3d.py --workdir=/tmp/warp3d

Tiny variant for the smoke test (about 40 s on 2 CPU cores, nearly all compilation):

    python -m experiments.warp3d --config=configs/warp3d.py:small --workdir=/tmp/warp3d_small

Override any field, e.g. ``--config.camera.frames=48`` or ``--config.volume.degrees=3.0``.
Tuples (not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the warp3d config; ``arg="small"`` gives the smoke-test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of every noise draw and warp.
    config.seed = 0

    # Part 1: a noise volume (D, H, W, C) rotating about a tilted axis, warped frame after frame.
    config.volume = ml_collections.ConfigDict()
    # Volume size (D, H, W), channels C (3 shows as RGB) and independent volumes B.
    config.volume.size = (32, 32, 32)
    config.volume.channels = 3
    config.volume.batch = 2
    # Frames T warped after frame 0.
    config.volume.frames = 24
    # Rotation of the content per frame, in degrees, about this axis (x, y, z) through the centre.
    config.volume.degrees = 2.0
    config.volume.axis = (0.3, 1.0, 0.2)
    # Methods: "particle" (irwarp.warp with the 3D backward flow), "splat" (irwarp.warp_forward
    # with the 3D forward flow), "fresh" (new noise every frame, for contrast).
    config.volume.methods = ("particle", "splat", "fresh")
    # Voxels whose exact pre-image comes closer than this to the border are left out of the
    # coherence measures.
    config.volume.margin = 2

    # Part 2: a camera flying over a hilly terrain (irwarp.flows.terrain_depth), warped with the
    # camera flows of irwarp.flows.camera_flow (no optical flow).
    config.camera = ml_collections.ConfigDict()
    # Image size (H, W), channels C and independent noise videos B.
    config.camera.size = (96, 128)
    config.camera.channels = 3
    config.camera.batch = 2
    # Frames T warped after frame 0.
    config.camera.frames = 24
    # Horizontal field of view in degrees.
    config.camera.fov_deg = 60.0
    # Forward speed (world units per frame), sideways sway amplitude and the yaw oscillation of
    # the camera (degrees), and the pitch of the view below the horizon (degrees).
    config.camera.speed = 0.06
    config.camera.sway = 0.3
    config.camera.yaw_deg = 6.0
    config.camera.pitch_deg = 12.0
    # Terrain: ground plane this far below the camera, hill amplitude and wavelength.
    config.camera.ground = 1.0
    config.camera.amplitude = 0.35
    config.camera.wavelength = 2.0
    # Farthest terrain depth searched; the sky is placed at sky_depth (it then moves with the
    # camera rotation only, like a point at infinity).
    config.camera.far = 40.0
    config.camera.sky_depth = 1000.0
    # Relative depth tolerance of the visibility test (hidden points get fresh noise).
    config.camera.visibility_rtol = 0.03
    # Methods: "splat" (forward flows, the use case of the issue), "grid" / "particle" (backward
    # flows), "fresh".
    config.camera.methods = ("splat", "grid", "particle", "fresh")

    # Outputs.
    config.output = ml_collections.ConfigDict()
    # Write MP4 videos (needs imageio-ffmpeg) and GIF animations.
    config.output.mp4 = True
    config.output.gif = True
    # Frames per second of the videos.
    config.output.fps = 8
    # Nearest-neighbour magnification of the volume slices in images and videos.
    config.output.zoom = 4
    # Frames shown in the summary tables and the still images (the last frame is always shown).
    config.output.report_frames = (1, 4, 12)

    if arg == "small":
        config.volume.size = (8, 10, 12)
        config.volume.channels = 2
        config.volume.batch = 1
        config.volume.frames = 3
        config.volume.degrees = 5.0
        config.volume.methods = ("particle", "splat")
        config.volume.margin = 1
        config.camera.size = (16, 20)
        config.camera.channels = 2
        config.camera.batch = 1
        config.camera.frames = 3
        config.camera.speed = 0.1
        config.camera.methods = ("splat", "particle")
        config.output.mp4 = False
        config.output.zoom = 2
        config.output.report_frames = (1,)
    elif arg:
        raise ValueError(f"unknown warp3d config variant {arg!r}; known: 'small'")
    return config
