r"""Exponential integrators: DDIM and DPM-Solver++ (2M, 3M, 2S) for the probability-flow
ODE. (SDE-DPM-Solver++(2M), for the reverse SDE, is in ``sde_dpmpp.py``; UniPC in
``unipc.py``.)

For a linear SDE with kernel :math:`x_t = a(t) x_0 + s(t) z`, Tweedie's formula turns
the score into a data prediction :math:`\hat x_0(x, t) = (x + s^2 \nabla\log p_t)/a`,
and the probability-flow ODE :math:`dx/dt = f x - \tfrac12 g^2 \nabla\log p_t` becomes
(with :math:`d\log s/dt = f + g^2/(2s^2)` and :math:`d\lambda/dt = -g^2/(2s^2)`, see
docs/maths.md §2)

.. math:: \frac{dx}{dt} = \frac{d\log s}{dt}\, x + \frac{d\lambda}{dt}\, a\, \hat x_0
    \quad\Longleftrightarrow\quad
    \frac{d}{d\lambda}\left(\frac{x}{s}\right) = e^{\lambda}\, \hat x_0,

in the log-SNR :math:`\lambda = \log(a/s)`. Its linear part is solved exactly; from
:math:`t_{i-1}` to :math:`t_i`, with :math:`h_i = \lambda_i - \lambda_{i-1} > 0`,

.. math:: x_i = \frac{s_i}{s_{i-1}}\, x_{i-1}
    + s_i \int_{\lambda_{i-1}}^{\lambda_i} e^{\lambda}\, \hat x_0(\lambda)\, d\lambda
    = \frac{s_i}{s_{i-1}}\, x_{i-1} + a_i \sum_{k \ge 0} \varphi_{k+1}(h_i)\, h_i^k\,
    \hat x_0^{(k)}(\lambda_{i-1}),

where :math:`\varphi_{k+1}(h) h^k = \int_0^h e^{-(h - u)} u^k/k!\, du`, i.e.
:math:`\varphi_1 = 1 - e^{-h}`, :math:`\varphi_2 = (h - 1 + e^{-h})/h`,
:math:`\varphi_3 = (h^2/2 - h + 1 - e^{-h})/h^2`. The solvers differ only in how they
approximate the derivatives :math:`\hat x_0^{(k)}` (Lu, Zhou, Bao, Chen, Li and Zhu,
"DPM-Solver++", 2022):

- :class:`DDIM` (= DPM-Solver++(1)): :math:`\hat x_0` constant over the step. Exact in
  one step when the data are a point mass (then :math:`\hat x_0 = \mu` everywhere).
- :class:`DPMSolverPP2M`: one backward difference of the previous :math:`\hat x_0`
  (Lu et al. 2022, Algorithm 2).
- :class:`DPMSolverPP3M`: two backward differences.
- :class:`DPMSolverPP2S`: singlestep; a second evaluation at the midpoint in
  :math:`\lambda` (Lu et al. 2022, Algorithm 1). Two evaluations per step.
- :class:`SDEDPMSolverPP2M` (``sde_dpmpp.py``): the same construction for the reverse
  SDE, whose linear drift and Gaussian noise are integrated exactly.

**Interface.** These are diffrax solvers for the ODE term that
:func:`samplers.sample_ode` builds, :math:`dx/ds = v(s, x) = -(f x - \tfrac12 g^2
\,\text{score})` in :math:`s = -t`, so they plug in through ``solver=``. A step gets
:math:`v` from one evaluation of the term and inverts it into the data prediction,

.. math:: \text{score} = \frac{2\,(f(t)\, x + v)}{g(t)^2}, \qquad
    \hat x_0 = \frac{x + s(t)^2\, \text{score}}{a(t)}, \qquad t = -s,

which needs the SDE: ``sample_ode`` hands it over through :meth:`bind_sde`. Each step
costs one score evaluation (``stats["nfe"] == steps``; 2S: two). Multistep solvers keep the
previous data predictions and log-SNRs in the solver state and start with lower-order
steps. There is no error estimate: use them with ``steps=`` or ``ts=``. Prefer a grid
that is fine near ``eps`` (:func:`samplers.log_snr_grid`, :func:`samplers.karras_grid`,
:func:`samplers.quadratic_grid`): on the uniform grid in ``t`` (``steps=N``) the last
step spans :math:`h \approx \tfrac12 \log(1 + 1/(N\epsilon))` for VP, which shrinks
only logarithmically until :math:`N \gg 1/\epsilon`. Example::

    x, stats = samplers.sample_ode(score_fn=oracle.score, sde=vp, shape=(512, 2),
                                   key=jax.random.key(0), solver=samplers.DPMSolverPP2M(),
                                   ts=samplers.log_snr_grid(vp, 10))
"""

