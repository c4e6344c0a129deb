r"""The exact score of independent, uniformly dequantised per-coordinate histograms.

Discrete data (images: :math:`K` levels per pixel, dequantised uniformly into bins of
width :math:`w` starting at ``lo``) whose coordinates were independent, each with its own
level probabilities :math:`P_{ik}`, has the piecewise-uniform density

.. math:: p_0(x) = \prod_i \sum_k P_{ik}\, \frac{1[l_k \le x_i < l_k + w]}{w},
    \qquad l_k = \text{lo} + k w .

Under a kernel :math:`x_t = a x_0 + s z` each coordinate's marginal is a sum of
Gaussian-blurred boxes. With :math:`\epsilon = (x - a x_0)/s` (the noise that took
:math:`x_0` to :math:`x`), bin :math:`k` leaves :math:`\epsilon` in
:math:`[\beta_k, \alpha_k] = [(x - a(l_k + w))/s,\; (x - a l_k)/s]`, so

.. math::
    p_t(x_i) = \frac{1}{a w} \sum_k P_{ik}\, \big(\Phi(\alpha_k) - \Phi(\beta_k)\big), \qquad
    \nabla_{x_i} \log p_t = -\frac{1}{s} \sum_k \pi_k\, m(\beta_k, \alpha_k),

where :math:`\pi_k \propto P_{ik} (\Phi(\alpha_k) - \Phi(\beta_k))` is the posterior of
the bin and :math:`m(\beta, \alpha) = E[\epsilon \mid \beta < \epsilon < \alpha]` the mean
of a standard normal truncated to the interval (Tweedie's formula, bin by bin). Both are
computed in float32 without cancellation: by the tail the interval lies in (so a
difference of two tiny CDFs never appears), and by a second-order expansion for
intervals so narrow that any difference would cancel. The log-density
(:func:`histogram_log_density`, which reports the base alone) goes bin by bin through
:func:`truncated_normal_stats`; the score (:func:`histogram_score`, evaluated at every
training step and ODE evaluation) takes a cheaper edge-wise path with a closed-form
derivative.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.scipy.special import erfc, erfcx, ndtr
from jaxtyping import Array, ArrayLike

from sde import AbstractSDE

from ._embedding import broadcast_cond
from ._parametrisation import AbstractParametrisation, GaussianResidual, NoisePrediction

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_SQRT2 = math.sqrt(2.0)
_SQRT_PI_2 = math.sqrt(math.pi / 2)
_SQRT_PI = math.sqrt(math.pi)
_NARROW = 1e-2  # half-width * max(1, |centre|) below which the expansion is used


def _log_phi(z: Array) -> Array:
    return -0.5 * z**2 - _LOG_SQRT_2PI


def _erfcx(y: Array) -> Array:
    """``erfcx(y)`` for ``y >= 0``. ``jax.scipy.special.erfcx`` returns 0 for float32
    ``y`` in about [9.195, 9.42] (jax 0.10.2), so from ``y = 8`` on the asymptotic series
    (five terms: relative error below 3e-8 there) is used instead."""
    small = y < 8.0
    inv2 = 1.0 / (2.0 * jnp.where(small, 8.0, y) ** 2)  # 1 / (2 y^2)
    series = 1 + inv2 * (-1 + inv2 * (3 + inv2 * (-15 + inv2 * 105)))
    return jnp.where(
        small, erfcx(jnp.where(small, y, 0.0)), series / (jnp.where(small, 8.0, y) * _SQRT_PI)
    )


def _log1mexp(x: Array) -> Array:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and far below it."""
    return jnp.where(x > -math.log(2), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _upper(lo: Array, hi: Array) -> tuple[Array, Array]:
    r"""``(log mass, mean)`` of ``N(0, 1)`` on ``[lo, hi]`` for ``0 < lo < hi``.

    With the tail :math:`Q(z) = \varphi(z) M(z)` and the Mills ratio
    :math:`M(z) = \sqrt{\pi/2}\, \mathrm{erfcx}(z/\sqrt2)` (no cancellation far out),
    :math:`\log Q(hi)/Q(lo) = -(hi^2 - lo^2)/2 + \log M(hi)/M(lo)`.
    """
    mills_lo = _SQRT_PI_2 * _erfcx(lo / _SQRT2)
    mills_hi = _SQRT_PI_2 * _erfcx(hi / _SQRT2)
    log_phi_ratio = -0.5 * (hi - lo) * (hi + lo)  # log phi(hi) / phi(lo)
    log_frac = jnp.minimum(log_phi_ratio + jnp.log(mills_hi / mills_lo), -1e-30)
    log_mass = _log_phi(lo) + jnp.log(mills_lo) + _log1mexp(log_frac)
    mean = -jnp.expm1(log_phi_ratio) / (mills_lo * -jnp.expm1(log_frac))
    return log_mass, mean


def truncated_normal_stats(lo: ArrayLike, hi: ArrayLike) -> tuple[Array, Array]:
    r"""``(log P(lo < Z < hi), E[Z | lo < Z < hi])`` for :math:`Z \sim N(0, 1)` and
    ``lo < hi`` (elementwise), stable in float32 for every interval: far in either
    tail, and as narrow as a float allows. Differentiable (no NaN in unused branches).
    """
    lo, hi = jnp.asarray(lo), jnp.asarray(hi)
    c, h = 0.5 * (lo + hi), 0.5 * (hi - lo)
    narrow = h * jnp.maximum(1.0, jnp.abs(c)) < _NARROW
    upper = ~narrow & (lo > 0)
    lower = ~narrow & (hi < 0)
    middle = ~narrow & ~upper & ~lower

    # narrow: density phi(c + u) ~ phi(c) (1 - c u + (c^2 - 1) u^2 / 2) on [-h, h]
    hn = jnp.where(narrow, jnp.maximum(h, 1e-30), 1e-3)  # h = 0: lo == hi after rounding
    n_log = jnp.log(2 * hn) + _log_phi(c) + jnp.log1p((c**2 - 1) * hn**2 / 6)
    n_mean = c - c * hn**2 / 3
    # upper tail, and the lower tail by symmetry: m(lo, hi) = -m(-hi, -lo)
    u_log, u_mean = _upper(jnp.where(upper, lo, 1.0), jnp.where(upper, hi, 2.0))
    l_log, l_mean = _upper(jnp.where(lower, -hi, 1.0), jnp.where(lower, -lo, 2.0))
    # straddling 0 and not narrow: the mass is at least ~5e-3, a plain difference is fine
    m_lo, m_hi = jnp.where(middle, lo, -1.0), jnp.where(middle, hi, 1.0)
    m_mass = ndtr(m_hi) - ndtr(m_lo)
    m_log = jnp.log(m_mass)
    m_mean = (jnp.exp(_log_phi(m_lo)) - jnp.exp(_log_phi(m_hi))) / m_mass

    log_mass = jnp.where(narrow, n_log, jnp.where(upper, u_log, jnp.where(lower, l_log, m_log)))
    mean = jnp.where(narrow, n_mean, jnp.where(upper, u_mean, jnp.where(lower, -l_mean, m_mean)))
    return log_mass, mean


def _per_bin(log_probs: Array, lo: float, width: float, x: Array, a: Array, s: Array):
    """``(log-weights [N, D, K], truncated means [N, D, K])`` of each coordinate's bins,
    for ``x`` [N, D] and ``a``, ``s`` [N]."""
    n_levels = log_probs.shape[-1]
    edges = lo + width * jnp.arange(n_levels + 1, dtype=x.dtype)  # [K + 1]
    z = (x[..., None] - a[:, None, None] * edges) / s[:, None, None]  # decreasing in k
    log_mass, mean = truncated_normal_stats(z[..., 1:], z[..., :-1])
    return log_probs + log_mass, mean


def histogram_log_density(
    log_probs: Array, lo: float, width: float, x: Array, a: ArrayLike, s: ArrayLike
) -> Array:
    r""":math:`\log p_t(x)` per example (``x`` [N, D], ``a``, ``s`` scalars or [N])."""
    a, s = jnp.broadcast_to(a, x.shape[:1]), jnp.broadcast_to(s, x.shape[:1])
    log_w, _ = _per_bin(log_probs, lo, width, x, a, s)
    per_coord = jax.nn.logsumexp(log_w, axis=-1) - jnp.log(a * width)[:, None]
    return per_coord.sum(axis=-1)


def _score_and_slope(
    lo: float, width: float, log_probs: Array, x: Array, a: Array, s: Array
) -> tuple[Array, Array]:
    """The score and its derivative along its own coordinate, ``(d/dx_i) score_i``
    (the Jacobian is diagonal): ``(Var[eps | x] - 1) / s^2``, from the bins' second
    moments. ``x`` [N, D], ``a`` and ``s`` [N]."""
    probs = jnp.exp(log_probs)
    n_levels = log_probs.shape[-1]
    edges = lo + width * jnp.arange(n_levels + 1, dtype=x.dtype)
    z = (x[..., None] - a[:, None, None] * edges) / s[:, None, None]  # [N, D, K + 1], falling
    lo_z, hi_z = z[..., 1:], z[..., :-1]  # bin k leaves the noise in [lo_z, hi_z]
    c = 0.5 * (lo_z + hi_z)
    h = (0.5 * a * width / s)[:, None, None]
    narrow = h * jnp.maximum(1.0, jnp.abs(c)) < _NARROW
    # wide bins: edge values; each mass from the tail that is small there
    tail = 0.5 * erfc(z / _SQRT2)  # Q(z)
    cdf = 0.5 * erfc(-z / _SQRT2)  # Phi(z)
    pdf = jnp.exp(_log_phi(z))
    zpdf = z * pdf
    mass_w = jnp.where(lo_z > 0, tail[..., 1:] - tail[..., :-1], cdf[..., :-1] - cdf[..., 1:])
    first_w = pdf[..., 1:] - pdf[..., :-1]  # E[eps 1(bin)]
    second_w = mass_w + zpdf[..., 1:] - zpdf[..., :-1]  # E[eps^2 1(bin)]
    # narrow bins: phi(c + u) ~ phi(c) (1 - c u + (c^2 - 1) u^2 / 2) on [-h, h]
    h2 = h**2
    mass_n = 2 * h * jnp.exp(_log_phi(c)) * (1 + (c**2 - 1) * h2 / 6)
    first_n = mass_n * c * (1 - h2 / 3)
    second_n = mass_n * (c**2 * (1 - 2 * h2 / 3) + h2 / 3)
    total = (probs * jnp.where(narrow, mass_n, mass_w)).sum(-1)
    first = (probs * jnp.where(narrow, first_n, first_w)).sum(-1)
    second = (probs * jnp.where(narrow, second_n, second_w)).sum(-1)
    ok = total > 1e-30
    safe_total = jnp.where(ok, total, 1.0)
    mean = first / safe_total
    var = jnp.maximum(second / safe_total - mean**2, 0.0)
    # far outside every bin: the nearest bin's tail, E[eps | eps < z] ~ z + 1/z and
    # Var ~ 1/z^2 for z << 0 (and mirrored above the range)
    below = x < a[:, None] * (lo + 0.5 * n_levels * width)
    nearest = jnp.where(below, z[..., 0], z[..., -1])
    nearest = jnp.where(ok, jnp.where(below, -20.0, 20.0), nearest)  # keep 1/z finite
    mean = jnp.where(ok, mean, nearest + 1 / nearest)
    var = jnp.where(ok, var, 1 / nearest**2)
    inv_s = 1 / s[:, None]
    return -mean * inv_s, (var - 1) * inv_s**2


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _score(lo, width, log_probs, x, a, s):
    return _score_and_slope(lo, width, log_probs, x, a, s)[0]


@functools.partial(_score.defjvp, symbolic_zeros=True)
def _score_jvp(lo, width, primals, tangents):
    # d/dx by the closed form (one pass instead of differentiating every bin); any
    # other tangent (the histograms, a, s) by differentiating the formula itself
    score, slope = _score_and_slope(lo, width, *primals)
    log_probs, x, a, s = primals
    d_log_probs, dx, da, ds = tangents
    out = jnp.zeros_like(score)
    if not isinstance(dx, SymbolicZero):
        out = out + slope * dx
    rest = [not isinstance(d, SymbolicZero) for d in (d_log_probs, da, ds)]
    if any(rest):
        zeros = [jnp.zeros_like(p) for p in (log_probs, a, s)]
        dots = [
            d if r else zero for d, r, zero in zip((d_log_probs, da, ds), rest, zeros, strict=True)
        ]
        _, extra = jax.jvp(
            lambda lp, aa, ss: _score_and_slope(lo, width, lp, x, aa, ss)[0],
            (log_probs, a, s),
            tuple(dots),
        )
        out = out + extra
    return score, out


def histogram_score(
    log_probs: Array, lo: float, width: float, x: Array, a: ArrayLike, s: ArrayLike
) -> Array:
    r""":math:`\nabla_x \log p_t(x)` (``x`` [N, D], ``a``, ``s`` scalars or [N]).

    The fast path of the same formula, for training, sampling and likelihoods: per bin
    edge :math:`z_j` one :math:`\Phi`, one tail :math:`Q` and one :math:`\varphi`; the
    bin masses are differences of whichever of the two is small there (no
    cancellation), and :math:`E[\epsilon \mid x] = \sum_k P_k (\varphi(\beta_k) -
    \varphi(\alpha_k)) / \sum_k P_k (\Phi(\alpha_k) - \Phi(\beta_k))`. Bins narrower
    than ~1% of a standard deviation (large ``t``) take the second-order expansion, and
    a point more than ~13 standard deviations outside every bin (where every mass
    underflows) takes the asymptotic tail of the nearest bin. The Jacobian is diagonal,
    :math:`\partial_{x_i} \nabla_{x_i} \log p_t = (\mathrm{Var}[\epsilon \mid x_i] - 1)
    / s^2`; derivatives in ``x`` (the divergence in a likelihood) use that closed form.
    """
    a = jnp.broadcast_to(jnp.asarray(a, x.dtype), x.shape[:1])
    s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
    return _score(lo, width, log_probs, x, a, s)


class HistogramResidual(AbstractParametrisation):
    r"""Any parametrisation, plus the exact score of independent per-coordinate
    histograms with uniform dequantisation: the network learns only what the pixels'
    own marginals miss (their dependence).

    .. math:: \nabla \log p_t(x) = \nabla \log \prod_i p_{t,i}(x_i)
        + \text{inner.to\_score}(x, t, F),

    with :math:`p_{t,i}` each coordinate's histogram blurred by the kernel (see the
    module docstring). With a zero network output the model *is* the product of the
    histograms; its probability-flow likelihood at ``eps`` is that product's density
    blurred by :math:`s(\text{eps})` (on MNIST, 1.69 bits/dim before the blur). The
    base score is exact at every ``t``, so the sharp edges of the dequantisation bins at
    small ``t`` (where nearly-binary pixels put all their mass in one bin) need not be
    learnt. Unlike a marginal Gaussianization (``data.gaussianize``) the model stays in
    pixel space, where a convolutional network sees images. Example::

        param = networks.HistogramResidual.from_probs(probs, data_range=(-1.0, 1.0))
        score = networks.score_fn(model, sde.VPSDE(), param)

    Args:
        log_probs: ``[D, K]`` log-probabilities of the ``K`` levels of each of the ``D``
            coordinates (every entry finite: give unseen levels a pseudo-count).
        lo: left edge of level 0's bin.
        width: bin width (``(hi - lo) / K`` for data in ``[lo, hi]``).
        inner: the parametrisation of the network's output.
    """

    log_probs: Array
    lo: float = eqx.field(static=True, default=-1.0)
    width: float = eqx.field(static=True, default=2.0 / 256)
    inner: AbstractParametrisation = eqx.field(default_factory=lambda: NoisePrediction())

    def __check_init__(self):
        if self.log_probs.ndim != 2 or self.log_probs.shape[1] < 2:
            raise ValueError(
                f"log_probs must have shape [D, K] with K >= 2 levels, got {self.log_probs.shape}"
            )
        if not bool(jnp.isfinite(self.log_probs).all()):
            raise ValueError("log_probs must be finite: give unseen levels a pseudo-count")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got width={self.width!r}")
        if not isinstance(self.inner, AbstractParametrisation) or isinstance(
            self.inner, (GaussianResidual, HistogramResidual)
        ):
            raise ValueError(
                f"inner must be a parametrisation without a base score, got {self.inner!r}"
            )

    @classmethod
    def from_probs(
        cls,
        probs: ArrayLike,
        data_range: tuple[float, float] = (-1.0, 1.0),
        inner: AbstractParametrisation | None = None,
    ) -> HistogramResidual:
        """From level probabilities ``[D, K]`` (rows summing to 1) of data in
        ``data_range``, split into ``K`` equal bins."""
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 2 or (probs <= 0).any() or not np.allclose(probs.sum(1), 1, atol=1e-6):
            raise ValueError(
                "probs must be [D, K], positive, rows summing to 1; got shape "
                f"{probs.shape}, min {probs.min():.3g}, row sums in "
                f"[{probs.sum(1).min():.6g}, {probs.sum(1).max():.6g}]"
            )
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range!r}")
        return cls(
            jnp.asarray(np.log(probs), jnp.float32),
            lo,
            (hi - lo) / probs.shape[1],
            NoisePrediction() if inner is None else inner,
        )

    def _flat(self, x: Array) -> Array:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.log_probs.shape[0]:
            raise ValueError(
                f"examples of shape {x.shape[1:]} have {flat.shape[1]} coordinates; the "
                f"histograms have {self.log_probs.shape[0]}"
            )
        return flat

    def inputs(self, sde, x, t):
        return self.inner.inputs(sde, x, t)

    def base_score(self, sde: AbstractSDE, x: Array, t: ArrayLike) -> Array:
        """The exact score of the product of the blurred histograms."""
        a, s = sde.marginal(broadcast_cond(t, x))
        flat = histogram_score(self.log_probs, self.lo, self.width, self._flat(x), a, s)
        return flat.reshape(x.shape)

    def base_log_density(self, sde: AbstractSDE, x: Array, t: ArrayLike) -> Array:
        """``[B]``: log-density of the product of the blurred histograms."""
        a, s = sde.marginal(broadcast_cond(t, x))
        return histogram_log_density(self.log_probs, self.lo, self.width, self._flat(x), a, s)

    def to_score(self, sde, x, t, out):
        return self.inner.to_score(sde, x, t, out) + self.base_score(sde, x, t)
