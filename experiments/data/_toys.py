r"""FFJORD's 2-D toy distributions and Gaussian-mixture data sets, sampled on the host.

The eight toys follow the definitions of Grathwohl, Chen, Bettencourt, Sutskever and
Duvenaud, "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
Models", ICLR 2019 (their ``toy_data.py``), written here from those definitions:

=============  ==================================================================
checkerboard   uniform on the 8 "black" 2x2 squares of the 4x4 board ``[-4, 4)^2``
8gaussians     ``(c_k + 0.5 z) / 1.414``, ``c_k`` 8 points on the circle of radius 4
swissroll      ``(t cos t, t sin t) + N(0, 1)``, ``t ~ U[1.5pi, 4.5pi]``, all ``/ 5``
moons          sklearn's two moons (noise 0.1), ``* 2 + (-1, -0.2)``
pinwheel       5 arms: radial N(1, 0.3^2), tangential N(0, 0.1^2), twisted, ``* 2``
2spirals       two interleaved spirals (angle ``sqrt(u) 3pi``), ``/ 3 + N(0, 0.1^2)``
rings          4 circles of radii 3, 2.25, 1.5, 0.75 ``+ N(0, 0.08^2)``
circles        sklearn's circles (factor 0.5, noise 0.08), ``* 3``
=============  ==================================================================

Every call returns ``n`` i.i.d. points of the distribution. Where FFJORD fixes the
number of points per component (rings, circles, moons, pinwheel, 2spirals: equal
counts, angles on a ``linspace`` grid), the component and the angle are drawn at
random instead, which gives i.i.d. samples of the same density; FFJORD also returns
``5 * (n // 5)`` pinwheel points and ``2 * (n // 2)`` spiral points, here always ``n``.

Randomness is host-side numpy: ``np.random.default_rng(seed)``, so a data set is a pure
function of ``(name, n, seed)``, independent of JAX's device or PRNG implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import sde

TOY_DATASETS: tuple[str, ...] = (
    "checkerboard",
    "8gaussians",
    "swissroll",
    "moons",
    "pinwheel",
    "2spirals",
    "rings",
    "circles",
)

# 8gaussians: centres on the radius-4 circle, std 0.5, everything divided by 1.414
# (FFJORD's literal constant, not sqrt(2)).
_EIGHT_SCALE = 1.414
_EIGHT_RADIUS = 4.0
_EIGHT_STD = 0.5

# Differential entropy of 8gaussians, in nats. Computed from the exact mixture density
# by the trapezoidal rule on [-L, L]^2: h = 0.05, 0.025, 0.0125 with L = 5 agree to
# 5e-10 and L = 6, 8 (h = 0.02, 0.01) give 2.8318804061 (the integrand is smooth and
# decays like a Gaussian, so the rule converges spectrally). A control-variate Monte
# Carlo estimate, H = log 8 + log(2 pi e sigma^2) - E[log(1 + sum_{k != j} N_k / N_j)]
# with 4e6 draws, gives 2.83191 +- 0.00006. Recompute with ``_quadrature_entropy``.
_EIGHT_GAUSSIANS_ENTROPY = 2.8318804061


def _eight_centres() -> np.ndarray:
    """The 8 mode centres after FFJORD's scaling, float64 ``[8, 2]``."""
    r = 1.0 / math.sqrt(2.0)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (r, r), (r, -r), (-r, r), (-r, -r)]
    return _EIGHT_RADIUS * np.asarray(unit, dtype=np.float64) / _EIGHT_SCALE


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.uniform(-2.0, 2.0, n)
    # [0, 1) or [-2, -1), shifted up by one on the odd columns: the board's black squares.
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1)


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    k = rng.integers(0, 8, n)
    return _eight_centres()[k] + (_EIGHT_STD / _EIGHT_SCALE) * rng.standard_normal((n, 2))


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    # sklearn.datasets.make_swiss_roll(noise=1.0), columns (x, z), divided by 5.
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.standard_normal((n, 2))
    return x / 5.0


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    # sklearn.datasets.make_moons(noise=0.1): the upper arc (cos a, sin a) and the lower
    # arc (1 - cos a, 0.5 - sin a), a in [0, pi]; then * 2 + (-1, -0.2).
    a = rng.uniform(0.0, np.pi, n)
    lower = rng.integers(0, 2, n).astype(bool)
    x = np.stack([np.cos(a), np.sin(a)], axis=1)
    x[lower] = np.array([1.0, 0.5]) - x[lower]
    x = x + 0.1 * rng.standard_normal((n, 2))
    return 2.0 * x + np.array([-1.0, -0.2])


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    n_arms, rate = 5, 0.25
    f = rng.standard_normal((n, 2)) * np.array([0.3, 0.1])  # radial, tangential std
    f[:, 0] += 1.0
    arm = rng.integers(0, n_arms, n)
    angle = 2 * np.pi * arm / n_arms + rate * np.exp(f[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    # FFJORD's einsum("ti,tij->tj", f, [[c, -s], [s, c]]): f times the rotation matrix.
    return 2.0 * np.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], axis=1)


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi  # 540 degrees
    d = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) + 0.5 * rng.uniform(size=(n, 2))
    sign = np.where(rng.integers(0, 2, n) == 0, 1.0, -1.0)[:, None]  # the second spiral is -d
    return sign * d / 3.0 + 0.1 * rng.standard_normal((n, 2))


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    radius = 3.0 * np.array([1.0, 0.75, 0.5, 0.25])[rng.integers(0, 4, n)]
    a = rng.uniform(0.0, 2 * np.pi, n)
    x = radius[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
    return x + 0.08 * rng.standard_normal((n, 2))


def _circles(rng: np.random.Generator, n: int) -> np.ndarray:
    # sklearn.datasets.make_circles(factor=0.5, noise=0.08), then * 3.
    radius = np.where(rng.integers(0, 2, n) == 0, 1.0, 0.5)
    a = rng.uniform(0.0, 2 * np.pi, n)
    x = radius[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1)
    return 3.0 * (x + 0.08 * rng.standard_normal((n, 2)))


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
    "swissroll": _swissroll,
    "moons": _moons,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "rings": _rings,
    "circles": _circles,
}


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise ValueError(f"unknown toy data set name={name!r}; choose one of {TOY_DATASETS}")


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got n={n!r}")
    return int(n)