from __future__ import annotations

import abc
import dataclasses
import math
import numbers
from typing import ClassVar

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

import sde as sde_lib

# |h| below this uses the Taylor series of phi_2, phi_3 (their closed forms cancel).
_SERIES_BELOW = 0.1


def _phi1(h: Array) -> Array:
    """:math:`1 - e^{-h}`."""
    return -jnp.expm1(-h)


def _phi2(h: Array) -> Array:
    r""":math:`(h - 1 + e^{-h})/h = \sum_{k \ge 1} (-1)^{k+1} h^k/(k+1)!`."""
    small = jnp.abs(h) < _SERIES_BELOW
    hs = jnp.where(small, 1.0, h)
    series = h * (1 / 2 - h * (1 / 6 - h * (1 / 24 - h * (1 / 120 - h * (1 / 720 - h / 5040)))))
    return jnp.where(small, series, 1.0 - _phi1(hs) / hs)


def _phi3(h: Array) -> Array:
    r""":math:`(h^2/2 - h + 1 - e^{-h})/h^2 = \sum_{k \ge 1} (-1)^{k+1} h^k/(k+2)!`."""
    small = jnp.abs(h) < _SERIES_BELOW
    hs = jnp.where(small, 1.0, h)
    series = h * (1 / 6 - h * (1 / 24 - h * (1 / 120 - h * (1 / 720 - h * (1 / 5040 - h / 40320)))))
    return jnp.where(small, series, 0.5 - _phi2(hs) / hs)


def _phi4(h: Array) -> Array:
    r""":math:`(h^3/6 - h^2/2 + h - 1 + e^{-h})/h^3 = \sum_{k \ge 1} (-1)^{k+1} h^k/(k+3)!`
    (the closed form cancels badly, so the series serves up to :math:`|h| = 1`)."""
    small = jnp.abs(h) < 1.0
    hs = jnp.where(small, 1.0, h)
    c = [1.0 / math.factorial(k + 3) for k in range(1, 12)]
    series = jnp.zeros_like(h)
    for ck in reversed(c):  # Horner: h (c1 - h (c2 - h (c3 - ...)))
        series = ck - h * series
    return jnp.where(small, h * series, 1 / 6 - _phi3(hs) / hs)


def data_prediction(sde: sde_lib.AbstractSDE, v: Array, x: Array, t: Array) -> Array:
    r"""Tweedie's :math:`\hat x_0 = (x + s^2\, \text{score})/a` from a value ``v`` of the
    samplers' probability-flow field :math:`v = -(f x - \tfrac12 g^2\, \text{score})`
    (in ``s = -t``) at the scalar time ``t``."""
    f, g = sde.drift_coeff(t), sde.diffusion(t)
    return _score_data_prediction(sde, 2.0 * (f * x + v) / g**2, x, t)


def _score_data_prediction(sde: sde_lib.AbstractSDE, score: Array, x: Array, t: Array) -> Array:
    a, s = sde.marginal(t)
    return (x + s**2 * score) / a


def sde_data_prediction(sde: sde_lib.AbstractSDE, v: Array, x: Array, t: Array) -> Array:
    r"""Tweedie's :math:`\hat x_0` from a value ``v`` of the reverse-SDE drift that
    :func:`samplers.sample_sde` integrates, :math:`v = -(f x - g^2\, \text{score})` in
    ``s = -t``: :math:`\text{score} = (f x + v)/g^2`."""
    f, g = sde.drift_coeff(t), sde.diffusion(t)
    return _score_data_prediction(sde, (f * x + v) / g**2, x, t)


