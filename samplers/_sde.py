"""Reverse-time SDE sampling."""

from __future__ import annotations

from typing import NamedTuple

import diffrax
import jax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from ._inputs import checked_eps, entry_point, finish_stats
from ._reverse import finish, reverse_sde_terms
from ._stepping import (
    bind,
    brownian_path,
    check_adaptive,
    check_solve,
    check_tolerances,
    count_evaluations,
    stepping,
    time_grid,
)


def split_sampling_key(key: PRNGKeyArray):
    """``(prior, Brownian path, corrector)`` keys, shared by ``sample_sde``, ``sample_pc``
    and ``sample_inpaint`` so that all see the same noise for the same key."""
    return jax.random.split(key, 3)


class ReverseSolve(NamedTuple):
    """What :func:`reverse_sde_solve` returns."""

    x: Array
    """The state at the end time."""
    num_steps: Array
    """Steps taken, accepted and rejected."""
    t_end: Array
    """The end time ``t`` (``eps``, or the grid's last time)."""


def reverse_sde_solve(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
    x_T: Array,
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver,
    grid: Array | None,
    eps: float,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    max_steps: int = 16384,
    brownian_tol: float = 2.0**-16,
    name: str = "sample_sde",
) -> ReverseSolve:
    """Solve the reverse SDE in ``s = -t`` from ``x_T``, on the fixed ``grid`` (times
    from T down to its last) or, with ``grid=None``, adaptively from ``sde.T`` to
    ``eps`` (``rtol``, ``atol``, ``max_steps``; the Brownian path resolved to
    ``brownian_tol``). ``key`` draws the Brownian path. An adaptive solve that stalls
    on a non-finite value raises, naming the time and the sampler ``name``."""
    adaptive = grid is None
    if adaptive:
        check_adaptive(solver)
    s0, s1 = (-sde.T, -eps) if adaptive else (-grid[0], -grid[-1])
    path = brownian_path(x_T.shape, key, solver, s0, s1, None if adaptive else -grid, brownian_tol)
    controller, dt0 = stepping(grid, rtol, atol, s1 - s0)
    sol = diffrax.diffeqsolve(
        reverse_sde_terms(score_fn, sde, path),
        solver,
        t0=s0,
        t1=s1,
        dt0=dt0,
        y0=x_T,
        stepsize_controller=controller,
        max_steps=max_steps if adaptive else grid.shape[0] - 1,
        adjoint=diffrax.ForwardMode(),
        saveat=diffrax.SaveAt(t1=True, controller_state=adaptive),
        throw=not adaptive,
    )
    x = check_solve(sol.ys[0], sol, name) if adaptive else sol.ys[0]
    return ReverseSolve(x, sol.stats["num_steps"], -s1)


@entry_point
def sample_sde(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
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
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""Sample by integrating the reverse-time SDE (Anderson 1982) from ``T`` to ``eps``.

    .. math:: dx = \left[f(x, t) - g(t)^2 \nabla_x \log p_t(x)\right] dt
        + g(t)\, d\bar w, \qquad x_T \sim p_T.

    It is solved forward in ``s = -t`` with any diffrax SDE solver: Euler
    (Euler-Maruyama), Heun, or the additive-noise stochastic Runge-Kutta solvers
    (ShARK, SRA1, SEA, SPaRK), which get the space-time Lévy area they need.

    Fixed steps (``steps=N`` uniform steps, or a ``ts`` grid from T down to eps) draw
    exact Brownian increments (:class:`GridBrownianPath`, one pre-split key per step:
    the fast path). Without them, steps are adaptive (``rtol``/``atol``, first step
    ``(T - eps) / 100``) on a ``VirtualBrownianTree`` resolved to ``brownian_tol``;
    that needs a solver with an error estimate (Heun, SPaRK).

    ``denoise`` finishes with Tweedie's denoiser, and ``check_finite=True`` raises on a
    NaN or inf sample, as in :func:`sample_ode`. Returns ``(x, stats)`` with
    ``stats["nfe"]`` the score evaluations spent and ``stats["finite"]`` whether every
    sample is finite.

    Example::

        x, stats = samplers.sample_sde(score_fn=oracle.score, sde=vp, shape=(512, 2),
                                       key=jax.random.key(0), steps=1000)
    """
    eps = checked_eps(eps, sde)
    check_tolerances(rtol, atol)
    grid = time_grid(steps, ts, sde.T, eps)
    solver = bind(solver, sde)  # solvers built on the SDE (SDEDPMSolverPP2M)
    prior_key, path_key, _ = split_sampling_key(key)
    sol = reverse_sde_solve(
        score_fn=score_fn,
        sde=sde,
        x_T=sde.prior_sample(prior_key, shape),
        key=path_key,
        solver=solver,
        grid=grid,
        eps=eps,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        brownian_tol=brownian_tol,
    )
    stats = {"nfe": count_evaluations(solver, sol.num_steps), "num_steps": sol.num_steps}
    x, stats = finish(score_fn, sde, sol.x, stats, t_end=sol.t_end, denoise=denoise)
    return finish_stats("sample_sde", x, stats, check_finite)
