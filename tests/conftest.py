"""Suite-wide fixtures."""

import gc

import jax
import pytest


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
