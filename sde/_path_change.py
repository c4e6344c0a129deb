"""A score learned on one linear path, used on another (post-hoc path change)."""

from __future__ import annotations

import math

import equinox as eqx
from jaxtyping import Array, ArrayLike, Float

from ._base import AbstractSDE, expand_time
from ._types import ScoreFn


class PathChange(eqx.Module):
    r"""The score of ``used_on`` from a score learned on ``trained_on``.

    Two linear paths :math:`x = a x_0 + s z` and :math:`x' = a' x_0 + s' z` carry the
    same information at equal log-SNR :math:`\lambda = \log(a/s)`: there
    :math:`s'/a' = s/a`, so :math:`x = (a/a')\, x'` in law, and with
    :math:`r = a(t)/a'(t')` for :math:`t = \lambda^{-1}(\lambda'(t'))`

    .. math:: p'_{t'}(x') = r^D\, p_t(r x'), \qquad
        \nabla \log p'_{t'}(x') = r\, \nabla \log p_t(r x').

    (The idea of flow_matching's ``ScheduleTransformedModel``, Lipman et al. 2024.) So a
    VP-trained model samples and scores as a rectified-flow or EDM model, exactly when
    its score is exact. Where ``used_on``'s log-SNR range leaves ``trained_on``'s
    (VP with ``beta_max = 20`` ends at :math:`\lambda \approx -5`, rectified flow at
    ``T = 0.999`` at :math:`-6.9`), the model is queried at times it was not trained
    on; choose the end times so the ranges match. Example::

        rf_score = sde.PathChange(vp_score, trained_on=sde.VPSDE(), used_on=sde.RectifiedFlow())
        x, stats = samplers.sample_ode(score_fn=rf_score, sde=sde.RectifiedFlow(), ...)
    """

    score_fn: ScoreFn
    trained_on: AbstractSDE
    used_on: AbstractSDE

    def times(self, t: ArrayLike) -> Array:
        """The time of ``trained_on`` with the log-SNR ``used_on`` has at ``t``."""
        return self.trained_on.log_snr_inverse(self.used_on.log_snr(t))

    def __call__(self, x: Float[Array, "B ..."], t: ArrayLike) -> Float[Array, "B ..."]:
        t_trained = self.times(t).astype(x.dtype)
        ratio = self.trained_on.mean_coeff(t_trained) / self.used_on.mean_coeff(t)
        ratio = expand_time(ratio, x)
        return ratio * self.score_fn(ratio * x, t_trained)


PATH_TARGETS = ("rf", "edm")


def matched_path(trained_on: AbstractSDE, kind: str, eps: float) -> tuple[AbstractSDE, float]:
    """``(used_on, eps')``: the ``kind`` path (``"rf"`` or ``"edm"``) whose log-SNR runs
    over the same range as ``trained_on`` on ``[eps, T]``, and its ``eps'``. Example::

        rf, eps_rf = sde.matched_path(sde.VPSDE(), "rf", 1e-3)  # T' = 0.9935, eps' = 0.0104
    """
    from ._edm import EDMSDE
    from ._rectified_flow import RectifiedFlow

    lam_T, lam_eps = float(trained_on.log_snr(trained_on.T)), float(trained_on.log_snr(eps))
    if kind == "rf":  # lambda = log((1 - t) / t), so t = 1 / (1 + e^lambda)
        return RectifiedFlow(t_max=1 / (1 + math.exp(lam_T))), 1 / (1 + math.exp(lam_eps))
    if kind == "edm":  # lambda = -log sigma, t = sigma
        edm = EDMSDE(sigma_min=math.exp(-lam_eps), sigma_max=math.exp(-lam_T))
        return edm, math.exp(-lam_eps)
    raise ValueError(f"kind must be one of {PATH_TARGETS}, got {kind!r}")
