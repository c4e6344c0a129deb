r"""Dequantisation of integer-valued data (uniform, truncated-normal) and the bits/dim bound.

Integer levels :math:`k \in \{0, \dots, n-1\}` per dimension are spread uniformly over
their bins of width :math:`w = (hi - lo) / n` in ``data_range = (lo, hi)``:

.. math:: x = lo + w\,(k + u), \qquad u \sim U[0, 1)^D.

For any continuous model density :math:`p`, Jensen's inequality gives the variational
bound (Theis, van den Oord and Bethge 2016; Ho et al. 2019)

.. math:: -\log_2 P(k) \le E_u[-\log_2 p(x)] - D \log_2 w,

so bits per dimension are :math:`-\log p(x) / (D \ln 2) + \log_2(n / (hi - lo))`:
exactly ``samplers.bits_per_dim(logp, dim=D, n_levels=n, data_range=hi - lo)``. A
model that is constant on each bin, :math:`p(x) = P(k) / w^D`, attains the bound.

:func:`to_continuous` maps a level to its bin centre (for display and for models fed
with clean levels); :func:`from_continuous` maps any point back to the level of its bin.

Truncated-normal dequantisation (Zheng, Lu, Chen and Zhu 2023, "Improved Techniques for
Maximum Likelihood Estimation for Diffusion ODEs", i-DODE, ICML) replaces the uniform
noise by a Gaussian of standard deviation :math:`\sigma` truncated to the bin,
:func:`truncated_normal_dequantize`. With :math:`\sigma = s(\epsilon)/a(\epsilon)`
(:func:`truncated_normal_sigma`) the scaled point :math:`a(\epsilon)\, y` looks like the
diffusion's own :math:`x_\epsilon = a x_0 + s z` (its noise is :math:`s z`, ``z`` cut to
the bin), so the ODE likelihood started at :math:`t = \epsilon` sees the noise level it
was trained on. Every dequantiser :math:`q(y \mid k)` supported on the bin gives

.. math:: \log P(k) \ge E_{q}[\log p(y) - \log q(y \mid k)],

and uniform noise is the case :math:`\log q = -D \log w` (:func:`uniform_log_q`); so
both share one bits/dim formula, :func:`dequantized_bits_per_dim`.

i-DODE's recipe, as released (github.com/thu-ml/i-DODE, ``model_vdm.py``, ``likelihood``,
``dequantization="tn"``), for 8-bit data with bin centres :math:`c` in ``[-1, 1]``:
:math:`z \sim N(0, I)` truncated to :math:`[-\tau, \tau]`, :math:`\tau = a_0 / (256\, s_0)`
(half a bin in units of :math:`s_0 / a_0`); :math:`x_0 = a_0 c + s_0 z` at the ODE's first
time (their lowest training noise level, :math:`\log(s_0^2/a_0^2) = \gamma_{min} = -13.3`
on CIFAR-10, so :math:`s_0/a_0 \approx 1.3 \cdot 10^{-3}`, :math:`\tau \approx 3`); the ODE
runs from there with that :math:`x_0`; the estimate is :math:`\log p(x_0) - \log q(x_0)`
with :math:`\log q` the density of :math:`x_0` (the Jacobian of :math:`a_0` cancels), and
bits/dim carry no ``+7`` offset, unlike their uniform path. With one draw they replace the
sampled :math:`\log q` by its mean (:func:`truncated_normal_expected_log_q`) and average
five draws; with ``K > 1`` they take the log-sum-exp over draws, the importance-weighted
bound, but without its :math:`-\log K` (an upward bias of :math:`\log_2 K / D` bits/dim);
:func:`dequantized_log_prob_bound` keeps it. Their uniform path starts its ODE later, at
:math:`\gamma = -11.8` (their Remark A.2), while the truncated-normal one starts at
:math:`\gamma_{min}`, the start the noise level is tied to. Here: draw ``y`` with
:func:`truncated_normal_dequantize` at ``sigma = truncated_normal_sigma(sde, eps)``, start
the ODE at :math:`a(\epsilon) y` (:func:`to_ode_start`), and add :math:`D \log a(\epsilon)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _check(n_levels: int, data_range) -> tuple[float, float]:
    if isinstance(n_levels, bool) or not isinstance(n_levels, int | np.integer) or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2, got n_levels={n_levels!r}")
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"data_range must be a pair (lo, hi), got data_range={data_range!r}"
        ) from None
    if not hi > lo:
        raise ValueError(f"data_range must have hi > lo, got data_range={data_range!r}")
    return lo, hi


def dequantize(key_or_rng, x_int, n_levels: int, data_range=(0.0, 1.0)):
    """Uniformly dequantise integer levels ``x_int`` into ``lo + w (k + u)``, float32.

    ``key_or_rng`` is a ``np.random.Generator`` (numpy in, numpy out, computed in float64
    then rounded) or a JAX PRNG key (a ``jax.Array`` out; jittable). Every output lies in
    its level's half-open bin ``[lo + w k, lo + w (k + 1))``. Example::

        x = dequantize(jax.random.key(0), images, n_levels=256, data_range=(-1.0, 1.0))
    """
    lo, hi = _check(n_levels, data_range)
    width = (hi - lo) / n_levels
    if isinstance(key_or_rng, np.random.Generator):
        k = np.asarray(x_int, dtype=np.float64)
        u = key_or_rng.uniform(size=k.shape)
        x = (lo + width * (k + u)).astype(np.float32)
        top = (lo + width * (k + 1)).astype(np.float32)
        return np.where(x < top, x, np.nextafter(top, np.float32(-np.inf)))
    k = jnp.asarray(x_int).astype(jnp.float32)
    u = jax.random.uniform(key_or_rng, k.shape, dtype=jnp.float32)
    x = lo + width * (k + u)
    top = lo + width * (k + 1)
    # k + u can round up to k + 1 in float32; keep the bin half-open.
    return jnp.where(x < top, x, jnp.nextafter(top, -jnp.inf))


def to_continuous(x_int, n_levels: int, data_range=(0.0, 1.0)):
    """Bin centres ``lo + w (k + 1/2)`` of integer levels, float32 (numpy or JAX as given)."""
    lo, hi = _check(n_levels, data_range)
    width = (hi - lo) / n_levels
    if isinstance(x_int, jax.Array):
        return lo + width * (x_int.astype(jnp.float32) + 0.5)
    return (lo + width * (np.asarray(x_int, dtype=np.float64) + 0.5)).astype(np.float32)


def from_continuous(x, n_levels: int, data_range=(0.0, 1.0)):
    """The level ``k`` of the bin holding ``x`` (clipped to ``0..n_levels-1``), int32.

    Inverts :func:`to_continuous` and :func:`dequantize`; use it to turn samples into
    images. Numpy inputs are binned in float64, JAX inputs in their own dtype.
    """
    lo, hi = _check(n_levels, data_range)
    if isinstance(x, jax.Array):
        k = jnp.floor((x - lo) * (n_levels / (hi - lo)))
        return jnp.clip(k, 0, n_levels - 1).astype(jnp.int32)
    k = np.floor((np.asarray(x, dtype=np.float64) - lo) * (n_levels / (hi - lo)))
    return np.clip(k, 0, n_levels - 1).astype(np.int32)


# ---- truncated-normal dequantisation (i-DODE) and the shared bound -----------------------

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT2 = math.sqrt(2.0)


def _check_sigma(sigma) -> float:
    bad = isinstance(sigma, bool) or np.ndim(sigma) != 0
    if not bad:
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            bad = True
        else:
            bad = not (math.isfinite(value) and value > 0)
    if bad:
        raise ValueError(
            f"sigma must be a finite number > 0 (in data units), got sigma={sigma!r}; the "
            "limit sigma -> inf is uniform dequantisation: use dequantize and uniform_log_q"
        )
    return value


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got dim={dim!r}")
    return int(dim)


def _levels(x_int, n_levels: int) -> np.ndarray:
    """``x_int`` as float64 levels, checked to be integers in ``0..n_levels-1``."""
    k = np.asarray(x_int)
    if k.ndim < 1:
        raise ValueError(f"x_int must have a batch axis, shape [B, ...]; got shape {k.shape}")
    if not (np.issubdtype(k.dtype, np.integer) or np.issubdtype(k.dtype, np.floating)):
        raise ValueError(f"x_int must hold integer levels, got dtype {k.dtype}")
    k = k.astype(np.float64)
    if k.size == 0:
        return k
    integral = bool(np.all(k == np.floor(k)))  # False for nan and inf too
    if not (integral and k.min() >= 0 and k.max() <= n_levels - 1):
        raise ValueError(
            f"x_int must hold integer levels in 0..{n_levels - 1} (n_levels={n_levels}), got "
            f"values in [{k.min()!r}, {k.max()!r}]" + ("" if integral else ", not all integers")
        )
    return k


def _log_mass(tau: float, log_tau: float) -> float:
    r""":math:`\log \operatorname{erf}(\tau/\sqrt2)`, the log-probability that a standard
    normal lies in ``[-tau, tau]``, without cancellation for tiny or huge ``tau``."""
    if tau < 1e-4:  # erf(x) = (2x/sqrt(pi)) (1 - x^2/3 + O(x^4)), x = tau/sqrt(2)
        return log_tau + 0.5 * math.log(2.0 / math.pi) + math.log1p(-(tau**2) / 6.0)
    tail = math.erfc(tau / _SQRT2)
    return math.log1p(-tail) if tail < 0.5 else math.log(math.erf(tau / _SQRT2))


def _half_width(n_levels: int, data_range, sigma) -> tuple[float, float, float, float, float]:
    """``(lo, w, sigma, tau, log_mass)`` with ``tau = w / (2 sigma)``, the bin's half-width
    in units of ``sigma``."""
    lo, hi = _check(n_levels, data_range)
    sigma = _check_sigma(sigma)
    width = (hi - lo) / n_levels
    log_tau = math.log(0.5 * width) - math.log(sigma)
    tau = math.exp(log_tau) if log_tau < 700.0 else math.inf
    return lo, width, sigma, tau, _log_mass(tau, log_tau)


def _per_example(a: np.ndarray) -> np.ndarray:
    return np.sum(a, axis=tuple(range(1, a.ndim)))


def truncated_normal_dequantize(
    rng: np.random.Generator, x_int, n_levels: int, data_range=(0.0, 1.0), *, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Dequantise levels with Gaussian noise truncated to the bin (i-DODE; Zheng et al. 2023).

    For level :math:`k` with bin :math:`[lo + w k,\ lo + w (k + 1))` and centre
    :math:`c_k = lo + w (k + \tfrac12)`, each coordinate is

    .. math:: y = c_k + \sigma z, \qquad z \sim N(0, 1) \text{ conditioned on }
        |z| \le \tau = \frac{w}{2 \sigma},

    with density on the bin

    .. math:: q(y \mid k) = \frac{\varphi\big((y - c_k)/\sigma\big)}
        {\sigma \operatorname{erf}(\tau / \sqrt2)}.

    ``sigma`` is in data units; i-DODE takes :math:`\sigma = s(\epsilon)/a(\epsilon)`
    (:func:`truncated_normal_sigma`). :math:`\sigma \gg w` tends to uniform
    dequantisation, :math:`\sigma \ll w` to plain Gaussian noise.

    Sampling is the exact inverse CDF of :math:`|z|`, :math:`\operatorname{erf}(|z|/\sqrt2) =
    u \operatorname{erf}(\tau/\sqrt2)`, solved with ``erfinv`` where the right side is
    below 1/2 and with ``erfcinv`` of :math:`1 - u \operatorname{erf} = (1 - u) + u
    \operatorname{erfc}(\tau/\sqrt2)` above, so neither a tiny ``tau`` (``sigma >> w``)
    nor a huge one (``sigma << w``) loses digits; then a random sign. ``rng`` (a
    ``np.random.Generator``) draws ``u`` and then the signs.

    Returns ``(y, log_q)``: ``y`` float64 with the shape of ``x_int`` (``[B, ...]``), every
    coordinate inside its level's half-open bin; ``log_q`` float64 ``[B]``,
    :math:`\sum_i \log q(y_i \mid k_i)` over the non-batch axes, in nats and data units
    (a density of ``y``). Example::

        sigma = truncated_normal_sigma(vp, eps)
        y, log_q = truncated_normal_dequantize(rng, images, 256, (-1.0, 1.0), sigma=sigma)
    """
    from scipy.special import erfcinv, erfinv

    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a np.random.Generator, got {type(rng).__name__}")
    lo, width, sigma, tau, log_mass = _half_width(n_levels, data_range, sigma)
    k = _levels(x_int, n_levels)
    mass, tail = math.erf(tau / _SQRT2), math.erfc(tau / _SQRT2)
    u = rng.random(k.shape)
    below = u * mass  # erf(|z| / sqrt 2)
    # both branches are evaluated (valid arguments either way); each is kept where exact
    r = _SQRT2 * np.where(below <= 0.5, erfinv(below), erfcinv((1.0 - u) + u * tail))
    r = np.minimum(r, tau)
    z = np.where(rng.random(k.shape) < 0.5, -r, r)
    bottom, top = lo + width * k, lo + width * (k + 1)
    y = np.clip(lo + width * (k + 0.5) + sigma * z, bottom, np.nextafter(top, -np.inf))
    log_q = -0.5 * z**2 - _LOG_SQRT_2PI - math.log(sigma) - log_mass
    return y, _per_example(log_q)