class _ExponentialSolverBase(diffrax.AbstractSolver):
    """Plumbing shared by every exponential integrator: the SDE binding, the order,
    the evaluation count (one score evaluation per step unless a subclass says
    otherwise)."""

    sde: sde_lib.AbstractSDE | None = None

    term_structure: ClassVar = diffrax.ODETerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation
    _order: ClassVar[int] = 1

    @property
    def score_evaluations_per_step(self) -> int:
        """One score evaluation per step, none before the first."""
        return 1

    def bind_sde(self, sde: sde_lib.AbstractSDE):
        """A copy that uses ``sde`` to turn field values into data predictions
        (:func:`samplers.sample_ode` and :func:`samplers.sample_sde` call this)."""
        if not isinstance(sde, sde_lib.AbstractSDE):
            raise ValueError(
                f"{type(self).__name__}.bind_sde needs an sde.AbstractSDE, got {sde!r}"
            )
        return self._with_sde(sde)

    def _with_sde(self, sde):
        return dataclasses.replace(self, sde=sde)

    def order(self, terms) -> int:
        return self._order

    def _checked_sde(self) -> sde_lib.AbstractSDE:
        if self.sde is None:
            sampler = getattr(self, "_sampler", "sample_ode")
            raise ValueError(
                f"{type(self).__name__}() needs the forward SDE to form data predictions: "
                f"use it through samplers.{sampler}(..., solver={type(self).__name__}()), "
                f"which binds it, or bind it yourself with "
                f"{type(self).__name__}().bind_sde(sde)"
            )
        return self.sde

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def _times(t0, t1, y0):
    """The step's times in ``t`` (the samplers integrate in ``s = -t``), in the state's
    dtype so that the schedule is evaluated at the state's precision."""
    return jnp.asarray(-t0, y0.dtype), jnp.asarray(-t1, y0.dtype)


class _AbstractExponentialSolver(_ExponentialSolverBase):
    """Multistep probability-flow solvers: one evaluation per step, the previous data
    predictions and log-SNRs in the solver state.

    Subclasses set ``_history`` (how many previous data predictions they keep) and
    implement ``_update``.
    """

    _history: ClassVar[int] = 0

    def init(self, terms, t0, t1, y0, args):
        self._checked_sde()
        k = self._history
        ms = tuple(jnp.zeros_like(y0) for _ in range(k))
        lams = jnp.zeros((k,), dtype=jnp.result_type(y0))
        return ms, lams, jnp.array(0, dtype=jnp.int32)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump  # an ODE with no jumps
        sde = self._checked_sde()
        ms, lams, count = solver_state
        t_cur, t_next = _times(t0, t1, y0)
        m0 = data_prediction(sde, terms.vf(t0, y0, args), y0, t_cur)
        lam0, lam1 = sde.log_snr(t_cur), sde.log_snr(t_next)
        a1 = sde.mean_coeff(t_next)
        ratio = sde.std(t_next) / sde.std(t_cur)
        h = lam1 - lam0
        y1 = ratio * y0 + a1 * self._update(h, lam0, m0, ms, lams, count)
        y1 = y1.astype(y0.dtype)
        if self._history:
            ms = (m0,) + ms[:-1]
            lams = jnp.concatenate([jnp.reshape(lam0, (1,)).astype(lams.dtype), lams[:-1]])
        state = (ms, lams, jnp.minimum(count + 1, self._history))
        return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful

    @abc.abstractmethod
    def _update(self, h, lam0, m0, ms, lams, count) -> Array:
        r""":math:`(x_i - (s_i/s_{i-1}) x_{i-1}) / a_i`, the integral term, from the
        step's ``h``, the current data prediction ``m0`` at log-SNR ``lam0``, the
        previous ones ``ms`` at ``lams`` (most recent first) and how many of those are
        filled (``count``)."""


def _first_order(h, m0):
    return _phi1(h) * m0


def _second_order_multistep(h, lam0, m0, m1, lam1, valid):
    # Lu et al. 2022, Alg. 2: D = (1 + 1/(2r)) m0 - 1/(2r) m1, r = h_prev / h. The
    # 1/(2r) (m0 - m1) term is phi_1(h)/2 * (h x0'), which matches the exact
    # phi_2(h) h x0' to O(h^2): second order. Without history (valid False) the
    # result is discarded; r = 1 keeps it finite.
    r = jnp.where(valid, (lam0 - lam1) / h, 1.0)
    return _phi1(h) * (m0 + (m0 - m1) / (2.0 * r))


class DDIM(_AbstractExponentialSolver):
    r"""DDIM (Song, Meng and Ermon 2021) = DPM-Solver++(1): first-order exponential
    integrator of the probability-flow ODE in data-prediction form.

    .. math:: x_i = \frac{s_i}{s_{i-1}}\, x_{i-1}
        + a_i \left(1 - e^{-h_i}\right) \hat x_0(x_{i-1}, t_{i-1}),
        \qquad h_i = \lambda_i - \lambda_{i-1}.

    One score evaluation per step. With a point-mass data distribution the data
    prediction is exact and so is every step. Fixed steps only. Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.DDIM(), steps=50)
    """

    _history: ClassVar[int] = 0
    _order: ClassVar[int] = 1

    def _update(self, h, lam0, m0, ms, lams, count):
        return _first_order(h, m0)


