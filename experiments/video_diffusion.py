"""Video diffusion driven by warped noise: SDEdit of a real clip, frame by frame, per noise scheme.

    python -m experiments.video_diffusion --config=configs/video_diffusion.py --workdir=DIR

Reads a real clip the denoiser was not trained on (carphone, 32 frames at 96x128 by default),
estimates backward and forward optical flow between consecutive frames with OpenCV (DIS) and marks
occluded pixels by forward-backward consistency (their flow is NaN: fresh noise). Then, for every
sampler (DDIM with ``eta``, DDPM) and every noise scheme (``fresh``, ``fixed``, ``nearest``,
``bilinear``, ``chang4``, ``grid``, ``particle``; ``lagrangian`` in the ``:lagrangian`` variant),
restyles each frame with SDEdit at the configured strength: the frame is noised to timestep
``~ strength T`` with that frame's initial noise and denoised in ``num_steps`` steps, using the
frame's per-step noise for DDPM. The noise of frame
``t`` comes from the scheme's provider (:mod:`irwarp.samplers.providers`): warped schemes carry
frame ``t-1``'s initial and per-step noise along the flow with one partition record per frame;
``lagrangian`` integrates the keyframe's virtual Brownian sheet (:mod:`irwarp.sheet`) over each
pixel's pre-image under the flow composed back to the keyframe (a new keyframe every
``lagrangian.keyframe_every`` frames).
Frames run in a Python loop of two jitted functions (the provider's ``next`` and the sampler), so
the sampler compiles once per sampler and is shared by every scheme, and each part is timed.

Metrics (images in ``[0, 1]``, reported in 8-bit grey levels, 0-255; ``valid`` = pixels whose flow
passed the consistency check and whose source lies inside the previous frame):

- ``warp_err``: temporal warping error ``mean_valid |out_t - warp(out_{t-1}, flow_t)|``, where
  ``warp`` samples bilinearly at ``p + flow_t(p)`` (lower = less flicker). The same number for the
  input clip (``input`` row) is the floor that flow errors and lighting changes leave.
- Texture sticking. Let ``d_t = highpass(out_t - in_t)`` be the high-frequency detail that the
  sampler added (``highpass(x) = x - GaussianBlur(x, metrics.highpass_sigma)``). On moving valid
  pixels (``|flow| >= metrics.moving_px``): ``stick = corr(d_t(p), d_{t-1}(p))``, the correlation
  of the added detail with the same *screen* position one frame earlier, and
  ``follow = corr(d_t(p), d_{t-1}(p + flow_t(p)))``, with the same *content* position. Detail that
  sticks to the screen has ``stick > follow``; detail that moves with the content has
  ``follow > stick``; fresh detail has both near 0. Pearson correlations pooled over pixels,
  channels and batch, then averaged over frames.
- ``l1`` and ``psnr``: distance of each output frame to its input frame (fidelity).
- ``noise_ms`` and ``sample_ms``: wall time per frame of the provider's ``next`` and of the
  sampler (after compilation; ``compile_s`` reports the compile time).

Writes to the workdir: ``config.json``; ``metrics.jsonl`` (one line per sampler x scheme x frame,
then one ``"kind": "summary"`` line per sampler x scheme); ``summary.md`` (the tables);
``warping_error.png`` (warping error per frame, one panel per sampler); ``side_by_side.mp4`` and
``side_by_side.gif`` (input and every scheme, one row per sampler, labelled); ``still.png`` (one
frame of it); ``outputs.npz`` (all output frames, uint8).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from experiments.lib import clips, launch, measure, media, tables
from experiments.lib import methods as methods_lib
from experiments.lib import workdir as workdir_lib
from irwarp import samplers
from irwarp.samplers import unet

NAME = "video_diffusion"
INPUT = "input"


# ----------------------------------------------------------------------------- inputs


def load_clip(config) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Frames ``(T, H, W, 3)`` uint8, masked backward flows ``(T-1, H, W, 2)``, valid ``(T-1, H, W)``
    and the output frame rate (:func:`experiments.lib.clips.load_clip` on ``config.video`` and
    ``config.flow``).

    Raises:
      ValueError: for fewer than 2 frames or an unknown flow method.
    """
    v, f = config.video, config.flow
    frames, flows, valids, fps = clips.load_clip(
        clips.clip_path(v.path, v.clip),
        start=v.start,
        count=v.count,
        stride=v.stride,
        size=tuple(v.size),
        flow=f.method,
        flow_options={"preset": f.dis_preset} if f.method == "dis" else {},
        occlusion=bool(f.occlusion),
        alpha=float(f.alpha),
        beta=float(f.beta),
    )
    return frames, flows, valids, float(config.output.fps) or fps