def truncated_normal_log_q(
    y, x_int, n_levels: int, data_range=(0.0, 1.0), *, sigma: float
) -> np.ndarray:
    r"""``log q(y | k)`` of :func:`truncated_normal_dequantize`, summed per example (float64
    ``[B]``, nats); ``-inf`` where any coordinate of ``y`` lies outside its level's bin."""
    lo, width, sigma, _, log_mass = _half_width(n_levels, data_range, sigma)
    k = _levels(x_int, n_levels)
    y = np.asarray(y, dtype=np.float64)
    if y.shape != k.shape:
        raise ValueError(f"y and x_int must have the same shape, got {y.shape} and {k.shape}")
    z = (y - (lo + width * (k + 0.5))) / sigma
    inside = (y >= lo + width * k) & (y < lo + width * (k + 1))
    log_q = np.where(inside, -0.5 * z**2 - _LOG_SQRT_2PI - math.log(sigma) - log_mass, -np.inf)
    return _per_example(log_q)


def truncated_normal_expected_log_q(
    dim: int, n_levels: int, data_range=(0.0, 1.0), *, sigma: float
) -> float:
    r""":math:`E_q[\log q(y \mid k)]` over ``dim`` coordinates: minus the entropy,

    .. math:: D\Big(-\tfrac12 E[z^2] - \log\sqrt{2\pi} - \log\sigma
        - \log\operatorname{erf}(\tau/\sqrt2)\Big), \qquad
        E[z^2] = 1 - \frac{2\tau\varphi(\tau)}{\operatorname{erf}(\tau/\sqrt2)}.

    The same for every level. i-DODE's released code puts this in place of the sampled
    ``log_q`` when it averages single-draw bounds (same expectation, less variance); an
    importance-weighted bound needs the sampled ``log_q``.
    """
    dim = _check_dim(dim)
    _, _, sigma, tau, log_mass = _half_width(n_levels, data_range, sigma)
    if tau < 1e-4:
        second = tau**2 / 3.0  # uniform on [-tau, tau], to O(tau^4)
    elif tau > 40.0:
        second = 1.0
    else:
        second = 1.0 - 2.0 * tau * math.exp(-0.5 * tau**2 - _LOG_SQRT_2PI - log_mass)
    return dim * (-0.5 * second - _LOG_SQRT_2PI - math.log(sigma) - log_mass)


