r"""Variance-exploding SDE (Song et al. 2021, eq. 9), the continuous limit of SMLD."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._base import AbstractSDE
from ._checks import check_sigma_range


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE.

    .. math:: dx = \sqrt{\frac{d\,\sigma(t)^2}{dt}}\, dw
        = \sigma(t) \sqrt{2 \log(\sigma_{max}/\sigma_{min})}\, dw,
        \qquad \sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t,

    with ``a(t) = 1`` and ``s(t) = sigma(t)``, as in score_sde. The kernel's std at
    ``t = 0`` is ``sigma_min``, not 0: the data are taken as convolved with
    ``N(0, sigma_min^2)``, which is negligible for the defaults. Prior
    ``N(0, sigma_max^2 I)``. Example::

        ve = sde.VESDE(sigma_min=0.01, sigma_max=50.0)
    """

    names = ("ve",)

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = check_sigma_range(sigma_min, sigma_max)

    @property
    def _log_ratio(self) -> float:
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def log_sigma(self, t: ArrayLike) -> Array:
        return jnp.log(self.sigma_min) + jnp.asarray(t) * self._log_ratio

    def log_mean_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def std(self, t: ArrayLike) -> Array:
        return jnp.exp(self.log_sigma(t))

    def drift_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def diffusion(self, t: ArrayLike) -> Array:
        return self.std(t) * jnp.sqrt(2.0 * self._log_ratio)

    def log_snr(self, t: ArrayLike) -> Array:
        return -self.log_sigma(t)

    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        return (-jnp.asarray(lam) - jnp.log(self.sigma_min)) / self._log_ratio

    @property
    def prior_std(self) -> float:
        return self.sigma_max
