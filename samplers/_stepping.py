"""How a sampler steps: the time grid, step control, the Brownian path it draws its
noise from, and the count of score evaluations a solve spent."""

from __future__ import annotations

import math
import numbers
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from ._brownian import GridBrownianPath
from ._inputs import nonfinite_error_if


def check_tolerances(rtol: float, atol: float) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, int | float) and not (0 < v < 1):
            raise ValueError(f"{name} must lie in (0, 1), got {name}={v!r}")


def check_steps(steps, *, low: int = 1, hint: str = "") -> None:
    """``steps`` must be an integer ``>= low`` (it fixes an array's length): a
    ``numbers.Integral`` (numpy integers too) but not a bool, known before tracing."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < low:
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
        return jnp.linspace(t_start, t_end, int(steps) + 1)
    if ts is None:
        return None
    ts = jnp.asarray(ts, dtype=float)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D grid of >= 2 times, got shape {ts.shape}")
    up, T = _direction(t_start, t_end)
    return eqx.error_if(
        ts,
        ~jnp.all(jnp.isfinite(ts))
        | jnp.any((1.0 if up else -1.0) * jnp.diff(ts) <= 0)
        | jnp.any((ts < 0) | (ts > T)),
        f"ts must be finite, strictly monotone, inside [0, T] = [0, {T}], running "
        + ("up (eps -> T)" if up else "down (T -> eps)"),
    )


def _direction(t_start, t_end) -> tuple[bool, object]:
    """``(up, T)`` of a grid from ``t_start`` to ``t_end``, one of them ``eps`` (which
    may be traced) and the other the SDE's final time ``T``."""
    if isinstance(t_end, jax.core.Tracer):
        return False, t_start
    if isinstance(t_start, jax.core.Tracer):
        return True, t_end
    return t_end > t_start, max(t_start, t_end)


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
    pid = diffrax.PIDController(rtol=rtol, atol=atol, norm=batch_max_rms)
    return FiniteGuard(pid), span / 100


class FiniteGuard(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive step-size controller that notes where a step's error estimate was
    not finite, and ends the solve after ``patience`` such steps in a row.

    diffrax rejects a step whose error estimate is NaN or inf and shrinks the next one;
    a score that is NaN from some time on then makes it reject every step until
    ``max_steps``, and report only that. The guard keeps the time of the last such step
    (one scalar in the controller state, read back with ``SaveAt(controller_state=
    True)``) and stops after ``patience`` of them (the step shrunk by ``0.2**30``), so
    that :func:`check_solve` can say what happened and where. A step that recovers on a
    smaller step is not an error.
    """

    controller: diffrax.PIDController
    patience: int = eqx.field(static=True, default=30)

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        return FiniteGuard(self.controller.wrap(direction), self.patience)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        t_bad = jnp.full((), jnp.inf, dtype=jnp.result_type(tnext))
        return tnext, (state, t_bad, jnp.zeros((), jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        inner, t_bad, count = state
        keep, t0_next, t1_next, jump, inner, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner
        )
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(e)) for e in jax.tree.leaves(y_error)]))
        t_bad = jnp.where(finite, t_bad, t0).astype(t_bad.dtype)
        # Small accepted steps that creep up to where the score turns NaN (or make no
        # progress at all, once the step is below the time's resolution) do not reset
        # the count; a real step forward does.
        progressed = keep & (t0_next > t0)
        count = jnp.where(finite, jnp.where(progressed, 0, count), count + 1)
        result = diffrax.RESULTS.where(
            count >= self.patience, diffrax.RESULTS.dt_min_reached, result
        )
        return keep, t0_next, t1_next, jump, (inner, t_bad, count), result


def check_solve(value, sol, name: str, to_t=lambda s: -s):
    """``value``, raising where the adaptive solve ``sol`` failed: with the time
    (``t = to_t(solver time)``) where it last met a non-finite value, if it did; else
    with diffrax's own message. ``sol`` must have been solved with ``throw=False``
    and, for the time, ``SaveAt(t1=True, controller_state=True)`` and a
    :class:`FiniteGuard`. Runs once per solve, after it."""
    failed = sol.result != diffrax.RESULTS.successful
    state = sol.controller_state
    if isinstance(state, tuple) and len(state) == 3:
        t_bad = state[1]  # where the last non-finite step began
        nonfinite = failed & jnp.isfinite(t_bad)
        value = nonfinite_error_if(value, name, nonfinite, to_t(t_bad))
        failed = failed & ~nonfinite
    return sol.result.error_if(value, failed)


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
