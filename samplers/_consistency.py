r"""Few-step sampling with a consistency function, and the teacher's one ODE step that
consistency distillation and progressive distillation take.

Multistep consistency sampling (Song et al. 2023, Algorithm 1), for a grid
:math:`T = t_0 > t_1 > \dots > t_N = \epsilon`: draw :math:`x \sim p_T`, take
:math:`\hat x = f(x, t_0)`, and for :math:`n = 1, \dots, N-1` re-noise the estimate of
the trajectory's end to :math:`t_n` with the exact kernel from :math:`\epsilon` to
:math:`t_n` and map it back,

.. math:: x_{t_n} = \frac{a_n}{a_\epsilon} \hat x
    + \sqrt{s_n^2 - \Big(\frac{a_n}{a_\epsilon}\Big)^2 s_\epsilon^2}\; z_n, \qquad
    \hat x = f(x_{t_n}, t_n),

one network evaluation per step. With the exact consistency function of the data
every step returns an exact sample of :math:`p_\epsilon`.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import networks
import sde as sde_lib

from ._grids import log_snr_grid
from ._inputs import checked_eps, entry_point, finish_stats
from ._reverse import reverse_pf_drift
from ._stepping import bind, check_steps, time_grid


@entry_point
def sample_consistency(
    *,
    sde: sde_lib.AbstractSDE,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    consistency_fn=None,
    score_fn=None,
    steps: int | None = None,
    ts: ArrayLike | None = None,
    eps: float = 1e-3,
    sigma_data: float = 0.5,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""``steps`` (default 1) or ``ts`` steps of multistep consistency sampling (module
    docstring), from ``T`` to ``eps``.

    Args:
        sde: the forward process.
        shape, key: ``(B, *dims)`` of the samples and the key of the prior draw and
            of the re-noising.
        consistency_fn: ``f(x, t)``, mapping ``x_t`` to the trajectory's end at ``eps``
            (e.g. :class:`networks.ConsistencyFunction`); or
        score_fn: a score function, read as the consistency function
            :func:`networks.consistency_function` ``(score_fn, sde, eps, sigma_data)``
            (a student trained by ``scoresde distill --method cd|ect``).
        steps: network evaluations on the grid uniform in log-SNR
            (:func:`samplers.log_snr_grid`) from ``T`` to ``eps``; or
        ts: the grid, from ``T`` down to ``eps`` (its last point is the end time).
        check_finite: raise on a non-finite sample.

    Returns:
        ``(x, stats)``: samples of (the model of) :math:`p_\epsilon`;
        ``stats["nfe"]`` = ``len(ts) - 1`` evaluations, ``stats["finite"]``.

    Example::

        f = networks.ConsistencyFunction(run.score_function(), vp, eps=1e-3)
        x, stats = samplers.sample_consistency(consistency_fn=f, sde=vp, shape=(64, 2),
                                               key=jax.random.key(0), steps=2)
    """
    if (consistency_fn is None) == (score_fn is None):
        raise ValueError("give exactly one of consistency_fn= and score_fn=")
    eps = checked_eps(eps, sde)
    if consistency_fn is None:
        consistency_fn = networks.consistency_function(score_fn, sde, eps, sigma_data)
    if steps is None and ts is None:
        steps = 1
    if steps is not None and ts is None:
        check_steps(steps)
        ts = log_snr_grid(sde, int(steps), eps=eps)
    grid = time_grid(None, ts, sde.T, eps)
    end = grid[-1]
    key_prior, key_noise = jax.random.split(key)
    x = sde.prior_sample(key_prior, shape)
    batch = (shape[0],)
    x0 = consistency_fn(x, jnp.full(batch, grid[0], x.dtype))
    a_end, s_end = sde.marginal(end)

    def renoise(x0, inputs):
        t, k = inputs
        a, s = sde.marginal(t)
        ratio = a / a_end
        std = jnp.sqrt(jnp.maximum(s**2 - (ratio * s_end) ** 2, 0.0))
        x_t = ratio * x0 + std * jax.random.normal(k, shape, x0.dtype)
        return consistency_fn(x_t, jnp.full(batch, t, x0.dtype)), None

    n_inner = grid.shape[0] - 2
    if n_inner > 0:
        keys = jax.random.split(key_noise, n_inner)
        x0, _ = jax.lax.scan(renoise, x0, (grid[1:-1].astype(x0.dtype), keys))
    stats = {"nfe": jnp.asarray(grid.shape[0] - 1)}
    return finish_stats("sample_consistency", x0, stats, check_finite)


def pf_ode_step(score_fn, sde: sde_lib.AbstractSDE, solver: diffrax.AbstractSolver):
    r"""``step(x, t_from, t_to)``: one step of ``solver`` on the probability-flow ODE
    of ``score_fn``, per example (``t_from``, ``t_to`` of shape ``[B]``), as
    :func:`samplers.sample_ode` takes it: a teacher's step for consistency distillation
    (Heun, EDM's choice; or this library's exponential integrators, e.g.
    ``samplers.DPMSolverPP2S()``; a multistep solver takes its first, lowest-order step).

    Each example is its own one-step solve (``vmap`` over the batch, so a network sees
    the batch at once); ``labels`` (``[B]``, for a class-conditional ``score_fn(x, t,
    labels)``) are mapped with their examples. Example::

        step = samplers.pf_ode_step(oracle.score, vp, diffrax.Heun())
        x_next = step(x, jnp.full(16, 0.5), jnp.full(16, 0.4))
    """
    solver = bind(solver, sde)

    def one(x, t_from, t_to, label):
        def score(y, t):  # the solver's batch of one, its time a scalar
            t = jnp.broadcast_to(t, y.shape[:1])
            return score_fn(y, t) if label is None else score_fn(y, t, label[None])

        term = diffrax.ODETerm(reverse_pf_drift(score, sde))
        s0, s1, y0 = -t_from, -t_to, x[None]
        state = solver.init(term, s0, s1, y0, None)
        y1, _, _, _, _ = solver.step(term, s0, s1, y0, None, state, made_jump=False)
        return y1[0]

    def step(x: Array, t_from: Array, t_to: Array, labels: Array | None = None) -> Array:
        t_from = jnp.broadcast_to(jnp.asarray(t_from, x.dtype), x.shape[:1])
        t_to = jnp.broadcast_to(jnp.asarray(t_to, x.dtype), x.shape[:1])
        if labels is None:
            return jax.vmap(lambda *a: one(*a, None))(x, t_from, t_to)
        return jax.vmap(one)(x, t_from, t_to, jnp.asarray(labels))

    return step
