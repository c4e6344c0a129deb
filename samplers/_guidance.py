r"""Classifier-free guidance (Ho & Salimans 2022): with a conditional and an
unconditional score (one network trained with a null label),

.. math:: \tilde s(x, t) = (1 + w)\, \nabla \log p_t(x \mid c) - w\, \nabla \log p_t(x)
    = \nabla \log p_t(x \mid c) + w\, \nabla \log p_t(c \mid x).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from sde import ScoreFn
from sde._checks import as_real


def _guidance_weight(guidance, guidance_scale) -> float:
    if (guidance is None) == (guidance_scale is None):
        raise ValueError(
            "give exactly one of guidance= (w: (1 + w) s_cond - w s_uncond, 0 = conditional) "
            "or guidance_scale= (gamma = 1 + w: s_uncond + gamma (s_cond - s_uncond), "
            "1 = conditional)"
        )
    if guidance_scale is not None:
        gamma = as_real("guidance_scale", guidance_scale)
        if not (np.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"guidance_scale must be finite and >= 0, got {guidance_scale!r}")
        return gamma - 1.0
    w = as_real("guidance", guidance)
    if not (np.isfinite(w) and w >= -1):
        raise ValueError(f"guidance must be finite and >= -1, got guidance={guidance!r}")
    return w


class GuidedScore(eqx.Module):
    r"""Classifier-free guidance from two score functions (Ho & Salimans 2022):
    :math:`\tilde s = (1 + w)\, s_\text{cond} - w\, s_\text{uncond}`.

    A pytree (the guidance weight is a traced leaf): new weights or a new ``w`` do not
    recompile a sampler. Build it with :func:`guided_score`.
    """

    cond_score_fn: ScoreFn
    uncond_score_fn: ScoreFn
    guidance: Array

    def __call__(self, x: Array, t: Array) -> Array:
        w = self.guidance.astype(x.dtype)
        return (1 + w) * self.cond_score_fn(x, t) - w * self.uncond_score_fn(x, t)


def guided_score(
    cond_score_fn: ScoreFn,
    uncond_score_fn: ScoreFn,
    *,
    guidance: float | None = None,
    guidance_scale: float | None = None,
) -> GuidedScore:
    r"""A plain ``score_fn(x, t)`` with classifier-free guidance.

    Two conventions, give exactly one:

    - ``guidance`` :math:`= w` (Ho & Salimans 2022):
      :math:`\tilde s = (1 + w)\, s_c - w\, s_u`; ``w = 0`` is the conditional score,
      ``w = -1`` the unconditional one, ``w > 0`` sharpens towards the class.
    - ``guidance_scale`` :math:`= \gamma = 1 + w` (the convention of e.g. diffusers'
      ``guidance_scale``): :math:`\tilde s = s_u + \gamma (s_c - s_u)`; ``gamma = 1`` is
      conditional, ``gamma = 0`` unconditional.

    With exact scores :math:`\tilde s = \nabla\log p_t(x\mid c) + w \nabla \log
    p_t(c \mid x)`, the score of a "sharpened" :math:`p_t(x \mid c)\, p_t(c \mid x)^w`
    (at each :math:`t` separately: the sampled distribution is not exactly that tilted
    density at :math:`t = 0`, because the tilted marginals are not the diffusion of one
    distribution).

    Example::

        f = samplers.guided_score(cond, uncond, guidance=2.0)
        x, stats = samplers.sample_sde(score_fn=f, sde=vp, shape=(64, 2), key=key)
    """
    w = _guidance_weight(guidance, guidance_scale)
    return GuidedScore(cond_score_fn, uncond_score_fn, jnp.asarray(w, dtype=float))


class ClassifierFreeGuidance(eqx.Module):
    r"""Classifier-free guidance with one label-conditioned network
    ``score_fn(x, t, labels)`` and a null label: both scores in one batched call of
    size ``2B``. Build it with :func:`classifier_free_guidance`."""

    score_fn: ScoreFn
    labels: Array
    null_label: Array
    guidance: Array

    def __call__(self, x: Array, t: Array) -> Array:
        b = x.shape[0]
        labels = jnp.broadcast_to(self.labels, (b,))
        nulls = jnp.broadcast_to(self.null_label, (b,)).astype(labels.dtype)
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (b,))
        both = self.score_fn(
            jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([labels, nulls])
        )
        cond, uncond = both[:b], both[b:]
        w = self.guidance.astype(x.dtype)
        return (1 + w) * cond - w * uncond


def classifier_free_guidance(
    score_fn,
    labels: ArrayLike,
    null_label: int,
    *,
    guidance: float | None = None,
    guidance_scale: float | None = None,
) -> ClassifierFreeGuidance:
    r"""A plain ``score_fn(x, t)`` guiding a label-conditioned ``score_fn(x, t, labels)``
    towards ``labels`` (an int or ``[B]`` ints), with ``null_label`` the label the
    network was trained with when the class was dropped (Ho & Salimans 2022).

    ``guidance`` (:math:`w`, 0 = conditional) or ``guidance_scale``
    (:math:`\gamma = 1 + w`, 1 = conditional) as in :func:`guided_score`. Each call
    evaluates the network once on a batch of ``2B`` (conditional and null halves).

    Example::

        f = samplers.classifier_free_guidance(net_score, labels=3, null_label=10,
                                              guidance=2.0)
        x, stats = samplers.sample_sde(score_fn=f, sde=vp, shape=(64, 28, 28, 1),
                                       key=key, steps=1000)
    """
    w = _guidance_weight(guidance, guidance_scale)
    labels = jnp.asarray(labels)
    if labels.ndim > 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(
            f"labels must be an integer or a 1-D integer array, got dtype {labels.dtype} "
            f"and shape {labels.shape}"
        )
    null = jnp.asarray(null_label)
    if null.ndim != 0 or not jnp.issubdtype(null.dtype, jnp.integer):
        raise ValueError(f"null_label must be an integer, got {null_label!r}")
    return ClassifierFreeGuidance(score_fn, labels, null, jnp.asarray(w, dtype=float))
