"""Sample-quality metrics against a known truth: mode shares and kernel MMD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray


def mode_shares(x: ArrayLike, means: ArrayLike) -> np.ndarray:
    """Share of samples whose nearest mode (Euclidean) is each of ``means``."""
    x, means = jnp.asarray(x), jnp.asarray(means)
    d2 = jnp.sum((x[:, None, :] - means[None]) ** 2, axis=-1)
    counts = jnp.bincount(jnp.argmin(d2, axis=1), length=means.shape[0])
    return np.asarray(counts / x.shape[0])


def total_variation(p: ArrayLike, q: ArrayLike) -> float:
    """``0.5 * sum |p - q|`` between two discrete distributions."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def median_bandwidth(x: Array, y: Array, max_points: int = 1000) -> Array:
    """Median pairwise distance of the pooled sample (the median heuristic)."""
    z = jnp.concatenate([x[:max_points], y[:max_points]])
    d = jnp.sqrt(jnp.maximum(jnp.sum((z[:, None] - z[None]) ** 2, -1), 0.0))
    return jnp.median(d[jnp.triu_indices(z.shape[0], 1)])


def _gram(x: Array, y: Array, bandwidth: Array) -> Array:
    d2 = jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None] - 2 * x @ y.T
    return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))


def mmd2_from_kernels(kxx, kyy, kxy):
    """Unbiased MMD^2 (Gretton et al. 2012) from the kernel blocks ``k(X, X)``,
    ``k(Y, Y)`` and ``k(X, Y)`` (numpy or JAX arrays): the diagonals are left out of the
    within-set means."""
    n, m = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def _mmd2_from_gram(k: Array, n: int) -> Array:
    """Unbiased MMD^2 from the pooled Gram matrix; the first ``n`` rows are X."""
    return mmd2_from_kernels(k[:n, :n], k[n:, n:], k[:n, n:])


def mmd2(x: ArrayLike, y: ArrayLike, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with a Gaussian kernel (Gretton et al. 2012)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    h = median_bandwidth(x, y) if bandwidth is None else bandwidth
    z = jnp.concatenate([x, y])
    return float(_mmd2_from_gram(_gram(z, z, h), x.shape[0]))


def _permutation_null(k, n: int, key, n_permutations: int):
    """The unbiased MMD^2 of ``n_permutations`` random relabellings of the pooled
    sample, each a quadratic form in the one Gram matrix ``k``: with ``u`` the 0/1
    indicator of the relabelled X and ``v = 1 - u``,
    ``MMD^2 = (u'Ku - u'diag K) / (n(n-1)) + (v'Kv - v'diag K) / (m(m-1)) - 2 u'Kv / (nm)``
    (one ``[N, N] x [N, P]`` product instead of ``P`` gathers of ``K``)."""
    total = k.shape[0]
    m = total - n
    keys = jax.random.split(key, n_permutations)
    u = jax.vmap(lambda kk: jax.random.permutation(kk, total) < n)(keys).T.astype(k.dtype)
    ku = jnp.matmul(k, u, precision=jax.lax.Precision.HIGHEST)  # [N, P]
    row = k.sum(1)
    uku, uk1 = jnp.sum(u * ku, 0), u.T @ row
    ud = u.T @ jnp.diagonal(k)
    vkv, vd = row.sum() - 2 * uk1 + uku, jnp.trace(k) - ud
    return (uku - ud) / (n * (n - 1)) + (vkv - vd) / (m * (m - 1)) - 2 * (uk1 - uku) / (n * m)


def mmd_test(
    x: ArrayLike, y: ArrayLike, key: PRNGKeyArray, n_permutations: int = 200
) -> tuple[float, float]:
    """Permutation two-sample test: ``(MMD^2, p-value)`` for H0: same distribution."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    n = x.shape[0]
    z = jnp.concatenate([x, y])
    k = _gram(z, z, median_bandwidth(x, y))
    observed = _mmd2_from_gram(k, n)
    null = _permutation_null(k, n, key, n_permutations)
    p_value = (1 + jnp.sum(null >= observed)) / (1 + n_permutations)
    return float(observed), float(p_value)