def uniform_log_q(dim: int, n_levels: int, data_range=(0.0, 1.0)) -> float:
    r"""``log q`` of uniform dequantisation (:func:`dequantize`): :math:`-D \log w`, the same
    for every point, with ``w = (hi - lo) / n_levels``."""
    dim = _check_dim(dim)
    lo, hi = _check(n_levels, data_range)
    return -dim * math.log((hi - lo) / n_levels)


def _check_eps(sde, eps) -> float:
    ok = not isinstance(eps, bool) and np.ndim(eps) == 0
    if ok:
        try:
            value = float(eps)
        except (TypeError, ValueError):
            ok = False
        else:
            ok = math.isfinite(value) and 0.0 < value < sde.T
    if not ok:
        raise ValueError(f"eps must be a number in (0, T={sde.T}), got eps={eps!r}")
    return value


def truncated_normal_sigma(sde, eps: float) -> float:
    r"""i-DODE's dequantisation scale :math:`\sigma = s(\epsilon) / a(\epsilon)` for an SDE
    with kernel :math:`x_t = a(t) x_0 + s(t) z` and an ODE started at :math:`t = \epsilon`.

    Then :math:`a(\epsilon) y = a(\epsilon) c_k + s(\epsilon) z`: the diffusion's own
    :math:`x_\epsilon` given the clean level, with ``z`` cut to the bin, i.e. to
    :math:`|z| \le \tau = a(\epsilon) w / (2 s(\epsilon))` (the code's ``tau = alpha_0 /
    sigma_0 / 256`` for 8-bit data in ``[-1, 1]``). Example::

        sigma = truncated_normal_sigma(sde.VPSDE(), 1e-5)   # ~1.0e-3; bin width 2/256
    """
    eps = _check_eps(sde, eps)
    a, s = sde.marginal(eps)
    return float(s) / float(a)


