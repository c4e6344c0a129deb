r"""The reverse process in the samplers' time :math:`s = -t`.

Every sampler integrates the reverse process forward in :math:`s = -t`, from
:math:`s = -T` to :math:`s = -\epsilon`. Solvers then always step forwards, which
sidesteps diffrax issue #598 (ShARK, SRA1 and SEA are wrong with ``t0 > t1`` in diffrax
0.7.2), and the reverse-time Brownian motion :math:`\bar w` becomes an ordinary Brownian
motion in :math:`s`.

- The probability-flow ODE :math:`dx/dt = \tilde f(x, t) = f(x, t) - \tfrac12 g(t)^2
  \nabla\log p_t(x)` reads :math:`dx/ds = -\tilde f(x, -s)` (:func:`reverse_pf_drift`;
  :func:`probability_flow` is :math:`\tilde f` itself, which the likelihood integrates
  forward in :math:`t`).
- The reverse SDE :math:`dx = [f - g^2 \nabla\log p_t]\, dt + g\, d\bar w` reads
  :math:`dx = -[f - g^2 \nabla\log p_t]\, ds + g\, dW_s` (:func:`reverse_sde_terms`, its
  noise the :class:`AdditiveNoiseTerm`).
- Tweedie's denoiser :math:`E[x_0 \mid x_t] = (x_t + s(t)^2 \nabla\log p_t)/a(t)` ends a
  solve when asked (:func:`finish`).
"""

from __future__ import annotations

import diffrax
import jax.numpy as jnp
from jaxtyping import Array

import sde as sde_lib
from sde import ScoreFn

from ._inputs import call_score


def _times(x: Array, t) -> Array:
    """``t`` as a ``[B]`` time in the state's dtype."""
    return jnp.full(x.shape[:1], t, dtype=x.dtype)


def probability_flow(score_fn: ScoreFn, sde, x: Array, t: Array) -> Array:
    r""":math:`\tilde f(x, t) = f(x, t) - \tfrac12 g(t)^2\, \text{score}(x, t)`, the
    probability-flow ODE's vector field in forward time (``t`` of shape ``[B]``)."""
    g2 = sde_lib.expand_time(sde.diffusion(t) ** 2, x)
    return sde.drift(x, t) - 0.5 * g2 * call_score(score_fn, x, t)


def reverse_pf_drift(score_fn: ScoreFn, sde):
    r"""The probability-flow ODE as a diffrax vector field in ``s = -t``:
    :math:`v(s, x) = -\tilde f(x, -s)`.

    This is the term :func:`samplers.sample_ode` integrates; a solver written for it
    (such as the exponential integrators) gets :math:`v` from ``terms.vf``. Example::

        term = diffrax.ODETerm(samplers.reverse_pf_drift(oracle.score, vp))
    """

    def vf(s, x, args):
        return -probability_flow(score_fn, sde, x, _times(x, -s))

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


def reverse_sde_terms(score_fn: ScoreFn, sde, path) -> diffrax.MultiTerm:
    r"""The reverse SDE ``dx = -(f - g^2 score) ds + g dW_s`` in ``s = -t``, as the
    diffrax terms :func:`samplers.sample_sde` integrates: ``MultiTerm(drift, noise)``
    with the noise :math:`g(-s)\, dW_s` driven by the Brownian ``path`` (in ``s``).
    Example::

        path = diffrax.VirtualBrownianTree(-1.0, -1e-3, 2**-16, (64, 2), key)
        terms = samplers.reverse_sde_terms(oracle.score, vp, path)
    """

    def drift(s, x, args):
        t = _times(x, -s)
        g2 = sde_lib.expand_time(sde.diffusion(t) ** 2, x)
        return -(sde.drift(x, t) - g2 * call_score(score_fn, x, t))

    return diffrax.MultiTerm(diffrax.ODETerm(drift), AdditiveNoiseTerm(sde, path))


def tweedie_denoise(score_fn: ScoreFn, sde, x: Array, t) -> Array:
    r"""One final denoising step :math:`E[x_0 | x_t] = (x_t + s^2 \nabla\log p_t)/a`."""
    tb = _times(x, t)
    a, s = sde.marginal(tb)
    a, s = sde_lib.expand_time(a, x), sde_lib.expand_time(s, x)
    return (x + s**2 * call_score(score_fn, x, tb)) / a


def finish(
    score_fn: ScoreFn, sde, x: Array, stats: dict[str, Array], *, t_end, denoise: bool
) -> tuple[Array, dict[str, Array]]:
    """``(x, stats)`` of a solve that ended at ``t_end``: with ``denoise``, Tweedie's
    denoiser applied and its one score evaluation counted in ``stats["nfe"]``."""
    if not denoise:
        return x, stats
    return tweedie_denoise(score_fn, sde, x, t_end), {**stats, "nfe": stats["nfe"] + 1}
