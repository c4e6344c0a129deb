r"""Training-time distributions as densities over the log-SNR.

Every linear SDE has a decreasing log-SNR :math:`\lambda(t) = \log(a/s)` with
:math:`d\lambda/dt = -g^2/(2 s^2)` and an inverse, :meth:`~sde.AbstractSDE.log_snr_inverse`.
A time distribution is therefore a density :math:`p(\lambda)` on
:math:`[\lambda(T), \lambda(\epsilon)]`, and one density serves every SDE: it is drawn in
:math:`\lambda` and mapped to each SDE's own :math:`t`. The ones in use today:

``UniformTime`` (score_sde; ``"uniform"``)
    :math:`t \sim U[\epsilon, T]`, so :math:`p(\lambda) = 2 s^2 / ((T - \epsilon) g^2)`
    at :math:`t(\lambda)`: a different density over :math:`\lambda` for each SDE.
``UniformLogSNR`` (Song et al. 2021b, VDM; ``"importance"``)
    :math:`\lambda \sim U[\lambda(T), \lambda(\epsilon)]`: the importance sampler for the
    likelihood weighting, under which the estimator's weight is constant.
``NormalLogSNR(mean, std)``
    :math:`\lambda \sim N(\text{mean}, \text{std}^2)`, truncated to the range. Two
    published samplers are this one density under different names:

    - SD3's logit-normal (Esser et al. 2024): :math:`\text{logit}(t) \sim N(m, s^2)`
      on the rectified-flow path, where :math:`\lambda = \log((1 - t)/t) =
      -\text{logit}(t)`; so :math:`\lambda \sim N(-m, s^2)` (:func:`logit_normal`,
      ``m = 0, s = 1``);
    - EDM's log-normal (Karras et al. 2022): :math:`\ln\sigma \sim N(P_{mean},
      P_{std}^2)` with :math:`\sigma = s/a = e^{-\lambda}`; so
      :math:`\lambda \sim N(-P_{mean}, P_{std}^2)` (:func:`lognormal`,
      ``P_mean = -1.2, P_std = 1.2``).

    Drawn in :math:`\lambda`, both work on every SDE (on VP, logit-normal SD3 times are
    those :math:`t` whose SNR equals that of the RF time SD3 would draw).

Sampling is by inverse CDF of one uniform ``u`` per example, so ``"stratified"`` and
``"antithetic"`` (variance-reduced ``u``) are uniform-in-``t`` samplers too.

The weight :func:`sde.sample_time` returns is the ratio of the uniform density on
:math:`[\epsilon, T]` to the density ``t`` was drawn from,
:math:`w = 2 s^2 / ((T - \epsilon) g^2 p(\lambda))`, which the likelihood weighting uses
to stay an unbiased estimate of its integral under any sampler.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr, ndtri
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ._base import AbstractSDE
from ._checks import check_finite

SCHEMES = ("iid", "stratified", "antithetic")


def log_snr_range(sde: AbstractSDE, eps: float, dtype=None) -> tuple[Array, Array]:
    r"""``(lambda(T), lambda(eps))``: the log-SNR range of ``t in [eps, T]``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return (
        sde.log_snr(jnp.asarray(sde.T, dtype)),
        sde.log_snr(jnp.asarray(eps, dtype)),
    )


