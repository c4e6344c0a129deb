"""From an NNX network and a parametrisation to a score function ``f(x, t)``."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from sde import AbstractSDE

from ._parametrisation import AbstractParametrisation


def score_fn(
    model: nnx.Module, sde: AbstractSDE, parametrisation: AbstractParametrisation
) -> Callable[[Array, Array], Array]:
    """A closure ``f(x, t, labels=None)`` calling the *live* module ``model`` (in whatever
    mode it is); ``labels`` go to a class-conditional network (``None``: the null class).

    For training: inside ``nnx.value_and_grad`` / ``nnx.jit`` the module's dropout RNG
    state advances on every call. For sampling use :class:`ScoreFunction`, which is pure.

    Example::

        def loss_fn(model):
            f = networks.score_fn(model, vp, networks.NoisePrediction())
            return jnp.mean((vp.std(t)[:, None] * f(x_t, t) + z) ** 2)
    """

    def f(x: Float[Array, "B ..."], t: ArrayLike, labels=None) -> Float[Array, "B ..."]:
        x_in, cond = parametrisation.inputs(sde, x, t)
        out = model(x_in, cond) if labels is None else model(x_in, cond, labels=labels)
        return parametrisation.to_score(sde, x, t, out)

    return f


class NetworkSnapshot(eqx.Module):
    """A network frozen for pure use: its structure (static), its variables (a pytree of
    arrays, so new weights do not recompile), the SDE and the parametrisation. The
    callables built on it (:class:`ScoreFunction`, :class:`networks.MeanFlowFunction`)
    add only ``__call__``."""

    graphdef: nnx.GraphDef = eqx.field(static=True)
    state: nnx.State
    sde: AbstractSDE
    parametrisation: AbstractParametrisation

    @classmethod
    def from_module(
        cls, model: nnx.Module, sde: AbstractSDE, parametrisation: AbstractParametrisation
    ):
        """Snapshot ``model`` in eval mode (dropout off) without changing ``model``:
        later in-place updates of ``model`` (optimiser steps) do not reach the snapshot."""
        snapshot = nnx.clone(model)
        snapshot.eval()
        graphdef, state = nnx.split(snapshot)
        return cls(graphdef, state, sde, parametrisation)


class ScoreFunction(NetworkSnapshot):
    """A pure score function ``f(x, t)``: a network snapshot plus its parametrisation.

    ``graphdef`` (the network's structure) is a static field and ``state`` (its
    variables) a pytree of arrays, so under ``jit`` the weights are traced arguments:
    new weights, a new key or a fresh :meth:`from_module` of the same architecture do
    not recompile. Each call rebuilds the module with ``nnx.merge`` (free under ``jit``).

    Example::

        f = networks.ScoreFunction.from_module(model, vp, networks.NoisePrediction())
        x, stats = samplers.sample_ode(score_fn=f, sde=vp, shape=(64, 2), key=key)
    """

    def __call__(
        self, x: Float[Array, "B ..."], t: ArrayLike, labels=None
    ) -> Float[Array, "B ..."]:
        """The score at ``(x, t)``; ``labels`` ([B] ints) for a class-conditional network,
        which :func:`samplers.classifier_free_guidance` turns into a plain ``f(x, t)``."""
        model = nnx.merge(self.graphdef, self.state)
        return score_fn(model, self.sde, self.parametrisation)(x, t, labels)
