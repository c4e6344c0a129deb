r"""From an interval-time network to MeanFlow's average velocity :math:`u(x, r, t)`.

A network built with ``interval_time=True`` takes ``cond`` of shape ``[B, 2]``: the
parametrisation's time condition of ``t`` and the interval :math:`h = t - r`. Its output
is read through the run's own parametrisation as a score, and the average velocity is
the probability-flow velocity of that score,

.. math:: u(x, r, t) = f(t)\, x - \tfrac12 g(t)^2\, \text{score}_\theta(x, t; h).

So at :math:`r = t`, where the average velocity *is* the instantaneous one, :math:`u`
is the model's probability-flow velocity; and because the interval's embedding starts at
zero, a student built from a trained score model's weights starts as that model's
velocity for every :math:`r` (the one-step Euler map). Every parametrisation and SDE
works unchanged; the scale of :math:`u` is that of the PF-ODE's velocity (bounded on
``[eps, T]``; on the rectified-flow path it is :math:`E[z - x_0 \mid x_t]`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from sde import AbstractSDE, expand_time

from ._embedding import broadcast_cond
from ._parametrisation import AbstractParametrisation
from ._score_function import NetworkSnapshot


def mean_flow_fn(
    model: nnx.Module, sde: AbstractSDE, parametrisation: AbstractParametrisation
) -> Callable[..., Array]:
    """``u(x, r, t, labels=None)`` calling the live interval-time ``model`` (training).
    Example::

        u = networks.mean_flow_fn(model, sde.RectifiedFlow(), networks.VelocityPrediction())
        x_r = x_t - (t - r)[:, None] * u(x_t, r, t)
    """

    def u(x: Float[Array, "B ..."], r: ArrayLike, t: ArrayLike, labels=None) -> Array:
        t, r = broadcast_cond(t, x), broadcast_cond(r, x)
        x_in, cond = parametrisation.inputs(sde, x, t)
        cond = jnp.stack([broadcast_cond(cond, x), (t - r).astype(cond.dtype)], axis=-1)
        out = model(x_in, cond) if labels is None else model(x_in, cond, labels=labels)
        score = parametrisation.to_score(sde, x, t, out)
        g2 = expand_time(sde.diffusion(t) ** 2, x)
        return sde.drift(x, t) - 0.5 * g2 * score

    return u


class MeanFlowFunction(NetworkSnapshot):
    """A pure average velocity ``u(x, r, t, labels=None)``: a network snapshot, as
    :class:`networks.ScoreFunction` (new weights or keys do not recompile).

    Example::

        u = networks.MeanFlowFunction.from_module(model, rf, networks.VelocityPrediction())
        x, stats = samplers.sample_meanflow(mean_flow=u, sde=rf, shape=(64, 2), key=key)
    """

    def __call__(self, x: Array, r: ArrayLike, t: ArrayLike, labels=None) -> Array:
        model = nnx.merge(self.graphdef, self.state)
        return mean_flow_fn(model, self.sde, self.parametrisation)(x, r, t, labels)
