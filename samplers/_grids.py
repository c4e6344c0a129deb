r"""Step grids: small functions returning the times ``T = t_0 > t_1 > ... > t_n = eps``.

Every grid is a 1-D float32 array of ``n + 1`` times (``n`` steps) that any sampler
takes as ``ts=``; its end points are exactly ``T`` and ``eps``. Swapping grids is one
word::

    ts = samplers.log_snr_grid(vp, 20)
    x, stats = samplers.sample_ode(score_fn=oracle.score, sde=vp, shape=(512, 2),
                                   key=jax.random.key(0), solver=samplers.DPMSolverPP2M(),
                                   ts=ts)

- :func:`uniform_grid`: uniform in :math:`t`;
- :func:`quadratic_grid`: uniform in :math:`\sqrt t`, denser near ``eps`` (DDIM's
  "quadratic" schedule);
- :func:`log_snr_grid`: uniform in :math:`\lambda = \log(a/s)` (DPM-Solver's
  ``logSNR`` spacing): every step of an exponential integrator spans the same
  :math:`h`;
- :func:`karras_grid`: uniform in :math:`\sigma^{1/\rho}`, :math:`\sigma = s/a`
  (EDM), denser near ``eps`` as ``rho`` grows.
- :func:`optimize_grid`: ``n`` steps tuned (Nelder-Mead on the log-SNR increments) so
  that a given solver tracks the exact probability-flow ODE on training prior draws.

The grids that depend on the SDE go through its log-SNR
:math:`\lambda(t) = \log a(t) - \log s(t)` and its inverse ``sde.log_snr_inverse``;
since :math:`\sigma = s/a = e^{-\lambda}`, a grid in :math:`\sigma` is one in
:math:`\lambda`. Arguments given as Python numbers are checked at once; ``n`` must be
a Python integer (it fixes the array's length).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

import sde as sde_lib


def _check(n, eps, T, T_max=math.inf) -> None:
    """``T_max`` is the SDE's final time ``sde.T`` for the grids built on an SDE."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (the number of steps) must be an integer >= 1, got n={n!r}")
    static = [isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (eps, T, T_max)]
    if static[1] and not (0 < T <= (T_max if static[2] else math.inf) and math.isfinite(T)):
        where = (
            "be a finite number > 0"
            if not static[2] or T_max == math.inf
            else f"lie in (0, sde.T] = (0, {T_max!r}]"
        )
        raise ValueError(f"T must {where}, got T={T!r}")
    if static[0] and not 0 < eps < (T if static[1] else T_max if static[2] else math.inf):
        raise ValueError(f"eps must lie in (0, T) = (0, {T!r}), got eps={eps!r}")


def _pin_ends(ts: Array, eps, T) -> Float[Array, " n_plus_1"]:
    """Exact end points (the maps back to ``t`` round them) in float32."""
    ts = jnp.asarray(ts, dtype=jnp.float32)
    return ts.at[0].set(T).at[-1].set(eps)


def _interpolate(start, end, n: int) -> Array:
    """``n + 1`` points from ``start`` to ``end``, evenly spaced, as
    ``((n - i) start + i end) / n``: accurate relative to each point's own size (the
    form ``start + (i/n)(end - start)`` loses the small end of a wide range)."""
    i = jnp.arange(n + 1, dtype=jnp.float32)
    return ((n - i) * start + i * end) / n


def uniform_grid(n: int, eps: float = 1e-3, T: float = 1.0) -> Float[Array, " n_plus_1"]:
    r"""``n`` equal steps in :math:`t` from ``T`` down to ``eps`` (what ``steps=n`` uses).

    .. math:: t_i = T + \tfrac{i}{n} (\epsilon - T), \qquad i = 0, \dots, n.

    Example::

        ts = samplers.uniform_grid(100, eps=1e-3)     # ts[0] == 1, ts[-1] == 1e-3
    """
    _check(n, eps, T)
    return _pin_ends(_interpolate(T, eps, n), eps, T)


