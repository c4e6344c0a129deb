r"""One- and few-step sampling with MeanFlow's average velocity (Geng et al. 2025):
:math:`x_r = x_t - (t - r)\, u(x_t, r, t)` along a grid from ``T`` down to ``eps``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

import sde as sde_lib

from ._inputs import checked_eps, entry_point, finish_stats
from ._stepping import time_grid


@entry_point
def sample_meanflow(
    *,
    mean_flow,
    sde: sde_lib.AbstractSDE,
    shape: tuple[int, ...],
    key: PRNGKeyArray,
    steps: int | None = None,
    ts: ArrayLike | None = None,
    eps: float = 1e-3,
    check_finite: bool = False,
) -> tuple[Array, dict[str, Array]]:
    r"""``steps`` (default 1, uniform in t) or ``ts`` jumps of the average velocity
    ``mean_flow(x, r, t)`` (e.g. :class:`networks.MeanFlowFunction`) from a prior draw.

    Returns ``(x, stats)`` with ``stats["nfe"]`` = the number of jumps. With the exact
    average velocity every jump lands on the probability-flow trajectory. Example::

        x, stats = samplers.sample_meanflow(mean_flow=u, sde=rf, shape=(64, 2),
                                            key=jax.random.key(0), steps=2)
    """
    eps = checked_eps(eps, sde)
    if steps is None and ts is None:
        steps = 1
    grid = time_grid(steps, ts, sde.T, eps)
    x = sde.prior_sample(key, shape)
    batch = (shape[0],)

    def jump(x, times):
        t, r = times
        u = mean_flow(x, jnp.full(batch, r, x.dtype), jnp.full(batch, t, x.dtype))
        return x - (t - r) * u, None

    grid = grid.astype(x.dtype)
    x, _ = jax.lax.scan(jump, x, (grid[:-1], grid[1:]))
    return finish_stats("sample_meanflow", x, {"nfe": jnp.asarray(grid.shape[0] - 1)}, check_finite)
