"""Output files that other tools load (numpy, PyTorch, safetensors), complete or absent.

Writers stream an array of known shape one leading-axis slice (a frame) at a time, so a video of
any length is written in bounded memory:

    with files.open_writer("out/noise", "safetensors", (T, H, W, C), "bfloat16",
                           name="noise", metadata={"method": "grid"}, layout="TCHW") as w:
        for frame in frames:            # (H, W, C), irwarp's layout
            w.append(frame)             # or w.append_block(block) with a block (n, H, W, C)
    # out/noise.safetensors now holds one (T, C, H, W) bfloat16 tensor called "noise"

The API:

- :class:`NpyWriter` ``(path, shape, dtype)``: a ``.npy`` (format 1.0), read by ``np.load``
  (also with ``mmap_mode="r"``) and ``torch.from_numpy(np.load(...))``.
- :class:`SafetensorsWriter` ``(path, name, shape, dtype, metadata=None)``: a ``.safetensors``
  holding one tensor and string metadata, read by ``safetensors`` (``load_file``, ``safe_open``
  for numpy, PyTorch, JAX), written without the ``safetensors`` package.
- :func:`open_writer`: either writer by format name (:data:`FORMATS`), with a dtype name
  (:data:`DTYPES`, :func:`dtype_of`) and an optional layout (:data:`LAYOUTS`,
  :func:`convert_layout`) that the frames are transposed to on the way to the file.
- :func:`jsonable`, :func:`atomic_open`, :func:`write_json`: small files (JSON) written whole.

Every writer has ``append(slice)``, ``append_block(block)``, ``close()``, ``abort()`` and is a
context manager. The rules they keep:

- **Complete or absent.** A writer writes into a hidden temporary file beside ``path``
  (``.<name>.XXXXXXXX.tmp``, same folder, so the final move is a rename) and :meth:`close` moves it
  to ``path`` with ``os.replace`` only when every slice came (after ``fsync``). ``abort()``,
  leaving a ``with`` block on an exception, a ``close()`` with missing slices (which raises) and
  garbage collection of an unclosed writer remove the temporary file. A run killed by SIGKILL can
  leave the hidden temporary file, never a file at ``path`` that looks finished.
- **Bounded memory.** Slices are written with plain sequential ``write`` calls and nothing is kept
  (a memory map is not used: its dirtied pages count in the process's resident memory).
- **Checked before written.** A slice of the wrong shape, one slice too many, or a dtype the format
  cannot describe raise ``ValueError`` naming what was expected and what was received; nothing
  reaches ``path``.

dtypes: ``.npy`` takes any dtype numpy describes in a standard header (float16, float32, ...);
bfloat16 (``ml_dtypes.bfloat16``, ``jnp.bfloat16``) has no such header (numpy would read it back
as raw bytes, ``V2``), so an ``NpyWriter`` refuses it and names the safetensors format, which has
``BF16``. ``.safetensors`` takes bool, (u)int8-64, float16, bfloat16, float32 and float64.

Layouts: irwarp's frames are ``THWC``. ``TCHW`` streams: each block is transposed
``(n, H, W, C) -> (n, C, H, W)`` and written. ``CTHW`` cannot be written frame by frame in C order
(a frame is spread over ``C`` places in the file), so its writer stages the ``THWC`` frames in a
second hidden temporary file beside ``path`` (raw bytes, in the final dtype) and :meth:`close`
writes the final file from it in a second pass, one channel at a time and a bounded run of frames
at a time (``chunk_bytes``, plain reads: the staged data is read once per channel), then removes
it. So a ``CTHW`` file needs twice its size on disk while it is closed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

FORMATS = ("npy", "safetensors")
DTYPES = ("float16", "bfloat16", "float32")
LAYOUTS = ("THWC", "TCHW", "CTHW")

# THWC -> layout, as axes of the THWC array.
_PERMS = {"THWC": (0, 1, 2, 3), "TCHW": (0, 3, 1, 2), "CTHW": (3, 0, 1, 2)}
_CHUNK_BYTES = 64 << 20
# The safetensors readers refuse a header of 100 MB or more.
_MAX_HEADER = 100_000_000


# --------------------------------------------------------------------------------------------------
# Small files, written whole.


def jsonable(value: Any) -> Any:
    """``value`` with numpy/jax scalars and arrays as Python objects and non-finite floats as None.

    Strict JSON has no NaN or Infinity, so they are written as ``null``.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return jsonable(np.asarray(value).tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def temp_beside(path: str, suffix: str = ".tmp") -> tuple[int, str]:
    """A new hidden file ``.<name>.XXXXXXXX<suffix>`` beside ``path``, with ordinary permissions."""
    folder, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=suffix, dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; an output is an ordinary file
    except BaseException:
        os.close(fd)
        os.remove(tmp)
        raise
    return fd, tmp


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Opens a temporary file beside ``path``; on success it replaces ``path`` (``os.replace``).

    On an error the temporary file is removed and ``path`` is untouched, so ``path`` is always
    either absent, its old content, or complete.
    """
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str, value: Any, indent: int | None = 2) -> str:
    """Writes ``jsonable(value)`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path) as f:
        json.dump(jsonable(value), f, indent=indent, allow_nan=False)
        f.write("\n")
    return path


# --------------------------------------------------------------------------------------------------
# Names: formats, dtypes, layouts.


def dtype_of(name: str) -> np.dtype:
    """The numpy dtype called ``name``, one of :data:`DTYPES` (bfloat16 is ``ml_dtypes``').

    Raises:
      ValueError: if ``name`` is not one of :data:`DTYPES`.
    """
    if name == "bfloat16":
        import ml_dtypes  # ships with jax

        return np.dtype(ml_dtypes.bfloat16)
    if name in DTYPES:
        return np.dtype(name)
    raise ValueError(f"dtype must be one of {DTYPES}; got {name!r}")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")


def convert_layout(x, layout: str):
    """``x`` of irwarp's layout ``(T, H, W, C)`` transposed to ``layout`` (one of :data:`LAYOUTS`).

    The same for a whole video and for a block of ``n`` frames ``(n, H, W, C)``: ``TCHW`` gives
    ``(n, C, H, W)`` and ``CTHW`` gives ``(C, n, H, W)``. A numpy array stays numpy and a jax array
    stays jax (a view where numpy can; no copy is forced).

    Raises:
      ValueError: if ``layout`` is unknown or ``x`` is not of rank 4.
    """
    _check_layout(layout)
    if np.ndim(x) != 4:
        raise ValueError(
            f"convert_layout expects frames of shape (T, H, W, C); got shape {np.shape(x)}"
        )
    return x if layout == "THWC" else x.transpose(_PERMS[layout])


def layout_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The shape in ``layout`` of an array of irwarp's ``(T, H, W, C)`` shape."""
    _check_layout(layout)
    return tuple(int(shape[i]) for i in _PERMS[layout])


def check_format_dtype(fmt: str, dtype: str) -> None:
    """Raises ValueError (before any work) for a dtype the format cannot hold (bfloat16 in npy)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    dtype_of(dtype)
    if fmt == "npy" and dtype == "bfloat16":
        raise ValueError(
            "dtype bfloat16 has no .npy description that numpy or PyTorch load; pass "
            "--format safetensors (or --dtype float16 / float32)"
        )


# --------------------------------------------------------------------------------------------------
# Streaming writers.


def _remove_quietly(file, path: str) -> None:
    with contextlib.suppress(OSError):
        file.close()
    with contextlib.suppress(OSError):
        os.remove(path)


class _Stream:
    """A file of known shape streamed slice by slice into a hidden temporary file beside ``path``.

    Subclasses give the header (``_header``) and how the temporary file becomes final
    (``_commit``). ``_slices`` is the shape slices arrive in when it differs from the file's shape
    (same size; used by the CTHW second pass).
    """

    _suffix = ".tmp"

    def __init__(self, path, shape: Sequence[int], dtype, *, _slices=None):
        self.path = os.fspath(path)
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 0:
            raise ValueError(
                f"{self.path}: shape must have a leading axis to stream along and no negative "
                f"sizes; got {self.shape}"
            )
        self.dtype = self._check_dtype(np.dtype(dtype))
        self._slices = self.shape if _slices is None else tuple(_slices)
        self.count = 0  # slices written
        self._state = "open"
        fd, self._tmp = temp_beside(self.path, self._suffix)
        self._file = os.fdopen(fd, "wb")  # closed in close() / abort()
        self._finalizer = weakref.finalize(self, _remove_quietly, self._file, self._tmp)
        try:
            self._file.write(self._header())
        except BaseException:
            self.abort()
            raise

    def _check_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def _header(self) -> bytes:
        return b""

    @property
    def nbytes(self) -> int:
        """Bytes of data (without the header)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def append(self, item) -> None:
        """Writes the next slice ``item`` of shape ``shape[1:]`` (cast to ``dtype``).

        Raises:
          ValueError: if ``item`` has another shape, or every slice was already written.
        """
        a = np.asarray(item)
        if a.shape != self._slices[1:]:
            raise ValueError(
                f"{self.path}: expected a slice of shape {self._slices[1:]}; got {a.shape}"
            )
        self._write(a[None])

    def append_block(self, block) -> None:
        """Writes the next ``n`` slices, ``block`` of shape ``(n, *shape[1:])`` (cast to ``dtype``).

        Raises:
          ValueError: if ``block`` has another shape, or holds more slices than are left.
        """
        a = np.asarray(block)
        if a.ndim != len(self._slices) or a.shape[1:] != self._slices[1:]:
            raise ValueError(
                f"{self.path}: expected a block of shape (n, {', '.join(map(str, self._slices[1:]))})"
                f"; got {a.shape}"
            )
        self._write(a)

    def _write(self, a: np.ndarray) -> None:
        if self._state != "open":
            raise ValueError(
                f"{self.path}: the writer is {self._state}; nothing more can be written"
            )
        if self.count + a.shape[0] > self._slices[0]:
            raise ValueError(
                f"{self.path}: expected {self._slices[0]} slices in all; got "
                f"{self.count + a.shape[0]} ({self.count} written, {a.shape[0]} more)"
            )
        data = np.ascontiguousarray(a, self.dtype)
        try:
            self._file.write(data)  # its buffer: no copy of a block that is C-ordered already
        except BaseException:
            self._state = "failed"  # a partial write: the file cannot become complete
            raise
        self.count += a.shape[0]

    def close(self) -> None:
        """Moves the complete file to ``path`` (again is fine).

        Raises:
          ValueError: if slices are missing (or a write failed, or the writer was aborted); the
            temporary file is removed and nothing is written to ``path``.
        """
        if self._state == "closed":
            return
        if self._state == "aborted":
            raise ValueError(f"{self.path}: the writer was aborted; nothing was written")
        if self._state != "open" or self.count != self._slices[0]:
            got = f"{self.count}" + (" and a failed write" if self._state == "failed" else "")
            self.abort()
            raise ValueError(
                f"{self.path}: expected {self._slices[0]} slices of shape {self._slices[1:]}; got "
                f"{got}; nothing was written to {self.path}"
            )
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._finalizer.detach()
        self._state = "closed"

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Removes the temporary file; ``path`` is untouched (a no-op once closed)."""
        if self._state == "closed":
            return
        self._finalizer()  # closes and removes the temporary file, once
        self._state = "aborted"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, shape={self.shape}, dtype={self.dtype}, "
            f"{self.count}/{self._slices[0]} slices, {self._state})"
        )


class NpyWriter(_Stream):
    """Writes a ``.npy`` of known shape one leading-axis slice at a time, complete or not at all.

    See the module docstring for the rules (temporary file, ``close``, ``abort``). The header is
    format 1.0 (``np.lib.format``), C order.

    Args:
      path: the final file (conventionally ending in ``.npy``).
      shape: the array's shape; slices have shape ``shape[1:]``.
      dtype: any dtype with a standard ``.npy`` description (float16, float32, ...).

    Raises:
      ValueError: for a dtype without a standard ``.npy`` description (bfloat16: use the
        safetensors format) or of Python objects.
    """

    def __init__(self, path, shape: Sequence[int], dtype=np.float32, *, _slices=None):
        super().__init__(path, shape, dtype, _slices=_slices)

    def _check_dtype(self, dtype: np.dtype) -> np.dtype:
        descr = np.lib.format.dtype_to_descr(dtype)
        if dtype.hasobject or np.lib.format.descr_to_dtype(descr) != dtype:
            hint = (
                "; write it in the safetensors format (SafetensorsWriter, fmt='safetensors'), "
                "which has BF16, or as float32"
                if dtype.name == "bfloat16"
                else ""
            )
            raise ValueError(
                f"{self.path}: a .npy file cannot hold dtype {dtype.name} (numpy and PyTorch "
                f"would read back {descr!r}, not {dtype.name}){hint}"
            )
        return dtype

    def _header(self) -> bytes:
        import io

        buf = io.BytesIO()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(buf, header)
        return buf.getvalue()


# numpy dtype name -> safetensors dtype (safetensors README, "Format"; bfloat16 via ml_dtypes).
_SAFETENSORS_DTYPES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "uint32": "U32",
    "int32": "I32",
    "uint64": "U64",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
}


class SafetensorsWriter(_Stream):
    """Writes one tensor into a ``.safetensors`` file slice by slice, complete or not at all.

    The file (https://github.com/huggingface/safetensors, "Format"): 8 bytes, the header's length
    ``N`` (unsigned 64-bit little-endian); ``N`` bytes of UTF-8 JSON, ``{name: {"dtype", "shape",
    "data_offsets": [0, nbytes]}, "__metadata__": {str: str}}``, padded with spaces so the data
    starts 8-byte aligned; then the data, little-endian and C order. Written without the
    ``safetensors`` package; see the module docstring for the rules (temporary file, ``close``,
    ``abort``).

    Args:
      path: the final file (conventionally ending in ``.safetensors``).
      name: the tensor's name.
      shape: the tensor's shape; slices have shape ``shape[1:]``.
      dtype: bool, (u)int8-64, float16, bfloat16 (``ml_dtypes.bfloat16``), float32, float64.
      metadata: a mapping of strings to strings (the format allows nothing else).

    Raises:
      ValueError: for another dtype, a name that is empty or ``"__metadata__"``, metadata with a
        key or value that is not a string, or a header of 100 MB or more.
    """

    def __init__(
        self,
        path,
        name: str,
        shape: Sequence[int],
        dtype=np.float32,
        metadata: Mapping[str, str] | None = None,
        *,
        _slices=None,
    ):
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(
                f"{os.fspath(path)}: the tensor name must be a non-empty string other than "
                f"'__metadata__'; got {name!r}"
            )
        self.name = name
        self.metadata = dict(metadata or {})
        for k, v in self.metadata.items():
            if not (isinstance(k, str) and isinstance(v, str)):
                raise ValueError(
                    f"{os.fspath(path)}: safetensors metadata maps strings to strings; got "
                    f"{k!r}: {v!r} ({type(k).__name__}: {type(v).__name__}); convert it first "
                    "(str(v), or json.dumps(v) for structured values)"
                )
        super().__init__(path, shape, dtype, _slices=_slices)

    def _check_dtype(self, dtype: np.dtype) -> np.dtype:
        if dtype.name not in _SAFETENSORS_DTYPES or dtype.fields is not None:
            raise ValueError(
                f"{self.path}: the safetensors writer takes dtypes {tuple(_SAFETENSORS_DTYPES)}; "
                f"got {dtype}"
            )
        return dtype.newbyteorder("<") if dtype.byteorder not in ("<", "|") else dtype

    def _header(self) -> bytes:
        header: dict[str, Any] = {
            self.name: {
                "dtype": _SAFETENSORS_DTYPES[self.dtype.name],
                "shape": list(self.shape),
                "data_offsets": [0, self.nbytes],
            }
        }
        if self.metadata:
            header["__metadata__"] = self.metadata
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data starts at 8 + len(text), 8-byte aligned
        if len(text) >= _MAX_HEADER:
            raise ValueError(
                f"{self.path}: the safetensors header must be under {_MAX_HEADER} bytes; got "
                f"{len(text)} (smaller metadata)"
            )
        return struct.pack("<Q", len(text)) + text


class _Staging(_Stream):
    """Raw bytes in a hidden temporary file, kept (not moved) by ``close``: the CTHW first pass."""

    _suffix = ".thwc.tmp"

    def _commit(self) -> None:
        self._file.close()


class LayoutWriter:
    """Takes irwarp's ``(H, W, C)`` frames and writes them in ``layout`` (see :func:`open_writer`).

    ``THWC`` and ``TCHW`` stream into ``inner``; ``CTHW`` stages the frames and writes ``inner``
    in a second pass at :meth:`close` (module docstring). Same ``append`` / ``append_block`` /
    ``close`` / ``abort`` / context manager as the writers; ``shape`` is the file's shape.
    """

    def __init__(self, make, shape: Sequence[int], dtype, layout: str, chunk_bytes: int):
        _check_layout(layout)
        frames = tuple(int(s) for s in shape)
        if len(frames) != 4:
            raise ValueError(
                f"layout {layout!r} needs a shape (T, H, W, C) of irwarp's frames; got {frames}"
            )
        self.layout, self.frames = layout, frames
        self.shape = layout_shape(frames, layout)
        self.chunk_bytes = int(chunk_bytes)
        if layout == "CTHW":
            t, h, w, c = frames
            self._inner = make(self.shape, (c * t, h, w))  # written channel-frame by channel-frame
            try:
                self._stage = _Staging(self._inner.path, frames, self._inner.dtype)
            except BaseException:
                self._inner.abort()
                raise
        else:
            self._inner, self._stage = make(self.shape, None), None
        self.path, self.dtype = self._inner.path, self._inner.dtype

    @property
    def count(self) -> int:
        """Frames written."""
        return (self._stage or self._inner).count

    def append(self, frame) -> None:
        """Writes the next frame, of shape ``(H, W, C)``.

        Raises:
          ValueError: if ``frame`` has another shape, or every frame was already written.
        """
        a = np.asarray(frame)
        if a.shape != self.frames[1:]:
            raise ValueError(
                f"{self.path}: expected a frame of shape {self.frames[1:]}; got {a.shape}"
            )
        self.append_block(a[None])

    def append_block(self, block) -> None:
        """Writes the next ``n`` frames, ``block`` of shape ``(n, H, W, C)``.

        Raises:
          ValueError: if ``block`` has another shape, or holds more frames than are left.
        """
        a = np.asarray(block)
        if a.ndim != 4 or a.shape[1:] != self.frames[1:]:
            h, w, c = self.frames[1:]
            raise ValueError(
                f"{self.path}: expected a block of shape (n, {h}, {w}, {c}); got {a.shape}"
            )
        if self._stage is not None:
            self._stage.append_block(a)
        else:
            self._inner.append_block(convert_layout(a, self.layout))

    def close(self) -> None:
        """Writes the final file to ``path`` (for CTHW: the second pass; again is fine).

        Raises:
          ValueError: if frames are missing; nothing is written to ``path``.
        """
        if self._stage is None:
            self._inner.close()
            return
        if self._inner._state == "closed":
            return
        try:
            self._stage.close()  # raises if frames are missing
            self._second_pass()
            self._inner.close()
        except BaseException:
            self._inner.abort()
            raise
        finally:
            self._stage.abort()
            _remove_quietly(self._stage._file, self._stage._tmp)

    def _second_pass(self) -> None:
        """Staged THWC frames -> the CTHW file: per channel, runs of frames of <= chunk_bytes."""
        t, h, w, c = self.frames
        frame = h * w * c * self.dtype.itemsize
        run = max(1, self.chunk_bytes // max(frame, 1))
        buf = bytearray(run * frame)
        with open(self._stage._tmp, "rb") as src:
            for ch in range(c):
                src.seek(0)
                for t0 in range(0, t, run):
                    n = min(run, t - t0)
                    view = memoryview(buf)[: n * frame]
                    if src.readinto(view) != n * frame:
                        raise OSError(f"{self._stage._tmp}: the staged frames ended early")
                    x = np.frombuffer(buf, self.dtype, n * h * w * c).reshape(n, h, w, c)
                    self._inner.append_block(x[..., ch])

    def abort(self) -> None:
        """Removes the temporary files; ``path`` is untouched (a no-op once closed)."""
        self._inner.abort()
        if self._stage is not None:
            self._stage.abort()
            _remove_quietly(self._stage._file, self._stage._tmp)

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def open_writer(
    path,
    fmt: str | None,
    shape: Sequence[int],
    dtype="float32",
    *,
    name: str = "data",
    metadata: Mapping[str, str] | None = None,
    layout: str | None = None,
    chunk_bytes: int = _CHUNK_BYTES,
):
    """A streaming writer of format ``fmt`` (see the module docstring).

    Args:
      path: the final file; ``.npy`` / ``.safetensors`` is added when it has neither.
      fmt: one of :data:`FORMATS`, or None to take it from ``path``'s extension.
      shape: the array's shape. With a ``layout``, irwarp's ``(T, H, W, C)``: the writer takes
        frames ``(H, W, C)`` and the file holds ``convert_layout(frames, layout)``.
      dtype: a name in :data:`DTYPES` (:func:`dtype_of`) or a numpy dtype.
      name: the tensor's name in a safetensors file (a ``.npy`` holds one unnamed array).
      metadata: string-to-string metadata of a safetensors file (``.npy`` has none).
      layout: one of :data:`LAYOUTS`, or None to write slices of ``shape`` as given.
      chunk_bytes: for ``CTHW``, about the most bytes of frames the second pass holds at once.

    Returns:
      A :class:`NpyWriter` or :class:`SafetensorsWriter` (``layout`` None) or a
      :class:`LayoutWriter`; its ``path`` is the final file.

    Raises:
      ValueError: for an unknown format, dtype or layout, an extension of another format,
        metadata with ``npy``, or what the writer refuses (bfloat16 in ``npy``).
    """
    path = os.fspath(path)
    ext = next((f for f in FORMATS if path.endswith("." + f)), None)
    if fmt is None:
        if ext is None:
            raise ValueError(f"{path}: no format given and the path ends in none of {FORMATS}")
        fmt = ext
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {fmt!r}")
    if ext is None:
        path = f"{path}.{fmt}"
    elif ext != fmt:
        raise ValueError(f"{path}: the path is a .{ext} file but the format is {fmt!r}")
    dtype = dtype_of(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    if fmt == "npy" and metadata:
        raise ValueError(
            f"{path}: a .npy file holds no metadata; got {sorted(metadata)}; use the "
            "safetensors format, or write the metadata beside it (write_json)"
        )

    def make(file_shape, slices=None):
        if fmt == "npy":
            return NpyWriter(path, file_shape, dtype, _slices=slices)
        return SafetensorsWriter(path, name, file_shape, dtype, metadata, _slices=slices)

    if layout is None:
        return make(shape)
    return LayoutWriter(make, shape, dtype, layout, chunk_bytes)
