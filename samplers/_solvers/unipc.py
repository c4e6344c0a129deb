r"""UniPC: the unified predictor-corrector exponential integrator (Zhao, Bai, Rao, Zhou
and Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models", NeurIPS 2023), in data-prediction form, as a diffrax solver.

**The update.** As for DPM-Solver++ (see ``exponential.py``), a step from
:math:`t_{i-1}` to :math:`t_i` solves the linear part of the probability-flow ODE
exactly and Taylor-expands the data prediction :math:`\hat x_0` in the log-SNR,

.. math:: x_i = \frac{s_i}{s_{i-1}}\, x_{i-1} + a_i \sum_{k \ge 0}
    \varphi_{k+1}(h)\, h^k\, \hat x_0^{(k)}(\lambda_{i-1}), \qquad
    h = \lambda_i - \lambda_{i-1},

with :math:`\varphi_1(h) = 1 - e^{-h}` and :math:`\varphi_{k+1}(h) = 1/k! -
\varphi_k(h)/h`. Given data predictions :math:`m_j` at log-SNRs
:math:`\lambda_{i-1} + r_j h` besides :math:`m_0` at :math:`\lambda_{i-1}`, the
differences :math:`D_j = m_j - m_0 = \sum_{k \ge 1} (r_j h)^k \hat x_0^{(k)}/k!` stand in
for the derivatives. UniPC writes the update as

.. math:: x_i = \frac{s_i}{s_{i-1}}\, x_{i-1} + a_i\left(\varphi_1(h)\, m_0
    + B(h) \sum_{j=1}^{n} \rho_j\, \frac{D_j}{r_j}\right),

and matching :math:`\hat x_0', \dots, \hat x_0^{(n)}` gives the order conditions
:math:`\sum_j \rho_j r_j^{k-1} = k!\, \varphi_{k+1}(h) / B(h)`, :math:`k = 1, \dots, n`
(the paper's :math:`R_n(h)\, a = \varphi_n(h)/B(h)`), a Vandermonde system. They only
need to hold to :math:`O(h^{n+1-k})` for a local error :math:`O(h^{n+2})`; with a single
difference (:math:`n = 1`) UniPC takes the :math:`h \to 0` limit
:math:`\rho_1 = 1/2` for any :math:`B(h) = h + O(h^2)`, and that is where :math:`B`
matters: ``variant="bh1"`` is :math:`B(h) = h`, ``"bh2"`` is :math:`B(h) = 1 - e^{-h}`
(the data-prediction form of the paper's :math:`e^{h} - 1`; with it UniP-2 *is*
DPM-Solver++(2M)). With two or more differences the system is solved exactly (a
Lagrange-basis closed form), and :math:`B` cancels.

- **UniP-p** (predictor, order p): the differences to the ``p - 1`` previous data
  predictions.
- **UniC-p** (corrector, order p + 1): after the predictor has produced
  :math:`\tilde x_i`, the next step evaluates :math:`m_i = \hat x_0(\tilde x_i, t_i)`
  anyway; the corrector recomputes step :math:`i` with the same previous points plus
  :math:`m_i` (:math:`r = 1`), one more difference, so one order more, for no extra
  evaluation. The corrected :math:`x^c_i` starts the next step, whose first-order term
  still uses :math:`m_i` (evaluated at :math:`\tilde x_i`), as in the paper.

**Cost and warm-up.** One score evaluation per step. While the history fills, the
first steps use fewer differences (step 1: DDIM + UniC-1; step 2: UniP-2 + UniC-2; ...).
The final step is left uncorrected: its corrector would need one more evaluation
(at :math:`t_N`). So with ``corrector=True`` the result is the last predictor output
and ``stats["nfe"] == steps``. Global order: ``order + 1`` with the corrector
(``order`` without); the DDIM first step has local error :math:`O(h^3)` once corrected,
which bounds the asymptotic global order by 3, but its constant is tiny near
:math:`T` (see the measured orders in ``tests/samplers/test_exponential.py``).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .exponential import (
    _ExponentialSolverBase,
    _phi1,
    _phi2,
    _phi3,
    _phi4,
    _times,
    data_prediction,
)

_VARIANTS = ("bh1", "bh2")


def _b(h: Array, variant: str) -> Array:
    """UniPC's :math:`B(h)`: ``h`` ("bh1") or :math:`1 - e^{-h}` ("bh2")."""
    return h if variant == "bh1" else _phi1(h)


def _lagrange_weights(rs: list[Array], bs: list[Array]) -> list[Array]:
    r"""The solution :math:`w` of :math:`\sum_j w_j r_j^{k-1} = b_k`, ``k = 1..m``:
    :math:`w_j = \sum_k \ell_{jk} b_k` with :math:`\ell_{jk}` the coefficients of the
    Lagrange basis polynomial :math:`L_j(x) = \prod_{l \ne j} (x - r_l)/(r_j - r_l)`."""
    m = len(rs)
    out = []
    for j in range(m):
        coeffs = [jnp.ones_like(rs[0])]  # prod_{l != j} (x - r_l), lowest power first
        denom = jnp.ones_like(rs[0])
        for l_ in range(m):
            if l_ == j:
                continue
            shifted = [jnp.zeros_like(rs[0])] + coeffs  # x * poly
            scaled = [-rs[l_] * c for c in coeffs] + [jnp.zeros_like(rs[0])]
            coeffs = [u + v for u, v in zip(shifted, scaled, strict=True)]
            denom = denom * (rs[j] - rs[l_])
        out.append(sum(c * b for c, b in zip(coeffs, bs, strict=True)) / denom)
    return out


def _coefficients(h: Array, rs: list[Array], n: Array, variant: str) -> list[Array]:
    r"""Weights :math:`c_j` of the differences, :math:`\sum_j c_j D_j \approx \sum_k
    \varphi_{k+1}(h) h^k \hat x_0^{(k)}`, using the first ``n`` (traced) of ``rs``;
    the rest get 0. :math:`c_j = B(h) \rho_j / r_j`."""
    big = len(rs)
    rhs = [_phi2(h), 2.0 * _phi3(h), 6.0 * _phi4(h)]  # k! phi_{k+1}(h), k = 1, 2, 3
    zero = jnp.zeros_like(h)
    result = [zero] * big
    for m in range(1, big + 1):
        if m == 1:
            # UniPC's rho_1 = 1/2 (the limit of phi_2(h)/B(h)): c = B(h) / (2 r)
            cand = [_b(h, variant) / (2.0 * rs[0])] + [zero] * (big - 1)
        else:
            # exact: sum_j (c_j r_j) r_j^{k-1} = k! phi_{k+1}(h), so B(h) cancels
            w = _lagrange_weights(rs[:m], rhs[:m])
            cand = [wj / rj for wj, rj in zip(w, rs[:m], strict=True)] + [zero] * (big - m)
        result = [jnp.where(n == m, c, r) for c, r in zip(cand, result, strict=True)]
    return result


def _safe_ratios(lams: Array, lam_ref: Array, h: Array, n: Array) -> list[Array]:
    """``(lams[j] - lam_ref) / h`` for the first ``n`` entries; distinct finite dummies
    (-1, -2, ...) for the unfilled rest, so that unused branches stay finite."""
    return [
        jnp.where(j < n, (lams[j] - lam_ref) / h, -(j + 1.0)).astype(h.dtype)
        for j in range(lams.shape[0])
    ]


class UniPC(_ExponentialSolverBase):
    r"""UniPC-p (Zhao et al. 2023) in data-prediction form: the UniP-p multistep
    predictor with the UniC-p corrector, one score evaluation per step.

    Each step :math:`t_{i-1} \to t_i` (see the module docstring for the derivation):

    1. evaluate :math:`m_{i-1} = \hat x_0(\tilde x_{i-1}, t_{i-1})` at the predictor's
       output;
    2. **UniC**: redo the previous step with :math:`m_{i-1}` as one more point,

       .. math:: x^c_{i-1} = \frac{s_{i-1}}{s_{i-2}}\, x^c_{i-2} + a_{i-1}\Big(
           \varphi_1(h_{i-1})\, m_{i-2} + B(h_{i-1}) \sum_j \rho^c_j D_j/r_j\Big);

    3. **UniP**: :math:`\tilde x_i = \frac{s_i}{s_{i-1}}\, x^c_{i-1} +
       a_i\big(\varphi_1(h_i)\, m_{i-1} + B(h_i) \sum_j \rho^p_j D_j/r_j\big)`, from the
       previous ``order - 1`` data predictions.

    The last step's result is not corrected (that would need one more evaluation), so
    ``stats["nfe"] == steps``. Global order ``order + 1`` with the corrector;
    ``corrector=False`` gives UniP-``order`` (order ``order``; ``UniPC(1,
    corrector=False)`` is :class:`DDIM`, ``UniPC(2, "bh2", corrector=False)`` is
    :class:`DPMSolverPP2M`). Fixed steps only; best on a log-SNR or Karras grid.
    Example::

        x, stats = samplers.sample_ode(score_fn=score, sde=vp, shape=(64, 2), key=key,
                                       solver=samplers.UniPC(order=2),
                                       ts=samplers.log_snr_grid(vp, 10))

    Args:
        order: the predictor's order p in {1, 2, 3} (it keeps p previous data
            predictions); the corrector makes the method order p + 1.
        variant: UniPC's :math:`B(h)`: ``"bh1"`` (:math:`h`) or ``"bh2"``
            (:math:`1 - e^{-h}`). It changes only the steps that use a single
            difference (the second-order predictor, the first corrector).
        corrector: apply UniC (free: it reuses the next step's evaluation).
    """

    predictor_order: int = eqx.field(static=True)
    variant: str = eqx.field(static=True)
    corrector: bool = eqx.field(static=True)

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        corrector: bool = True,
        sde=None,
    ):
        if not isinstance(order, int) or isinstance(order, bool) or order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got order={order!r}")
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be 'bh1' or 'bh2', got variant={variant!r}")
        if not isinstance(corrector, bool):
            raise ValueError(f"corrector must be True or False, got corrector={corrector!r}")
        self.predictor_order = order
        self.variant = variant
        self.corrector = corrector
        self.sde = sde

    def _with_sde(self, sde):
        return UniPC(self.predictor_order, self.variant, self.corrector, sde=sde)

    def order(self, terms) -> int:
        return self.predictor_order + int(self.corrector)

    def init(self, terms, t0, t1, y0, args):
        self._checked_sde()
        p = self.predictor_order
        ms = tuple(jnp.zeros_like(y0) for _ in range(p))
        lams = jnp.zeros((p,), dtype=jnp.result_type(y0))
        x_base = jnp.zeros_like(y0)
        t_base = jnp.ones((), dtype=jnp.result_type(y0))
        return x_base, t_base, ms, lams, jnp.array(0, dtype=jnp.int32)

    def _combine(self, h, m0, ds, rs, n):
        """phi_1(h) m_0 + sum_j c_j D_j."""
        cs = _coefficients(h, rs, n, self.variant)
        return _phi1(h) * m0 + sum(c * d for c, d in zip(cs, ds, strict=True))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump  # an ODE with no jumps
        sde = self._checked_sde()
        p = self.predictor_order
        x_base, t_base, ms, lams, count = solver_state
        t_cur, t_next = _times(t0, t1, y0)
        lam_cur, lam_next = sde.log_snr(t_cur), sde.log_snr(t_next)
        m_new = data_prediction(sde, terms.vf(t0, y0, args), y0, t_cur)
        std_cur = sde.std(t_cur)

        # UniC: the previous step (t_base -> t_cur) again, with m_new at r = 1.
        if self.corrector:
            h_c = lam_cur - lams[0]
            n_c = jnp.minimum(count, p)
            rs_c = [jnp.ones_like(h_c)] + _safe_ratios(lams[1:], lams[0], h_c, n_c - 1)
            ds_c = [m_new - ms[0]] + [m - ms[0] for m in ms[1:]]
            integral = self._combine(h_c, ms[0], ds_c, rs_c, n_c)
            corrected = std_cur / sde.std(t_base) * x_base + sde.mean_coeff(t_cur) * integral
            x_cur = jnp.where(count >= 1, corrected.astype(y0.dtype), y0)
        else:
            x_cur = y0

        # UniP: t_cur -> t_next from m_new and the p - 1 most recent previous points.
        h = lam_next - lam_cur
        n_p = jnp.minimum(count, p - 1)
        rs_p = _safe_ratios(lams[: p - 1], lam_cur, h, n_p)
        ds_p = [m - m_new for m in ms[: p - 1]]
        integral = self._combine(h, m_new, ds_p, rs_p, n_p)
        y1 = sde.std(t_next) / std_cur * x_cur + sde.mean_coeff(t_next) * integral
        y1 = y1.astype(y0.dtype)

        ms = (m_new,) + ms[:-1]
        lams = jnp.concatenate([jnp.reshape(lam_cur, (1,)).astype(lams.dtype), lams[:-1]])
        state = (x_cur, t_cur, ms, lams, jnp.minimum(count + 1, p))
        return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful
