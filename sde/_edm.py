r"""The EDM forward process and its training loss (Karras, Aittala, Aila and Laine 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", NeurIPS).

EDM writes every diffusion in a scaled variable :math:`\tilde x = x / a(t)` and its noise
level :math:`\sigma = s(t) / a(t)`, so that :math:`\tilde x = x_0 + \sigma z`. Their
preferred process takes :math:`\sigma(t) = t` and :math:`a(t) = 1`: time *is* the noise
level. :class:`EDMSDE` is that process; :func:`edm_loss` is their training objective,
written so that it applies to any linear SDE through the same change of variables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._base import AbstractSDE, expand_time
from ._checks import check_finite, check_sigma_range
from ._types import ScoreFn


class EDMSDE(AbstractSDE):
    r"""The variance-exploding SDE with :math:`\sigma(t) = t` (Karras et al. 2022, §4).

    .. math:: dx = \sqrt{2t}\, dw, \qquad t \in [0, T], \quad T = \sigma_{max},

    so :math:`f = 0`, :math:`g(t)^2 = d\sigma^2/dt = 2t`, and the kernel is
    :math:`x_t = x_0 + t z`: :math:`a(t) = 1`, :math:`s(t) = t`, log-SNR
    :math:`\lambda(t) = -\log t` with inverse :math:`t = e^{-\lambda}`. The
    probability-flow ODE is EDM's :math:`dx/dt = -t\, \nabla\log p_t(x)
    = (x - D(x; t))/t` with the denoiser :math:`D(x; \sigma) = E[x_0 \mid x_\sigma = x]`.

    Unlike the SDEs of Song et al. (2021), time runs over :math:`[0, \sigma_{max}]`:
    ``T`` is a property equal to ``sigma_max`` (80 by default, EDM's choice), and the
    prior is :math:`N(0, \sigma_{max}^2 I)`. ``sigma_min`` (0.002) is not part of the
    process (``std(0) = 0``): it is the smallest noise level EDM's samplers visit
    before their last step to :math:`\sigma = 0`, and :func:`samplers.sample_edm` takes
    it as its default ``eps``. Example::

        edm = sde.EDMSDE()                      # sigma_min=0.002, sigma_max=80
        a, s = edm.marginal(3.0)                # (1.0, 3.0)
        oracle = sde.MixtureOracle(mix, edm)    # exact score at noise level t
    """

    names = ("edm",)

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.sigma_min, self.sigma_max = check_sigma_range(sigma_min, sigma_max)

    @property
    def T(self) -> float:  # noqa: N802  (the base class's name for the final time)
        """The final time, ``sigma_max``."""
        return self.sigma_max

    def sigma(self, t: ArrayLike) -> Array:
        r"""The noise level :math:`\sigma(t) = t`."""
        t = jnp.asarray(t)
        return t if jnp.issubdtype(t.dtype, jnp.floating) else t.astype(float)

    def log_mean_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def std(self, t: ArrayLike) -> Array:
        return self.sigma(t)

    def drift_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def diffusion(self, t: ArrayLike) -> Array:
        return jnp.sqrt(2.0 * self.sigma(t))

    def log_snr(self, t: ArrayLike) -> Array:
        return -jnp.log(self.sigma(t))

    def log_snr_inverse(self, lam: ArrayLike) -> Array:
        return jnp.exp(-jnp.asarray(lam))

    @property
    def prior_std(self) -> float:
        return self.sigma_max


def edm_weight(sigma: ArrayLike, sigma_data: float = 0.5) -> Array:
    r"""EDM's loss weight :math:`\lambda(\sigma) = (\sigma^2 + \sigma_d^2)/(\sigma\sigma_d)^2`
    (Karras et al. 2022, Table 1), which is :math:`1 / c_\text{out}(\sigma)^2`."""
    sigma = jnp.asarray(sigma)
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss_at(
    score_fn: ScoreFn,
    sde: AbstractSDE,
    x0: Float[Array, "B ..."],
    sigma: Float[ArrayLike, " B"],
    noise: Float[Array, "B ..."],
    *,
    sigma_data: float = 0.5,
) -> Float[Array, " B"]:
    r"""The EDM loss at given noise levels and noise, one value per example:
    :math:`\lambda(\sigma)\,\|D(x_t) - x_0\|^2`, summed over all non-batch axes.

    ``sigma`` (shape ``[B]``) is the noise level :math:`s/a` of the scaled variable; the
    time is :math:`t = \lambda^{-1}(-\log\sigma)` (``sde.log_snr_inverse``), the input is
    :math:`x_t = a(t)(x_0 + \sigma z)`, and the denoiser implied by the score is
    Tweedie's :math:`D = (x_t + s^2 \nabla\log p_t)/a = x_t / a + a\sigma^2
    \nabla\log p_t`. Since :math:`D - x_0 = \sigma(z + s\,\nabla\log p_t)`, this is
    evaluated as :math:`\lambda\sigma^2 \|z + s\, s_\theta(x_t, t)\|^2` (no cancellation
    between :math:`x_t/a` and the score at large :math:`\sigma`). No factor for the
    distribution of ``sigma`` is applied. Example::

        ell = sde.edm_loss_at(oracle.score, sde.EDMSDE(), x0, jnp.full((B,), 0.3), z)
    """
    sigma_data = check_finite("sigma_data", sigma_data, positive=True)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x0.dtype), x0.shape[:1])
    t = sde.log_snr_inverse(-jnp.log(sigma)).astype(x0.dtype)
    a = sde.mean_coeff(t)
    s = a * sigma
    x_t = expand_time(a, x0) * (x0 + expand_time(sigma, x0) * noise)
    residual = noise + expand_time(s, x0) * score_fn(x_t, t)  # (D - x0) / sigma
    sq = jnp.sum(jnp.reshape(residual, (x0.shape[0], -1)) ** 2, axis=-1)
    return edm_weight(sigma, sigma_data) * sigma**2 * sq


def edm_loss(
    score_fn: ScoreFn,
    sde: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    *,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    sigma_data: float = 0.5,
) -> Float[Array, " B"]:
    r"""Per-example EDM training loss (Karras et al. 2022, eq. 8 and Table 1).

    .. math::
        \ell = \lambda(\sigma)\, \|D(x_t; \sigma) - x_0\|^2, \qquad
        \ln\sigma \sim N(P_\text{mean}, P_\text{std}^2), \qquad
        \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\,\sigma_d)^2},

    summed over every non-batch axis, with **no** factor :math:`\tfrac12` (NVlabs/edm's
    convention: its ``EDMLoss`` is summed over elements and averaged over the batch).
    With the EDM preconditioning :math:`D = c_\text{skip}\tilde x + c_\text{out} F`,
    :math:`\lambda = 1/c_\text{out}^2` makes this :math:`\|F - F^*\|^2`: a unit-scale
    regression at every :math:`\sigma`. In terms of :func:`dsm_loss`'s ``"std2"``
    residual, :math:`\ell = \frac{\sigma^2 + \sigma_d^2}{\sigma_d^2}
    \|z + s\, s_\theta(x_t, t)\|^2`.

    **Any linear SDE.** The noise level of the scaled variable is :math:`\sigma = s/a =
    e^{-\lambda}`, so a drawn :math:`\sigma` is mapped to the time
    :math:`t = \lambda^{-1}(-\ln\sigma)` (``sde.log_snr_inverse``) and the network sees
    :math:`x_t = a(t)(x_0 + \sigma z) = a x_0 + s z`. For :class:`EDMSDE`, :math:`t =
    \sigma`. The log-normal :math:`\sigma` is not clipped: a draw outside
    :math:`[\sigma(0), \sigma(T)]` maps to a time outside :math:`[0, T]` (for VP with
    ``beta_max=20`` that needs :math:`\sigma > 157`, probability :math:`< 10^{-4}`; for
    VE with ``sigma_min=0.01``, :math:`\sigma < 0.01`, probability 0.2%, where the VE
    schedule is simply extrapolated). At each :math:`\sigma` the loss is minimised by
    :math:`D = E[x_0 \mid x_t]`; for Gaussian data :math:`N(\mu, c^2 I)` the minimum is
    :math:`\frac{c^2(\sigma^2 + \sigma_d^2)}{\sigma_d^2(\sigma^2 + c^2)}` per element,
    exactly 1 when :math:`c = \sigma_d` (less for other data of that variance, whose
    posterior mean beats the linear one).

    ``score_fn(x, t)`` receives ``x`` like ``x0`` and ``t`` of shape ``[B]``; a model
    built as :class:`networks.EDMPrecond` gives one through its ``score_fn(sde)``. The
    caller reduces (e.g. ``.mean()``). Example::

        edm = sde.EDMSDE()
        loss = sde.edm_loss(precond.score_fn(edm), edm, x0, key).mean()
    """
    p_mean = check_finite("p_mean", p_mean)
    p_std = check_finite("p_std", p_std, positive=True)
    k_sigma, k_z = jax.random.split(key)
    log_sigma = p_mean + p_std * jax.random.normal(k_sigma, x0.shape[:1], x0.dtype)
    noise = jax.random.normal(k_z, x0.shape, x0.dtype)
    return edm_loss_at(score_fn, sde, x0, jnp.exp(log_sigma), noise, sigma_data=sigma_data)