class DPMSolverPP2M(_AbstractExponentialSolver):
    r"""DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second-order multistep
    exponential integrator in data-prediction form.

    With :math:`r_i = h_{i-1}/h_i` and the previous data prediction
    :math:`\hat x_0^{(i-2)}`,

    .. math:: D_i = \left(1 + \tfrac{1}{2r_i}\right)\hat x_0^{(i-1)}
        - \tfrac{1}{2r_i}\, \hat x_0^{(i-2)}, \qquad
        x_i = \frac{s_i}{s_{i-1}}\, x_{i-1} + a_i \left(1 - e^{-h_i}\right) D_i .

    The first step, having no history, is a :class:`DDIM` step. One score evaluation
    per step; fixed steps only (best on :func:`samplers.log_snr_grid`). Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.DPMSolverPP2M(),
                                       ts=samplers.log_snr_grid(vp, 10))
    """

    _history: ClassVar[int] = 1
    _order: ClassVar[int] = 2

    def _update(self, h, lam0, m0, ms, lams, count):
        second = _second_order_multistep(h, lam0, m0, ms[0], lams[0], count >= 1)
        return jnp.where(count >= 1, second, _first_order(h, m0))


_3M_VARIANTS = ("taylor", "kdiffusion")


class DPMSolverPP3M(_AbstractExponentialSolver):
    r"""DPM-Solver++(3M): third-order multistep exponential integrator in
    data-prediction form.

    From the last three data predictions :math:`m_0, m_1, m_2` at log-SNRs
    :math:`\lambda_0 > \lambda_1 > \lambda_2`, with :math:`h_0 = \lambda_0 - \lambda_1`,
    :math:`h_1 = \lambda_1 - \lambda_2`, :math:`r_j = h_j/h`,

    .. math:: D_{1,0} = \frac{m_0 - m_1}{r_0}, \quad D_{1,1} = \frac{m_1 - m_2}{r_1},
        \quad D_1 = D_{1,0} + \frac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1})
        \approx h \hat x_0', \quad D_2 = \frac{2 (D_{1,0} - D_{1,1})}{r_0 + r_1}
        \approx h^2 \hat x_0'',

    .. math:: x_i = \frac{s_i}{s_{i-1}}\, x_{i-1}
        + a_i\left(\varphi_1(h)\, m_0 + \varphi_2(h)\, D_1 + \varphi_3(h)\, D_2\right).

    (Expanding :math:`m_1, m_2` about :math:`\lambda_0` gives
    :math:`D_{1,0} - D_{1,1} = \tfrac12 (r_0 + r_1) h^2 \hat x_0'' + O(h^3)`, hence the
    factor 2.) The first step is a :class:`DDIM` step, the second a
    :class:`DPMSolverPP2M` step. One score evaluation per step; fixed steps only.

    ``variant="kdiffusion"`` is the other update in use: the DPM-Solver reference code
    (``multistep_dpm_solver_third_update``) and k-diffusion's ``sample_dpmpp_3m_sde``
    (with ``eta=0``) take :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1)`, half the
    Taylor-consistent one, so their :math:`\hat x_0''` term is :math:`h^3/12` instead
    of :math:`h^3/6`; k-diffusion's second step is the Taylor step
    :math:`\varphi_1(h)\, m_0 + \varphi_2(h)\, D_{1,0}` rather than the 2M one. It
    reproduces k-diffusion's sampler on the same grid (for :class:`sde.EDMSDE`, whose
    :math:`a = 1` is k-diffusion's setting; on another SDE, the same scheme in the
    scaled variable). It is second order (measured on the exact Gaussian flow: 2.0-2.2
    on log-SNR grids, 1.6-1.7 on Karras grids of 32-256 steps, 2.0 from 64 to 512;
    ``tests/samplers/test_exponential.py``), against ~3 for the default ``"taylor"``, yet on
    Karras grids of 5-40 steps it was as accurate or more; on log-SNR grids the
    default is the more accurate from 10 steps.

    On grids uniform in :math:`\lambda` the default showed order ~4 before reaching the
    float32 floor (a small leading error constant), order ~3 on Karras and quadratic
    grids. Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.DPMSolverPP3M(),
                                       ts=samplers.log_snr_grid(vp, 10))

    Args:
        variant: ``"taylor"`` (default: the Taylor-consistent update, order 3) or
            ``"kdiffusion"`` (the DPM-Solver authors' and k-diffusion's update).
    """

    variant: str = eqx.field(static=True, default="taylor")

    _history: ClassVar[int] = 2
    _order: ClassVar[int] = 3

    def __check_init__(self):
        if not isinstance(self.variant, str) or self.variant not in _3M_VARIANTS:
            raise ValueError(
                f"variant must be 'taylor' or 'kdiffusion', got variant={self.variant!r}"
            )

    def order(self, terms) -> int:
        return 3 if self.variant == "taylor" else 2

    def _update(self, h, lam0, m0, ms, lams, count):
        (m1, m2), (lam1, lam2) = ms, (lams[0], lams[1])
        # Before the history fills, the unused branches see zeros: keep them finite.
        r0 = jnp.where(count >= 1, (lam0 - lam1) / h, 1.0)
        r1 = jnp.where(count >= 2, (lam1 - lam2) / h, 1.0)
        d1_0 = (m0 - m1) / r0
        d1_1 = (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        if self.variant == "taylor":
            d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
            second = _second_order_multistep(h, lam0, m0, m1, lam1, count >= 1)
        else:
            d2 = (d1_0 - d1_1) / (r0 + r1)
            second = _phi1(h) * m0 + _phi2(h) * d1_0
        third = _phi1(h) * m0 + _phi2(h) * d1 + _phi3(h) * d2
        first = _first_order(h, m0)
        return jnp.where(count >= 2, third, jnp.where(count >= 1, second, first))


class DPMSolverPP2S(_ExponentialSolverBase):
    r"""DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", Algorithm 1): second-order
    singlestep exponential integrator in data-prediction form.

    Each step from :math:`t_{i-1}` to :math:`t_i` first takes a :class:`DDIM` step to an
    intermediate time :math:`s_i` at the log-SNR
    :math:`\lambda_{s_i} = \lambda_{i-1} + r h_i` (``r = 1/2`` by default: the midpoint
    in :math:`\lambda`), evaluates the data prediction there and combines the two:

    .. math:: u_i = \frac{\sigma_{s_i}}{\sigma_{i-1}}\, x_{i-1}
        + \alpha_{s_i}\left(1 - e^{-r h_i}\right) \hat x_0(x_{i-1}, t_{i-1}),

    .. math:: D_i = \left(1 - \tfrac{1}{2r}\right) \hat x_0(x_{i-1}, t_{i-1})
        + \tfrac{1}{2r}\, \hat x_0(u_i, s_i), \qquad
        x_i = \frac{\sigma_i}{\sigma_{i-1}}\, x_{i-1} + \alpha_i\left(1 - e^{-h_i}\right) D_i,

    (:math:`\sigma = s(t)`, :math:`\alpha = a(t)`). :math:`s_i` comes from the SDE's
    ``log_snr_inverse``; the step then uses the exact log-SNR of that (rounded) time,
    so the scheme stays consistent at any precision. Global order 2; two score
    evaluations per step (``stats["nfe"] == 2 * steps``) and no state between steps,
    so, unlike the multistep solvers, every step (the first included) is second order.
    Fixed steps only. Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.DPMSolverPP2S(),
                                       ts=samplers.log_snr_grid(vp, 5))   # 10 NFE

    Args:
        r: where the intermediate point sits, as a fraction of the step in
            :math:`\lambda`, in ``(0, 1]``.
    """

    r: float = 0.5

    _order: ClassVar[int] = 2

    def __check_init__(self):
        r = self.r
        if not isinstance(r, numbers.Real) or isinstance(r, bool) or not 0 < r <= 1:
            raise ValueError(f"r must be a number in (0, 1], got r={r!r}")

    @property
    def score_evaluations_per_step(self) -> int:
        """Two score evaluations per step (the step's start and the intermediate point)."""
        return 2

    def init(self, terms, t0, t1, y0, args):
        self._checked_sde()
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump, solver_state
        sde = self._checked_sde()
        t_cur, t_next = _times(t0, t1, y0)
        lam0, lam1 = sde.log_snr(t_cur), sde.log_snr(t_next)
        h = lam1 - lam0
        t_mid = sde.log_snr_inverse(lam0 + self.r * h).astype(y0.dtype)
        h_mid = sde.log_snr(t_mid) - lam0
        std0 = sde.std(t_cur)
        m0 = data_prediction(sde, terms.vf(t0, y0, args), y0, t_cur)
        u = sde.std(t_mid) / std0 * y0 + sde.mean_coeff(t_mid) * _phi1(h_mid) * m0
        m_mid = data_prediction(sde, terms.vf(-t_mid, u, args), u, t_mid)
        w = 0.5 * h / h_mid  # 1/(2r) with the r of the rounded intermediate time
        d = (1.0 - w) * m0 + w * m_mid
        y1 = sde.std(t_next) / std0 * y0 + sde.mean_coeff(t_next) * _phi1(h) * d
        y1 = y1.astype(y0.dtype)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful
