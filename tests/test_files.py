"""irwarp.files: .npy and .safetensors writers, complete or absent, read back by other tools.

The safetensors files are read with the ``safetensors`` package (the independent reader); irwarp
writes them without it.
"""

import json
import os
import struct

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from irwarp import files

T, H, W, C = 5, 3, 4, 2
BF16 = np.dtype(ml_dtypes.bfloat16)


def _frames(dtype=np.float32, shape=(T, H, W, C)):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 8 - 3
    return x.astype(dtype)


def _listing(folder):
    return sorted(os.listdir(folder))


def _read(path):
    if path.endswith(".npy"):
        return np.load(path)
    (x,) = load_file(path).values()
    return x


# ----------------------------------------------------------------------------- names


def test_dtype_of():
    assert files.dtype_of("float16") == np.float16
    assert files.dtype_of("float32") == np.float32
    assert files.dtype_of("bfloat16") == BF16 == np.dtype(jnp.bfloat16)
    with pytest.raises(ValueError, match=r"dtype must be one of .*float16.*; got 'float64'"):
        files.dtype_of("float64")


@pytest.mark.parametrize("layout", files.LAYOUTS)
def test_convert_layout_is_the_transposition(layout):
    x = _frames()
    perm = {"THWC": (0, 1, 2, 3), "TCHW": (0, 3, 1, 2), "CTHW": (3, 0, 1, 2)}[layout]
    np.testing.assert_array_equal(files.convert_layout(x, layout), np.transpose(x, perm))
    block = x[1:3]  # a block of frames transposes the same way
    np.testing.assert_array_equal(files.convert_layout(block, layout), np.transpose(block, perm))
    out = files.convert_layout(jnp.asarray(x), layout)  # jax stays jax
    assert isinstance(out, type(jnp.asarray(x)))
    np.testing.assert_array_equal(np.asarray(out), np.transpose(x, perm))


def test_convert_layout_checks():
    with pytest.raises(ValueError, match=r"layout must be one of .*; got 'NCHW'"):
        files.convert_layout(_frames(), "NCHW")
    with pytest.raises(ValueError, match=r"\(T, H, W, C\); got shape \(3, 4, 2\)"):
        files.convert_layout(_frames()[0], "TCHW")


# ----------------------------------------------------------------------------- npy


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_npy_round_trip_slices_and_blocks(tmp_path, dtype):
    x = _frames(dtype)
    path = tmp_path / "a.npy"
    with files.NpyWriter(path, x.shape, dtype) as w:
        w.append(x[0])
        w.append_block(x[1:3])
        w.append_block(x[3:3])  # an empty block is fine
        w.append(jnp.asarray(x[3]))  # jax arrays too
        w.append_block(x[4:])
        assert _listing(tmp_path) != ["a.npy"]  # not there before close
    assert _listing(tmp_path) == ["a.npy"]  # and no temporary left
    for mode in (None, "r"):
        y = np.load(path, mmap_mode=mode)
        assert y.dtype == dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, x)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_npy_writes_into_a_hidden_temporary_beside_the_path(tmp_path):
    w = files.NpyWriter(tmp_path / "a.npy", (2, 3), np.float32)
    w.append(np.zeros(3))
    (tmp,) = _listing(tmp_path)
    assert tmp.startswith(".a.npy.") and tmp.endswith(".tmp")
    w.append(np.ones(3))
    w.close()
    w.close()  # again is fine
    w.abort()  # and never removes the finished file
    assert _listing(tmp_path) == ["a.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), [[0, 0, 0], [1, 1, 1]])


def test_npy_casts_to_its_dtype(tmp_path):
    path = tmp_path / "a.npy"
    with files.NpyWriter(path, (2, 2), np.float16) as w:
        w.append_block(np.array([[0.1, 2.0], [3.0, 4.0]], np.float64))
    np.testing.assert_array_equal(np.load(path), np.array([[0.1, 2], [3, 4]], np.float16))


@pytest.mark.parametrize("bf16", [ml_dtypes.bfloat16, jnp.bfloat16, "bfloat16"])
def test_npy_refuses_bfloat16(tmp_path, bf16):
    with pytest.raises(ValueError, match=r"cannot hold dtype bfloat16.*safetensors"):
        if bf16 == "bfloat16":
            files.open_writer(tmp_path / "a", "npy", (T, H, W, C), bf16)
        else:
            files.NpyWriter(tmp_path / "a.npy", (T, H, W, C), bf16)
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- safetensors


def _header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, f.read(n)


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float32])
def test_safetensors_round_trip(tmp_path, dtype):
    x = _frames(dtype)
    path = tmp_path / "a.safetensors"
    meta = {"method": "grid", "seed": "0", "note": "ünïcode"}
    with files.SafetensorsWriter(path, "noise", x.shape, dtype, metadata=meta) as w:
        w.append_block(x[:2])
        for frame in x[2:]:
            w.append(frame)
    assert _listing(tmp_path) == ["a.safetensors"]
    (y,) = load_file(path).values()
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    with safe_open(path, framework="np") as f:
        assert list(f.keys()) == ["noise"]
        assert f.metadata() == meta
        np.testing.assert_array_equal(f.get_tensor("noise"), x)
        np.testing.assert_array_equal(f.get_slice("noise")[1:3], x[1:3])
    n, text = _header(path)
    assert n % 8 == 0 and text.startswith(b"{")  # the data starts 8-byte aligned
    code = {np.dtype(np.float16): "F16", BF16: "BF16", np.dtype(np.float32): "F32"}[np.dtype(dtype)]
    assert json.loads(text)["noise"] == {
        "dtype": code,
        "shape": list(x.shape),
        "data_offsets": [0, x.nbytes],
    }
    assert os.path.getsize(path) == 8 + n + x.nbytes


def test_safetensors_without_metadata_and_of_other_dtypes(tmp_path):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "a.safetensors"
    with files.SafetensorsWriter(path, "x", x.shape, np.dtype(">i4")) as w:  # big-endian asked
        w.append_block(x)
    np.testing.assert_array_equal(load_file(path)["x"], x)
    assert "__metadata__" not in json.loads(_header(path)[1])
    with pytest.raises(ValueError, match=r"takes dtypes .*; got complex64"):
        files.SafetensorsWriter(path, "x", x.shape, np.complex64)


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"seed": 0}, r"strings to strings; got 'seed': 0 \(str: int\); convert it"),
        ({1: "a"}, r"strings to strings; got 1: 'a' \(int: str\)"),
    ],
)
def test_safetensors_metadata_must_be_strings(tmp_path, meta, match):
    with pytest.raises(ValueError, match=match):
        files.SafetensorsWriter(tmp_path / "a.safetensors", "x", (2,), np.float32, meta)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("name", ["", "__metadata__", 3])
def test_safetensors_name_checked(tmp_path, name):
    with pytest.raises(ValueError, match="tensor name must be a non-empty string"):
        files.SafetensorsWriter(tmp_path / "a.safetensors", name, (2,), np.float32)


# ----------------------------------------------------------------------------- complete or absent


WRITERS = {
    "npy": lambda p, shape: files.NpyWriter(p / "a.npy", shape, np.float32),
    "safetensors": lambda p, shape: files.SafetensorsWriter(
        p / "a.safetensors", "x", shape, np.float32
    ),
    "CTHW": lambda p, shape: files.open_writer(p / "a", "npy", shape, layout="CTHW"),
    "TCHW": lambda p, shape: files.open_writer(p / "a", "safetensors", shape, layout="TCHW"),
}


@pytest.mark.parametrize("kind", WRITERS)
def test_exception_or_abort_leaves_nothing(tmp_path, kind):
    x = _frames()
    with pytest.raises(RuntimeError, match="boom"):
        with WRITERS[kind](tmp_path, x.shape) as w:
            w.append_block(x[:2])
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []
    w = WRITERS[kind](tmp_path, x.shape)
    w.append_block(x)
    w.abort()  # complete, but aborted
    assert _listing(tmp_path) == []
    with pytest.raises(ValueError, match="aborted"):
        w.close()
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("kind", WRITERS)
def test_missing_slices_raise_and_leave_nothing(tmp_path, kind):
    x = _frames()
    with pytest.raises(ValueError, match=r"expected 5 .* got 3"):
        with WRITERS[kind](tmp_path, x.shape) as w:
            w.append_block(x[:3])
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("kind", WRITERS)
def test_wrong_shapes_and_too_many_slices_raise_before_writing(tmp_path, kind):
    x = _frames()
    w = WRITERS[kind](tmp_path, x.shape)
    with pytest.raises(ValueError, match=r"expected a \w+ of shape \(3, 4, 2\); got \(3, 4\)"):
        w.append(x[0, ..., 0])
    with pytest.raises(
        ValueError, match=r"expected a block of shape \(n, 3, 4, 2\); got \(3, 4, 2\)"
    ):
        w.append_block(x[0])
    with pytest.raises(ValueError, match=r"expected a block of shape .*; got \(2, 3, 4, 1\)"):
        w.append_block(x[:2, ..., :1])
    w.append_block(x[:4])
    with pytest.raises(ValueError, match=r"expected 5 slices in all; got 6"):
        w.append_block(x[3:])
    assert not os.path.exists(w.path)  # nothing at the path yet
    w.append(x[4])  # the refused calls wrote nothing
    w.close()
    out = _read(w.path)
    layout = {"npy": "THWC", "safetensors": "THWC"}.get(kind, kind)
    np.testing.assert_array_equal(out, files.convert_layout(x, layout))
    assert _listing(tmp_path) == [os.path.basename(w.path)]