def load_model(config):
    """``(apply_fn, params, schedule, description)`` of the checkpoint or a random tiny UNet."""
    if config.denoiser.random_init:
        model = unet.model_from_config(config.denoiser.model.to_dict())
        schedule = samplers.cosine_schedule(int(config.denoiser.num_timesteps))
        h, w = (int(s) for s in config.video.size)
        x = jnp.zeros((1, h, w, 3), jnp.float32)
        # One compilation instead of one per initialiser op.
        init = jax.jit(lambda k: model.init(k, x, jnp.zeros((1,), jnp.int32))["params"])
        params = init(jax.random.key(int(config.seed) + 1))

        def apply_fn(params, x, t):
            return model.apply({"params": params}, x, t)

        return apply_fn, params, schedule, "randomly initialised tiny UNet (smoke test)"
    path = config.denoiser.path or None
    apply_fn, params, schedule, meta = samplers.load_denoiser(path)
    where = path or "the default checkpoint (irwarp/samplers/assets/denoiser)"
    desc = f"UNet from {where}"
    if meta.get("train_clips"):
        desc += f", trained on {', '.join(meta['train_clips'])}"
    if meta.get("trained_steps"):
        desc += f" for {meta['trained_steps']} steps"
    if meta.get("num_params"):
        desc += f" ({meta['num_params']:,} parameters)"
    return apply_fn, params, schedule, desc


# ----------------------------------------------------------------------------- metrics


def _remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image(p + flow(p))`` bilinear, ``(H, W, C)`` float32; NaN flow reads the pixel itself."""
    import cv2

    h, w = flow.shape[:2]
    f = np.nan_to_num(flow, nan=0.0)
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(
        np.ascontiguousarray(image, np.float32),
        jj + f[..., 0],
        ii + f[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(image.shape)


def _highpass(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    blur = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32), (0, 0), sigma)
    return image - blur.reshape(image.shape)


def _inside(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    y, x = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    px, py = x + flow[..., 0], y + flow[..., 1]
    return np.isfinite(px) & np.isfinite(py) & (px >= 0) & (px < w) & (py >= 0) & (py < h)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else float("nan")


def _mean_finite(values) -> float:
    """Mean of the finite values (NaN if none: e.g. no moving pixels)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def frame_metrics(
    out: np.ndarray,
    prev_out: np.ndarray | None,
    inp: np.ndarray,
    prev_inp: np.ndarray | None,
    flow: np.ndarray | None,
    valid: np.ndarray | None,
    sigma: float,
    moving_px: float,
) -> dict:
    """Metrics of frame ``t`` (see the module docstring); images ``(B, H, W, 3)`` in ``[0, 1]``.

    Frame 0 (``flow`` is None) has only ``l1`` and ``psnr``.
    """
    mse = float(np.mean((out - inp) ** 2))
    row = {
        "l1": 255.0 * float(np.mean(np.abs(out - inp))),
        "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-12)),
    }
    if flow is None:
        return row
    ok = valid & _inside(flow)
    moving = ok & (np.linalg.norm(np.nan_to_num(flow), axis=-1) >= moving_px)
    warped = np.stack([_remap(p, flow) for p in prev_out])
    row["warp_err"] = 255.0 * float(np.mean(np.abs(out - warped)[:, ok]))
    d_now = np.stack([_highpass(o - i, sigma) for o, i in zip(out, inp, strict=True)])
    d_prev = np.stack([_highpass(o - i, sigma) for o, i in zip(prev_out, prev_inp, strict=True)])
    d_follow = np.stack([_remap(d, flow) for d in d_prev])
    row["stick"] = _pearson(d_now[:, moving], d_prev[:, moving])
    row["follow"] = _pearson(d_now[:, moving], d_follow[:, moving])
    row["moving_fraction"] = float(moving.mean())
    row["valid_fraction"] = float(ok.mean())
    return row


