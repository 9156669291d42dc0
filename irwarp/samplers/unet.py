"""A small Flax UNet that predicts the noise of a diffusion model, and its checkpoint files.

The model is the DDPM UNet in miniature: a sinusoidal embedding of the timestep, residual blocks
with GroupNorm and SiLU that add the time embedding, strided-convolution downsampling,
nearest-neighbour upsampling with skip connections, and (optionally) one self-attention layer at
the lowest resolution. It is fully convolutional, so a model trained on 32 x 32 patches runs on
frames of any ``H, W`` divisible by ``2^(levels - 1)``.

It predicts ``eps`` from ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020);
``experiments/train_denoiser.py`` trains it on patches of real video frames and the default
checkpoint ships in ``irwarp/samplers/assets/denoiser/`` (:func:`load_denoiser` with no path).

Checkpoint files (no orbax): ``params.msgpack`` (``flax.serialization.msgpack_serialize`` of the
parameter tree) and ``denoiser.json`` (``{"format", "model", "schedule", "meta"}``: the UNet fields,
the noise schedule and free-form training information).

References:
  Ho, Jain, Abbeel, Denoising Diffusion Probabilistic Models, NeurIPS 2020 (the UNet and the eps
  loss). Nichol, Dhariwal, Improved Denoising Diffusion Probabilistic Models, ICML 2021 (cosine
  schedule). Deng et al., Infinite-Resolution Integral Noise Warping for Diffusion Models,
  ICLR 2025 (arXiv:2411.01212), which samples such models from warped noise.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_DENOISER_DIR",
    "PARAMS_FILE",
    "CONFIG_FILE",
    "UNet",
    "load_denoiser",
    "make_schedule",
    "model_from_config",
    "save_denoiser",
    "timestep_embedding",
]

DEFAULT_DENOISER_DIR: str = os.path.join(os.path.dirname(__file__), "assets", "denoiser")
"""Folder of the committed default checkpoint (shipped as package data)."""
PARAMS_FILE: str = "params.msgpack"
"""Parameter file of a checkpoint folder."""
CONFIG_FILE: str = "denoiser.json"
"""Model + schedule config file of a checkpoint folder."""
CHECKPOINT_FORMAT: int = 1
"""Version of the checkpoint layout written by :func:`save_denoiser`."""

_MODEL_FIELDS = (
    "base_channels",
    "channel_mults",
    "num_res_blocks",
    "attention",
    "time_embed_dim",
    "out_channels",
    "num_groups",
)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (possibly fractional) timesteps.

    ``emb[b] = [cos(t_b w_0), ..., cos(t_b w_{k-1}), sin(t_b w_0), ..., sin(t_b w_{k-1})]`` with
    ``w_i = max_period^(-i / k)`` and ``k = dim // 2`` (a zero column is appended for odd ``dim``).

    Args:
      t: ``(B,)`` timesteps, integer or float, on the scale ``0 .. num_timesteps``.
      dim: embedding width ``D`` (``>= 2``).
      max_period: the slowest wavelength.

    Returns:
      ``(B, D)`` float32.

    References:
      Vaswani et al. 2017 (positional encoding); Ho et al. 2020 (timestep embedding).
    """
    if dim < 2:
        raise ValueError(f"timestep embedding dim must be >= 2; got {dim}")
    t = jnp.asarray(t, jnp.float32)
    if t.ndim != 1:
        raise ValueError(f"expected timesteps of shape (B,); got shape {t.shape}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def _groups(channels: int, num_groups: int) -> int:
    return math.gcd(int(channels), int(num_groups))


class _ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> + Dense(temb) -> GN -> SiLU -> conv3x3 (zero init), plus a skip."""

    channels: int
    num_groups: int

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        h = nn.GroupNorm(num_groups=_groups(x.shape[-1], self.num_groups))(x)
        h = nn.Conv(self.channels, (3, 3))(nn.silu(h))
        h = h + nn.Dense(self.channels)(nn.silu(temb))[:, None, None, :]
        h = nn.GroupNorm(num_groups=_groups(self.channels, self.num_groups))(h)
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(nn.silu(h))
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), name="skip")(x)
        return x + h


class _Attention(nn.Module):
    """Single-head self-attention over all ``H W`` positions, residual, zero-initialised output."""

    num_groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        y = nn.GroupNorm(num_groups=_groups(c, self.num_groups))(x).reshape(b, h * w, c)
        q, k, v = jnp.split(nn.Dense(3 * c, name="qkv")(y), 3, axis=-1)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c)
        y = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1), v)
        y = nn.Dense(c, kernel_init=nn.initializers.zeros, name="out")(y)
        return x + y.reshape(b, h, w, c)


class UNet(nn.Module):
    """Noise-prediction UNet: ``eps_hat = UNet(x_t, t)``.

    Levels ``l = 0 .. L-1`` (``L = len(channel_mults)``) work at ``H / 2^l x W / 2^l`` with
    ``base_channels * channel_mults[l]`` channels and ``num_res_blocks`` residual blocks each; the
    decoder mirrors them with one more block per level that takes the skip connections.

    Attributes:
      base_channels: channels of the first level.
      channel_mults: channel multiplier of each level; ``L`` levels halve the resolution ``L - 1``
        times, so ``H`` and ``W`` must be divisible by ``2^(L-1)``.
      num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
      attention: add one self-attention layer in the middle block (lowest resolution). Off by
        default: the model then stays local and behaves the same at any frame size.
      time_embed_dim: width of the time embedding MLP; the sinusoid has ``base_channels`` entries.
      out_channels: output channels ``C_out``; ``None`` gives the input's ``C``.
      num_groups: GroupNorm groups (``gcd(num_groups, channels)`` is used).

    References:
      Ho, Jain, Abbeel, Denoising Diffusion Probabilistic Models, NeurIPS 2020 (architecture).
    """

    base_channels: int = 32
    channel_mults: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 2
    attention: bool = False
    time_embed_dim: int = 128
    out_channels: int | None = None
    num_groups: int = 8

    @property
    def divisor(self) -> int:
        """``H`` and ``W`` must be multiples of this: ``2^(L-1)``."""
        return 2 ** (len(self.channel_mults) - 1)

    def check_inputs(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Validates ``x`` and ``t``; returns ``t`` as a float32 ``(B,)`` array (scalars broadcast).

        Raises:
          ValueError: if ``x`` is not ``(B, H, W, C)`` with ``H, W`` divisible by
            :attr:`divisor`, or ``t`` is neither a scalar nor ``(B,)``.
        """
        if x.ndim != 4:
            raise ValueError(f"UNet expects x of shape (B, H, W, C); got shape {x.shape}")
        b, h, w, _ = x.shape
        d = self.divisor
        if h % d or w % d:
            raise ValueError(
                f"UNet with {len(self.channel_mults)} levels needs H and W divisible by {d}; "
                f"got (H, W) = ({h}, {w})"
            )
        t = jnp.asarray(t)
        if t.ndim == 0:
            t = jnp.broadcast_to(t, (b,))
        if t.shape != (b,):
            raise ValueError(f"expected timesteps t of shape () or (B,) = ({b},); got {t.shape}")
        return t.astype(jnp.float32)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Predicts the noise of ``x``.

        Args:
          x: ``(B, H, W, C)`` noisy images ``x_t`` (data in ``[-1, 1]`` plus noise), float.
          t: ``(B,)`` (or scalar) timesteps, int or float, ``0 <= t < num_timesteps``.

        Returns:
          ``(B, H, W, C_out)`` predicted noise, in ``x``'s dtype.

        Raises:
          ValueError: on bad shapes (see :meth:`check_inputs`).
        """
        if not self.channel_mults:
            raise ValueError("channel_mults must name at least one level; got ()")
        t = self.check_inputs(x, t)
        dtype = x.dtype
        x = x.astype(jnp.float32)
        out_channels = x.shape[-1] if self.out_channels is None else int(self.out_channels)
        g = self.num_groups

        temb = timestep_embedding(t, self.base_channels)
        temb = nn.Dense(self.time_embed_dim)(temb)
        temb = nn.Dense(self.time_embed_dim)(nn.silu(temb))

        h = nn.Conv(self.base_channels, (3, 3), name="stem")(x)
        skips = [h]
        levels = len(self.channel_mults)
        for level, mult in enumerate(self.channel_mults):
            ch = self.base_channels * mult
            for _ in range(self.num_res_blocks):
                h = _ResBlock(ch, g)(h, temb)
                skips.append(h)
            if level < levels - 1:
                h = nn.Conv(ch, (3, 3), strides=(2, 2))(h)
                skips.append(h)

        ch = self.base_channels * self.channel_mults[-1]
        h = _ResBlock(ch, g)(h, temb)
        if self.attention:
            h = _Attention(g)(h)
        h = _ResBlock(ch, g)(h, temb)

        for level in reversed(range(levels)):
            ch = self.base_channels * self.channel_mults[level]
            for _ in range(self.num_res_blocks + 1):
                h = _ResBlock(ch, g)(jnp.concatenate([h, skips.pop()], axis=-1), temb)
            if level > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(ch, (3, 3))(h)

        h = nn.silu(nn.GroupNorm(num_groups=_groups(h.shape[-1], g))(h))
        h = nn.Conv(out_channels, (3, 3), kernel_init=nn.initializers.zeros, name="head")(h)
        return h.astype(dtype)


# --------------------------------------------------------------------------------------------------
# Configs and checkpoints.


def model_from_config(model_config: Mapping[str, Any]) -> UNet:
    """A :class:`UNet` from a dict of its fields (as stored in ``denoiser.json``).

    Raises:
      ValueError: on unknown fields or invalid values.
    """
    cfg = dict(model_config)
    unknown = set(cfg) - set(_MODEL_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown UNet field(s) {sorted(unknown)}; expected some of {', '.join(_MODEL_FIELDS)}"
        )
    if "channel_mults" in cfg:
        cfg["channel_mults"] = tuple(int(m) for m in cfg["channel_mults"])
        if not cfg["channel_mults"] or min(cfg["channel_mults"]) < 1:
            raise ValueError(
                f"channel_mults must be a non-empty tuple of positive ints; got "
                f"{model_config['channel_mults']}"
            )
    for name in ("base_channels", "num_res_blocks", "time_embed_dim", "num_groups"):
        if name in cfg:
            cfg[name] = int(cfg[name])
            if cfg[name] < (0 if name == "num_res_blocks" else 1):
                raise ValueError(f"UNet field {name} must be positive; got {cfg[name]}")
    return UNet(**cfg)


def make_schedule(schedule_config: Mapping[str, Any]):
    """The noise schedule named by a config dict, built with :mod:`irwarp.samplers.schedules`.

    Args:
      schedule_config: ``{"kind": "cosine", "num_timesteps", "s", "prediction"}`` or
        ``{"kind": "linear", "num_timesteps", "beta_start", "beta_end", "prediction"}``.

    Returns:
      An ``irwarp.samplers.schedules.Schedule``.

    Raises:
      ValueError: on an unknown kind or field.
    """
    from irwarp.samplers import schedules  # the sampler library; imported late (no cycle)

    cfg = dict(schedule_config)
    kind = cfg.pop("kind", None)
    builders = {"cosine": schedules.cosine_schedule, "linear": schedules.linear_schedule}
    if kind not in builders:
        raise ValueError(
            f"unknown schedule kind {kind!r}; expected one of {', '.join(builders)} "
            f"(config {dict(schedule_config)})"
        )
    try:
        return builders[kind](**cfg)
    except TypeError as e:
        raise ValueError(f"bad {kind} schedule fields {sorted(cfg)}: {e}") from e


def _to_numpy_tree(params: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a), params)


def save_denoiser(path_dir: str | os.PathLike, params: Any, config_dict: Mapping[str, Any]) -> str:
    """Writes a denoiser checkpoint: ``params.msgpack`` and ``denoiser.json`` in ``path_dir``.

    Args:
      path_dir: folder (created if missing; existing files are overwritten).
      params: the UNet parameter tree (the ``"params"`` collection).
      config_dict: ``{"model": {UNet fields}, "schedule": {see make_schedule}, "meta": {...}}``;
        ``meta`` is optional free-form JSON (training steps, losses, data).

    Returns:
      ``path_dir`` as a string.

    Raises:
      ValueError: if ``config_dict`` lacks ``model`` or ``schedule``, names unknown UNet fields,
        or ``params`` do not fit the model it describes.
    """
    missing = {"model", "schedule"} - set(config_dict)
    if missing:
        raise ValueError(
            f"config_dict needs 'model' and 'schedule' entries; missing {sorted(missing)}"
        )
    model = model_from_config(config_dict["model"])
    _check_params(model, params, where="save_denoiser")
    path_dir = os.fspath(path_dir)
    os.makedirs(path_dir, exist_ok=True)
    with open(os.path.join(path_dir, PARAMS_FILE), "wb") as f:
        f.write(flax.serialization.msgpack_serialize(_to_numpy_tree(params)))
    doc = {
        "format": CHECKPOINT_FORMAT,
        "model": {
            k: (list(v) if isinstance(v, (tuple, list)) else v)
            for k, v in config_dict["model"].items()
        },
        "schedule": dict(config_dict["schedule"]),
        "meta": dict(config_dict.get("meta", {})),
    }
    with open(os.path.join(path_dir, CONFIG_FILE), "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    return path_dir


def _check_params(model: UNet, params: Any, where: str) -> None:
    """Raises ValueError unless ``params`` has the tree structure and shapes of ``model``'s."""
    # The channel count of x only fixes the stem (and the head); read it off the given params.
    try:
        c_in = int(np.shape(params["stem"]["kernel"])[2])
    except (KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{where}: expected a UNet parameter tree with a 'stem' conv") from e
    expected = jax.eval_shape(
        model.init,
        jax.random.key(0),
        jnp.zeros((1, model.divisor, model.divisor, c_in), jnp.float32),
        jnp.zeros((1,), jnp.int32),
    )["params"]
    exp_flat = {
        jax.tree_util.keystr(k): v.shape
        for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]
    }
    got_flat = {
        jax.tree_util.keystr(k): tuple(np.shape(v))
        for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    if exp_flat != got_flat:
        diff = sorted(set(exp_flat.items()) ^ set(got_flat.items()))[:6]
        raise ValueError(
            f"{where}: parameters do not fit the UNet config {model}: "
            f"{len(exp_flat)} expected arrays, {len(got_flat)} given; first differences "
            f"(path, shape): {diff}"
        )


def load_denoiser(
    path: str | os.PathLike | None = None,
) -> tuple[Callable[[Any, jax.Array, jax.Array], jax.Array], Any, Any, dict]:
    """Loads a denoiser checkpoint written by :func:`save_denoiser`.

    Args:
      path: the checkpoint folder; ``None`` loads the default checkpoint shipped in
        ``irwarp/samplers/assets/denoiser/`` (:data:`DEFAULT_DENOISER_DIR`).

    Returns:
      ``(apply_fn, params, schedule, meta)``: ``apply_fn(params, x, t) -> eps_hat`` with ``x``
      ``(B, H, W, C)`` and ``t`` ``(B,)`` (pure; jit it as needed), the parameter tree of jax
      arrays, the ``irwarp.samplers.schedules.Schedule`` it was trained with, and the ``meta``
      dict of ``denoiser.json`` with ``"model"`` and ``"schedule"`` configs added.

    Raises:
      FileNotFoundError: if the folder or one of its two files is missing.
      ValueError: if the files are unreadable, of an unknown format, or do not fit together.
    """
    path_dir = DEFAULT_DENOISER_DIR if path is None else os.fspath(path)
    if not os.path.isdir(path_dir):
        hint = (
            " (the default checkpoint is made by `python -m experiments.train_denoiser "
            "--config=configs/train_denoiser.py --workdir=DIR "
            "--config.export_to=irwarp/samplers/assets/denoiser`)"
            if path is None
            else ""
        )
        raise FileNotFoundError(
            f"expected a denoiser checkpoint folder with {PARAMS_FILE} and {CONFIG_FILE}; "
            f"{path_dir!r} does not exist{hint}"
        )
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not os.path.isfile(os.path.join(path_dir, name)):
            raise FileNotFoundError(
                f"expected {name} in the denoiser checkpoint folder {path_dir!r}; it is missing"
            )
    try:
        with open(os.path.join(path_dir, CONFIG_FILE)) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{CONFIG_FILE} in {path_dir!r} is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(
            f"{CONFIG_FILE} in {path_dir!r}: expected format {CHECKPOINT_FORMAT}; got {got!r}"
        )
    for key in ("model", "schedule"):
        if not isinstance(doc.get(key), dict):
            raise ValueError(f"{CONFIG_FILE} in {path_dir!r}: expected a {key!r} object")
    model = model_from_config(doc["model"])
    schedule = make_schedule(doc["schedule"])
    with open(os.path.join(path_dir, PARAMS_FILE), "rb") as f:
        raw = f.read()
    try:
        params = flax.serialization.msgpack_restore(raw)
    except Exception as e:
        raise ValueError(
            f"{PARAMS_FILE} in {path_dir!r} is not a msgpack parameter tree: {e}"
        ) from e
    _check_params(model, params, where=f"load_denoiser({path_dir!r})")
    params = jax.tree_util.tree_map(jnp.asarray, params)

    def apply_fn(params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        return model.apply({"params": params}, x, t)

    meta = dict(doc.get("meta", {}))
    meta["model"] = dict(doc["model"])
    meta["schedule"] = dict(doc["schedule"])
    return apply_fn, params, schedule, meta
