r"""Denoising score-matching losses and the time samplers that feed them.

For data :math:`x_0`, a time :math:`t` and noise :math:`z \sim N(0, I)`, the kernel
:math:`x_t = a(t) x_0 + s(t) z` has the conditional score
:math:`\nabla \log p_{0t}(x_t \mid x_0) = -z / s`. The weighted denoising score
matching (DSM) objective of Song et al. (2021, ICLR, eq. 7) is

.. math::
    \mathcal{L}_\lambda = \int_\epsilon^T \tfrac12 \lambda(t)\,
        E\,\big\| s_\theta(x_t, t) + z / s(t) \big\|^2 \, dt,

summed over every non-batch axis. Two weightings are offered, both with the factor
:math:`\tfrac12` and the sum over dimensions, so that losses are in nats:

``"std2"``, :math:`\lambda = s^2` (score_sde's default)
    :math:`\ell = \tfrac12 \| s\, s_\theta + z \|^2`, which for a noise-prediction
    network :math:`\hat\epsilon = -s\, s_\theta` is :math:`\tfrac12\|\hat\epsilon - z\|^2`.
    Time is averaged, :math:`t \sim U[\epsilon, T]`, as in score_sde (whose
    ``reduce_mean=False`` setting is this convention).

``"likelihood"``, :math:`\lambda = g^2` (Song, Durkan, Murray and Ermon 2021)
    :math:`\ell = \tfrac12 g^2 \| s_\theta + z/s \|^2
    = \tfrac12 (g^2/s^2) \| s\, s_\theta + z \|^2`, and the estimator is scaled so that
    its expectation is the *integral* over :math:`[\epsilon, T]` (a factor
    :math:`T - \epsilon` for uniform times). That integral equals the score-matching
    part of their bound on the negative log-likelihood, up to a constant that does not
    depend on :math:`\theta`:
    :math:`-E \log p_\theta^{SDE}(x_0) \le \mathcal{L}_{g^2} + C`.

Importance sampling in log-SNR (Kingma, Salimans, Poole and Ho 2021, "Variational
Diffusion Models"). With :math:`\lambda(t) = \log(a/s)` and the moment equations
:math:`d\log a/dt = f`, :math:`ds^2/dt = 2 f s^2 + g^2`,

.. math::
    \frac{d\lambda}{dt} = f - \frac{2 f s^2 + g^2}{2 s^2} = -\frac{g^2}{2 s^2}

for every linear SDE, so :math:`\lambda` decreases and

.. math::
    \mathcal{L}_{g^2} = \int_\epsilon^T -\frac{d\lambda}{dt}\,
        E\|s\, s_\theta + z\|^2 \, dt
      = \int_{\lambda(T)}^{\lambda(\epsilon)} E\|\hat\epsilon - z\|^2 \, d\lambda,

which is VDM's continuous-time diffusion loss. Drawing :math:`\lambda` uniformly on
:math:`[\lambda(T), \lambda(\epsilon)]` and mapping it back with
:meth:`~sde.AbstractSDE.log_snr_inverse` draws :math:`t` with density
:math:`p(t) = g^2 / (2 s^2 \Delta\lambda)`, :math:`\Delta\lambda = \lambda(\epsilon)
- \lambda(T)`, and the unbiased estimator :math:`\tfrac12 (g^2/s^2)\,
\|s\,s_\theta + z\|^2 / p(t)` becomes

.. math:: \ell = \tfrac12 \|s\, s_\theta + z\|^2 \cdot 2 \Delta\lambda,

a constant weight: the :math:`1/t`-like spike of :math:`g^2/s^2` near
:math:`t = \epsilon` (VP, sub-VP) no longer inflates the variance. For VE,
:math:`\lambda` is linear in :math:`t` and importance sampling is uniform sampling.

Example::

    vp = sde.VPSDE()
    def loss_fn(params, x0, key):
        score_fn = lambda x, t: model.apply(params, x, t)
        return sde.dsm_loss(score_fn, vp, x0, key, weighting="likelihood",
                            t_sampling="importance").mean()
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._base import AbstractSDE, expand_time
from ._checks import check_eps
from ._time_sampling import TIME_SAMPLINGS, TimeSampling, UniformLogSNR, time_sampling
from ._types import ScoreFn

WEIGHTINGS = ("std2", "likelihood", "velocity", "data")
# The factor on 0.5 ||s score + z||^2 (the noise-prediction loss) that gives each
# weighting's loss at time t; "likelihood" is integrated rather than averaged over t.
_FACTORS = {
    "std2": lambda sde, t, s: jnp.ones_like(s),
    "likelihood": lambda sde, t, s: (sde.diffusion(t) / s) ** 2,
    "velocity": lambda sde, t, s: (sde.diffusion(t) ** 2 / (2 * s)) ** 2,
    "data": lambda sde, t, s: (s / sde.mean_coeff(t)) ** 2,
}


def _check_choice(name: str, value: object, accepted: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {accepted}, got {name}={value!r}")


def _check_batch(batch: object) -> None:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got batch={batch!r}")


def _resolve(method, name: str = "method") -> TimeSampling:
    try:
        return time_sampling(method)
    except ValueError:
        raise ValueError(
            f"{name} must be one of {tuple(TIME_SAMPLINGS)} or a sde.TimeSampling, "
            f"got {name}={method!r}"
        ) from None


def sample_time(
    key: PRNGKeyArray,
    batch: int,
    *,
    sde: AbstractSDE,
    eps: float = 1e-5,
    method: str | TimeSampling = "uniform",
    dtype=None,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
    r"""Draw ``batch`` times in ``[eps, T]`` and their importance weights.

    Returns ``(t, weight)``, with ``weight`` the ratio of the uniform density on
    :math:`[\epsilon, T]` to the density ``t`` was drawn from, so that for every
    ``h``, :math:`E[\text{weight}\cdot h(t)] = E_{t \sim U[\epsilon, T]}[h(t)]`.

    ``method`` is a :class:`sde.TimeSampling` (a density over the log-SNR, see
    :mod:`sde._time_sampling`) or one of these names:

    ``"uniform"``
        i.i.d. :math:`t = \epsilon + (T - \epsilon) u`, ``u ~ U[0, 1]``; weight 1.
    ``"stratified"``
        :math:`t_i = \epsilon + (T - \epsilon)(\pi_i + u_i)/B` for a random permutation
        :math:`\pi` of ``0..B-1``: each of the ``B`` equal strata holds exactly one
        time, and each ``t_i`` alone is still uniform; weight 1.
    ``"antithetic"``
        ``u`` for the first half of the batch and ``1 - u`` for the second, so
        ``t[i] + t[i + B/2] = eps + T``; ``batch`` must be even; weight 1.
    ``"importance"``
        log-SNR uniform: :math:`\lambda \sim U[\lambda(T), \lambda(\epsilon)]`,
        ``t = sde.log_snr_inverse(lambda)``, density
        :math:`p(t) = g^2 / (2 s^2 \Delta\lambda)`, weight
        :math:`1 / ((T - \epsilon)\, p(t)) = 2 \Delta\lambda\, s^2 / ((T-\epsilon) g^2)`.
        Meant for the ``"likelihood"`` weighting (see the module docstring).
    ``"logit_normal"``
        SD3's :math:`\text{logit}(t_{RF}) \sim N(0, 1)`, i.e. :math:`\lambda \sim N(0,
        1)` truncated to the range (:func:`sde.logit_normal` for other parameters).
    ``"lognormal"``
        EDM's :math:`\ln\sigma \sim N(-1.2, 1.2^2)`, i.e. :math:`\lambda \sim
        N(1.2, 1.2^2)` truncated (:func:`sde.lognormal` for other parameters).

    ``dtype`` sets the float type of both outputs (default: JAX's default float).
    Example::

        t, w = sde.sample_time(key, 128, sde=sde.VPSDE(), eps=1e-5, method="importance")
        t, w = sde.sample_time(key, 128, sde=sde.VPSDE(), method=sde.logit_normal(0.5, 1.0))
    """
    _check_batch(batch)
    check_eps(eps, sde)
    density = _resolve(method)
    if density.scheme == "antithetic" and batch % 2:
        raise ValueError(f"method='antithetic' needs an even batch, got batch={batch}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    t = density.sample(key, batch, sde=sde, eps=eps, dtype=dtype)
    return t, density.weight(t, sde=sde, eps=eps).astype(dtype)


def loss_weight(
    lam: Float[ArrayLike, "..."],
    *,
    sde: AbstractSDE,
    eps: float = 1e-5,
    weighting: str = "std2",
    t_sampling: str | TimeSampling = "uniform",
) -> Array:
    r"""The weight :math:`w(\lambda)` of Kingma and Gao (2023) under which
    :func:`dsm_loss`'s expectation is

    .. math:: E[\ell] = \int_{\lambda(T)}^{\lambda(\epsilon)} w(\lambda)\,
        E\|\hat\epsilon - \epsilon\|^2 \, d\lambda,
        \qquad \hat\epsilon = -s\, s_\theta(x_t, t),

    so ``w = 1`` is the ELBO's weighting (the ``"likelihood"`` weighting, whatever the
    sampler). Averaged weightings take their density from the sampler:
    :math:`w = \tfrac12 p(\lambda)\, c(\lambda)` with :math:`c = 1` (``"std2"``),
    :math:`(g^2/2s)^2` (``"velocity"``) or :math:`(s/a)^2 = e^{-2\lambda}` (``"data"``).
    """
    _check_choice("weighting", weighting, WEIGHTINGS)
    lam = jnp.asarray(lam, jnp.result_type(float))
    if weighting == "likelihood":
        return jnp.ones_like(lam)
    density = _resolve(t_sampling, "t_sampling")
    t = sde.log_snr_inverse(lam)
    factor = _FACTORS[weighting](sde, t, sde.std(t))
    return 0.5 * jnp.exp(density.log_prob(lam, sde=sde, eps=eps)) * factor


def dsm_loss_at(
    score_fn: ScoreFn,
    sde: AbstractSDE,
    x0: Float[Array, "B ..."],
    t: Float[ArrayLike, " B"],
    noise: Float[Array, "B ..."],
    *,
    weighting: str = "std2",
) -> Float[Array, " B"]:
    r"""The DSM loss at given times and noise: :math:`\tfrac12 \lambda(t)\|s_\theta +
    z/s\|^2`, summed over all non-batch axes, one value per example.

    With :math:`\ell_\epsilon = \tfrac12\|s\,s_\theta(x_t, t) + z\|^2` (the
    noise-prediction loss, :math:`\hat\epsilon = -s\,s_\theta`), ``weighting``:

    - ``"std2"``: :math:`\ell_\epsilon`;
    - ``"likelihood"``: :math:`\tfrac12 g^2 \|s_\theta + z/s\|^2 = (g/s)^2\ell_\epsilon`;
    - ``"velocity"``: the flow-matching loss :math:`\tfrac12\|\hat v - u\|^2 =
      (g^2/2s)^2 \ell_\epsilon`, with :math:`\hat v = f x - \tfrac12 g^2 s_\theta` and
      the conditional velocity :math:`u = a' x_0 + s' z` (on the rectified-flow path,
      :math:`u = z - x_0`: SD3's loss);
    - ``"data"``: the x-prediction loss :math:`\tfrac12\|\hat x_0 - x_0\|^2 =
      (s/a)^2\ell_\epsilon`.

    No factor for the distribution of ``t`` is applied: :func:`dsm_loss` adds it. Useful
    to look at the loss as a function of ``t``. Example::

        ell = sde.dsm_loss_at(oracle.score, vp, x0, jnp.full((B,), 0.3), z)
    """
    _check_choice("weighting", weighting, WEIGHTINGS)
    t = jnp.broadcast_to(jnp.asarray(t, x0.dtype), x0.shape[:1])
    _, s = sde.marginal(t)
    x_t = sde.perturb(x0, t, noise)
    residual = expand_time(s, x0) * score_fn(x_t, t) + noise  # s * score + z
    sq = jnp.sum(jnp.reshape(residual, (x0.shape[0], -1)) ** 2, axis=-1)
    if weighting == "std2":
        return 0.5 * sq
    return 0.5 * _FACTORS[weighting](sde, t, s) * sq


def dsm_loss(
    score_fn: ScoreFn,
    sde: AbstractSDE,
    x0: Float[Array, "B ..."],
    key: PRNGKeyArray,
    *,
    weighting: str = "std2",
    t_sampling: str | TimeSampling = "uniform",
    eps: float = 1e-5,
) -> Float[Array, " B"]:
    r"""Per-example denoising score-matching loss (nats, summed over non-batch axes).

    Draws ``t`` with :func:`sample_time` (``method=t_sampling``) and ``z ~ N(0, I)``,
    forms :math:`x_t = a(t) x_0 + s(t) z` and returns, for each example,

    - ``weighting="std2"``: :math:`\tfrac12\|s\, s_\theta(x_t, t) + z\|^2`, an unbiased
      estimate of its average over the sampler's density: the time *average* over
      :math:`U[\epsilon, T]` for ``"uniform"`` (score_sde's loss with
      ``reduce_mean=False``); under ``"logit_normal"`` or ``"lognormal"`` the density is
      the weighting, as in SD3 and EDM (:func:`loss_weight` gives it over
      :math:`\lambda`); ``"velocity"`` and ``"data"`` are averaged the same way;
    - ``weighting="likelihood"``: :math:`(T-\epsilon)\,w\,\tfrac12 g^2\|s_\theta +
      z/s\|^2`, an unbiased estimate of the *integral*
      :math:`\int_\epsilon^T \tfrac12 g^2 E\|s_\theta + z/s\|^2 dt` (Song, Durkan,
      Murray and Ermon 2021), with ``w`` the weight from :func:`sample_time`. With
      ``t_sampling="importance"`` this is
      :math:`\Delta\lambda\,\|s\,s_\theta + z\|^2` at log-SNR-uniform times.

    ``t_sampling="importance"`` needs ``weighting="likelihood"``. The caller reduces
    (e.g. ``.mean()``). ``score_fn(x, t)`` receives ``x`` like ``x0`` and ``t`` of
    shape ``[B]``. See the module docstring for the maths. Example::

        loss = sde.dsm_loss(score_fn, sde.VPSDE(), x0, key).mean()
    """
    _check_choice("weighting", weighting, WEIGHTINGS)
    density = _resolve(t_sampling, "t_sampling")
    if isinstance(density, UniformLogSNR) and weighting != "likelihood":
        raise ValueError(
            "t_sampling='importance' samples t with density proportional to g^2/s^2 and "
            f"needs weighting='likelihood', got weighting={weighting!r}"
        )
    check_eps(eps, sde)
    k_t, k_z = jax.random.split(key)
    t, weight = sample_time(k_t, x0.shape[0], sde=sde, eps=eps, method=density, dtype=x0.dtype)
    noise = jax.random.normal(k_z, x0.shape, x0.dtype)
    loss = dsm_loss_at(score_fn, sde, x0, t, noise, weighting=weighting)
    if weighting == "likelihood":
        loss = (sde.T - eps) * weight * loss
    return loss