def quadratic_grid(n: int, eps: float = 1e-3, T: float = 1.0) -> Float[Array, " n_plus_1"]:
    r"""``n`` steps uniform in :math:`\sqrt t`: quadratically denser near ``eps``.

    .. math:: t_i = \left(\sqrt T + \tfrac{i}{n}\left(\sqrt\epsilon - \sqrt T\right)
        \right)^2,

    the continuous-time form of DDIM's "quadratic" skip schedule (Song, Meng and
    Ermon 2021), which spaces the timesteps as :math:`c\, i^2`.

    Example::

        ts = samplers.quadratic_grid(20)
    """
    _check(n, eps, T)
    root = _interpolate(jnp.sqrt(jnp.float32(T)), jnp.sqrt(jnp.float32(eps)), n)
    return _pin_ends(root**2, eps, T)


def log_snr_grid(
    sde: sde_lib.AbstractSDE, n: int, eps: float = 1e-3, T: float | None = None
) -> Float[Array, " n_plus_1"]:
    r"""``n`` steps uniform in the log-SNR :math:`\lambda(t) = \log(a(t)/s(t))`.

    .. math:: \lambda_i = \lambda(T) + \tfrac{i}{n}\left(\lambda(\epsilon) - \lambda(T)
        \right), \qquad t_i = \lambda^{-1}(\lambda_i),

    DPM-Solver's ``logSNR`` spacing (Lu et al. 2022): each step of an exponential
    integrator then spans the same :math:`h = \lambda_i - \lambda_{i-1}`.
    For VE, :math:`\lambda = -\log\sigma(t)` is linear in ``t`` and this is
    :func:`uniform_grid`.

    Example::

        ts = samplers.log_snr_grid(sde.VPSDE(), 20)
    """
    T = sde.T if T is None else T  # default: the SDE's final time
    _check(n, eps, T, sde.T)
    lam_T = sde.log_snr(jnp.asarray(T, jnp.float32))
    lam_eps = sde.log_snr(jnp.asarray(eps, jnp.float32))
    lam = _interpolate(lam_T, lam_eps, n)
    return _pin_ends(sde.log_snr_inverse(lam), eps, T)


def karras_grid(
    sde: sde_lib.AbstractSDE,
    n: int,
    eps: float = 1e-3,
    T: float | None = None,
    rho: float = 7.0,
) -> Float[Array, " n_plus_1"]:
    r"""The grid of Karras et al. (2022, eq. 5): ``n`` steps uniform in
    :math:`\sigma^{1/\rho}`, with the noise level :math:`\sigma = s/a = e^{-\lambda}`.

    .. math:: \sigma_i = \left(\sigma_{max}^{1/\rho} + \tfrac{i}{n}
        \left(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}\right)\right)^{\rho},
        \qquad t_i = \lambda^{-1}(-\log\sigma_i),

    with :math:`\sigma_{max} = \sigma(T)`, :math:`\sigma_{min} = \sigma(\epsilon)`.
    ``rho = 7`` is EDM's choice; ``rho = 1`` is uniform in :math:`\sigma`, and
    :math:`\rho \to \infty` tends to :func:`log_snr_grid`.

    Example::

        ts = samplers.karras_grid(sde.VESDE(), 18, rho=7.0)
    """
    T = sde.T if T is None else T  # default: the SDE's final time
    _check(n, eps, T, sde.T)
    if isinstance(rho, numbers.Real) and not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number > 0, got rho={rho!r}")
    # Work with log sigma = -lambda: sigma^(1/rho) = exp(-lambda / rho), no overflow.
    root_max = jnp.exp(-sde.log_snr(jnp.asarray(T, jnp.float32)) / rho)
    root_min = jnp.exp(-sde.log_snr(jnp.asarray(eps, jnp.float32)) / rho)
    root = _interpolate(root_max, root_min, n)
    lam = -rho * jnp.log(root)
    return _pin_ends(sde.log_snr_inverse(lam), eps, T)


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
    import diffrax
    import numpy as np

    from ._ode import sample_ode

    lam_T = sde.log_snr(jnp.asarray(sde.T, jnp.float32))
    lam_eps = sde.log_snr(jnp.asarray(eps, jnp.float32))
    start = log_snr_grid(sde, n, eps) if init is None else jnp.asarray(init, jnp.float32)
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
                sde, jnp.asarray(logits, jnp.float32), lam_T, lam_eps, eps, sde.T
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
    return _lambda_increments_grid(sde, jnp.asarray(z, jnp.float32), lam_T, lam_eps, eps, sde.T)
