"""Suite-wide fixtures."""

import gc
import os

# The suite runs in 2 processes (pytest-xdist, README): on a GPU, JAX's default preallocation of
# most of the device memory by the first process would leave none for the second.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
    """Drops JAX's in-memory caches of traced and compiled functions after each test module.

    The suite compiles thousands of programs (many parametrised warps, samplers, experiments);
    kept for the whole session, their executables grew the process to several GB, and two long runs
    died with a segmentation fault inside XLA compilation late in the suite. Nothing is shared
    between modules, so releasing them costs nothing but the memory.
    """
    yield
    jax.clear_caches()
    gc.collect()
