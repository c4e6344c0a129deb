"""Reverse-time SDE sampling."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ._common import (
    ScoreFn,
    brownian_path,
    check_eps,
    check_tolerances,
    count_evaluations,
    reverse_sde_terms,
    stepping,
    time_grid,
    tweedie_denoise,
)


def split_sampling_key(key: PRNGKeyArray):
    """``(prior, Brownian path, corrector)`` keys, shared by ``sample_sde`` and
    ``sample_pc`` so that both see the same noise for the same key."""
    return jax.random.split(key, 3)


def reverse_sde_solve(
    score_fn,
    sde,
    shape,
    key,
    solver,
    grid,
    eps,
    rtol,
    atol,
    max_steps,
    brownian_tol,
    x_T,
):
    """Solve the reverse SDE in ``s = -t``; returns ``(x, num_steps)``."""
    adaptive = grid is None
    if adaptive and not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"adaptive steps need a solver with an error estimate (Heun(), SPaRK()); "
            f"got {type(solver).__name__}(): pass steps=N or ts=... instead"
        )
    s0, s1 = (-sde.T, -eps) if adaptive else (-grid[0], -grid[-1])
    path = brownian_path(shape, key, solver, s0, s1, None if adaptive else -grid, brownian_tol)
    controller, _ = stepping(grid, rtol, atol, s1 - s0)
    sol = diffrax.diffeqsolve(
        reverse_sde_terms(score_fn, sde, path),
        solver,
        t0=s0,
        t1=s1,
        dt0=(s1 - s0) / 256 if adaptive else None,
        y0=x_T,
        stepsize_controller=controller,
        max_steps=max_steps if adaptive else grid.shape[0] - 1,
        adjoint=diffrax.ForwardMode(),
    )
    return sol.ys[0], sol.stats["num_steps"], -s1


@eqx.filter_jit
def sample_sde(
    *,
    score_fn: ScoreFn,
    sde,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Euler(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    eps: float = 1e-3,
    denoise: bool = False,
    max_steps: int = 16384,
    brownian_tol: float = 2.0**-16,
) -> tuple[Array, dict[str, Array]]:
    r"""Sample by integrating the reverse-time SDE (Anderson 1982) from ``T`` to ``eps``.

    .. math:: dx = \left[f(x, t) - g(t)^2 \nabla_x \log p_t(x)\right] dt
        + g(t)\, d\bar w, \qquad x_T \sim p_T.

    It is solved forward in ``s = -t`` with any diffrax SDE solver: Euler
    (Euler-Maruyama), Heun, or the additive-noise stochastic Runge-Kutta solvers
    (ShARK, SRA1, SEA, SPaRK), which get the space-time Lévy area they need.

    Fixed steps (``steps=N`` or a ``ts`` grid from T down to eps) draw exact Brownian
    increments (:class:`GridBrownianPath`, one pre-split key per step: the fast path).
    Without them, steps are adaptive (``rtol``/``atol``) on a ``VirtualBrownianTree`` resolved to
    ``brownian_tol``; that needs a solver with an error estimate (Heun, SPaRK).

    ``denoise`` finishes with Tweedie's denoiser, as in :func:`sample_ode`.
    Returns ``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent.

    Example::

        x, stats = samplers.sample_sde(score_fn=oracle.score, sde=vp, shape=(512, 2),
                                       key=jax.random.key(0), steps=1000)
    """
    check_eps(eps)
    check_tolerances(rtol, atol)
    grid = time_grid(steps, ts, sde.T, eps)
    if hasattr(solver, "bind_sde"):  # solvers built on the SDE (SDEDPMSolverPP2M)
        solver = solver.bind_sde(sde)
    prior_key, path_key, _ = split_sampling_key(key)
    x_T = sde.prior_sample(prior_key, shape)
    x, num_steps, t_end = reverse_sde_solve(
        score_fn,
        sde,
        shape,
        path_key,
        solver,
        grid,
        eps,
        rtol,
        atol,
        max_steps,
        brownian_tol,
        x_T,
    )
    stats = {"nfe": count_evaluations(solver, num_steps), "num_steps": num_steps}
    if denoise:
        x = tweedie_denoise(score_fn, sde, x, t_end)
        stats["nfe"] = stats["nfe"] + 1
    return x, stats
