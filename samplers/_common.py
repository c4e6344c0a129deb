"""Pieces shared by every sampler: time grids, the reverse-time map, step control,
the additive-noise term and the count of score evaluations."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

import sde as sde_lib

from ._brownian import GridBrownianPath

ScoreFn = Callable[[Array, Array], Array]

# Every sampler integrates the reverse process forward in s = -t, from s = -T to
# s = -eps. Solvers then always step forwards, which sidesteps diffrax issue #598
# (ShARK, SRA1 and SEA are wrong with t0 > t1 in diffrax 0.7.2), and the reverse-time
# Brownian motion becomes an ordinary Brownian motion in s.


def check_eps(eps: float, name: str = "eps") -> None:
    if isinstance(eps, int | float) and not 0 < eps < sde_lib.AbstractSDE.T:
        raise ValueError(f"{name} must lie in (0, T) = (0, 1), got {name}={eps!r}")


def check_tolerances(rtol: float, atol: float) -> None:
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, int | float) and not (0 < v < 1):
            raise ValueError(f"{name} must lie in (0, 1), got {name}={v!r}")


def time_grid(steps: int | None, ts: ArrayLike | None, t_start: float, t_end: float):
    """The fixed grid in t from ``t_start`` to ``t_end``, or ``None`` (adaptive).

    ``steps=N`` gives ``N`` uniform steps; ``ts`` is used as given (its end points
    override ``t_start`` and ``t_end``) and must run in the same direction.
    """
    if steps is not None and ts is not None:
        raise ValueError("give at most one of steps= and ts=, got both")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
        return jnp.linspace(t_start, t_end, steps + 1)
    if ts is None:
        return None
    ts = jnp.asarray(ts, dtype=jnp.float32)
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


def stepping(grid, rtol: float, atol: float, span: float, s_grid: bool = True):
    """``(stepsize_controller, dt0)`` for a fixed grid or adaptive control.

    Adaptive solves start with ``dt0 = span / 100``: an explicit first step keeps the
    evaluation count a pure function of the step count (diffrax 0.7.2 skips its
    initial-step search for wrapped terms and uses 0.01 anyway).
    """
    if grid is not None:
        return diffrax.StepTo(ts=-grid if s_grid else grid), None
    return diffrax.PIDController(rtol=rtol, atol=atol, norm=batch_max_rms), span / 100


def reverse_pf_drift(score_fn: ScoreFn, sde):
    """The probability-flow ODE as a vector field in ``s = -t``."""

    def vf(s, x, args):
        t = jnp.full(x.shape[:1], -s, dtype=x.dtype)
        g2 = sde_lib.expand_time(sde.diffusion(t) ** 2, x)
        return -(sde.drift(x, t) - 0.5 * g2 * score_fn(x, t))

    return vf


class AdditiveNoiseTerm(diffrax.AbstractTerm):
    r"""``g(t) dW_s`` with ``t = -s``: a scalar diffusion times a Brownian motion of the
    state's shape. It does not depend on the state, so the additive-noise stochastic
    Runge-Kutta solvers (ShARK, SRA1, SEA, SPaRK) apply."""

    sde: sde_lib.AbstractSDE
    path: diffrax.AbstractBrownianPath

    def vf(self, t, y, args):
        return jnp.broadcast_to(self.sde.diffusion(-t), jnp.shape(y)).astype(y.dtype)

    def contr(self, t0, t1, **kwargs):
        return self.path.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return vf * control


def brownian_path(shape, key, solver, t0, t1, grid, tol: float):
    """Pre-split per-step keys on a fixed grid (in s); a virtual tree for adaptive steps."""
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


def reverse_sde_terms(score_fn: ScoreFn, sde, path) -> diffrax.MultiTerm:
    """The reverse SDE ``dx = -(f - g^2 score) ds + g dW_s`` in ``s = -t``."""

    def drift(s, x, args):
        t = jnp.full(x.shape[:1], -s, dtype=x.dtype)
        g2 = sde_lib.expand_time(sde.diffusion(t) ** 2, x)
        return -(sde.drift(x, t) - g2 * score_fn(x, t))

    return diffrax.MultiTerm(diffrax.ODETerm(drift), AdditiveNoiseTerm(sde, path))


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


def tweedie_denoise(score_fn: ScoreFn, sde, x: Array, t: float) -> Array:
    r"""One final denoising step :math:`E[x_0 | x_t] = (x_t + s^2 \nabla\log p_t)/a`."""
    tb = jnp.full(x.shape[:1], t, dtype=x.dtype)
    a, s = sde.marginal(tb)
    a, s = sde_lib.expand_time(a, x), sde_lib.expand_time(s, x)
    return (x + s**2 * score_fn(x, tb)) / a
