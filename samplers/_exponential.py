r"""Exponential integrators: DDIM and DPM-Solver++ (2M, 3M, 2S) for the probability-flow
ODE, SDE-DPM-Solver++(2M) for the reverse SDE. (UniPC is in :mod:`samplers._unipc`.)

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
- :class:`SDEDPMSolverPP2M`: the same construction for the reverse SDE, whose linear
  drift and Gaussian noise are integrated exactly (see its docstring).

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

    The first step is a :class:`DDIM` step, the second a :class:`DPMSolverPP2M` step.
    One score evaluation per step; fixed steps only.

    Note: the DPM-Solver reference code (``multistep_dpm_solver_third_update``), and
    the ports of it, use half of this :math:`D_2` (no factor 2), so their
    :math:`\hat x_0''` term is half the exact one (:math:`h^3/12` instead of
    :math:`h^3/6`): that variant measured global order ~2 on the exact Gaussian flow,
    this one ~3 (see ``tests/test_exponential.py``). On grids uniform in
    :math:`\lambda` this solver showed order ~4 before reaching the float32 floor
    (a small leading error constant), order ~3 on Karras and quadratic grids.
    Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.DPMSolverPP3M(),
                                       ts=samplers.log_snr_grid(vp, 10))
    """

    _history: ClassVar[int] = 2
    _order: ClassVar[int] = 3

    def _update(self, h, lam0, m0, ms, lams, count):
        (m1, m2), (lam1, lam2) = ms, (lams[0], lams[1])
        # Before the history fills, the unused branches see zeros: keep them finite.
        r0 = jnp.where(count >= 1, (lam0 - lam1) / h, 1.0)
        r1 = jnp.where(count >= 2, (lam1 - lam2) / h, 1.0)
        d1_0 = (m0 - m1) / r0
        d1_1 = (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
        third = _phi1(h) * m0 + _phi2(h) * d1 + _phi3(h) * d2
        second = _second_order_multistep(h, lam0, m0, m1, lam1, count >= 1)
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


class SDEDPMSolverPP2M(_ExponentialSolverBase, diffrax.AbstractItoSolver):
    r"""SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", §5 and App.): a
    second-order multistep exponential integrator of the *reverse SDE* in
    data-prediction form.

    The reverse SDE :math:`dx = [f x - g^2 \nabla\log p_t]\,dt + g\, d\bar w` with
    :math:`\nabla\log p_t = (a \hat x_0 - x)/s^2` reads, with
    :math:`d\log s/dt = f + g^2/(2s^2)` and :math:`d\lambda/dt = -g^2/(2s^2)`,

    .. math:: dx = \left[\left(\frac{d\log s}{dt} - \frac{d\lambda}{dt}\right) x
        + 2 a \frac{d\lambda}{dt}\, \hat x_0\right] dt + g\, d\bar w .

    Its linear part has the integrating factor :math:`e^{\lambda}/s`; solving it exactly
    from :math:`t_{i-1}` to :math:`t_i` (:math:`h_i = \lambda_i - \lambda_{i-1}`), with
    :math:`\int 2 e^{2\lambda} d\lambda` for the data term and the Itô isometry
    (:math:`g^2 = -2 s^2\, d\lambda/dt`) for the noise,

    .. math:: x_i = \frac{s_i}{s_{i-1}} e^{-h_i} x_{i-1}
        + a_i \int_0^{h_i} 2 e^{-2(h_i - u)}\, \hat x_0(\lambda_{i-1} + u)\, du
        + s_i \sqrt{1 - e^{-2h_i}}\; z_i, \qquad z_i \sim N(0, I),

    exactly. Freezing :math:`\hat x_0` gives SDE-DPM-Solver++(1),
    :math:`a_i (1 - e^{-2h_i})\, \hat x_0^{(i-1)}`; a linear :math:`\hat x_0` adds
    :math:`a_i\, h_i \varphi_2(2h_i)\, h_i \hat x_0'`, whose leading term is matched,
    as in :class:`DPMSolverPP2M`, by a backward difference (:math:`r_i = h_{i-1}/h_i`):

    .. math:: D_i = \left(1 + \tfrac{1}{2r_i}\right)\hat x_0^{(i-1)}
        - \tfrac{1}{2r_i}\, \hat x_0^{(i-2)}, \qquad
        x_i = \frac{s_i}{s_{i-1}} e^{-h_i} x_{i-1} + a_i \left(1 - e^{-2h_i}\right) D_i
        + s_i \sqrt{1 - e^{-2h_i}}\; z_i .

    The first step, having no history, is SDE-DPM-Solver++(1). One score evaluation per
    step. The noise is the sampler's: :math:`z_i = \Delta W_i/\sqrt{\Delta s_i}` from the
    Brownian increment of :func:`samplers.sample_sde`'s noise term (on fixed steps, its
    :class:`samplers.GridBrownianPath`), so a key fixes the sample as for any SDE
    solver. The noise and the linear drift are integrated exactly, so the scheme is
    exact in law for a point mass at any step size. For a Gaussian the scheme is affine
    and its law is computable: started from the exact :math:`p_T` its mean is exact
    and its covariance converges with weak order 2 (measured 1.9-2.0 on log-SNR and
    Karras grids, ``tests/test_exponential.py``). Fixed steps only, on a grid fine in
    :math:`\lambda` near ``eps`` (``ts=samplers.log_snr_grid(...)``): with ``steps=N``
    (uniform in ``t``) the last steps are long in :math:`\lambda` and it was less
    accurate than Euler-Maruyama at 50-100 steps. Example::

        x, stats = samplers.sample_sde(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.SDEDPMSolverPP2M(),
                                       ts=samplers.log_snr_grid(vp, 50))
    """

    term_structure: ClassVar = diffrax.MultiTerm[tuple[diffrax.AbstractTerm, diffrax.AbstractTerm]]
    _order: ClassVar[int] = 1  # strong order; see the class docstring for the weak order
    _sampler: ClassVar[str] = "sample_sde"

    def init(self, terms, t0, t1, y0, args):
        self._checked_sde()
        return jnp.zeros_like(y0), jnp.zeros((), y0.dtype), jnp.array(False)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        sde = self._checked_sde()
        m1, lam_prev, started = solver_state
        drift, noise = terms.terms
        t_cur, t_next = _times(t0, t1, y0)
        m0 = sde_data_prediction(sde, drift.vf(t0, y0, args), y0, t_cur)
        z = noise.contr(t0, t1) / jnp.sqrt(jnp.asarray(t1 - t0, y0.dtype))
        lam0, lam1 = sde.log_snr(t_cur), sde.log_snr(t_next)
        h = lam1 - lam0
        # 1/(2 r_i) = h_i / (2 h_{i-1}); r = 1 keeps the unused branch finite
        half_inv_r = jnp.where(started, 0.5 * h / jnp.where(started, lam0 - lam_prev, h), 0.0)
        d = m0 + half_inv_r * (m0 - m1)
        phi = _phi1(2.0 * h)  # 1 - e^{-2h}
        std1 = sde.std(t_next)
        y1 = (
            std1 / sde.std(t_cur) * jnp.exp(-h) * y0
            + sde.mean_coeff(t_next) * phi * d
            + std1 * jnp.sqrt(phi) * z
        ).astype(y0.dtype)
        state = (m0, lam0.astype(y0.dtype), jnp.array(True))
        return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