def test_garbage_collected_writer_leaves_nothing(tmp_path):
    w = files.NpyWriter(tmp_path / "a.npy", (2, 3), np.float32)
    w.append(np.zeros(3))
    del w
    import gc

    gc.collect()
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- open_writer, layouts


@pytest.mark.parametrize("fmt", files.FORMATS)
@pytest.mark.parametrize("layout", files.LAYOUTS)
def test_layouts_equal_the_transposition(tmp_path, fmt, layout):
    x = _frames()
    meta = {"layout": layout} if fmt == "safetensors" else None
    # chunk_bytes of two frames: the CTHW second pass works in several runs of frames
    w = files.open_writer(
        tmp_path / "noise",
        fmt,
        x.shape,
        "float32",
        name="noise",
        metadata=meta,
        layout=layout,
        chunk_bytes=2 * x[0].nbytes,
    )
    assert w.path == str(tmp_path / f"noise.{fmt}")
    assert w.shape == np.transpose(x, files._PERMS[layout]).shape
    with w:
        w.append(x[0])
        hidden = [n for n in _listing(tmp_path) if n.startswith(f".noise.{fmt}.")]
        assert len(hidden) == (2 if layout == "CTHW" else 1)  # CTHW stages the frames beside
        w.append_block(x[1:4])
        w.append(x[4])
        assert w.count == T
    assert _listing(tmp_path) == [f"noise.{fmt}"]  # no staging file left either
    np.testing.assert_array_equal(_read(w.path), np.transpose(x, files._PERMS[layout]))
    if fmt == "safetensors":
        with safe_open(w.path, framework="np") as f:
            assert f.metadata() == meta and list(f.keys()) == ["noise"]


@pytest.mark.parametrize("dtype", files.DTYPES)
def test_open_writer_dtypes_cthw(tmp_path, dtype):
    x = _frames(files.dtype_of(dtype))
    with files.open_writer(tmp_path / "a.safetensors", None, x.shape, dtype, layout="CTHW") as w:
        w.append_block(x)
    y = load_file(w.path)["data"]
    assert y.dtype == files.dtype_of(dtype)
    np.testing.assert_array_equal(y, np.transpose(x, (3, 0, 1, 2)))


def test_open_writer_checks(tmp_path):
    shape = (T, H, W, C)
    with pytest.raises(
        ValueError, match=r"format must be one of \('npy', 'safetensors'\); got 'pt'"
    ):
        files.open_writer(tmp_path / "a", "pt", shape)
    with pytest.raises(ValueError, match=r"a \.npy file but the format is 'safetensors'"):
        files.open_writer(tmp_path / "a.npy", "safetensors", shape)
    with pytest.raises(ValueError, match="no format given"):
        files.open_writer(tmp_path / "a", None, shape)
    with pytest.raises(ValueError, match="holds no metadata"):
        files.open_writer(tmp_path / "a", "npy", shape, metadata={"a": "b"})
    with pytest.raises(ValueError, match=r"layout must be one of .*; got 'HWC'"):
        files.open_writer(tmp_path / "a", "npy", shape, layout="HWC")
    with pytest.raises(ValueError, match=r"needs a shape \(T, H, W, C\).*; got \(5, 3\)"):
        files.open_writer(tmp_path / "a", "npy", (5, 3), layout="TCHW")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        files.open_writer(tmp_path / "a", "npy", shape, "float64")
    with pytest.raises(ValueError, match=r"cannot hold dtype bfloat16"):
        files.open_writer(tmp_path / "a", "npy", shape, "bfloat16", layout="CTHW")
    assert _listing(tmp_path) == []
    w = files.open_writer(tmp_path / "a", "npy", (3, 2), np.float64)  # any dtype object, any rank
    w.append_block(np.ones((3, 2)))
    w.close()
    assert np.load(w.path).dtype == np.float64


# ----------------------------------------------------------------------------- small files


def test_jsonable_and_write_json(tmp_path):
    value = {"a": np.float32(1.5), "b": jnp.arange(3), 2: (np.int64(4), float("nan"), np.bool_(1))}
    assert files.jsonable(value) == {"a": 1.5, "b": [0, 1, 2], "2": [4, None, True]}
    path = str(tmp_path / "a.json")
    assert files.write_json(path, value) == path
    assert json.loads(open(path).read()) == files.jsonable(value)
    assert _listing(tmp_path) == ["a.json"]


def test_moved_names_are_the_same_objects():
    from experiments import warp_video
    from experiments.lib import workdir

    assert warp_video.NpyWriter is files.NpyWriter
    assert workdir.atomic_open is files.atomic_open
    assert workdir.write_json is files.write_json
    assert workdir.jsonable is files.jsonable
