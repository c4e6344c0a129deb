"""Probability-flow ODE sampling."""

from __future__ import annotations

import diffrax
import jax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from ._inputs import checked_eps, entry_point, finish_stats
from ._reverse import finish, reverse_pf_drift
from ._stepping import (
    bind,
    check_adaptive,
    check_solve,
    check_tolerances,
    count_evaluations,
    stepping,
    time_grid,
)


@entry_point
def sample_ode(
    *,
    score_fn: ScoreFn,
    sde: sde_lib.AbstractSDE,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    steps: int | None = None,
    ts: ArrayLike | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    denoise: bool = False,
    per_sample: bool = False,
    max_steps: int = 4096,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""Sample by integrating the probability-flow ODE from ``T`` down to ``eps``.

    .. math:: \frac{dx}{dt} = f(x, t) - \tfrac12 g(t)^2 \nabla_x \log p_t(x),
        \qquad x_T \sim p_T \text{ (the prior)}.

    Args:
        score_fn: pure ``score_fn(x, t)`` with ``x: [B, *dims]``, ``t: [B]``.
        sde: the forward process (e.g. ``sde.VPSDE()``).
        shape: ``(B, *dims)`` of the samples.
        key: PRNG key for the prior draw.
        solver: any diffrax ODE solver (Euler, Heun, Midpoint, Tsit5, Dopri5, ...), or
            one of this library's exponential integrators (``samplers.DDIM()``,
            ``DPMSolverPP2M()``, ``DPMSolverPP3M()``; fixed steps only), which receive
            the SDE through their ``bind_sde`` hook.
        steps, ts: fixed steps, uniform in t (``steps``) or on a grid running from T
            down to eps (``ts``, whose end points are used as given). With neither,
            step control is adaptive with ``rtol``/``atol``.
        eps: the final time; the samples follow ``p_eps``.
        denoise: finish with Tweedie's denoiser ``E[x_0 | x_eps]`` (one more score
            evaluation), as score_sde's ``noise_removal``.
        per_sample: adaptive steps chosen per sample (``vmap`` over samples) instead of
            one step sequence for the batch. Either way every sample meets the
            tolerance: the batch-joint control takes the worst sample's error.
        max_steps: cap on adaptive steps.
        check_finite: raise if any sample is NaN or inf (else ``stats["finite"]``
            only says so). An adaptive solve that meets a non-finite score raises
            either way, naming the time where it stalled.

    Returns:
        ``(x, stats)``: ``stats["nfe"]`` is the number of (batched) score
        evaluations spent, ``stats["num_steps"]`` the accepted and rejected steps,
        ``stats["finite"]`` whether every sample is finite.

    Example::

        x, stats = samplers.sample_ode(score_fn=oracle.score, sde=vp, shape=(512, 2),
                                       key=jax.random.key(0))
    """
    eps = checked_eps(eps, sde)
    check_tolerances(rtol, atol)
    grid = time_grid(steps, ts, sde.T, eps)
    if grid is None:
        check_adaptive(solver)
    solver = bind(solver, sde)  # solvers built on the SDE (exponential integrators)
    controller, dt0 = stepping(grid, rtol, atol, sde.T - eps)
    term = diffrax.ODETerm(reverse_pf_drift(score_fn, sde))
    s0, s1 = (-sde.T, -eps) if grid is None else (-grid[0], -grid[-1])

    def solve(y0):
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t0=s0,
            t1=s1,
            dt0=dt0,
            y0=y0,
            stepsize_controller=controller,
            max_steps=max_steps if grid is None else grid.shape[0] - 1,
            adjoint=diffrax.ForwardMode(),
            saveat=diffrax.SaveAt(t1=True, controller_state=grid is None),
            throw=grid is not None,
        )
        x = sol.ys[0] if grid is not None else check_solve(sol.ys[0], sol, "sample_ode")
        return x, sol.stats["num_steps"]

    x_T = sde.prior_sample(key, shape)
    if per_sample and grid is None:
        x, num_steps = jax.vmap(lambda y: solve(y[None]))(x_T)
        x = x[:, 0]
    else:
        x, num_steps = solve(x_T)
    nfe = count_evaluations(solver, num_steps)
    stats = {"nfe": nfe.max(), "num_steps": num_steps.max()}
    if per_sample and grid is None:
        stats["nfe_per_sample"] = nfe
    x, stats = finish(score_fn, sde, x, stats, t_end=-s1, denoise=denoise)
    return finish_stats("sample_ode", x, stats, check_finite)
