r"""EDM preconditioning as a wrapper around any backbone (Karras, Aittala, Aila and Laine
2022, "Elucidating the Design Space of Diffusion-Based Generative Models", §5, Table 1).

The wrapper turns a raw network :math:`F_\theta(x_\text{in}, c)` into a denoiser of the
scaled variable :math:`\tilde x = x_0 + \sigma z`,

.. math:: D_\theta(\tilde x; \sigma) = c_\text{skip}(\sigma)\, \tilde x
    + c_\text{out}(\sigma)\, F_\theta\big(c_\text{in}(\sigma)\, \tilde x,\;
    c_\text{noise}(\sigma)\big),

with the coefficients of :class:`networks.EDMDenoiser` (written there once, reused here).
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from sde import AbstractSDE, expand_time

from ._checks import check_positive
from ._embedding import broadcast_cond
from ._parametrisation import EDMDenoiser
from ._score_function import ScoreFunction, score_fn


class EDMPrecond(nnx.Module):
    r"""EDM's preconditioned denoiser :math:`D(x; \sigma)` around a ``backbone``.

    ``backbone(x_in, cond)`` is any network of this package's calling convention
    (``x_in`` like ``x``, ``cond`` of shape ``[B]``; e.g. :class:`MLPScoreNet`,
    :class:`SmallUNet`). With :math:`\sigma_d` = ``sigma_data``,

    .. math::
        c_\text{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_\text{out} = \frac{\sigma\sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_\text{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_\text{noise} = \tfrac14 \ln\sigma,

    so that for data of per-element variance :math:`\sigma_d^2` the backbone's input
    and its ideal output :math:`F^* = (x_0 - c_\text{skip}\tilde x)/c_\text{out}` both
    have unit variance at every :math:`\sigma`. ``__call__(x, sigma)`` takes the scaled
    variable :math:`\tilde x` (for :class:`sde.EDMSDE`, ``x`` itself, with
    ``sigma = t``) and returns :math:`D`.

    A sampler needs a score function of ``(x, t)`` for a given SDE. For any linear SDE
    (kernel :math:`x_t = a x_0 + s z`, :math:`\sigma = s/a`, :math:`\tilde x = x/a`),
    Tweedie's formula gives :math:`\nabla\log p_t(x) = (a D - x)/s^2`;
    :meth:`score_fn` (live module, for training) and :meth:`score_function` (a pure
    snapshot, for sampling) build it through :class:`EDMDenoiser`, whose form avoids
    cancelling :math:`a D` against :math:`x` at small :math:`\sigma`. Example::

        backbone = networks.MLPScoreNet(2, rngs=nnx.Rngs(0))
        precond = networks.EDMPrecond(backbone, sigma_data=0.5)
        edm = sde.EDMSDE()
        loss = sde.edm_loss(precond.score_fn(edm), edm, x0, key).mean()   # training
        x, stats = samplers.sample_edm(score_fn=precond.score_function(edm), sde=edm,
                                       shape=(64, 2), key=key, steps=17,
                                       denoise=True)                        # sampling
    """

    def __init__(self, backbone: nnx.Module, sigma_data: float = 0.5):
        if not callable(backbone):
            raise ValueError(f"backbone must be a callable module, got backbone={backbone!r}")
        self.backbone = backbone
        self.sigma_data = check_positive("sigma_data", sigma_data)

    @property
    def parametrisation(self) -> EDMDenoiser:
        """The :class:`EDMDenoiser` parametrisation that holds the coefficients."""
        return EDMDenoiser(sigma_data=self.sigma_data)

    def __call__(self, x: Float[Array, "B ..."], sigma: ArrayLike) -> Float[Array, "B ..."]:
        r""":math:`D(x; \sigma) = c_\text{skip} x + c_\text{out} F(c_\text{in} x,
        c_\text{noise})`, with ``sigma`` a scalar or of shape ``[B]``."""
        sigma = broadcast_cond(sigma, x)
        c_skip, c_out, c_in, c_noise = self.parametrisation.coefficients(sigma)
        out = self.backbone(expand_time(c_in, x) * x, c_noise)
        return expand_time(c_skip, x) * x + expand_time(c_out, x) * out

    def score_fn(self, sde: AbstractSDE) -> Callable[[Array, Array], Array]:
        """A closure ``f(x, t)`` calling the *live* backbone (for training: dropout and
        gradients flow as in :func:`networks.score_fn`)."""
        return score_fn(self.backbone, sde, self.parametrisation)

    def score_function(self, sde: AbstractSDE) -> ScoreFunction:
        """A pure score function: an eval-mode snapshot of the backbone
        (:meth:`ScoreFunction.from_module`), for samplers and likelihoods."""
        return ScoreFunction.from_module(self.backbone, sde, self.parametrisation)