def to_ode_start(y, sde, eps: float) -> tuple[np.ndarray, float]:
    r"""``(x_eps, log_det)``: the ODE's starting state :math:`x_\epsilon = a(\epsilon)\, y`
    and :math:`D \log a(\epsilon)`, with ``D`` the number of non-batch entries of ``y``.

    If ``samplers.log_likelihood`` returns :math:`\log p_\epsilon(x_\epsilon)`, the density
    of ``y`` is :math:`\log p(y) = \log p_\epsilon(a y) + D \log a` (change of variables),
    the ``log_p`` that pairs with ``log_q`` of :func:`truncated_normal_dequantize`.
    """
    eps = _check_eps(sde, eps)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim < 1:
        raise ValueError(f"y must have a batch axis, shape [B, ...]; got shape {y.shape}")
    log_a = float(sde.log_mean_coeff(eps))
    return math.exp(log_a) * y, math.prod(y.shape[1:]) * log_a


def dequantized_log_prob_bound(log_p, log_q, *, axis: int | None = None) -> np.ndarray:
    r"""The variational (or importance-weighted) lower bound on :math:`\log P(k)`, nats.

    For any dequantiser :math:`q(y \mid k)` supported on the bin of ``k`` and any density
    ``p`` (Theis et al. 2016; Ho et al. 2019),

    .. math:: \log P(k) = \log E_q\Big[\frac{p(y)}{q(y \mid k)}\Big]
        \ge E_q\Big[\log \frac1K \sum_{j=1}^K \frac{p(y_j)}{q(y_j \mid k)}\Big]
        \ge E_q[\log p(y) - \log q(y \mid k)].

    ``axis=None`` returns the single-draw estimate ``log_p - log_q`` (broadcast: a scalar
    ``log_q`` such as :func:`uniform_log_q` is fine). ``axis=j`` treats that axis as ``K``
    independent draws per example and returns the importance-weighted bound
    :math:`\operatorname{logsumexp}_j(\log p - \log q) - \log K` (Burda et al. 2016;
    Hoogeboom et al. 2020), which tightens as ``K`` grows; ``K = 1`` is the plain bound.
    """
    diff = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    if axis is None:
        return diff
    top = np.max(diff, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    summed = np.log(np.sum(np.exp(diff - top), axis=axis)) + np.squeeze(top, axis=axis)
    return summed - math.log(diff.shape[axis])


def dequantized_bits_per_dim(log_p, log_q, *, dim: int, axis: int | None = None) -> np.ndarray:
    r"""Bits per dimension from the bound of :func:`dequantized_log_prob_bound`:

    .. math:: \text{bpd} = -\frac{\log p(y) - \log q(y \mid k)}{D \ln 2}.

    One formula for both dequantisers. Uniform noise has :math:`\log q = -D \log w`
    (:func:`uniform_log_q`), which gives exactly ``samplers.bits_per_dim(log_p, dim=D,
    n_levels=n, data_range=hi - lo)``; truncated-normal noise passes the ``log_q`` of
    :func:`truncated_normal_dequantize` (and ``log_p`` of the same ``y``, see
    :func:`to_ode_start`). Example::

        bpd = dequantized_bits_per_dim(logp + log_det, log_q, dim=3072)
    """
    dim = _check_dim(dim)
    return -dequantized_log_prob_bound(log_p, log_q, axis=axis) / (dim * math.log(2.0))