def sample_toy(name: str, n: int, seed: int | np.random.SeedSequence) -> np.ndarray:
    """``n`` i.i.d. points of FFJORD's 2-D toy ``name``: float32 ``[n, 2]``.

    ``seed`` is anything ``np.random.default_rng`` accepts; the result is a pure function
    of ``(name, n, seed)``. Example::

        x = sample_toy("checkerboard", 1024, seed=0)   # x.shape == (1024, 2)
    """
    _check_name(name)
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(_SAMPLERS[name](rng, n), dtype=np.float32)


def toy_entropy(name: str) -> float | None:
    r"""Exact differential entropy :math:`H = -E[\log p(x)]` of a toy, in nats.

    ``checkerboard``: uniform on 8 squares of area 4, so :math:`H = \log 32 = 3.4657`.
    ``8gaussians``: 2.8318804 (numerical quadrature of the exact mixture density; see
    ``_EIGHT_GAUSSIANS_ENTROPY``). ``None`` for the others. A model's test NLL (nats)
    minus this is its KL divergence from the data distribution.
    """
    _check_name(name)
    if name == "checkerboard":
        return math.log(32.0)
    if name == "8gaussians":
        return _EIGHT_GAUSSIANS_ENTROPY
    return None


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _eight_gaussians_log_prob(x: np.ndarray) -> np.ndarray:
    std = _EIGHT_STD / _EIGHT_SCALE
    d2 = np.sum((x[:, None, :] - _eight_centres()[None]) ** 2, axis=-1)
    return _logsumexp(-0.5 * d2 / std**2, axis=1) - math.log(8 * 2 * math.pi * std**2)


def _checkerboard_log_prob(x: np.ndarray) -> np.ndarray:
    cell = np.floor(x / 2.0)  # column and row index in -2..1
    inside = np.all((x >= -4.0) & (x < 4.0), axis=1) & (np.sum(cell, axis=1) % 2 == 0)
    return np.where(inside, -math.log(32.0), -np.inf)


def toy_log_prob(name: str, x) -> np.ndarray:
    """Exact ``log p(x)`` (nats, float64 ``[n]``) for ``checkerboard`` and ``8gaussians``.

    ``checkerboard`` gives ``-log 32`` on its support (half-open squares) and ``-inf``
    off it. Other toys have no closed-form density and raise ``ValueError``.
    """
    _check_name(name)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape [n, 2], got shape {x.shape}")
    if name == "checkerboard":
        return _checkerboard_log_prob(x)
    if name == "8gaussians":
        return _eight_gaussians_log_prob(x)
    raise ValueError(
        f"toy_log_prob has no closed form for name={name!r}; it is defined for "
        "'checkerboard' and '8gaussians'"
    )


def toy_mixture(name: str) -> sde.GaussianMixture:
    """The toy as an :class:`sde.GaussianMixture` (``8gaussians`` only).

    Gives the exact diffused score of the toy through ``sde.MixtureOracle``.
    """
    _check_name(name)
    if name != "8gaussians":
        raise ValueError(f"toy_mixture is defined for '8gaussians' only, got name={name!r}")
    return sde.GaussianMixture(
        weights=np.full(8, 1 / 8), means=_eight_centres(), stds=_EIGHT_STD / _EIGHT_SCALE
    )


def _quadrature_entropy(log_prob: Callable[[np.ndarray], np.ndarray], h: float, half_width: float):
    """Trapezoidal ``-int p log p`` over ``[-half_width, half_width]^2`` with step ``h``."""
    g = np.arange(-half_width, half_width + h / 2, h)
    total = 0.0
    for row in np.array_split(g, max(1, len(g) // 200)):
        xy = np.stack(np.meshgrid(row, g, indexing="ij"), axis=-1).reshape(-1, 2)
        lp = log_prob(xy)
        lp = lp[np.isfinite(lp)]  # p log p -> 0 off the support
        total += float(np.sum(-np.exp(lp) * lp))
    return total * h * h


def mixture_dataset(mix: sde.GaussianMixture, n: int, seed: int) -> np.ndarray:
    """``n`` i.i.d. host-side samples (float32 ``[n, D]``) of a Gaussian mixture.

    The density is exact (``mix.log_prob``); randomness is ``np.random.default_rng(seed)``
    (``mix.sample(key, n)`` is the on-device alternative). Example::

        x = mixture_dataset(sde.GaussianMixture.ring(8, 4.0, 0.3), 4096, seed=0)
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    w = np.exp(np.asarray(mix.log_weights, dtype=np.float64))
    means = np.asarray(mix.means, dtype=np.float64)
    scale = np.sqrt(np.asarray(mix.eigvals, dtype=np.float64))
    vecs = np.asarray(mix.eigvecs, dtype=np.float64)
    k = rng.choice(len(w), size=n, p=w / w.sum())
    z = scale[k] * rng.standard_normal((n, mix.dim))
    x = means[k] + np.einsum("nij,nj->ni", vecs[k], z)
    return x.astype(np.float32)
