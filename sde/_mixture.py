r"""Gaussian mixtures pushed through a linear SDE: an exact oracle.

For data :math:`p_0 = \sum_k w_k N(\mu_k, \Sigma_k)` and a kernel
:math:`x_t = a(t) x_0 + s(t) z`, every marginal is again a mixture,

.. math:: p_t = \sum_k w_k N(a \mu_k,\; C_k), \qquad C_k = a^2 \Sigma_k + s^2 I,

so its log-density, score, denoiser and score divergence are closed forms. With
:math:`g_k = -C_k^{-1}(x - a\mu_k)` and responsibilities :math:`r_k(x)`:

.. math::
    \nabla \log p_t = \sum_k r_k g_k, \qquad
    \nabla\!\cdot\nabla \log p_t
      = \sum_k r_k \left(|g_k|^2 - \operatorname{tr} C_k^{-1}\right) - |\nabla\log p_t|^2,
    \qquad E[x_0 \mid x_t] = \frac{x_t + s^2 \nabla \log p_t}{a}.

Each covariance is stored by its eigendecomposition :math:`\Sigma_k = U_k \Lambda_k
U_k^T`, so :math:`C_k = U_k (a^2 \Lambda_k + s^2) U_k^T` costs nothing to invert.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._base import AbstractSDE

# The oracle is a reference: full-precision matmuls, never TF32 or bf16 passes (GPUs use
# reduced-precision matmuls by default, which made adaptive solves take 10x the steps).
_EXACT = jax.lax.Precision.HIGHEST


class GaussianMixture(eqx.Module):
    """A Gaussian mixture data distribution ``p_0`` on ``R^D``.

    Give either ``covariances`` (``[K, D, D]``, symmetric positive definite) or
    ``stds`` (a float or ``[K]``: isotropic components). The parameters are computed in
    float64 and stored in JAX's default float type at construction: float32, or float64
    when ``jax_enable_x64`` is on (build the mixture under x64 for a float64 oracle).
    Example::

        mix = sde.GaussianMixture(weights=[0.7, 0.3], means=[[-2.0, 0], [2, 0]],
                                  stds=0.5)
        oracle = sde.MixtureOracle(mix, sde.VPSDE())
        score_fn = oracle.score          # a pure score_fn(x, t) for the samplers
    """

    log_weights: Float[Array, " K"]
    means: Float[Array, "K D"]
    eigvals: Float[Array, "K D"]
    eigvecs: Float[Array, "K D D"]

    def __init__(self, weights, means, covariances=None, stds=None):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape [K, D], got shape {mu.shape}")
        k, d = mu.shape
        if w.shape != (k,):
            raise ValueError(f"weights must have shape [K]=[{k}], got shape {w.shape}")
        if not np.all(np.isfinite(mu)):
            raise ValueError(f"means must be finite, got means={mu.tolist()}")
        if not np.all(np.isfinite(w)) or np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"weights must be > 0 and sum to 1, got weights={w.tolist()} (sum {w.sum():.8g})"
            )
        if (covariances is None) == (stds is None):
            raise ValueError("give exactly one of covariances=[K, D, D] or stds")
        if covariances is not None:
            cov = np.asarray(covariances, dtype=np.float64)
            if cov.shape != (k, d, d):
                raise ValueError(
                    f"covariances must have shape [K, D, D]=[{k}, {d}, {d}], got shape {cov.shape}"
                )
            if not np.all(np.isfinite(cov)):
                raise ValueError("covariances must be finite, got inf or nan entries")
            asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max()
            if asym > 1e-10:
                raise ValueError(f"covariances must be symmetric, got max |C - C^T| = {asym:.3g}")
            lam, u = np.linalg.eigh(cov)
            if np.any(lam <= 0):
                raise ValueError(
                    "covariances must be positive definite, got smallest eigenvalue "
                    f"{lam.min():.3g}"
                )
        else:
            s = np.asarray(stds, dtype=np.float64)
            if s.shape not in ((), (k,)):
                raise ValueError(
                    f"stds must be a scalar or have shape [K]=[{k}], got shape {s.shape}"
                )
            s = np.broadcast_to(s, (k,))
            if np.any(s <= 0) or not np.all(np.isfinite(s)):
                raise ValueError(f"stds must be finite and > 0, got stds={s.tolist()}")
            lam = np.repeat(s[:, None] ** 2, d, axis=1)
            u = np.broadcast_to(np.eye(d), (k, d, d))
        # JAX's default float: float32, or float64 under jax_enable_x64.
        self.log_weights = jnp.asarray(np.log(w), dtype=float)
        self.means = jnp.asarray(mu, dtype=float)
        self.eigvals = jnp.asarray(lam, dtype=float)
        self.eigvecs = jnp.asarray(u, dtype=float)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> Array:
        return jnp.exp(self.log_weights)

    def covariances(self) -> Array:
        return jnp.einsum(
            "kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs, precision=_EXACT
        )

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        """Exact samples from ``p_0``."""
        kc, kz = jax.random.split(key)
        comp = jax.random.categorical(kc, self.log_weights, shape=(n,))
        z = jax.random.normal(kz, (n, self.dim))
        x = jnp.einsum(
            "nij,nj->ni", self.eigvecs[comp], jnp.sqrt(self.eigvals[comp]) * z, precision=_EXACT
        )
        return self.means[comp] + x

    def log_prob(self, x: Float[Array, "B D"]) -> Float[Array, " B"]:
        """``log p_0(x)`` in nats."""
        return _mixture_log_prob(self, x, 1.0, 0.0)

    @classmethod
    def ring(cls, n_modes: int = 8, radius: float = 4.0, std: float = 0.3, weights=None):
        """``n_modes`` isotropic 2-D Gaussians evenly spaced on a circle."""
        angles = 2 * np.pi * np.arange(n_modes) / n_modes
        means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        w = np.full(n_modes, 1.0 / n_modes) if weights is None else weights
        return cls(weights=w, means=means, stds=std)

    @classmethod
    def grid(cls, n_side: int = 5, spacing: float = 2.0, std: float = 0.2, weights=None):
        """``n_side**2`` isotropic 2-D Gaussians on a centred square grid."""
        c = spacing * (np.arange(n_side) - (n_side - 1) / 2)
        means = np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2)
        w = np.full(len(means), 1.0 / len(means)) if weights is None else weights
        return cls(weights=w, means=means, stds=std)


def _components(mix: GaussianMixture, x: Array, a: Array, s: Array):
    """Per-component quantities of ``p_t``; ``a``, ``s`` broadcast as ``[B, 1, 1]``."""
    y = x[:, None, :] - a * mix.means[None]  # [B, K, D]
    v = a**2 * mix.eigvals[None] + s**2  # [B, K, D] eigenvalues of C_k
    z = jnp.einsum("kde,bkd->bke", mix.eigvecs, y, precision=_EXACT)  # y in eigenbases
    log_comp = -0.5 * (
        jnp.sum(z**2 / v, -1) + jnp.sum(jnp.log(v), -1) + mix.dim * math.log(2 * math.pi)
    )
    return y, v, z, log_comp + mix.log_weights


def _as_column(t: ArrayLike, x: Array) -> Array:
    t = jnp.asarray(t, dtype=jnp.result_type(x, float))
    return jnp.broadcast_to(t, x.shape[:1])[:, None, None]


def _mixture_log_prob(mix, x, a, s):
    _, _, _, logits = _components(mix, x, _as_column(a, x), _as_column(s, x))
    return jax.nn.logsumexp(logits, axis=-1)


class MixtureOracle(eqx.Module):
    """A :class:`GaussianMixture` diffused by an SDE: exact ``p_t`` for every ``t``.

    All methods take ``x`` of shape ``[B, D]`` and ``t`` scalar or ``[B]``; each is a
    pure function, so ``oracle.score`` can be handed to any sampler as ``score_fn``.
    """

    mixture: GaussianMixture
    sde: AbstractSDE

    def _parts(self, x, t):
        a, s = self.sde.marginal(jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1]))
        a, s = a[:, None, None], s[:, None, None]
        return (a, s, *_components(self.mixture, x, a, s))

    def log_prob(self, x: Float[Array, "B D"], t: ArrayLike) -> Float[Array, " B"]:
        """``log p_t(x)`` in nats."""
        *_, logits = self._parts(x, t)
        return jax.nn.logsumexp(logits, axis=-1)

    def _score_parts(self, x, t):
        a, s, y, v, z, logits = self._parts(x, t)
        g = -jnp.einsum("kde,bke->bkd", self.mixture.eigvecs, z / v, precision=_EXACT)  # -C^-1 y
        r = jax.nn.softmax(logits, axis=-1)
        return a, s, v, g, r, jnp.einsum("bk,bkd->bd", r, g, precision=_EXACT)

    def score(self, x: Float[Array, "B D"], t: ArrayLike) -> Float[Array, "B D"]:
        r"""The exact score :math:`\nabla_x \log p_t(x)`."""
        return self._score_parts(x, t)[-1]

    def score_divergence(self, x: Float[Array, "B D"], t: ArrayLike) -> Float[Array, " B"]:
        r"""The exact divergence :math:`\nabla \cdot \nabla_x \log p_t(x)`."""
        _, _, v, g, r, score = self._score_parts(x, t)
        per_comp = jnp.sum(g**2, -1) - jnp.sum(1.0 / v, -1)
        return jnp.sum(r * per_comp, -1) - jnp.sum(score**2, -1)

    def denoiser(self, x: Float[Array, "B D"], t: ArrayLike) -> Float[Array, "B D"]:
        r"""Tweedie's :math:`E[x_0 \mid x_t = x] = (x + s^2 \nabla \log p_t) / a`,
        evaluated as :math:`\sum_k r_k (\mu_k + a \Sigma_k C_k^{-1}(x - a \mu_k))`,
        which keeps its accuracy where ``a`` is tiny (no cancellation, no ``1/a``)."""
        a, _, _, v, z, logits = self._parts(x, t)
        r = jax.nn.softmax(logits, axis=-1)
        post = jnp.einsum(
            "kde,bke->bkd", self.mixture.eigvecs, self.mixture.eigvals * z / v, precision=_EXACT
        )
        return jnp.einsum("bk,bkd->bd", r, self.mixture.means[None] + a * post, precision=_EXACT)

    def sample(self, key: PRNGKeyArray, n: int, t: ArrayLike = 0.0) -> Array:
        """Exact samples from ``p_t`` (``t=0`` gives the clean data ``p_0``).

        For the VE SDE ``p_0`` here is the mixture itself, while ``p_t`` for ``t > 0``
        carries the kernel's full std ``sigma(t)`` (score_sde's convention).
        """
        k0, kz = jax.random.split(key)
        x0 = self.mixture.sample(k0, n)
        if isinstance(t, int | float) and t == 0:
            return x0
        return self.sde.perturb(x0, t, jax.random.normal(kz, x0.shape))

    def flow(self, x: Float[Array, "B D"], t_from: ArrayLike, t_to: ArrayLike) -> Array:
        r"""Exact probability-flow ODE map from ``t_from`` to ``t_to`` (one component).

        For :math:`p_0 = N(\mu, U \Lambda U^T)` the flow is affine: in the eigenbasis
        each coordinate of :math:`x - a\mu` scales like the marginal std
        :math:`\sqrt{a^2 \lambda + s^2}`.
        """
        if self.mixture.num_components != 1:
            raise ValueError(
                "flow() is exact only for a single Gaussian, got a mixture with "
                f"{self.mixture.num_components} components"
            )
        mix = self.mixture
        a0, s0 = self.sde.marginal(t_from)
        a1, s1 = self.sde.marginal(t_to)
        scale = jnp.sqrt((a1**2 * mix.eigvals[0] + s1**2) / (a0**2 * mix.eigvals[0] + s0**2))
        u = mix.eigvecs[0]
        y = jnp.matmul(x - a0 * mix.means[0], u, precision=_EXACT)
        return a1 * mix.means[0] + jnp.matmul(y * scale, u.T, precision=_EXACT)
