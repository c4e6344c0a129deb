r"""Variance-preserving and sub-variance-preserving SDEs (Song et al. 2021, eqs. 11, 12).

Both use the linear noise schedule :math:`\beta(t) = \beta_{min} + t(\beta_{max} -
\beta_{min})` and share its integral, written once in :meth:`log_mean_coeff`:

.. math:: \log a(t) = -\tfrac14 t^2 (\beta_{max} - \beta_{min}) - \tfrac12 t \beta_{min}.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._base import AbstractSDE
from ._checks import as_real


def _check_betas(beta_min, beta_max) -> tuple[float, float]:
    for name, v in (("beta_min", beta_min), ("beta_max", beta_max)):
        f = as_real(name, v)
        if not (f >= 0 and f < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {name}={v!r}")
    beta_min, beta_max = float(beta_min), float(beta_max)
    if not beta_max > 0 or beta_max < beta_min:
        raise ValueError(
            "need 0 <= beta_min <= beta_max and beta_max > 0, got "
            f"beta_min={beta_min!r}, beta_max={beta_max!r}"
        )
    return float(beta_min), float(beta_max)


class _AbstractVPFamily(AbstractSDE):
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = _check_betas(beta_min, beta_max)

    def beta(self, t: ArrayLike) -> Array:
        r""":math:`\beta(t) = \beta_{min} + t (\beta_{max} - \beta_{min})`."""
        return self.beta_min + jnp.asarray(t) * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: ArrayLike) -> Array:
        t = jnp.asarray(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_coeff(self, t: ArrayLike) -> Array:
        return -0.5 * self.beta(t)

    def _time_from_log_mean(self, log_mean: Array) -> Array:
        # Root of  (d/4) t^2 + (beta_min/2) t + log_mean = 0,  rationalised so that it
        # is exact for d = beta_max - beta_min = 0 and has no cancellation near t = 0.
        d = self.beta_max - self.beta_min
        b = 0.5 * self.beta_min
        return -2.0 * log_mean / (b + jnp.sqrt(b**2 - d * log_mean))

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_AbstractVPFamily):
    r"""Variance-preserving SDE, the continuous limit of DDPM.

    .. math:: dx = -\tfrac12 \beta(t) x\, dt + \sqrt{\beta(t)}\, dw,
        \qquad a(t) = e^{\log a(t)}, \quad s(t)^2 = 1 - a(t)^2.

    Prior ``N(0, I)``. Example::

        vp = sde.VPSDE(beta_min=0.1, beta_max=20.0)
        a, s = vp.marginal(0.5)
    """

    names = ("vp",)

    def std(self, t: ArrayLike) -> Array:
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_mean_coeff(t)))

    def diffusion(self, t: ArrayLike) -> Array:
        return jnp.sqrt(self.beta(t))

    def log_snr(self, t: ArrayLike) -> Array:
        lm = self.log_mean_coeff(t)
        return lm - 0.5 * jnp.log(-jnp.expm1(2.0 * lm))

    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        # a^2 = sigmoid(2 lam)  =>  log a = -softplus(-2 lam) / 2
        lam = jnp.asarray(lam)
        return self._time_from_log_mean(-0.5 * jnp.logaddexp(0.0, -2.0 * lam))


class SubVPSDE(_AbstractVPFamily):
    r"""Sub-variance-preserving SDE (Song et al. 2021, eq. 12).

    .. math:: dx = -\tfrac12 \beta(t) x\, dt
        + \sqrt{\beta(t)\,(1 - e^{-2\int_0^t \beta})}\, dw,
        \qquad s(t) = 1 - a(t)^2,

    whose variance stays below the VP one at every ``t``. Prior ``N(0, I)``.
    """

    names = ("subvp",)

    def std(self, t: ArrayLike) -> Array:
        return -jnp.expm1(2.0 * self.log_mean_coeff(t))

    def diffusion(self, t: ArrayLike) -> Array:
        # exp(-2 int beta) = a^4
        return jnp.sqrt(self.beta(t) * -jnp.expm1(4.0 * self.log_mean_coeff(t)))

    def log_snr(self, t: ArrayLike) -> Array:
        lm = self.log_mean_coeff(t)
        return lm - jnp.log(-jnp.expm1(2.0 * lm))

    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        # a / (1 - a^2) = e^lam  =>  a = 2 / (u + sqrt(u^2 + 4)), u = e^-lam
        #                        =>  log a = -asinh(u / 2)
        lam = jnp.asarray(lam)
        return self._time_from_log_mean(-jnp.arcsinh(0.5 * jnp.exp(-lam)))
