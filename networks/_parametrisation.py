r"""Parametrisations: how a network's output becomes a score.

For a forward SDE with kernel :math:`x_t = a(t) x_0 + s(t) z`, :math:`z \sim N(0, I)`,
denoising score matching regresses the score onto :math:`-z / s`. A parametrisation
fixes what the network sees (``inputs``) and what its output means (``to_score``):

============================  ================  =====================================
parametrisation               network input     score
============================  ================  =====================================
:class:`NoisePrediction`      ``(x, t)``        :math:`-F / s` (``F`` predicts ``z``)
:class:`DirectScore`          ``(x, t)``        :math:`F / s` or :math:`F`
:class:`DataPrediction`       ``(x, t)``        :math:`(a F - x) / s^2`
:class:`VelocityPrediction`   ``(x, t)``        :math:`2 (f x - F) / g^2`
:class:`EDMDenoiser`          ``(c_in x/a,``    :math:`(a D - x) / s^2`,
                              ``c_noise)``      :math:`D = c_\text{skip} x/a + c_\text{out} F`
============================  ================  =====================================
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from sde import AbstractSDE, expand_time

from ._checks import check_positive
from ._embedding import broadcast_cond


class AbstractParametrisation(eqx.Module):
    """What the network sees and what its output means. Subclasses are final."""

    @abc.abstractmethod
    def inputs(
        self, sde: AbstractSDE, x: Float[Array, "B ..."], t: ArrayLike
    ) -> tuple[Float[Array, "B ..."], Float[Array, " B"]]:
        """``(x_in, cond)``: the network is called as ``net(x_in, cond)``."""

    @abc.abstractmethod
    def to_score(
        self, sde: AbstractSDE, x: Float[Array, "B ..."], t: ArrayLike, out: Array
    ) -> Float[Array, "B ..."]:
        r"""The score :math:`\nabla_x \log p_t(x)` from the network output ``out``."""


class NoisePrediction(AbstractParametrisation):
    r"""The network predicts the noise (DDPM's :math:`\epsilon`-prediction):

    .. math:: F(x_t, t) \approx z, \qquad \nabla \log p_t(x) = -F(x, t) / s(t).

    Its loss :math:`\|F - z\|^2` is :math:`\|s \nabla\log p_t + z\|^2`, denoising score
    matching weighted by :math:`s^2`.
    """

    def inputs(self, sde, x, t):
        return x, broadcast_cond(t, x)

    def to_score(self, sde, x, t, out):
        _, s = sde.marginal(broadcast_cond(t, x))
        return -out / expand_time(s, x)


class DirectScore(AbstractParametrisation):
    r"""The network predicts the score, optionally divided by the kernel std
    (score_sde's ``scale_by_sigma``):

    .. math:: \nabla \log p_t(x) = F(x, t) / s(t) \;\; (\text{scale\_by\_std}),
        \qquad \text{else} \;\; \nabla \log p_t(x) = F(x, t).

    With ``scale_by_std`` the network output has unit scale at every ``t``
    (it approximates :math:`-z`).
    """

    scale_by_std: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not isinstance(self.scale_by_std, bool):
            raise ValueError(f"scale_by_std must be a bool, got scale_by_std={self.scale_by_std!r}")

    def inputs(self, sde, x, t):
        return x, broadcast_cond(t, x)

    def to_score(self, sde, x, t, out):
        if not self.scale_by_std:
            return out
        _, s = sde.marginal(broadcast_cond(t, x))
        return out / expand_time(s, x)


class DataPrediction(AbstractParametrisation):
    r"""The network predicts the clean data (:math:`x_0`-prediction; Li & He 2025 argue
    raw-pixel transformers need it):

    .. math:: F(x_t, t) \approx E[x_0 \mid x_t], \qquad
        \nabla \log p_t(x) = \frac{a(t) F - x}{s(t)^2}

    (Tweedie's formula). Its loss :math:`\|F - x_0\|^2` is denoising score matching
    weighted by :math:`s^4 / a^2`.
    """

    def inputs(self, sde, x, t):
        return x, broadcast_cond(t, x)

    def to_score(self, sde, x, t, out):
        a, s = sde.marginal(broadcast_cond(t, x))
        return (expand_time(a, x) * out - x) / expand_time(s**2, x)


class VelocityPrediction(AbstractParametrisation):
    r"""The network predicts the flow-matching velocity, the probability-flow drift
    :math:`v = E[\dot a\, x_0 + \dot s\, z \mid x_t]` (Lipman et al. 2023; on the
    rectified-flow path :math:`v = E[z - x_0 \mid x_t]`, SD3's target). With
    :math:`\dot a = f a` and :math:`\dot s - f s = g^2 / (2s)` (the moment equations),
    :math:`v = f x + \tfrac{g^2}{2s} E[z \mid x_t]`, so

    .. math:: E[z \mid x_t] = \frac{2s}{g^2}(F - f x), \qquad
        \nabla \log p_t(x) = -\frac{E[z \mid x_t]}{s} = \frac{2 (f x - F)}{g^2}.

    Its loss :math:`\|F - v\|^2` is denoising score matching weighted by
    :math:`(g^2/2s)^2` against the noise-prediction loss (``docs/maths.md``). Works on
    every SDE; on the rectified-flow path :math:`g^2/(2s) = 1/(1 - t)` and
    :math:`E[z \mid x_t] = x + (1 - t) F`.
    """

    def inputs(self, sde, x, t):
        return x, broadcast_cond(t, x)

    def to_score(self, sde, x, t, out):
        t = broadcast_cond(t, x)
        _, s = sde.marginal(t)
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        z = expand_time(2 * s / g**2, x) * (out - expand_time(f, x) * x)
        return -z / expand_time(s, x)


class EDMDenoiser(AbstractParametrisation):
    r"""Karras et al. 2022 ("EDM") preconditioning of a denoiser, for any kernel
    :math:`x_t = a x_0 + s z`.

    In the scaled variable :math:`\tilde x = x / a = x_0 + \sigma z`,
    :math:`\sigma = s / a`, with :math:`\sigma_d` = ``sigma_data``:

    .. math::
        c_\text{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_\text{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
        c_\text{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
        c_\text{noise} = \tfrac14 \log \sigma,

    .. math::
        D(x) = c_\text{skip} \tilde x + c_\text{out} F(c_\text{in} \tilde x, c_\text{noise})
        \approx E[x_0 \mid x_t = x], \qquad
        \nabla \log p_t(x) = \frac{a D - x}{s^2}
        = \frac{1}{a}\Big(\frac{c_\text{out} F}{\sigma^2}
                          - \frac{\tilde x}{\sigma^2 + \sigma_d^2}\Big).

    (The last form, used here, avoids cancelling ``a D`` against ``x`` at small
    :math:`\sigma`.) If :math:`x_0` has variance :math:`\sigma_d^2` per element, the
    network input :math:`c_\text{in} \tilde x` and the target
    :math:`F^* = (x_0 - c_\text{skip} \tilde x) / c_\text{out}` both have unit variance;
    the loss :math:`\lambda(\sigma)\|D - x_0\|^2` with :math:`\lambda = 1/c_\text{out}^2`
    equals :math:`\|F - F^*\|^2`.
    """

    sigma_data: float = 0.5

    def __check_init__(self):
        check_positive("sigma_data", self.sigma_data)

    def sigma(self, sde: AbstractSDE, t: ArrayLike) -> Array:
        r""":math:`\sigma(t) = s(t) / a(t)`."""
        a, s = sde.marginal(t)
        return s / a

    def coefficients(self, sigma: ArrayLike) -> tuple[Array, Array, Array, Array]:
        """``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma``."""
        sigma = jnp.asarray(sigma)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        c_skip = sd2 / total
        c_out = sigma * self.sigma_data / jnp.sqrt(total)
        c_in = 1.0 / jnp.sqrt(total)
        c_noise = jnp.log(sigma) / 4
        return c_skip, c_out, c_in, c_noise

    def inputs(self, sde, x, t):
        a, s = sde.marginal(broadcast_cond(t, x))
        _, _, c_in, c_noise = self.coefficients(s / a)
        return expand_time(c_in / a, x) * x, c_noise

    def denoiser(self, sde: AbstractSDE, x: Array, t: ArrayLike, out: Array) -> Array:
        r""":math:`D = c_\text{skip} \tilde x + c_\text{out} F`, the estimate of
        :math:`E[x_0 \mid x_t = x]`."""
        a, s = sde.marginal(broadcast_cond(t, x))
        c_skip, c_out, _, _ = self.coefficients(s / a)
        return expand_time(c_skip / a, x) * x + expand_time(c_out, x) * out

    def to_score(self, sde, x, t, out):
        a, s = sde.marginal(broadcast_cond(t, x))
        sigma = s / a
        _, c_out, _, _ = self.coefficients(sigma)
        x_tilde = x / expand_time(a, x)
        score_tilde = expand_time(c_out / sigma**2, x) * out - x_tilde / expand_time(
            sigma**2 + self.sigma_data**2, x
        )
        return score_tilde / expand_time(a, x)


class GaussianResidual(AbstractParametrisation):
    r"""Any parametrisation, plus the exact score of isotropic Gaussian data: the
    network learns only the departure from :math:`N(0, \sigma_d^2 I)`.

    For data :math:`x_0 \sim N(0, \sigma_d^2 I)` every marginal is
    :math:`N(0, (a^2 \sigma_d^2 + s^2) I)`, so

    .. math:: \nabla \log p_t(x) = -\frac{x}{a(t)^2 \sigma_d^2 + s(t)^2}
        + \text{inner.to\_score}(x, t, F).

    With a zero network output the model *is* that Gaussian, and its probability-flow
    likelihood is the Gaussian's; training moves it from there. Paired with whitened
    data (``data.whiten=pca``, unit covariance) this is a Gaussian fit of the data plus a
    learned residual: on sklearn digits it is what takes a 3-layer MLP from worse than a
    single Gaussian to below the 40-component GMM baseline (README, digits). The
    network input is the inner parametrisation's. Example::

        param = networks.GaussianResidual(networks.NoisePrediction(), data_std=1.0)
        score = networks.score_fn(model, sde.VPSDE(), param)
    """

    inner: AbstractParametrisation = eqx.field(default_factory=lambda: NoisePrediction())
    data_std: float = 1.0

    def __check_init__(self):
        check_positive("data_std", self.data_std)
        if not isinstance(self.inner, AbstractParametrisation) or isinstance(
            self.inner, GaussianResidual
        ):
            raise ValueError(
                f"inner must be a parametrisation other than GaussianResidual, got {self.inner!r}"
            )

    def inputs(self, sde, x, t):
        return self.inner.inputs(sde, x, t)

    def gaussian_score(self, sde: AbstractSDE, x: Array, t: ArrayLike) -> Array:
        r""":math:`-x / (a^2 \sigma_d^2 + s^2)`, the score of the Gaussian base."""
        a, s = sde.marginal(broadcast_cond(t, x))
        return -x / expand_time(a**2 * self.data_std**2 + s**2, x)

    def to_score(self, sde, x, t, out):
        return self.inner.to_score(sde, x, t, out) + self.gaussian_score(sde, x, t)
