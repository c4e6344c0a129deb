r"""EDM's deterministic (Heun) and stochastic (churn) samplers (Karras, Aittala, Aila and
Laine 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
Algorithms 1 and 2).

**Scaled variable.** For a linear SDE with kernel :math:`x_t = a(t) x_0 + s(t) z`, the
scaled state :math:`\tilde x = x/a` at noise level :math:`\sigma = s/a = e^{-\lambda}`
follows the same probability-flow ODE whatever the SDE (Karras et al. 2022, eq. 4 with
:math:`s(t) = 1`):

.. math:: \frac{d\tilde x}{d\sigma} = \frac{\tilde x - D(\tilde x; \sigma)}{\sigma}
    = -a\,\sigma\, \nabla\log p_t(a \tilde x), \qquad
    D(\tilde x; \sigma) = E[x_0 \mid x_t = a\tilde x]
    = \tilde x + a\sigma^2\, \nabla\log p_t(a\tilde x),

with :math:`t = \lambda^{-1}(-\log\sigma)` the SDE's time at noise level
:math:`\sigma`. The sampler steps this ODE in :math:`\sigma` and evaluates the score at
:math:`(a\tilde x, t)`, so it runs on :class:`sde.EDMSDE` (where :math:`a = 1`,
:math:`\sigma = t`: EDM exactly) and on any other linear SDE (VP, sub-VP, VE) alike. The
slope is formed as :math:`-a\sigma\,\nabla\log p_t` rather than
:math:`(\tilde x - D)/\sigma`, which would cancel two large numbers at high noise.

**Grid and NFE.** ``steps=N`` means what it means in every sampler: ``N`` steps from
``T`` down to ``eps``, here on EDM's grid (their eq. 5; :func:`samplers.karras_grid`
with ``N`` steps),

.. math:: \sigma_{i} = \Big(\sigma_{max}^{1/\rho} + \tfrac{i}{N}
    \big(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}\big)\Big)^{\rho},
    \qquad i = 0, \dots, N,

with :math:`\sigma_{max} = \sigma(T)`, :math:`\sigma_{min} = \sigma(\epsilon)`; ``ts=``
takes any other grid. Each of these steps is a Heun step (2 score evaluations;
``solver=diffrax.Euler()``: an Euler step, 1). ``denoise=True`` adds EDM's last step, an
Euler step from :math:`\sigma_N` to :math:`\sigma = 0` (1 evaluation; the slope
:math:`d\tilde x/d\sigma` is not defined at 0), which lands exactly on
:math:`D(\tilde x_N; \sigma_N)`: Tweedie's denoiser, as ``denoise`` gives in the other
samplers. Hence **NFE = 2N** (**2N + 1** with ``denoise``). EDM's CIFAR-10 setting, 18
noise levels and 35 evaluations, is ``steps=17, denoise=True, eps=edm.sigma_min``;
``steps=0, denoise=True`` is the single Euler step from :math:`\sigma(T)` to 0.

**Churn.** Algorithm 2 first raises the noise of each state,
:math:`\hat\sigma_i = (1 + \gamma_i)\sigma_i` with
:math:`\gamma_i = \min(S_\text{churn}/N, \sqrt2 - 1)` where
:math:`\sigma_i \in [S_{tmin}, S_{tmax}]` (else 0), by adding fresh noise
:math:`\hat x = \tilde x_i + \sqrt{\hat\sigma_i^2 - \sigma_i^2}\, S_\text{noise}\,
\epsilon`, then takes the ODE step from :math:`\hat\sigma_i` to :math:`\sigma_{i+1}`.
With an exact score and :math:`S_\text{noise} = 1`, the added noise turns a sample of
:math:`p_{\sigma_i}` into one of :math:`p_{\hat\sigma_i}` exactly, and the ODE step then
carries it to :math:`p_{\sigma_{i+1}}`: the churn itself adds no bias.
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn
from sde._checks import check_at_least
from sde._checks import check_finite as finite_number

from ._grids import karras_grid
from ._inputs import call_score, checked_eps, entry_point, finish_stats
from ._stepping import check_steps, time_grid

DEFAULT_STEPS = 18


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {name}={value!r}")


def _is_heun(solver) -> bool:
    """``True`` for ``diffrax.Heun()``, ``False`` for ``diffrax.Euler()``; the steps are
    EDM's own, in sigma, so only these two (exactly: no wrappers) are accepted."""
    if type(solver) is diffrax.Heun:
        return True
    if type(solver) is diffrax.Euler:
        return False
    raise ValueError(
        "sample_edm takes solver=diffrax.Heun() (EDM's second-order step, 2 evaluations) "
        f"or diffrax.Euler() (1 evaluation), got solver={type(solver).__name__}(); for "
        "another ODE solver on EDM's grid use samplers.sample_ode(solver=..., "
        "ts=samplers.karras_grid(sde, N, eps))"
    )


