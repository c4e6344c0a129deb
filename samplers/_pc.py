"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2 and 3)."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib

from ._common import (
    ScoreFn,
    check_eps,
    count_evaluations,
    evaluations_per_step,
    time_grid,
    tweedie_denoise,
)
from ._sde import reverse_sde_solve, split_sampling_key


def _norm(v: Array) -> Array:
    return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


class LangevinCorrector(eqx.Module):
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
    throws it to another mode.
    """

    snr: float = 0.16
    n_steps: int = 1

    def __check_init__(self):
        if isinstance(self.snr, int | float) and not self.snr >= 0:
            raise ValueError(f"snr must be >= 0, got snr={self.snr!r}")
        if not isinstance(self.n_steps, int) or self.n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {self.n_steps!r}")

    def __call__(self, score_fn, sde, x: Array, t: Array, h: Array, key) -> Array:
        tb = jnp.full(x.shape[:1], t, dtype=x.dtype)
        alpha = jnp.exp(2.0 * (sde.log_mean_coeff(t) - sde.log_mean_coeff(t - h)))
        for k in jax.random.split(key, self.n_steps):
            grad = score_fn(x, tb)
            z = jax.random.normal(k, x.shape, x.dtype)
            step = 2.0 * alpha * (self.snr * _norm(z).mean() / _norm(grad).mean()) ** 2
            x = x + step * grad + jnp.sqrt(2.0 * step) * z
        return x


class WrapsPredictor(diffrax.AbstractItoSolver):
    """A solver that wraps a fixed-step ``predictor`` and takes its term structure,
    interpolation and Brownian-path needs (ShARK, SRA1: space-time Levy area)."""

    predictor: eqx.AbstractVar[diffrax.AbstractSolver]

    @property
    def term_structure(self):
        return self.predictor.term_structure

    @property
    def interpolation_cls(self):
        return self.predictor.interpolation_cls

    @property
    def minimal_levy_area(self):
        return getattr(self.predictor, "minimal_levy_area", diffrax.AbstractBrownianIncrement)

    @property
    def term_compatible_contr_kwargs(self):
        return self.predictor.term_compatible_contr_kwargs


class PredictorCorrector(WrapsPredictor):
    """A diffrax solver: a corrector at the step's start time, then the predictor.

    Works in the samplers' time ``s = -t``. The corrector's noise comes from a key
    carried in the solver state, split once per step.
    """

    predictor: diffrax.AbstractSolver
    corrector: LangevinCorrector
    score_fn: ScoreFn
    sde: sde_lib.AbstractSDE
    key: PRNGKeyArray

    @property
    def score_evaluations_per_step(self) -> int | None:
        inner = evaluations_per_step(self.predictor)
        return None if inner is None else inner[0] + self.corrector.n_steps

    def order(self, terms):
        return self.predictor.order(terms)

    def strong_order(self, terms):
        return self.predictor.strong_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.predictor.init(terms, t0, t1, y0, args), self.key

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, key = solver_state
        key, sub = jax.random.split(key)
        if self.corrector.n_steps > 0:
            y0 = self.corrector(self.score_fn, self.sde, y0, -t0, t1 - t0, sub)
        y1, y_error, dense, inner_state, result = self.predictor.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        return y1, y_error, dense, (inner_state, key), result

    def func(self, terms, t0, y0, args):
        return self.predictor.func(terms, t0, y0, args)


@eqx.filter_jit
def sample_pc(
    *,
    score_fn: ScoreFn,
    sde,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Euler(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    snr: float = 0.16,
    corrector_steps: int = 1,
    eps: float = 1e-3,
    denoise: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""Predictor-corrector sampling: a reverse-SDE step, preceded at each grid time by
    ``corrector_steps`` Langevin steps at signal-to-noise ratio ``snr``.

    The predictor is any fixed-step diffrax SDE solver (Euler-Maruyama by default, as
    score_sde's ``ReverseDiffusionPredictor``/``EulerMaruyamaPredictor``); the grid is
    ``steps`` uniform steps (default 1000) or ``ts`` from T down to eps. With
    ``corrector_steps=0`` this is exactly :func:`sample_sde` with the same key (``snr=0``
    gives the same samples but still spends the corrector's evaluations).
    ``stats["nfe"]`` counts predictor and corrector score evaluations.

    Example::

        x, stats = samplers.sample_pc(score_fn=oracle.score, sde=ve, shape=(512, 2),
                                      key=jax.random.key(0), steps=1000, snr=0.16)
    """
    check_eps(eps)
    if steps is None and ts is None:
        steps = 1000
    grid = time_grid(steps, ts, sde.T, eps)
    prior_key, path_key, corrector_key = split_sampling_key(key)
    pc = PredictorCorrector(
        predictor=solver,
        corrector=LangevinCorrector(snr=snr, n_steps=corrector_steps),
        score_fn=score_fn,
        sde=sde,
        key=corrector_key,
    )
    x_T = sde.prior_sample(prior_key, shape)
    x, num_steps, t_end = reverse_sde_solve(
        score_fn, sde, shape, path_key, pc, grid, eps, 1e-3, 1e-3, None, None, x_T
    )
    stats = {"nfe": count_evaluations(pc, num_steps), "num_steps": num_steps}
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, t_end)
        stats["nfe"] = stats["nfe"] + 1
    return x, stats
