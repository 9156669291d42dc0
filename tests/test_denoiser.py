"""The small UNet denoiser (irwarp.samplers.unet), its checkpoint files and its training experiment.

Tiny models (a few thousand parameters) keep compilation short; the training experiment runs once
on its ``small`` config. About a minute on 2 CPU cores, nearly all of it XLA compilation.
"""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import common
from experiments import train_denoiser as td
from irwarp.samplers import schedules, unet

TINY = dict(
    base_channels=8, channel_mults=(1, 2), num_res_blocks=1, time_embed_dim=16, num_groups=4
)
SCHEDULE = dict(kind="cosine", num_timesteps=1000, s=0.008, prediction="eps")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# imageio starts ffmpeg with fork + exec to decode the clips, which is safe; Python warns anyway.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


def load_config(arg=None):
    return importlib.import_module("configs.train_denoiser").get_config(arg)


def perturbed(params, seed, scale=0.2):
    """The parameters plus N(0, scale^2) noise: the zero-initialised layers no longer hide t."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda p: jnp.asarray(p + scale * rng.standard_normal(p.shape), jnp.float32), params
    )


@pytest.fixture(scope="module")
def tiny():
    model = unet.UNet(**TINY)
    params = td.init_params(model, 0, 8)
    return model, perturbed(params, 1), params


# ----------------------------------------------------------------------------------------- UNet


def test_output_shape_equals_input_shape_at_several_sizes(tiny):
    model, params, _ = tiny
    apply = jax.jit(model.apply)
    for h, w in [(8, 8), (16, 24), (6, 10)]:
        x = jax.random.normal(jax.random.key(h * w), (2, h, w, 3))
        y = apply({"params": params}, x, jnp.array([3, 700], jnp.int32))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert bool(jnp.all(jnp.isfinite(y)))


def test_attention_and_out_channels_variant():
    model = unet.UNet(**dict(TINY, channel_mults=(1, 2, 2), attention=True, out_channels=2))
    x = jnp.ones((1, 8, 12, 4))
    params = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros((1,), jnp.int32))
    assert "_Attention_0" in params["params"]
    assert params["params"]["head"]["kernel"].shape == (3, 3, 8, 2)
    y = jax.eval_shape(model.apply, params, x, jnp.zeros((1,), jnp.int32))
    assert y.shape == (1, 8, 12, 2)


def test_default_config_parameter_count_and_checkpoint_size():
    config = load_config()
    model = unet.model_from_config(td.model_config(config))
    p = config.data.patch_size
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, p, p, 3)), jnp.zeros((1,), jnp.int32)
    )["params"]
    n = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert 5e5 <= n <= 1.2e6, n
    assert 4 * n < 10 * 2**20  # float32 msgpack stays under 10 MB
    assert load_config("gpu").model.to_dict() == config.model.to_dict()  # same checkpoint shape


def test_time_conditioning_changes_the_output(tiny):
    model, params, _ = tiny
    x = jax.random.normal(jax.random.key(5), (1, 8, 8, 3))
    f = jax.jit(model.apply)
    y0 = f({"params": params}, x, jnp.array([0]))
    y0_again = f({"params": params}, x, jnp.array([0]))
    y1 = f({"params": params}, x, jnp.array([500]))
    np.testing.assert_array_equal(np.asarray(y0), np.asarray(y0_again))
    assert float(jnp.sqrt(jnp.mean((y0 - y1) ** 2))) > 1e-3 * float(jnp.sqrt(jnp.mean(y0**2)))
    # A scalar t means the same t for the whole batch.
    np.testing.assert_allclose(
        np.asarray(f({"params": params}, x, 500)), np.asarray(y1), rtol=1e-6, atol=1e-6
    )


def test_timestep_embedding_matches_its_formula():
    t = jnp.array([0.0, 3.0, 999.0])
    emb = np.asarray(unet.timestep_embedding(t, 6))
    w = 10000.0 ** (-np.arange(3) / 3)
    ref = np.concatenate([np.cos(np.outer(t, w)), np.sin(np.outer(t, w))], axis=1)
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    assert unet.timestep_embedding(t, 7).shape == (3, 7)


def test_bad_inputs_raise_value_errors(tiny):
    model, params, _ = tiny
    v = {"params": params}
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        model.apply(v, jnp.zeros((8, 8, 3)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="divisible by 2"):
        model.apply(v, jnp.zeros((1, 7, 8, 3)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="timesteps"):
        model.apply(v, jnp.zeros((2, 8, 8, 3)), jnp.zeros((3,)))
    with pytest.raises(ValueError, match="unknown UNet field"):
        unet.model_from_config(dict(TINY, width=3))
    with pytest.raises(ValueError, match="channel_mults"):
        unet.model_from_config(dict(TINY, channel_mults=()))
    with pytest.raises(ValueError, match="schedule kind"):
        unet.make_schedule(dict(kind="sigmoid"))
    with pytest.raises(ValueError, match="dim must be >= 2"):
        unet.timestep_embedding(jnp.zeros((2,)), 1)
    with pytest.raises(ValueError, match="unknown train_denoiser config variant"):
        load_config("huge")


# ---------------------------------------------------------------------------------- checkpoints


def test_save_load_round_trip(tiny, tmp_path):
    model, params, _ = tiny
    meta = dict(trained_steps=7, note="round trip")
    path = unet.save_denoiser(
        tmp_path / "ckpt", params, dict(model=TINY, schedule=SCHEDULE, meta=meta)
    )
    apply_fn, loaded, schedule, got_meta = unet.load_denoiser(path)
    flat_a = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_b = jax.tree_util.tree_flatten_with_path(loaded)[0]
    assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
    for (_, a), (_, b) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    t = jnp.array([10, 900])
    np.testing.assert_array_equal(
        np.asarray(jax.jit(apply_fn)(loaded, x, t)),
        np.asarray(jax.jit(model.apply)({"params": params}, x, t)),
    )
    np.testing.assert_array_equal(
        np.asarray(schedule.alphas_cumprod),
        np.asarray(schedules.cosine_schedule(1000, 0.008).alphas_cumprod),
    )
    assert schedule.prediction == "eps"
    assert got_meta["trained_steps"] == 7 and got_meta["model"]["base_channels"] == 8


def test_checkpoint_errors(tiny, tmp_path):
    model, params, _ = tiny
    with pytest.raises(FileNotFoundError, match="does not exist"):
        unet.load_denoiser(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="'schedule'"):
        unet.save_denoiser(tmp_path / "a", params, dict(model=TINY))
    with pytest.raises(ValueError, match="do not fit"):
        unet.save_denoiser(
            tmp_path / "b", params, dict(model=dict(TINY, base_channels=16), schedule=SCHEDULE)
        )
    path = unet.save_denoiser(tmp_path / "c", params, dict(model=TINY, schedule=SCHEDULE))
    os.remove(os.path.join(path, unet.PARAMS_FILE))
    with pytest.raises(FileNotFoundError, match=unet.PARAMS_FILE):
        unet.load_denoiser(path)
    path = unet.save_denoiser(tmp_path / "d", params, dict(model=TINY, schedule=SCHEDULE))
    with open(os.path.join(path, unet.CONFIG_FILE)) as f:
        doc = json.load(f)
    doc["model"]["num_res_blocks"] = 2  # the params no longer fit
    with open(os.path.join(path, unet.CONFIG_FILE), "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match="do not fit"):
        unet.load_denoiser(path)
    doc["format"] = 99
    with open(os.path.join(path, unet.CONFIG_FILE), "w") as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match="format"):
        unet.load_denoiser(path)


# ------------------------------------------------------------------------------------- training


def test_sample_patches_stay_inside_each_frame_and_flip():
    # Frame 0 is 10x12 and frame 1 is 16x9 inside a 16x12 bank; valid pixels hold their column
    # index + 1 (so a flip reverses it) and padding holds 0: a patch that touched padding shows 0.
    bank = np.zeros((2, 16, 12, 3), np.uint8)
    bank[0, :10, :12] = (np.arange(12) + 1)[None, :, None]
    bank[1, :16, :9] = (np.arange(9) + 1)[None, :, None]
    sizes = np.array([[10, 12], [16, 9]], np.int32)
    x = td.sample_patches(jax.random.key(0), bank, sizes, batch=256, patch=4, hflip=True)
    u8 = np.round((np.asarray(x) + 1.0) * 127.5)
    assert x.shape == (256, 4, 4, 3) and u8.min() >= 1
    steps = np.diff(u8[..., 0], axis=2)  # along the row: +1 unflipped, -1 flipped
    forward = np.all(steps == 1, axis=(1, 2))
    backward = np.all(steps == -1, axis=(1, 2))
    assert np.all(forward | backward)
    # Flips are a fair coin: 128 expected, sd 8.
    assert abs(int(backward.sum()) - 128) < 4 * 8


def test_learning_rate_warms_up_then_decays_to_the_end_value():
    config = load_config()
    tc = config.train
    lr = lambda s, total=3000: float(td.learning_rate(config, s, total))  # noqa: E731
    assert lr(0) == 0.0
    np.testing.assert_allclose(lr(tc.warmup_steps // 2), tc.learning_rate / 2, rtol=1e-5)
    np.testing.assert_allclose(lr(tc.warmup_steps), tc.learning_rate, rtol=1e-5)
    np.testing.assert_allclose(lr(3000), tc.learning_rate * tc.end_lr_factor, rtol=1e-4)
    np.testing.assert_allclose(lr(1000, 1000), tc.learning_rate * tc.end_lr_factor, rtol=1e-4)


def test_loss_decreases_when_overfitting_a_fixed_batch(tiny):
    model, _, params = tiny
    sched = schedules.cosine_schedule(1000)
    key = jax.random.key(3)
    x0 = jnp.tanh(jax.random.normal(key, (8, 8, 8, 3)))
    noise = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = jnp.linspace(50, 950, 8).astype(jnp.int32)
    opt = optax.adam(3e-3)

    def loss_fn(p):
        return jnp.mean(td.eps_loss(model, p, x0, noise, t, sched.alphas_cumprod))

    @jax.jit
    def step(p, s):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    state = jax.jit(opt.init)(params)
    losses = []
    for _ in range(50):  # a Python loop: XLA:CPU runs convolutions slowly inside lax.scan
        params, state, loss = step(params, state)
        losses.append(float(loss))
    initial, final = losses[0], losses[-1]
    assert 0.5 < initial < 2.0  # predicting ~0 at initialisation: the MSE of N(0, 1) noise
    assert final < 0.6 * initial, (initial, final)


def test_config_checks():
    config = load_config("small")
    config.data.train_clips = ("bikes.mp4", "carphone_pristine.mp4")
    with pytest.raises(ValueError, match="held-out clip"):
        td.run(config, "/nonexistent/never_written")
    config = load_config("small")
    config.train.steps_per_call = 2
    config.train.log_every = 3
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        td.run(config, "/nonexistent/never_written")
    config = load_config("small")
    config.data.patch_size = 15
    with pytest.raises(ValueError, match="patch_size"):
        td.run(config, "/nonexistent/never_written")


def test_training_experiment_small_end_to_end(tmp_path):
    config = load_config("small")
    config.export_to = str(tmp_path / "export")
    workdir = tmp_path / "run"
    summary = td.run(config, str(workdir))
    for name in ("config.json", "metrics.jsonl", "summary.md", "loss_curve.png", "samples.png"):
        assert (workdir / name).is_file(), name
    for name in ("loss_curve.png", "samples.png"):
        assert (workdir / name).read_bytes()[:8] == PNG_MAGIC
    rows = common.read_jsonl(str(workdir / "metrics.jsonl"))
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(2, config.train.num_steps + 1, 2))
    assert all(np.isfinite(r["loss"]) for r in train)
    assert all(np.isfinite(r["eval_loss"]) and np.isfinite(r["eval_loss_raw"]) for r in evals)
    assert np.isfinite(summary["eval_loss"]) and summary["num_params"] > 0
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == 4
    # The checkpoint loads, in the workdir and in the export folder, and gives finite output.
    for folder in (workdir / "denoiser", tmp_path / "export"):
        apply_fn, params, schedule, meta = unet.load_denoiser(folder)
        assert meta["trained_steps"] == config.train.num_steps
        assert schedule.num_timesteps == config.schedule.num_timesteps
        y = apply_fn(params, jnp.zeros((1, 16, 16, 3)), jnp.array([100]))
        assert y.shape == (1, 16, 16, 3) and bool(jnp.all(jnp.isfinite(y)))
    assert {"loss_curve.png", "samples.png", unet.PARAMS_FILE} <= set(
        os.listdir(tmp_path / "export")
    )


def test_committed_checkpoint_beats_predicting_zeros_on_held_out_patches():
    # The default checkpoint ships with the package (setup.cfg package_data); it must be there.
    params_file = os.path.join(unet.DEFAULT_DENOISER_DIR, unet.PARAMS_FILE)
    assert os.path.isfile(params_file), f"missing the committed checkpoint {params_file}"
    assert os.path.getsize(params_file) < 10 * 2**20
    apply_fn, params, schedule, meta = unet.load_denoiser()
    assert meta["eval_clip"] == "carphone_pristine.mp4"
    assert meta["eval_clip"] not in meta["train_clips"]
    config = load_config()
    config.eval.num_patches = 32
    config.eval.num_timesteps = 6
    model = unet.model_from_config(meta["model"])
    x0 = td.eval_patches(config)  # fixed held-out patches of carphone_pristine.mp4
    eval_fn, ts = td.make_eval(model, config, schedule.alphas_cumprod, x0)
    by_t = np.asarray(eval_fn(params))
    assert np.all(np.isfinite(by_t))
    # Predicting zeros scores E[eps^2] = 1 at every t; the trained model must do better on
    # average and at every timestep, and far better away from t = 0 (measured: 0.06 at t=200).
    assert by_t.mean() < 1.0, by_t
    assert np.all(by_t < 1.0), (ts, by_t)
    assert by_t[1:].max() < 0.25, (ts, by_t)
