"""Correctors: moves at a fixed time ``t`` towards :math:`p_t`, run before each
predictor step (Song et al. 2021, Algorithms 2-4)."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from sde import ScoreFn

from .._inputs import call_score


def _norm(v: Array) -> Array:
    return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


class AbstractCorrector(eqx.Module):
    r"""A corrector: moves a state ``x`` at a fixed time ``t`` towards :math:`p_t`
    (score_sde's ``Corrector``), run by :class:`PredictorCorrector` before each
    predictor step.

    A subclass gives ``score_evaluations``, the score evaluations one call spends (so
    that ``stats["nfe"]`` stays exact), and ``__call__(score_fn, sde, x, t, h, key)``,
    with ``t`` the step's start time and ``h > 0`` the predictor's step length in
    ``t``. See ``docs/extending.md``.
    """

    @property
    @abc.abstractmethod
    def score_evaluations(self) -> int:
        """Score evaluations per call (0: the corrector is skipped)."""

    @abc.abstractmethod
    def __call__(self, score_fn: ScoreFn, sde, x: Array, t: Array, h: Array, key) -> Array:
        """The corrected state."""


class LangevinCorrector(AbstractCorrector):
    r"""Annealed Langevin dynamics at a fixed time ``t`` (Song et al. 2021, Alg. 4).

    Each of ``n_steps`` iterations draws ``z ~ N(0, I)`` and moves

    .. math:: x \leftarrow x + \epsilon \nabla_x \log p_t(x) + \sqrt{2\epsilon}\, z,
        \qquad \epsilon = 2 \alpha \left(r \frac{\|z\|}{\|\nabla_x \log p_t(x)\|}
        \right)^2,

    with ``r = snr``. ``alpha`` is the squared ratio of mean coefficients across the
    predictor's step, :math:`(a(t)/a(t-h))^2 \approx 1 - \beta(t) h` for VP (score_sde's
    ``alphas``) and 1 for VE. As in score_sde the norms are per-sample norms averaged
    over the batch, so one step size serves the batch: per-sample step sizes blow up
    for a sample whose score is near zero (close to a mode), which in low dimensions
    throws it to another mode. One score evaluation per iteration. Example::

        x, stats = samplers.sample_pc(score_fn=oracle.score, sde=ve, shape=(512, 2),
                                      key=key, corrector=samplers.LangevinCorrector(
                                          snr=0.16, n_steps=1))
    """

    snr: float = 0.16
    n_steps: int = 1

    def __check_init__(self):
        if isinstance(self.snr, int | float) and not self.snr >= 0:
            raise ValueError(f"snr must be >= 0, got snr={self.snr!r}")
        if not isinstance(self.n_steps, int) or self.n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {self.n_steps!r}")

    @property
    def score_evaluations(self) -> int:
        return self.n_steps

    def __call__(self, score_fn, sde, x: Array, t: Array, h: Array, key) -> Array:
        tb = jnp.full(x.shape[:1], t, dtype=x.dtype)
        alpha = jnp.exp(2.0 * (sde.log_mean_coeff(t) - sde.log_mean_coeff(t - h)))
        for k in jax.random.split(key, self.n_steps):
            grad = call_score(score_fn, x, tb)
            z = jax.random.normal(k, x.shape, x.dtype)
            step = 2.0 * alpha * (self.snr * _norm(z).mean() / _norm(grad).mean()) ** 2
            x = x + step * grad + jnp.sqrt(2.0 * step) * z
        return x
