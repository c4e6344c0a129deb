"""How a sampler steps: the time grid, step control, the Brownian path it draws its
noise from, and the count of score evaluations a solve spent."""

from __future__ import annotations

import math
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from ._brownian import GridBrownianPath


def check_tolerances(rtol: float, atol: float) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, int | float) and not (0 < v < 1):
            raise ValueError(f"{name} must lie in (0, 1), got {name}={v!r}")


def check_steps(steps, *, low: int = 1, hint: str = "") -> None:
    """``steps`` must be a Python integer ``>= low`` (it fixes an array's length)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < low:
        raise ValueError(f"steps must be an integer >= {low}{hint}, got steps={steps!r}")


def time_grid(steps: int | None, ts: ArrayLike | None, t_start: float, t_end: float):
    """The fixed grid in t from ``t_start`` to ``t_end``, or ``None`` (adaptive).

    ``steps=N`` gives ``N`` uniform steps; ``ts`` is used as given (its end points
    override ``t_start`` and ``t_end``) and must run in the same direction. Either
    way the grid has JAX's default float type (float64 under ``jax_enable_x64``), so
    that the time arithmetic is done at the state's precision.
    """
    if steps is not None and ts is not None:
        raise ValueError("give at most one of steps= and ts=, got both")
    if steps is not None:
        check_steps(steps)
        return jnp.linspace(t_start, t_end, steps + 1)
    if ts is None:
        return None
    ts = jnp.asarray(ts, dtype=float)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D grid of >= 2 times, got shape {ts.shape}")
    direction = 1.0 if t_end > t_start else -1.0
    return eqx.error_if(
        ts,
        jnp.any(direction * jnp.diff(ts) <= 0) | jnp.any((ts < 0) | (ts > max(t_start, t_end))),
        f"ts must be strictly monotone, inside [0, T] = [0, {max(t_start, t_end)}], running "
        + ("up (eps -> T)" if direction > 0 else "down (T -> eps)"),
    )


def batch_max_rms(y: PyTree[Array]) -> Array:
    """Step-control norm: the largest per-sample RMS over the batch.

    Every sample of a batch shares one step sequence, but each must meet the
    tolerance on its own, as if solved alone. (diffrax's default RMS over the whole
    batch would let a hard sample hide among easy ones.)
    """
    leaves = jax.tree_util.tree_leaves(y)
    b = leaves[0].shape[0]
    sq = sum(jnp.sum(jnp.reshape(leaf, (b, -1)) ** 2, axis=1) for leaf in leaves)
    n = sum(math.prod(leaf.shape[1:]) for leaf in leaves)
    return jnp.sqrt(jnp.max(sq) / n)


def check_adaptive(solver: diffrax.AbstractSolver) -> None:
    """Adaptive steps need an error estimate; say what to pass instead."""
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        name = type(solver).__name__
        raise ValueError(
            f"{name}() has no error estimate, so it takes fixed steps only (adaptive steps "
            "need a solver with an error estimate, e.g. Tsit5(), Heun(), SPaRK()): pass "
            "steps=N or ts=... (e.g. samplers.log_snr_grid(sde, N))"
        )


def stepping(grid, rtol: float, atol: float, span: float, s_grid: bool = True):
    """``(stepsize_controller, dt0)`` for a fixed grid or adaptive control.

    Adaptive solves start with ``dt0 = span / 100``: an explicit first step keeps the
    evaluation count a pure function of the step count (diffrax 0.7.2 skips its
    initial-step search for wrapped terms and uses 0.01 anyway).
    """
    if grid is not None:
        return diffrax.StepTo(ts=-grid if s_grid else grid), None
    return diffrax.PIDController(rtol=rtol, atol=atol, norm=batch_max_rms), span / 100


def bind(solver: diffrax.AbstractSolver, sde) -> diffrax.AbstractSolver:
    """The solver with the SDE handed over, for the solvers built on it (this library's
    exponential integrators define ``bind_sde``); any other solver as it is."""
    return solver.bind_sde(sde) if hasattr(solver, "bind_sde") else solver


def brownian_path(shape, key, solver, t0, t1, grid, tol: float):
    """Pre-split per-step keys on a fixed grid (in s); a virtual tree for adaptive steps.

    The path carries the Lévy area the innermost solver needs (ShARK, SRA1:
    space-time), through any wrappers (``diffrax.AbstractWrappedSolver``: HalfSolver,
    :class:`samplers.PredictorCorrector`)."""
    while isinstance(solver, diffrax.AbstractWrappedSolver):
        solver = solver.solver
    levy = getattr(solver, "minimal_levy_area", diffrax.BrownianIncrement)
    if levy is diffrax.AbstractSpaceTimeLevyArea:
        levy = diffrax.SpaceTimeLevyArea
    elif levy is diffrax.AbstractSpaceTimeTimeLevyArea:
        levy = diffrax.SpaceTimeTimeLevyArea
    elif levy is diffrax.AbstractBrownianIncrement:
        levy = diffrax.BrownianIncrement
    if grid is None:
        return diffrax.VirtualBrownianTree(t0, t1, tol, shape, key, levy_area=levy)
    if levy is diffrax.SpaceTimeTimeLevyArea:
        return diffrax.UnsafeBrownianPath(shape, key, levy_area=levy)
    return GridBrownianPath(shape, key, grid, levy_area=levy)


def evaluations_per_step(solver) -> tuple[int, int] | None:
    """``(vector-field evaluations per step, evaluations before the first step)``.

    Exact for explicit Runge-Kutta (FSAL or not), stochastic Runge-Kutta, Euler-type
    solvers and this library's own solvers (which define
    ``score_evaluations_per_step``); ``None`` where unknown.
    """
    own = getattr(solver, "score_evaluations_per_step", None)
    if own is not None:
        return own, 0
    if isinstance(solver, diffrax.HalfSolver):
        inner = evaluations_per_step(solver.solver)
        return None if inner is None else (3 * inner[0], inner[1])
    if isinstance(solver, diffrax.AbstractSRK):
        tab = solver.tableau
        stages = len(tab.b_sol)
        skipped = 0 if tab.ignore_stage_f is None else int(sum(tab.ignore_stage_f))
        return stages - skipped, 0
    if isinstance(solver, diffrax.AbstractRungeKutta):
        tab = solver.tableau
        if not isinstance(tab, diffrax.ButcherTableau) or tab.implicit:
            return None
        stages = len(tab.c) + 1
        return (stages - 1, 1) if tab.fsal else (stages, 0)
    if isinstance(
        solver,
        diffrax.Euler | diffrax.EulerHeun | diffrax.ItoMilstein | diffrax.StratonovichMilstein,
    ):
        return 1, 0
    if isinstance(solver, diffrax.ReversibleHeun):
        return 1, 1
    return None


def count_evaluations(solver, num_steps: Array) -> Array:
    """Vector-field evaluations a diffeqsolve spent (``-1`` where not countable);
    ``num_steps`` counts accepted and rejected steps."""
    per_step = evaluations_per_step(solver)
    if per_step is None:
        warnings.warn(
            f"cannot count score evaluations for solver {type(solver).__name__}; "
            "stats['nfe'] is -1",
            stacklevel=3,
        )
        return jnp.full_like(num_steps, -1)
    k, first = per_step
    return k * num_steps + first
