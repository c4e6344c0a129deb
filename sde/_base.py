"""The interface every forward process implements, and what follows from it."""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


def expand_time(t: ArrayLike, x: Array) -> Array:
    """Reshape a time (scalar or ``[B]``) so that it broadcasts against ``x``."""
    t = jnp.asarray(t, dtype=x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else None)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"time must be a scalar or have shape [B]=[{x.shape[0]}] to match x of "
            f"shape {x.shape}; got t of shape {t.shape}"
        )
    return t.reshape(t.shape + (1,) * (x.ndim - 1))


class AbstractSDE(eqx.Module):
    r"""A linear (affine-drift) forward SDE on ``t in [0, T]``.

    .. math::  dx = f(t)\, x\, dt + g(t)\, dw

    Its perturbation kernel is Gaussian, :math:`x_t = a(t) x_0 + s(t) z`, with
    ``z ~ N(0, I)``; ``a`` and ``s`` obey the moment equations
    :math:`d \log a / dt = f` and :math:`d s^2 / dt = 2 f s^2 + g^2`.

    A concrete SDE writes its schedule once, through :meth:`log_mean_coeff` and
    :meth:`std`, gives the coefficients :meth:`drift_coeff` and :meth:`diffusion`,
    and says how to invert its log-SNR. Everything else is derived here.

    ``T`` is the final time: 1 here, as in Song et al. (2021); a subclass whose time
    runs elsewhere overrides it (:class:`sde.EDMSDE`: ``T = sigma_max``). Code that
    needs the final time asks the SDE object, never this class attribute.
    """

    T = 1.0
    # The names a config gives this process (``sde.name=vp``); the first is its own. A
    # concrete SDE exported from :mod:`sde` with names is buildable from a config.
    names: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def log_mean_coeff(self, t: ArrayLike) -> Array:
        """``log a(t)``."""

    @abc.abstractmethod
    def std(self, t: ArrayLike) -> Array:
        """``s(t)``, the standard deviation of the perturbation kernel."""

    @abc.abstractmethod
    def drift_coeff(self, t: ArrayLike) -> Array:
        """``f(t)``, so that the drift is ``f(t) x``."""

    @abc.abstractmethod
    def diffusion(self, t: ArrayLike) -> Array:
        """``g(t)``, with the shape of ``t``."""

    @abc.abstractmethod
    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        r"""The time ``t`` at which :math:`\lambda(t) = \log(a/s)` equals ``lam``."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``p_T``."""

    # ---- derived -----------------------------------------------------------------

    def mean_coeff(self, t: ArrayLike) -> Array:
        """``a(t)``."""
        return jnp.exp(self.log_mean_coeff(t))

    def marginal(self, t: ArrayLike) -> tuple[Array, Array]:
        """``(a(t), s(t))``: the kernel is ``x_t = a(t) x_0 + s(t) z``."""
        return self.mean_coeff(t), self.std(t)

    def log_snr(self, t: ArrayLike) -> Array:
        r"""The log signal-to-noise ratio :math:`\lambda(t) = \log a(t) - \log s(t)`."""
        return self.log_mean_coeff(t) - jnp.log(self.std(t))

    def drift(self, x: Float[Array, "B ..."], t: ArrayLike) -> Array:
        """``f(x, t) = f(t) x``; ``t`` is a scalar or has shape ``[B]``."""
        return expand_time(self.drift_coeff(t), x) * x

    def perturb(
        self, x0: Float[Array, "B ..."], t: ArrayLike, noise: Float[Array, "B ..."]
    ) -> Array:
        """``x_t = a(t) x_0 + s(t) z`` for given standard normal ``noise`` ``z``."""
        a, s = self.marginal(t)
        return expand_time(a, x0) * x0 + expand_time(s, x0) * noise

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...]) -> Array:
        """Draw from the prior ``N(0, prior_std^2 I)``."""
        return self.prior_std * jax.random.normal(key, shape)

    def prior_logp(self, x: Float[Array, "B ..."]) -> Float[Array, " B"]:
        """Log-density of the prior, summed over all non-batch axes (nats)."""
        var = self.prior_std**2
        d = math.prod(x.shape[1:])
        sq = jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=-1)
        return -0.5 * sq / var - 0.5 * d * jnp.log(2 * math.pi * var)
