"""Fixtures shared by the test files; the plain helpers are in ``helpers.py``.

Every compiled program is kept in a persistent JAX cache shared by the test workers
and by the command-line runs the tests start as subprocesses (which inherit the
environment): the suite compiles the same small training steps and samplers many
times over, and on 2 cores a cold cache already cut a run of the training tests from
96 s to 67 s. Set ``JAX_COMPILATION_CACHE_DIR`` to use another directory.
"""

import os
import tempfile

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"scoresde-test-jax-cache-{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The suite compiles far more than it computes: with XLA's CPU backend at optimisation
# level 0, whole fresh-clone runs took 721 s against 849-858 s at the default level on
# these 2 cores (compiling is faster; a few runtime-bound sampler tests run 2-3x
# slower). Only the test runs use it, and subprocesses the tests start inherit it (the
# 8-device runs must compile as the in-process reference does); results agree with the
# default level to the tests' tolerances.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import helpers  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

# in case a plugin imported jax before this file set the environment
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)


@pytest.fixture(scope="session")
def ring():
    """Four unequal-weight modes 14 stds apart (``helpers.ring``)."""
    return helpers.ring()


@pytest.fixture(scope="session")
def gaussian():
    """One correlated 2-D Gaussian with an exact flow map (``helpers.correlated_gaussian``)."""
    return helpers.correlated_gaussian()
