"""Mini-batches as a pure function of ``(seed, step)``, so resuming needs no state.

The batch at global step ``s`` depends only on ``(seed, s)``: with
``m = len(data) // batch_size`` full batches per epoch, step ``s`` is batch ``s % m`` of
epoch ``s // m``, whose order is ``np.random.default_rng([seed, epoch]).permutation``.
The last ``len(data) % batch_size`` items of each permutation are dropped, so every
batch has the same shape (one compilation). A run resumed at step ``k`` therefore sees
exactly the batches an uninterrupted run sees, and jumping to ``k`` costs one
permutation, not ``k`` batches.
"""

from __future__ import annotations

import functools

import numpy as np


def _check(n: int, batch_size: int, seed: int, step: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size must be an integer, got batch_size={batch_size!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}] (the data size), got {batch_size}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got seed={seed!r}")
    if int(step) < 0:
        raise ValueError(f"step must be >= 0, got step={step!r}")


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's order, computed once per epoch rather than per batch (every step
    asks for it, twice with labels); read-only since it is shared."""
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    perm.setflags(write=False)
    return perm


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices (int64 ``[batch_size]``) of the batch at global ``step``; a pure function."""
    _check(n, batch_size, seed, step)
    epoch, i = divmod(int(step), n // batch_size)
    return _epoch_permutation(int(n), int(seed), epoch)[i * batch_size : (i + 1) * batch_size]
