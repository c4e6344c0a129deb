r"""Uniform dequantisation of integer-valued data, and the matching bits/dim.

Integer levels :math:`k \in \{0, \dots, n-1\}` per dimension are spread uniformly over
their bins of width :math:`w = (hi - lo) / n` in ``data_range = (lo, hi)``:

.. math:: x = lo + w\,(k + u), \qquad u \sim U[0, 1)^D.

For any continuous model density :math:`p`, Jensen's inequality gives the variational
bound (Theis, van den Oord and Bethge 2016; Ho et al. 2019)

.. math:: -\log_2 P(k) \le E_u[-\log_2 p(x)] - D \log_2 w,

so bits per dimension are :math:`-\log p(x) / (D \ln 2) + \log_2(n / (hi - lo))`:
exactly ``samplers.bits_per_dim(logp, dim=D, n_levels=n, data_range=hi - lo)``. A
model that is constant on each bin, :math:`p(x) = P(k) / w^D`, attains the bound.

:func:`to_continuous` maps a level to its bin centre (for display and for models fed
with clean levels); :func:`from_continuous` maps any point back to the level of its bin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check(n_levels: int, data_range) -> tuple[float, float]:
    if isinstance(n_levels, bool) or not isinstance(n_levels, int | np.integer) or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2, got n_levels={n_levels!r}")
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"data_range must be a pair (lo, hi), got data_range={data_range!r}"
        ) from None
    if not hi > lo:
        raise ValueError(f"data_range must have hi > lo, got data_range={data_range!r}")
    return lo, hi


def dequantize(key_or_rng, x_int, n_levels: int, data_range=(0.0, 1.0)):
    """Uniformly dequantise integer levels ``x_int`` into ``lo + w (k + u)``, float32.

    ``key_or_rng`` is a ``np.random.Generator`` (numpy in, numpy out, computed in float64
    then rounded) or a JAX PRNG key (a ``jax.Array`` out; jittable). Every output lies in
    its level's half-open bin ``[lo + w k, lo + w (k + 1))``. Example::

        x = dequantize(jax.random.key(0), images, n_levels=256, data_range=(-1.0, 1.0))
    """
    lo, hi = _check(n_levels, data_range)
    width = (hi - lo) / n_levels
    if isinstance(key_or_rng, np.random.Generator):
        k = np.asarray(x_int, dtype=np.float64)
        u = key_or_rng.uniform(size=k.shape)
        x = (lo + width * (k + u)).astype(np.float32)
        top = (lo + width * (k + 1)).astype(np.float32)
        return np.where(x < top, x, np.nextafter(top, np.float32(-np.inf)))
    k = jnp.asarray(x_int).astype(jnp.float32)
    u = jax.random.uniform(key_or_rng, k.shape, dtype=jnp.float32)
    x = lo + width * (k + u)
    top = lo + width * (k + 1)
    # k + u can round up to k + 1 in float32; keep the bin half-open.
    return jnp.where(x < top, x, jnp.nextafter(top, -jnp.inf))


def to_continuous(x_int, n_levels: int, data_range=(0.0, 1.0)):
    """Bin centres ``lo + w (k + 1/2)`` of integer levels, float32 (numpy or JAX as given)."""
    lo, hi = _check(n_levels, data_range)
    width = (hi - lo) / n_levels
    if isinstance(x_int, jax.Array):
        return lo + width * (x_int.astype(jnp.float32) + 0.5)
    return (lo + width * (np.asarray(x_int, dtype=np.float64) + 0.5)).astype(np.float32)


def from_continuous(x, n_levels: int, data_range=(0.0, 1.0)):
    """The level ``k`` of the bin holding ``x`` (clipped to ``0..n_levels-1``), int32.

    Inverts :func:`to_continuous` and :func:`dequantize`; use it to turn samples into
    images. Numpy inputs are binned in float64, JAX inputs in their own dtype.
    """
    lo, hi = _check(n_levels, data_range)
    if isinstance(x, jax.Array):
        k = jnp.floor((x - lo) * (n_levels / (hi - lo)))
        return jnp.clip(k, 0, n_levels - 1).astype(jnp.int32)
    k = np.floor((np.asarray(x, dtype=np.float64) - lo) * (n_levels / (hi - lo)))
    return np.clip(k, 0, n_levels - 1).astype(np.int32)
