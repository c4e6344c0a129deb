r"""Data parallelism over every device of every process: the mesh and the shardings.

One program runs on all devices (single-program, multiple-data under ``jax.jit``): a
1-D :class:`jax.sharding.Mesh` over ``jax.devices()`` with one axis, ``"data"``. The
batch is split along that axis; parameters, optimizer state and EMA weights are
replicated (or, with ``train.fsdp=true``, split along their largest divisible axis over
the same devices, as in fully-sharded data parallelism, Rajbhandari et al. 2020,
"ZeRO"). XLA's partitioner inserts the collectives: with a global batch of size
:math:`B` split into :math:`N` shards :math:`b_1 \dots b_N`, the gradient of the mean
loss is

.. math:: \nabla \frac1B \sum_{i=1}^B \ell_i
          = \sum_{k=1}^N \frac{|b_k|}{B}\,\nabla \frac{1}{|b_k|}\sum_{i\in b_k}\ell_i ,

one all-reduce per step. The maths is that of one device with the whole batch; only
the order of floating-point summation differs, so losses agree to float rounding.

With several processes a global array is assembled from each process's rows of the
batch with ``jax.make_array_from_process_local_data`` (:func:`global_batch`).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_MIN_SIZE = 1024  # arrays smaller than this stay replicated under FSDP


def mesh(devices=None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all, in
    ``jax.devices()`` order, so each process's devices are contiguous)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(m: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
    """The leading (batch) axis split over ``"data"``; the rest whole."""
    return NamedSharding(m, P(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], n: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Split the largest axis of ``shape`` divisible by ``n`` over ``"data"``; arrays
    smaller than ``min_size`` elements, or with no such axis, stay replicated."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    candidates = [(size, -i) for i, size in enumerate(shape) if size % n == 0]
    if not candidates:
        return P()
    axis = -max(candidates)[1]
    return P(*([None] * axis), DATA_AXIS)


def is_prng_key(x) -> bool:
    """Whether ``x`` is an array of typed PRNG keys (``jax.random.key``), which cannot be
    placed or saved as plain numbers: they travel as ``jax.random.key_data``."""
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def state_shardings(state, m: Mesh, fsdp: bool = False):
    """A pytree of shardings like ``state``: replicated, or FSDP-split (see
    :func:`fsdp_spec`; PRNG keys and small arrays always replicated)."""

    def one(x):
        if not fsdp or is_prng_key(x):
            return replicated(m)
        return NamedSharding(m, fsdp_spec(tuple(x.shape), m.size))

    return jax.tree.map(one, state)


def put(tree, shardings):
    """Place a pytree that every process holds identically (host or local device
    arrays) onto global ``shardings``. PRNG keys travel as their raw key data."""

    def one(x, s):
        if is_prng_key(x):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), s)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), s)

    return jax.tree.map(one, tree, shardings)


def local_rows(n: int, sharding: NamedSharding) -> np.ndarray:
    """Indices of the rows of a global ``[n, ...]`` array that this process's devices
    hold, in the order ``jax.make_array_from_process_local_data`` expects."""
    index_map = sharding.addressable_devices_indices_map((n,))
    starts = sorted({(idx[0].start or 0, idx[0].stop or n) for idx in index_map.values()})
    return np.concatenate([np.arange(a, b) for a, b in starts])


def global_batch(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the host batch ``x`` (the same on every process): each
    process places only its own rows on its devices."""
    x = np.asarray(x)
    rows = local_rows(x.shape[0], sharding)
    if len(rows) == x.shape[0]:
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)


def padded_size(n: int, m: Mesh) -> int:
    """``n`` rounded up to a multiple of the number of devices."""
    return -(-n // m.size) * m.size


def shard_batch(x: np.ndarray, m: Mesh) -> tuple[jax.Array, int]:
    """``(global array, n)``: ``x`` split over ``"data"``, padded to a multiple of the
    device count by repeating its last row; keep the first ``n`` results. (A repeated
    row changes neither the batch-joint error norm nor any other sample's result.)"""
    x = np.asarray(x)
    n = x.shape[0]
    pad = padded_size(n, m) - n
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    return global_batch(x, batch_sharded(m)), n


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) array as a host numpy array, on every
    process (a collective where other processes hold parts of it)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class BatchSharded(eqx.Module):
    """A score function whose input and output are pinned to the batch sharding.

    Inside a jitted sampler this lets XLA's partitioner split the whole solve, which
    starts from a prior draw made inside the jit, along the batch: each device
    integrates its own samples. Batches not divisible by the device count (e.g. one
    sample under ``vmap`` for per-sample step control) pass through unconstrained, so
    they follow the sharding of their inputs.
    """

    fn: Callable
    sharding: NamedSharding = eqx.field(static=True)

    def __call__(self, x, t):
        n = self.sharding.mesh.size
        if x.ndim == 0 or x.shape[0] % n:
            return self.fn(x, t)
        pin = jax.lax.with_sharding_constraint
        return pin(self.fn(pin(x, self.sharding), pin(t, self.sharding)), self.sharding)


def batch_sharded_score(score_fn: Callable, m: Mesh) -> Callable:
    """``score_fn`` pinned to the batch sharding of ``m`` (unchanged on one device)."""
    return score_fn if m.size == 1 else BatchSharded(score_fn, batch_sharded(m))
