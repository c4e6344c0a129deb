"""The rectified-flow (flow-matching) path of today's systems as a linear SDE."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from ._base import AbstractSDE
from ._checks import check_finite


class RectifiedFlow(AbstractSDE):
    r"""The straight path :math:`x_t = (1 - t)\, x_0 + t\, z` of rectified flow and
    conditional flow matching (Liu et al. 2023; Lipman et al. 2023; Esser et al. 2024,
    SD3), written as the linear SDE with the same marginals:

    .. math::
        a(t) = 1 - t, \quad s(t) = t, \quad
        f(t) = \frac{d \log a}{dt} = -\frac{1}{1 - t}, \quad
        g(t)^2 = \frac{d s^2}{dt} - 2 f s^2 = \frac{2t}{1 - t}, \quad
        \lambda(t) = \log\frac{1 - t}{t}.

    Its probability-flow drift is the flow-matching velocity,
    :math:`f x - \tfrac12 g^2 \nabla\log p_t = (x - \hat x_0)/t = E[z - x_0 \mid x_t]`,
    which is finite at every ``t``; but ``f`` and ``g`` are not at ``t = 1``, where
    ``a = 0``. So time runs over :math:`[0, T]` with ``T = t_max = 1 - 10^{-3}`` by
    default, and the prior is :math:`N(0, T^2 I)`, the kernel's noise part at ``T``.
    Its mismatch with the true :math:`p_T` (a mean of :math:`(1 - T)\, x_0`) costs
    :math:`(1 - T)^2 \|x_0\|^2 / (2T^2) \approx 5 \cdot 10^{-7} \|x_0\|^2` nats, below
    any solver's error; and every sampler, grid, exponential integrator, likelihood and
    the oracle use the process unchanged. At ``T`` the drift coefficient is
    :math:`-1/(1 - T) = -1000`, which the probability-flow drift cancels analytically
    (a float32 cancellation error of about :math:`10^{-4}\,|x|`); ``t_max`` closer to 1
    buys a smaller mismatch at the price of that error.

    ``std(0) = 0``: samplers and likelihoods start at a small ``eps`` (1e-3 and 1e-5 by
    default), as for :class:`sde.EDMSDE`. Example::

        rf = sde.RectifiedFlow()
        a, s = rf.marginal(0.25)                 # (0.75, 0.25)
        oracle = sde.MixtureOracle(mix, rf)      # exact score and log-density
    """

    names = ("rf", "rectified_flow")

    t_max: float = 0.999

    def __init__(self, t_max: float = 0.999):
        t_max = check_finite("t_max", t_max, positive=True)
        if not t_max < 1:
            raise ValueError(
                f"t_max must lie in (0, 1): a(1) = 0 is where the drift and diffusion "
                f"blow up; got t_max={t_max!r}"
            )
        self.t_max = t_max

    @property
    def T(self) -> float:  # noqa: N802  (the base class's name for the final time)
        """The final time, ``t_max``."""
        return self.t_max

    def _t(self, t: ArrayLike) -> Array:
        t = jnp.asarray(t)
        return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(float)

    def log_mean_coeff(self, t: ArrayLike) -> Array:
        return jnp.log1p(-self._t(t))

    def mean_coeff(self, t: ArrayLike) -> Array:
        return 1.0 - self._t(t)

    def std(self, t: ArrayLike) -> Array:
        return self._t(t)

    def drift_coeff(self, t: ArrayLike) -> Array:
        return -1.0 / (1.0 - self._t(t))

    def diffusion(self, t: ArrayLike) -> Array:
        t = self._t(t)
        return jnp.sqrt(2.0 * t / (1.0 - t))

    def log_snr(self, t: ArrayLike) -> Array:
        t = self._t(t)
        return jnp.log1p(-t) - jnp.log(t)

    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        # (1 - t) / t = e^lam  =>  t = 1 / (1 + e^lam) = sigmoid(-lam)
        lam = jnp.asarray(lam)
        return jax.nn.sigmoid(-(lam if jnp.issubdtype(lam.dtype, jnp.floating) else 1.0 * lam))

    @property
    def prior_std(self) -> float:
        return self.t_max