def uniforms(key: PRNGKeyArray, batch: int, scheme: str, dtype) -> Array:
    """``batch`` uniforms on [0, 1): i.i.d., stratified (one per stratum, permuted) or
    antithetic (``u`` then ``1 - u``)."""
    if scheme == "iid":
        return jax.random.uniform(key, (batch,), dtype)
    if scheme == "stratified":
        k_perm, k_u = jax.random.split(key)
        strata = jax.random.permutation(k_perm, batch).astype(dtype)
        return (strata + jax.random.uniform(k_u, (batch,), dtype)) / batch
    if batch % 2:
        raise ValueError(f"method='antithetic' needs an even batch, got batch={batch}")
    u = jax.random.uniform(key, (batch // 2,), dtype)
    return jnp.concatenate([u, 1 - u])


class TimeSampling(eqx.Module):
    r"""A density :math:`p(\lambda)` over the log-SNR on :math:`[\lambda(T),
    \lambda(\epsilon)]`, mapped to each SDE's time through ``log_snr_inverse``.

    A subclass gives :meth:`log_prob` (normalised on the range) and :meth:`times`
    (inverse CDF of uniforms). ``scheme`` picks the uniforms: ``"iid"``,
    ``"stratified"`` or ``"antithetic"``.
    """

    scheme: str = eqx.field(default="iid", static=True, kw_only=True)

    def __check_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got scheme={self.scheme!r}")

    @abc.abstractmethod
    def log_prob(self, lam: ArrayLike, *, sde: AbstractSDE, eps: float) -> Array:
        r"""``log p(lambda)`` on the range of ``[eps, T]``."""

    @abc.abstractmethod
    def times_from_uniforms(self, u: Array, *, sde: AbstractSDE, eps: float) -> Array:
        """The times whose CDF value is ``u`` (inverse-CDF sampling)."""

    def sample(
        self, key: PRNGKeyArray, batch: int, *, sde: AbstractSDE, eps: float, dtype=None
    ) -> Array:
        """``batch`` times in ``[eps, T]`` drawn from this density."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        u = uniforms(key, batch, self.scheme, dtype)
        t = self.times_from_uniforms(u, sde=sde, eps=eps)
        return jnp.clip(t.astype(dtype), eps, sde.T)

    def weight(self, t: Array, *, sde: AbstractSDE, eps: float) -> Array:
        r"""Uniform-in-``t`` density over this one's at ``t``:
        :math:`2 s^2 / ((T - \epsilon) g^2 p(\lambda(t)))`."""
        s, g = sde.std(t), sde.diffusion(t)
        log_p = self.log_prob(sde.log_snr(t), sde=sde, eps=eps)
        return 2 * s**2 / ((sde.T - eps) * g**2) * jnp.exp(-log_p)


class UniformTime(TimeSampling):
    r""":math:`t \sim U[\epsilon, T]` (score_sde's default); weight 1."""

    def log_prob(self, lam, *, sde, eps):
        t = sde.log_snr_inverse(lam)
        return jnp.log(2 * sde.std(t) ** 2 / ((sde.T - eps) * sde.diffusion(t) ** 2))

    def times_from_uniforms(self, u, *, sde, eps):
        return eps + (sde.T - eps) * u

    def weight(self, t, *, sde, eps):
        return jnp.ones_like(t)


class UniformLogSNR(TimeSampling):
    r""":math:`\lambda \sim U[\lambda(T), \lambda(\epsilon)]`: the importance sampler of
    the likelihood weighting (Song et al. 2021b; Kingma et al. 2021)."""

    def log_prob(self, lam, *, sde, eps):
        lam = jnp.asarray(lam)
        lam_T, lam_eps = log_snr_range(sde, eps, lam.dtype)
        inside = (lam >= lam_T) & (lam <= lam_eps)
        return jnp.where(inside, -jnp.log(lam_eps - lam_T), -jnp.inf)

    def times_from_uniforms(self, u, *, sde, eps):
        lam_T, lam_eps = log_snr_range(sde, eps, u.dtype)
        return sde.log_snr_inverse(lam_T + u * (lam_eps - lam_T))

    def weight(self, t, *, sde, eps):  # the closed form: 2 Delta lambda s^2 / (span g^2)
        lam_T, lam_eps = log_snr_range(sde, eps, t.dtype)
        s, g = sde.std(t), sde.diffusion(t)
        return 2 * (lam_eps - lam_T) * s**2 / ((sde.T - eps) * g**2)


class NormalLogSNR(TimeSampling):
    r""":math:`\lambda \sim N(\text{mean}, \text{std}^2)` truncated to
    :math:`[\lambda(T), \lambda(\epsilon)]`. :func:`logit_normal` and :func:`lognormal`
    build it from SD3's and EDM's parameters."""

    mean: float = 0.0
    std: float = 1.0

    def __init__(self, mean: float = 0.0, std: float = 1.0, *, scheme: str = "iid"):
        self.mean = check_finite("mean", mean)
        self.std = check_finite("std", std, positive=True)
        self.scheme = scheme

    def _bounds(self, sde, eps, dtype):
        lam_T, lam_eps = log_snr_range(sde, eps, dtype)
        return (lam_T - self.mean) / self.std, (lam_eps - self.mean) / self.std

    def log_prob(self, lam, *, sde, eps):
        lam = jnp.asarray(lam)
        lo, hi = self._bounds(sde, eps, lam.dtype)
        z = (lam - self.mean) / self.std
        mass = ndtr(hi) - ndtr(lo)
        log_p = -0.5 * z**2 - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(self.std) - jnp.log(mass)
        return jnp.where((z >= lo) & (z <= hi), log_p, -jnp.inf)

    def times_from_uniforms(self, u, *, sde, eps):
        lo, hi = self._bounds(sde, eps, u.dtype)
        z = jnp.clip(ndtri(ndtr(lo) + u * (ndtr(hi) - ndtr(lo))), lo, hi)
        return sde.log_snr_inverse(self.mean + self.std * z)


def logit_normal(mean: float = 0.0, std: float = 1.0, *, scheme: str = "iid") -> NormalLogSNR:
    r"""SD3's logit-normal time sampling, :math:`\text{logit}(t_{RF}) \sim N(m, s^2)`
    (Esser et al. 2024, eq. 19; ``m = 0, s = 1`` is their best), as the log-SNR density
    :math:`\lambda \sim N(-m, s^2)` that every SDE maps to its own ``t``."""
    return NormalLogSNR(-check_finite("mean", mean), std, scheme=scheme)


def lognormal(p_mean: float = -1.2, p_std: float = 1.2, *, scheme: str = "iid") -> NormalLogSNR:
    r"""EDM's log-normal noise levels, :math:`\ln\sigma \sim N(P_{mean}, P_{std}^2)`
    (Karras et al. 2022, Table 1), as the log-SNR density :math:`\lambda \sim
    N(-P_{mean}, P_{std}^2)` (:math:`\sigma = s/a = e^{-\lambda}`)."""
    p_mean = check_finite("p_mean", p_mean)
    p_std = check_finite("p_std", p_std, positive=True)
    return NormalLogSNR(-p_mean, p_std, scheme=scheme)


# The names ``sample_time(method=...)`` and ``train.t_sampling`` accept.
TIME_SAMPLINGS = {
    "uniform": UniformTime,
    "stratified": lambda: UniformTime(scheme="stratified"),
    "antithetic": lambda: UniformTime(scheme="antithetic"),
    "importance": UniformLogSNR,
    "logit_normal": logit_normal,
    "lognormal": lognormal,
}


def time_sampling(method: str | TimeSampling, **params) -> TimeSampling:
    """The :class:`TimeSampling` a name stands for (``params`` go to its constructor),
    or ``method`` itself if it is one."""
    if isinstance(method, TimeSampling):
        if params:
            raise ValueError(f"parameters {sorted(params)} given with a TimeSampling object")
        return method
    if not isinstance(method, str) or method not in TIME_SAMPLINGS:
        raise ValueError(
            f"method must be one of {tuple(TIME_SAMPLINGS)} or a sde.TimeSampling, "
            f"got method={method!r}"
        )
    return TIME_SAMPLINGS[method](**params)
