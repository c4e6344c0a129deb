"""Brownian motion on a known grid of steps: one pre-split key per step."""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """Exact Brownian increments over the steps of a fixed, increasing grid.

    Step ``i`` (from ``grid[i]`` to ``grid[i+1]``) draws its increment
    ``W ~ N(0, dt I)`` (and, where a solver needs it, the space-time Lévy area
    ``H ~ N(0, dt/12 I)``) from its own key, split once up front. Per step this costs
    one normal draw, as a hand-written ``lax.scan`` does; ``UnsafeBrownianPath``
    derives each key from the step's times with two ``fold_in`` and a split, which
    cost ~2-8 µs a step on a 2-core CPU. Only whole grid steps may be queried.
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    levy_area: type = eqx.field(static=True)
    grid: Array
    keys: PRNGKeyArray

    def __init__(self, shape, key: PRNGKeyArray, grid: Array, levy_area=diffrax.BrownianIncrement):
        if levy_area not in (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea):
            raise ValueError(
                f"levy_area must be BrownianIncrement or SpaceTimeLevyArea, got {levy_area}"
            )
        self.shape = tuple(shape)
        self.levy_area = levy_area
        self.grid = jnp.asarray(grid, dtype=float)
        self.keys = jax.random.split(key, self.grid.shape[0] - 1)

    @property
    def t0(self):
        return self.grid[0]

    @property
    def t1(self):
        return self.grid[-1]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        n = self.grid.shape[0] - 1
        # one vectorised comparison: a binary-search loop costs a kernel launch per
        # iteration on GPUs, which made each step ~150 us there
        i = jnp.clip(jnp.sum(self.grid <= t0) - 1, 0, n - 1)
        dtype = self.grid.dtype  # the time's precision (float64 under jax_enable_x64)
        dt = jnp.asarray(t1 - t0, dtype)
        std = jnp.sqrt(dt)
        if self.levy_area is diffrax.SpaceTimeLevyArea:
            k_w, k_h = jax.random.split(self.keys[i])
            w = std * jax.random.normal(k_w, self.shape, dtype)
            if not use_levy:
                return w
            h = std / math.sqrt(12) * jax.random.normal(k_h, self.shape, dtype)
            return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=h)
        w = std * jax.random.normal(self.keys[i], self.shape, dtype)
        return diffrax.BrownianIncrement(dt=dt, W=w) if use_levy else w
