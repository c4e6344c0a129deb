"""What the library tests share: an evaluation counter, a trace counter, convergence
slopes, the Gaussian mixtures with known answers, and mixture metrics (mode shares,
total variation, a kernel two-sample test) written here so that the library tests
import no ``experiments`` code."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import sde

# ---- counting ------------------------------------------------------------------


class EvaluationCounter:
    """Score evaluations counted at run time (a host callback per evaluation)."""

    def __init__(self):
        self.evaluations = 0

    def _add(self):
        self.evaluations += 1

    def after(self, out) -> int:
        """The count once ``out`` (a sampler's output) is computed."""
        jax.block_until_ready(out)
        jax.effects_barrier()
        return self.evaluations


def counting_score(score_fn: Callable) -> tuple[Callable, EvaluationCounter]:
    """``(counted, counter)``: ``counted`` is ``score_fn`` that bumps ``counter`` every
    time it is evaluated, under ``jit`` too. Example::

        counted, counter = counting_score(oracle.score)
        x, stats = samplers.sample_ode(score_fn=counted, ...)
        assert int(stats["nfe"]) == counter.after(x)
    """
    counter = EvaluationCounter()

    def counted(x, t):
        jax.debug.callback(counter._add)
        return score_fn(x, t)

    return counted, counter


def tracing_score(score_fn: Callable) -> tuple[Callable, list]:
    """``(traced, traces)``: ``traced`` is ``score_fn`` as a pytree that appends to
    ``traces`` each time it is traced (only while a function using it compiles), for
    no-recompilation checks."""
    traces = []

    class Traced(eqx.Module):
        inner: Callable

        def __call__(self, x, t):
            traces.append(1)  # runs only while tracing
            return self.inner(x, t)

    return Traced(score_fn), traces


def fitted_order(errors, steps) -> float:
    """Least-squares slope of ``-log(error)`` against ``log(steps)``."""
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])


# ---- mixtures with known answers -------------------------------------------------

RING_WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])


def ring() -> sde.GaussianMixture:
    """Four modes of unequal weight 14 stds apart: nearest-mode shares equal the
    weights."""
    return sde.GaussianMixture.ring(4, radius=3.0, std=0.3, weights=RING_WEIGHTS)


def correlated_gaussian() -> sde.GaussianMixture:
    """One correlated 2-D Gaussian, whose probability-flow map is exact
    (``MixtureOracle.flow``)."""
    return sde.GaussianMixture(
        weights=[1.0], means=[[1.0, -0.5]], covariances=[[[0.5, 0.2], [0.2, 0.3]]]
    )


# ---- mixture metrics -------------------------------------------------------------


def mode_shares(x, means) -> np.ndarray:
    """Share of samples whose nearest mode (Euclidean) is each of ``means``."""
    x, means = jnp.asarray(x), jnp.asarray(means)
    d2 = jnp.sum((x[:, None, :] - means[None]) ** 2, axis=-1)
    counts = jnp.bincount(jnp.argmin(d2, axis=1), length=means.shape[0])
    return np.asarray(counts / x.shape[0])


def total_variation(p, q) -> float:
    """``0.5 * sum |p - q|`` between two discrete distributions."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def _median_bandwidth(x, y, max_points: int = 1000):
    """Median pairwise distance of the pooled sample (the median heuristic)."""
    z = jnp.concatenate([x[:max_points], y[:max_points]])
    d = jnp.sqrt(jnp.maximum(jnp.sum((z[:, None] - z[None]) ** 2, -1), 0.0))
    return jnp.median(d[jnp.triu_indices(z.shape[0], 1)])


def _gram(x, y, bandwidth):
    d2 = jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None] - 2 * x @ y.T
    return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))


def _mmd2(k, n: int):
    """Unbiased MMD^2 (Gretton et al. 2012) from the pooled Gram matrix ``k`` whose
    first ``n`` rows are X: the diagonals are left out of the within-set means."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = kyy.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


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


def mmd_test(x, y, key, n_permutations: int = 200) -> tuple[float, float]:
    """Permutation two-sample test with a Gaussian kernel of median bandwidth:
    ``(MMD^2, p-value)`` for H0: same distribution."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    n = x.shape[0]
    z = jnp.concatenate([x, y])
    k = _gram(z, z, _median_bandwidth(x, y))
    observed = _mmd2(k, n)
    null = _permutation_null(k, n, key, n_permutations)
    p_value = (1 + jnp.sum(null >= observed)) / (1 + n_permutations)
    return float(observed), float(p_value)


# ---- experiment runs ---------------------------------------------------------------


def tiny_run(
    steps: int = 2,
    *,
    batch_size: int = 32,
    hidden: int = 16,
    depth: int = 1,
    extra: dict | None = None,
) -> list[str]:
    """``key=value`` overrides of a run that trains in seconds on 2 cores: ``steps``
    steps of ``batch_size``, a checkpoint at the end, a log line every step, no
    periodic validation, an MLP ``hidden`` wide and ``depth`` deep with 8-wide
    embeddings, loose likelihood tolerances; ``extra`` adds or replaces keys."""
    values = {
        "train.steps": steps,
        "train.batch_size": batch_size,
        "train.log_every": 1,
        "train.ckpt_every": steps,
        "train.eval_every": 0,
        "model.hidden": hidden,
        "model.depth": depth,
        "model.embed_dim": 8,
        "model.cond_dim": 8,
        "eval.rtol": 1e-3,
        "eval.atol": 1e-3,
        **(extra or {}),
    }
    return [f"{key}={value}" for key, value in values.items()]
