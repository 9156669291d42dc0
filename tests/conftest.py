"""Suite-wide fixtures."""

import gc
import os

# The suite runs in 2 processes (pytest-xdist, README): on a GPU, JAX's default preallocation of
# most of the device memory by the first process would leave none for the second.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

# End-to-end runs of experiments and notebooks: marked `slow`, so that `pytest -m "not slow"` runs
# the library tests alone (setup.cfg registers the marker; CI runs everything). Whole files by name,
# and single tests of library test files that run an experiment.
SLOW_FILES = {
    "test_bench.py",
    "test_demo.py",
    "test_paper_experiments.py",
    "test_video_diffusion.py",
    "test_warp3d_experiment.py",
    "test_warp_video.py",
}
SLOW_TESTS = {"test_denoiser.py::test_training_experiment_small_end_to_end"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = os.path.basename(str(item.path))
        if name in SLOW_FILES or f"{name}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
