r"""Step grids: small functions returning the times ``T = t_0 > t_1 > ... > t_n = eps``.

Every grid is a 1-D array of ``n + 1`` times (``n`` steps) that any sampler takes as
``ts=``, in JAX's default float type (float32, or float64 under ``jax_enable_x64``);
its end points are exactly ``T`` and ``eps``. Swapping grids is one
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
- :func:`optimize_grid` (``_grid_tuning.py``): ``n`` steps tuned (Nelder-Mead on the
  log-SNR increments) so that a given solver tracks the exact probability-flow ODE on
  training prior draws.

The grids that depend on the SDE go through its log-SNR
:math:`\lambda(t) = \log a(t) - \log s(t)` and its inverse ``sde.log_snr_inverse``;
since :math:`\sigma = s/a = e^{-\lambda}`, a grid in :math:`\sigma` is one in
:math:`\lambda`. Arguments given as Python numbers are checked at once; ``n`` must be
a Python integer (it fixes the array's length).
"""

from __future__ import annotations

import math
import numbers

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
    """Exact end points (the maps back to ``t`` round them)."""
    ts = jnp.asarray(ts, dtype=float)
    return ts.at[0].set(T).at[-1].set(eps)


def _interpolate(start, end, n: int) -> Array:
    """``n + 1`` points from ``start`` to ``end``, evenly spaced, as
    ``((n - i) start + i end) / n``: accurate relative to each point's own size (the
    form ``start + (i/n)(end - start)`` loses the small end of a wide range)."""
    i = jnp.arange(n + 1, dtype=float)
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
    root_T, root_eps = (jnp.sqrt(jnp.asarray(v, dtype=float)) for v in (T, eps))
    root = _interpolate(root_T, root_eps, n)
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
    lam_T = sde.log_snr(jnp.asarray(T, dtype=float))
    lam_eps = sde.log_snr(jnp.asarray(eps, dtype=float))
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
    root_max = jnp.exp(-sde.log_snr(jnp.asarray(T, dtype=float)) / rho)
    root_min = jnp.exp(-sde.log_snr(jnp.asarray(eps, dtype=float)) / rho)
    root = _interpolate(root_max, root_min, n)
    lam = -rho * jnp.log(root)
    return _pin_ends(sde.log_snr_inverse(lam), eps, T)