def input_metrics(frames01: np.ndarray, flows: np.ndarray, valids: np.ndarray) -> list[float]:
    """Warping error of the input clip itself, per frame ``t >= 1`` (0-255)."""
    errs = []
    for t in range(1, frames01.shape[0]):
        ok = valids[t - 1] & _inside(flows[t - 1])
        warped = _remap(frames01[t - 1], flows[t - 1])
        errs.append(255.0 * float(np.mean(np.abs(frames01[t] - warped)[ok])))
    return errs


# ----------------------------------------------------------------------------- pictures


def mosaic(tiles: dict[str, dict[str, np.ndarray]], zoom: int) -> np.ndarray:
    """One picture: a row per sampler of labelled ``(H, W, 3)`` uint8 tiles (input first)."""
    rows = []
    for sampler, by_name in tiles.items():
        cells = []
        for name, tile in by_name.items():
            big = np.repeat(np.repeat(tile, zoom, 0), zoom, 1)
            label = name if name == INPUT else f"{sampler}: {methods_lib.method_label(name)}"
            cells.append(media.caption_light(big, label))
            cells.append(np.full((cells[-1].shape[0], 2, 3), 255, np.uint8))
        rows.append(np.concatenate(cells[:-1], axis=1))
    h2 = rows[0].shape[1]
    rows = [np.pad(r, ((0, 0), (0, h2 - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    out = np.concatenate(rows, axis=0)
    # Even sizes for the H.264 encoder.
    return np.pad(out, ((0, out.shape[0] % 2), (0, out.shape[1] % 2), (0, 0)), constant_values=255)


def to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.round(255.0 * np.clip(x01, 0.0, 1.0)).astype(np.uint8)


def plot_warp_error(curves: dict, input_curve: list[float], samplers_: tuple, path: str) -> None:
    fig = media.new_figure(5.0 * len(samplers_), 3.6)
    axes = fig.subplots(1, len(samplers_), squeeze=False)[0]
    for ax, s in zip(axes, samplers_, strict=True):
        ts = np.arange(1, len(input_curve) + 1)
        for name, c in curves[s].items():
            ax.plot(ts, c, marker=".", label=methods_lib.method_label(name))
        ax.plot(ts, input_curve, "k--", label="input clip")
        ax.set_title(f"{s}: warping error per frame")
        ax.set_xlabel("frame t")
        ax.set_ylabel("mean |out_t - warp(out_{t-1})| (0-255)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=110, format="png", facecolor="white")


# ----------------------------------------------------------------------------- run


def _scheme_options(config, scheme: str) -> dict:
    """Provider options of ``scheme`` from the config (only ``lagrangian`` has any)."""
    if scheme != "lagrangian":
        return {}
    every = int(config.lagrangian.keyframe_every)
    return dict(
        depth=int(config.lagrangian.depth),
        capacity=float(config.lagrangian.capacity),
        keyframe_every=every if every > 0 else None,
    )


def _check(config) -> tuple[tuple[str, ...], dict]:
    schemes = tuple(config.schemes)
    if not schemes or len(set(schemes)) != len(schemes):
        raise ValueError(f"expected distinct noise schemes in config.schemes; got {schemes}")
    only = bool(config.warp_initial_only)
    providers = {
        s: samplers.make_provider(
            s, **({"warp_initial_only": True} if only else {}), **_scheme_options(config, s)
        )
        for s in schemes
    }
    sampler_names = tuple(config.sampling.samplers)
    for s in sampler_names:
        samplers.is_stochastic(s, float(config.sampling.eta))  # validates name and eta
    if not sampler_names:
        raise ValueError("expected at least one sampler in config.sampling.samplers")
    samplers.timesteps(1000, int(config.sampling.num_steps), float(config.sampling.strength))
    return sampler_names, providers


def run_scheme(ctx: dict, sampler: str, name: str, provider, denoise_c, wd, timing: dict):
    """One noise scheme through one sampler, frame by frame; returns its summary, its warping
    error curve and its frames ``(T, H, W, 3)`` uint8. ``ctx`` holds the clip and the settings."""
    key, num, b, h, w = ctx["key"], ctx["num"], ctx["b"], ctx["h"], ctx["w"]
    flows, valids, x_in, in01 = ctx["flows"], ctx["valids"], ctx["x_in"], ctx["in01"]
    noise_steps, sigma, moving_px = ctx["noise_steps"], ctx["sigma"], ctx["moving_px"]
    step = jax.jit(lambda k, prev, t, flow, p=provider: p.next(k, prev, t, flow))
    noise = provider.init(key, (b, h, w, 3), noise_steps)
    step_c = None
    outs, rows = [], []
    noise_s = sample_s = 0.0
    for t in range(num):
        if t > 0:
            flow = jnp.asarray(flows[t - 1])
            if step_c is None:
                step_c, c_s = measure.compile_timed(step, key, noise, t, flow)
                timing[f"{sampler}/{name}/noise_compile_s"] = c_s
            t0 = time.perf_counter()
            noise = measure.block(step_c(key, noise, t, flow))
            noise_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        # The sampler ignores provider state (lagrangian's keyframe and flow).
        out = measure.block(denoise_c(noise.without_state(), x_in[t]))
        sample_s += time.perf_counter() - t0
        out01 = np.clip((np.asarray(out) + 1.0) / 2.0, 0.0, 1.0)
        outs.append(out01)
        row = frame_metrics(
            out01,
            outs[-2] if t > 0 else None,
            in01[t],
            in01[t - 1] if t > 0 else None,
            flows[t - 1] if t > 0 else None,
            valids[t - 1] if t > 0 else None,
            sigma,
            moving_px,
        )
        row = {"sampler": sampler, "scheme": name, "frame": t, **row}
        rows.append(row)
        wd.metric(row)
    later = [r for r in rows if r["frame"] > 0]
    summ = {k_: _mean_finite([r[k_] for r in later]) for k_ in ("warp_err", "stick", "follow")}
    summ["l1"] = float(np.mean([r["l1"] for r in rows]))
    summ["psnr"] = float(np.mean([r["psnr"] for r in rows]))
    summ["noise_ms"] = 1000.0 * noise_s / max(num - 1, 1)
    summ["sample_ms"] = 1000.0 * sample_s / num
    summ["finite"] = bool(all(np.all(np.isfinite(o)) for o in outs))
    return summ, [r["warp_err"] for r in later], to_uint8(np.stack(outs)[:, 0])


def run(config, workdir: str) -> dict:
    """Runs the experiment of ``config``, writes the workdir, returns ``{sampler: {scheme: summary}}``.

    Raises:
      ValueError: on a bad config value (unknown scheme or sampler, strength outside ``(0, 1]``,
        frame size not divisible by the UNet's divisor, fewer than 2 frames).
    """
    sampler_names, providers = _check(config)
    apply_fn, params, schedule, model_desc = load_model(config)
    frames, flows, valids, fps = load_clip(config)
    num, h, w = frames.shape[:3]
    b = int(config.sampling.batch)
    if b < 1:
        raise ValueError(f"sampling.batch must be >= 1; got {b}")
    x_in = jnp.asarray(frames, jnp.float32) / 127.5 - 1.0  # (T, H, W, 3) in [-1, 1]
    x_in = jnp.broadcast_to(x_in[:, None], (num, b, h, w, 3))
    frames01 = frames.astype(np.float32) / 255.0
    in01 = np.broadcast_to(frames01[:, None], (num, b, h, w, 3))
    key = jax.random.key(int(config.seed))
    num_steps = int(config.sampling.num_steps)
    strength = float(config.sampling.strength)
    eta = float(config.sampling.eta)
    clip = float(config.sampling.clip_x0) or None
    sigma = float(config.metrics.highpass_sigma)
    moving_px = float(config.metrics.moving_px)
    input_curve = input_metrics(frames01, flows, valids)
    logging.info("%s: %d frames at %dx%d; %s", NAME, num, h, w, model_desc)

    wd = workdir_lib.Workdir(workdir, config, name="video_diffusion")
    results: dict[str, dict[str, dict]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    timing: dict[str, float] = {}
    with wd:
        for sampler in sampler_names:
            eta_s = eta if sampler == "ddim" else 0.0
            noise_steps = num_steps if samplers.is_stochastic(sampler, eta_s) else 0

            def denoise(noise, x_init, sampler=sampler, eta_s=eta_s):
                return samplers.sample(
                    apply_fn,
                    params,
                    schedule,
                    noise,
                    num_steps=num_steps,
                    sampler=sampler,
                    eta=eta_s,
                    x_init=x_init,
                    strength=strength,
                    clip_x0=clip,
                )

            noise0 = samplers.FixedProvider().init(key, (b, h, w, 3), noise_steps)
            denoise_c, compile_s = measure.compile_timed(denoise, noise0, x_in[0])
            timing[f"{sampler}/sampler_compile_s"] = compile_s
            results[sampler], curves[sampler], outputs[sampler] = {}, {}, {}
            ctx = dict(
                key=key,
                num=num,
                b=b,
                h=h,
                w=w,
                flows=flows,
                valids=valids,
                x_in=x_in,
                in01=in01,
                noise_steps=noise_steps,
                sigma=sigma,
                moving_px=moving_px,
            )
            for name, provider in providers.items():
                t_wall = time.perf_counter()
                summ, curve, frames_out = run_scheme(
                    ctx, sampler, name, provider, denoise_c, wd, timing
                )
                results[sampler][name], curves[sampler][name] = summ, curve
                outputs[sampler][name] = frames_out
                wd.metric({"kind": "summary", "sampler": sampler, "scheme": name, **summ})
                if config.output.progress:
                    logging.info(
                        "%s %-9s warp_err %.2f stick %.3f follow %.3f l1 %.2f  %.1f s",
                        sampler,
                        name,
                        summ["warp_err"],
                        summ["stick"],
                        summ["follow"],
                        summ["l1"],
                        time.perf_counter() - t_wall,
                    )
        _write_pictures(config, wd, frames, outputs, curves, input_curve, sampler_names, fps)
        np.savez_compressed(
            wd.file("outputs.npz"),
            input=frames,
            **{f"{s}_{n}": o for s, by in outputs.items() for n, o in by.items()},
        )
        wd.write_summary(
            summary_markdown(config, workdir, results, input_curve, timing, model_desc, (num, h, w))
        )
    return results


def _write_pictures(config, wd, frames, outputs, curves, input_curve, sampler_names, fps):

    num = frames.shape[0]
    zoom = max(int(config.output.zoom), 1)
    pictures = [
        mosaic(
            {s: {INPUT: frames[t], **{n: o[t] for n, o in outputs[s].items()}} for s in outputs},
            zoom,
        )
        for t in range(num)
    ]
    still = int(config.output.still_frame)
    still = num // 2 if still < 0 else min(still, num - 1)
    media.save_png(pictures[still], wd.file("still.png"))
    mp4 = bool(config.output.mp4)
    if mp4 and not media.can_write_mp4():
        logging.warning("imageio-ffmpeg is not installed: side_by_side.mp4 is not written")
        mp4 = False
    if mp4:
        media.save_mp4(pictures, wd.file("side_by_side.mp4"), fps)
    if config.output.gif:
        media.save_gif(pictures, wd.file("side_by_side.gif"), fps)
    plot_warp_error(curves, input_curve, sampler_names, wd.file("warping_error.png"))


def summary_markdown(config, workdir, results, input_curve, timing, model_desc, size) -> str:
    """The summary.md text: what ran, one table per sampler, and how to read it."""
    num, h, w = size
    s = config.sampling
    lines = [
        launch.header(
            "Video diffusion with warped noise: SDEdit of a real clip per noise scheme",
            launch.command_line(NAME, workdir),
            f"Clip: {config.video.path or config.video.clip}, {num} frames (stride "
            f"{config.video.stride}) at {h}x{w}; flow {config.flow.method}"
            f"{' with occlusion masks' if config.flow.occlusion else ''}. Denoiser: {model_desc}. "
            f"SDEdit strength {s.strength}, {s.num_steps} steps, batch {s.batch}"
            f"{', warping the initial noise only' if config.warp_initial_only else ''}.",
        ),
        "Metrics (0-255 grey levels): **warp err** = mean |out_t - warp(out_{t-1}, flow)| on "
        "non-occluded pixels (lower = less flicker); **stick** / **follow** = correlation of the "
        "added high-frequency detail highpass(out - in) at frame t with frame t-1's at the same "
        "screen position / at the flow's source position, on moving pixels (stick > follow: "
        "texture sticks to the screen; follow > stick: it moves with the content); **L1** and "
        "**PSNR** to the input frame; time per frame of the noise provider and of the sampler. "
        f"The input clip's own warping error is {np.mean(input_curve):.2f} (the floor that flow "
        "errors leave).",
        "",
    ]
    columns = ("scheme", "warp err", "stick", "follow", "L1", "PSNR", "noise ms", "sampler ms")
    for sampler, by in results.items():
        label = f"DDIM (eta = {s.eta})" if sampler == "ddim" else "DDPM (ancestral)"
        lines += [f"## {label}", ""]
        rows = [
            (
                methods_lib.method_label(n),
                f"{r['warp_err']:.2f}",
                f"{r['stick']:+.3f}",
                f"{r['follow']:+.3f}",
                f"{r['l1']:.2f}",
                f"{r['psnr']:.2f}",
                f"{r['noise_ms']:.1f}",
                f"{r['sample_ms']:.1f}",
            )
            for n, r in by.items()
        ]
        rows.append((INPUT, f"{np.mean(input_curve):.2f}", "-", "-", "-", "-", "-", "-"))
        lines += [tables.markdown_table(columns, rows), ""]
        order = sorted(by, key=lambda n: by[n]["warp_err"])
        stick = max(by, key=lambda n: by[n]["stick"] - by[n]["follow"])
        lines += [
            "Warping error, lowest first: "
            + ", ".join(methods_lib.method_label(n) for n in order)
            + f". Most screen-fixed detail (largest stick - follow): {methods_lib.method_label(stick)}.",
            "",
        ]
    compile_s = {k: v for k, v in timing.items() if k.endswith("compile_s")}
    lines += [
        "Compile times (s): "
        + ", ".join(f"{k.replace('_compile_s', '')} {v:.1f}" for k, v in compile_s.items()),
        "",
        "![warping error per frame](warping_error.png)",
        "",
        "![side by side](still.png)",
        "",
        "Videos: `side_by_side.mp4`, `side_by_side.gif`; per-frame numbers: `metrics.jsonl`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    launch.run_main(NAME, run)