def _sigma(sde, t: Array) -> Array:
    r""":math:`\sigma(t) = s/a = e^{-\lambda(t)}`."""
    return jnp.exp(-sde.log_snr(t))


def _edm_times(sde, steps, ts, eps, rho, denoise):
    """The times of the positive noise levels, ``T = t_0 > ... > t_N``."""
    if steps is None and ts is None:
        steps = DEFAULT_STEPS
    if ts is not None:
        return time_grid(steps, ts, sde.T, eps)
    if steps == 0 and denoise:  # the single Euler step from sigma(T) to sigma = 0
        return jnp.full((1,), sde.T, dtype=float)
    check_steps(steps, hint=" (or 0 with denoise=True)")
    return karras_grid(sde, steps, eps, sde.T, rho)


@entry_point
def sample_edm(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Heun(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    eps: float = 1e-3,
    denoise: bool = False,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    rho: float = 7.0,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""EDM sampling: Heun steps in the noise level :math:`\sigma`, with optional churn.

    Algorithm 1 of Karras et al. (2022) with ``denoise=True`` (``s_churn=0``:
    deterministic, a function of ``key`` through the prior draw only), Algorithm 2 with
    ``s_churn > 0``. See the module docstring for the maths.

    Args:
        score_fn: pure ``score_fn(x, t)`` with ``x: [B, *dims]``, ``t: [B]``.
        sde: any linear SDE; :class:`sde.EDMSDE` gives EDM exactly (:math:`t = \sigma`).
        shape: ``(B, *dims)`` of the samples.
        key: PRNG key: the prior draw's key, as in :func:`sample_ode` (same key, same
            ``x_T``, with or without churn); the churn noise uses
            ``jax.random.fold_in(key, 1)``.
        solver: ``diffrax.Heun()`` (EDM's second-order step, 2 evaluations) or
            ``diffrax.Euler()`` (1 evaluation); the steps are taken in :math:`\sigma` by
            this function, so no other solver is accepted.
        steps: ``N`` steps from ``T`` down to ``eps`` on EDM's grid
            (``ts=samplers.karras_grid(sde, N, eps, rho=rho)``), as ``steps`` means in
            :func:`sample_ode` (default 18 when ``ts`` is not given). ``NFE = 2N`` with
            Heun, ``N`` with Euler, plus 1 with ``denoise``. ``steps=0`` with
            ``denoise=True`` is the single Euler step from :math:`\sigma(T)` to 0.
        ts: instead of ``steps``, any grid of times from ``T`` down to its last time
            (used as given, as in the other samplers).
        eps: the last time of the ``steps`` grid, default ``1e-3`` as in the other
            samplers; EDM's :math:`\sigma_{min}` is ``eps=edm.sigma_min`` (0.002).
        denoise: finish with EDM's Euler step to :math:`\sigma = 0` (Tweedie's
            denoiser, one evaluation, as ``denoise`` in the other samplers); ``False``
            returns :math:`x` at the grid's last time.
        s_churn, s_tmin, s_tmax, s_noise: Algorithm 2's :math:`S_\text{churn} \ge 0`,
            the range :math:`[S_{tmin}, S_{tmax}]` of noise levels :math:`\sigma` that
            get churned, and the noise inflation :math:`S_\text{noise}`. EDM's
            ImageNet-64 settings: ``s_churn=40, s_tmin=0.05, s_tmax=50,
            s_noise=1.003``. Algorithm 2's :math:`N` in :math:`S_\text{churn}/N` is the
            number of steps including the last one (``steps + 1`` with ``denoise``).
        rho: the Karras grid's exponent for ``steps``.
        check_finite: raise if any sample is NaN or inf (as in :func:`sample_ode`).

    Returns:
        ``(x, stats)``: samples in the SDE's variable (at :math:`\sigma = 0`, i.e.
        estimates of :math:`x_0`, with ``denoise``), ``stats["nfe"]`` the score
        evaluations spent, ``stats["num_steps"]`` the steps taken (the last one
        included), ``stats["finite"]`` whether every sample is finite.

    Example (EDM's CIFAR-10 setting: 18 noise levels, 35 evaluations)::

        edm = sde.EDMSDE()
        x, stats = samplers.sample_edm(score_fn=oracle.score, sde=edm, shape=(512, 2),
                                       key=jax.random.key(0), steps=17, denoise=True,
                                       eps=edm.sigma_min)
        stats["nfe"]  # 35
    """
    if not isinstance(sde, sde_lib.AbstractSDE):
        raise ValueError(f"sde must be an sde.AbstractSDE, got sde={sde!r}")
    heun = _is_heun(solver)
    _check_flag("denoise", denoise)
    eps = checked_eps(eps, sde)
    s_churn = check_at_least("s_churn", s_churn, 0.0)
    s_tmin = check_at_least("s_tmin", s_tmin, 0.0)
    s_tmax = check_at_least("s_tmax", s_tmax, s_tmin, allow_inf=True)
    s_noise = check_at_least("s_noise", s_noise, 0.0)
    rho = finite_number("rho", rho, positive=True)

    times = _edm_times(sde, steps, ts, eps, rho, denoise)
    n_heun = times.shape[0] - 1  # steps between positive noise levels
    n_total = n_heun + int(denoise)  # EDM's N
    gamma_max = min(s_churn / n_total, math.sqrt(2.0) - 1.0)
    # The prior draw uses ``key`` itself, as sample_ode does (same key, same x_T, with or
    # without churn); the churn noise comes from a key folded out of it.
    k_prior, k_churn = key, jax.random.fold_in(key, 1)
    step_keys = jax.random.split(k_churn, n_total)

    x_T = sde.prior_sample(k_prior, shape)
    dtype = x_T.dtype
    times = times.astype(dtype)
    sigmas = _sigma(sde, times)

    def slope(x_tilde, sigma, t):
        r""":math:`d\tilde x/d\sigma = -a\sigma\,\nabla\log p_t(a\tilde x)`, at ``[B]``."""
        tb = jnp.broadcast_to(t, shape[:1])
        a = sde.mean_coeff(t)
        return -(a * sigma) * call_score(score_fn, a * x_tilde, tb)

    def churn(x_tilde, sigma, t, k):
        """Algorithm 2, lines 4-6: raise the noise level to sigma_hat = (1 + gamma) sigma."""
        if s_churn == 0.0:
            return x_tilde, sigma, t
        in_range = (sigma >= s_tmin) & (sigma <= s_tmax)
        gamma = jnp.where(in_range, gamma_max, 0.0).astype(dtype)
        sigma_hat = sigma * (1 + gamma)
        t_hat = jnp.where(gamma > 0, sde.log_snr_inverse(-jnp.log(sigma_hat)), t)
        eps_i = s_noise * jax.random.normal(k, shape, dtype)
        x_hat = x_tilde + sigma * jnp.sqrt(gamma * (2 + gamma)) * eps_i  # sqrt(sh^2 - s^2)
        return x_hat, sigma_hat, t_hat.astype(dtype)

    def step(x_tilde, inputs):
        """One step from sigma_cur to sigma_next > 0 (Algorithm 2, lines 3-10)."""
        t_cur, t_next, sigma_cur, sigma_next, k = inputs
        x_hat, sigma_hat, t_hat = churn(x_tilde, sigma_cur, t_cur, k)
        d_cur = slope(x_hat, sigma_hat, t_hat)
        x_next = x_hat + (sigma_next - sigma_hat) * d_cur  # Euler step
        if heun:  # 2nd-order correction (sigma_next > 0 on every scanned step)
            d_prime = slope(x_next, sigma_next, t_next)
            x_next = x_hat + (sigma_next - sigma_hat) * (0.5 * d_cur + 0.5 * d_prime)
        return x_next, None

    x_tilde = x_T / sde.mean_coeff(times[0])
    inputs = (times[:-1], times[1:], sigmas[:-1], sigmas[1:], step_keys[:n_heun])
    x_tilde, _ = jax.lax.scan(step, x_tilde, inputs)
    if denoise:  # the last step, to sigma = 0, is Euler: x_hat - sigma_hat * d = D(x_hat)
        x_hat, sigma_hat, t_hat = churn(x_tilde, sigmas[-1], times[-1], step_keys[-1])
        x = x_hat - sigma_hat * slope(x_hat, sigma_hat, t_hat)
    else:
        x = sde.mean_coeff(times[-1]) * x_tilde
    per_step = 2 if heun else 1
    stats = {
        "nfe": jnp.asarray(per_step * n_heun + int(denoise), jnp.int32),
        "num_steps": jnp.asarray(n_total, jnp.int32),
    }
    return finish_stats("sample_edm", x, stats, check_finite)
