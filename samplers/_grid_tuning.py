r"""A step grid tuned to a solver: the step-schedule optimisation of "Align Your
Steps" (Sabour, Fidler and Kreis 2024) and "Optimal Stepsize for Diffusion Sampling"
(Pei et al. 2025)."""

from __future__ import annotations

import numbers

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import sde as sde_lib

from ._grids import _check, _pin_ends, log_snr_grid


def _lambda_increments_grid(sde, logits: Array, lam_T: Array, lam_eps: Array, eps, T) -> Array:
    """The grid whose log-SNR increments are ``softmax(logits) (lam_eps - lam_T)``."""
    lam = lam_T + (lam_eps - lam_T) * jnp.concatenate(
        [jnp.zeros(1), jnp.cumsum(jax.nn.softmax(logits))]
    )
    return _pin_ends(sde.log_snr_inverse(lam), eps, T)


def optimize_grid(
    score_fn,
    sde: sde_lib.AbstractSDE,
    solver,
    n: int,
    *,
    key,
    shape: tuple[int, ...],
    eps: float = 1e-3,
    init: Array | None = None,
    warm_draws: int | None = 256,
    maxfev: int = 2500,
    ref_tol: float = 1e-7,
) -> Float[Array, " n_plus_1"]:
    r"""An ``n``-step grid tuned so that ``solver`` tracks the exact probability-flow
    ODE from the training draws of ``key``: the step-schedule optimisation of "Align
    Your Steps" (Sabour, Fidler and Kreis 2024) and "Optimal Stepsize for Diffusion
    Sampling" (Pei et al. 2025), which fit the steps to a teacher trajectory.

    The grid is parametrised by ``n`` free logits :math:`z` through its log-SNR
    increments, so every candidate runs from ``sde.T`` to ``eps`` and is strictly
    decreasing,

    .. math:: \lambda_i = \lambda(T) + \bigl(\lambda(\epsilon) - \lambda(T)\bigr)
        \sum_{j \le i} \operatorname{softmax}(z)_j, \qquad t_i = \lambda^{-1}(\lambda_i),

    and :math:`z` minimises the training error, the root-mean-square distance per
    coordinate between the solver's result :math:`x^{\text{grid}}(x_T)` and the
    reference :math:`x^{\star}(x_T)` (Tsit5, ``rtol = atol = ref_tol``) over the prior
    draws :math:`x_T` of ``sde.prior_sample(key, shape)``,

    .. math:: L(z) = \Bigl(\tfrac{1}{|x|} \sum \bigl(x^{\text{grid}}(x_T; z)
        - x^{\star}(x_T)\bigr)^2\Bigr)^{1/2},

    by Nelder-Mead (``scipy.optimize.minimize``, adaptive simplex, ``maxfev``
    evaluations of ``L``). With ``warm_draws < shape[0]``, a first pass fits ``warm_draws``
    prior draws of ``key`` (cheap, finds the shape of the schedule) and a second pass
    refines on ``shape[0]`` draws. The start ``init`` (default
    :func:`log_snr_grid`) is kept if nothing beats it, so ``L`` of the result is at
    most ``L`` of ``init`` on the training draws.

    The result is tuned to this score, SDE, solver, ``n`` and ``eps``: evaluate it on
    prior draws from another key. Cost: about ``2 maxfev`` sampler runs on the
    training draws plus two references.

    Example::

        ts = samplers.optimize_grid(oracle.score, vp, samplers.UniPC(), 10,
                                    key=jax.random.key(777), shape=(4096, 16))
    """
    _check(n, eps, sde.T, sde.T)
    if not isinstance(maxfev, numbers.Integral) or maxfev < 1:
        raise ValueError(f"maxfev must be an integer >= 1, got maxfev={maxfev!r}")
    if warm_draws is not None and not (
        isinstance(warm_draws, numbers.Integral) and warm_draws >= 1
    ):
        raise ValueError(
            f"warm_draws must be an integer >= 1 or None, got warm_draws={warm_draws!r}"
        )
    try:
        from scipy.optimize import minimize
    except ImportError as err:  # scipy ships with scikit-learn, a core dependency
        raise ImportError("optimize_grid needs scipy: pip install scipy") from err
    from ._ode import sample_ode

    lam_T = sde.log_snr(jnp.asarray(sde.T, dtype=float))
    lam_eps = sde.log_snr(jnp.asarray(eps, dtype=float))
    start = log_snr_grid(sde, n, eps) if init is None else jnp.asarray(init, dtype=float)
    if start.shape != (n + 1,):
        raise ValueError(f"init must have shape (n + 1,) = ({n + 1},), got {start.shape}")
    lam0 = np.asarray(sde.log_snr(start), np.float64)
    lam0[0], lam0[-1] = float(lam_T), float(lam_eps)
    if not np.all(np.diff(lam0) > 0):
        raise ValueError("init must be strictly decreasing from sde.T to eps")
    z_init = z = np.log(np.diff(lam0))
    common = dict(score_fn=score_fn, sde=sde, key=key, eps=eps)
    warm = [warm_draws] if warm_draws is not None and warm_draws < shape[0] else []
    for draws in warm + [shape[0]]:
        batch = (draws, *shape[1:])
        x_ref, _ = sample_ode(
            **common,
            shape=batch,
            solver=diffrax.Tsit5(),
            rtol=ref_tol,
            atol=ref_tol,
            max_steps=16384,
        )

        def loss(logits, batch=batch, x_ref=x_ref):
            ts = _lambda_increments_grid(
                sde, jnp.asarray(logits, dtype=float), lam_T, lam_eps, eps, sde.T
            )
            x, _ = sample_ode(**common, shape=batch, solver=solver, ts=ts)
            return float(jnp.sqrt(jnp.mean((x - x_ref) ** 2)))

        if loss(z_init) < loss(z):  # the warm pass did not help on these draws
            z = z_init
        found = minimize(
            loss,
            z,
            method="Nelder-Mead",
            options=dict(maxfev=maxfev, xatol=1e-3, fatol=1e-6, adaptive=True),
        )
        if found.fun < loss(z):
            z = found.x
    return _lambda_increments_grid(sde, jnp.asarray(z, dtype=float), lam_T, lam_eps, eps, sde.T)
