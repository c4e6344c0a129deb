r"""Consistency functions: a score model read as a one-step map to the data end.

A consistency function maps any point of a probability-flow trajectory to the
trajectory's end at the smallest time :math:`\epsilon` (Song, Dhariwal, Chen and
Sutskever 2023, "Consistency Models"). With the kernel :math:`x_t = a(t) x_0 + s(t) z`,
:math:`\sigma(t) = s/a` and :math:`\sigma_\text{min} = \sigma(\epsilon)`, it is built here
from any score function through its data prediction (Tweedie,
:math:`\hat x_0 = (x + s^2 \nabla\log p_t)/a`):

.. math::
    f(x, t) = c_\text{skip}(t)\, \frac{a(\epsilon)}{a(t)}\, x
        + \big(1 - c_\text{skip}(t)\big)\, a(\epsilon)\, \hat x_0(x, t),
    \qquad c_\text{skip} = \frac{\sigma_d^2}{(\sigma - \sigma_\text{min})^2 + \sigma_d^2}.

At :math:`t = \epsilon`, :math:`c_\text{skip} = 1` and :math:`a(\epsilon)/a(t) = 1` are
computed exactly, so :math:`f(x, \epsilon) = x` holds bit for bit whatever the
weights (the boundary condition). For :math:`\sigma \gg \sigma_d` the map is the
network's own denoiser: a consistency model initialised from a diffusion model's weights
starts as that model's one-step Tweedie estimate, as in consistency tuning (ECT, Geng et
al. 2024), and whatever the network's parametrisation (noise, velocity, data, EDM,
with an exact base) the student keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from sde import AbstractSDE, expand_time

from ._checks import check_positive
from ._embedding import broadcast_cond


def consistency_coefficients(
    sde: AbstractSDE, t: ArrayLike, eps: float, sigma_data: float = 0.5
) -> tuple[Array, Array, Array]:
    r"""``(c_skip, a(eps)/a(t), a(eps))`` of :func:`consistency_function` at times ``t``."""
    a, s = sde.marginal(t)
    a_min, s_min = sde.marginal(jnp.asarray(eps, dtype=jnp.asarray(t).dtype))
    sigma, sigma_min = s / a, s_min / a_min
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    return c_skip, a_min / a, a_min


def consistency_function(
    score_fn: Callable[..., Array], sde: AbstractSDE, eps: float, sigma_data: float = 0.5
) -> Callable[..., Array]:
    r"""``f(x, t, labels=None)``: the consistency function of the score ``score_fn``
    (see the module docstring), with the boundary ``f(x, eps) = x`` exact.

    ``score_fn`` is any score callable: a live module's (:func:`networks.score_fn`,
    for training) or a snapshot (:class:`networks.ScoreFunction`, for sampling);
    ``labels`` are passed on when given. Example::

        f = networks.consistency_function(run.score_function(), vp, eps=1e-3)
        x0 = f(vp.prior_sample(key, (16, 2)), jnp.ones(16))
    """
    check_positive("sigma_data", sigma_data)
    check_positive("eps", eps)

    def f(x: Float[Array, "B ..."], t: ArrayLike, labels=None) -> Float[Array, "B ..."]:
        t = broadcast_cond(t, x)
        score = score_fn(x, t) if labels is None else score_fn(x, t, labels)
        a, s = sde.marginal(t)
        x0 = (x + expand_time(s**2, x) * score) / expand_time(a, x)
        c_skip, ratio, a_min = consistency_coefficients(sde, t, eps, sigma_data)
        skip = expand_time(c_skip, x)
        return skip * (expand_time(ratio, x) * x) + (1 - skip) * (expand_time(a_min, x) * x0)

    return f


def output_scale(
    sde: AbstractSDE, parametrisation, sigma_data: float = 0.5, shape: tuple[int, ...] = (1,)
) -> Callable[[Array], Array]:
    r"""``scale(t)``: how much more the data prediction :math:`\hat x_0` moves per unit
    of network output under ``parametrisation`` than under EDM's preconditioning,
    :math:`|\partial \hat x_0 / \partial\, \text{out}| / c_\text{out}(\sigma)` with
    :math:`c_\text{out} = \sigma \sigma_d / \sqrt{\sigma^2 + \sigma_d^2}` (1 for
    :class:`networks.EDMPreconditioning`; :math:`\sqrt{\sigma^2 + \sigma_d^2}/\sigma_d`
    for noise prediction, 314 at the VP SDE's :math:`\sigma(T) = 157`).

    The consistency losses' weights (ECT's :math:`1/\Delta\sigma`, iCT's) were set for
    EDM's network; dividing a loss by this scale gives the network's output the
    gradients it would have there. Without it a noise-prediction student's gradient is
    dominated by the largest noise levels, where a unit of output error is
    :math:`\sigma` units of :math:`\hat x_0` (consistency tuning of the checkerboard
    teacher diverged so). Every parametrisation here is affine in the output, element
    by element, so the slope is read from two evaluations of ``to_score`` at ``x = 0``
    of the example ``shape`` (the data's, for a parametrisation with a base that needs
    it), averaged over the example.
    """

    def scale(t: Array) -> Array:
        x = jnp.zeros((jnp.shape(t)[0], *shape), jnp.asarray(t).dtype)
        a, s = sde.marginal(t)
        slope = parametrisation.to_score(sde, x, t, jnp.ones_like(x))
        slope = slope - parametrisation.to_score(sde, x, t, jnp.zeros_like(x))
        sigma = s / a
        c_out = sigma * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
        slope = jnp.mean(jnp.abs(slope.reshape(slope.shape[0], -1)), axis=-1)
        return slope * s**2 / a / c_out

    return scale


class ConsistencyFunction(eqx.Module):
    """A pure consistency function: :func:`consistency_function` of a pure score
    function (e.g. :class:`networks.ScoreFunction`), so new weights do not recompile.

    Example::

        f = networks.ConsistencyFunction(run.score_function(), vp, eps=1e-3)
        x, stats = samplers.sample_consistency(consistency_fn=f, sde=vp,
                                               shape=(64, 2), key=key, steps=2)
    """

    score_fn: Callable[..., Array]
    sde: AbstractSDE
    eps: float = eqx.field(static=True)
    sigma_data: float = eqx.field(default=0.5, static=True)

    def __check_init__(self):
        check_positive("eps", self.eps)
        check_positive("sigma_data", self.sigma_data)

    def __call__(self, x: Float[Array, "B ..."], t: ArrayLike, labels=None) -> Array:
        return consistency_function(self.score_fn, self.sde, self.eps, self.sigma_data)(
            x, t, labels
        )
