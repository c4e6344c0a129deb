"""Argument checks shared by :mod:`sde` and :mod:`samplers`: each rule written once.

Every check names the bad value and the accepted range. Values known only under
``jit`` (tracers) cannot be checked here; where a rule needs a concrete value it says
so in its message.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np


def as_real(name: str, value) -> float:
    """``value`` as a Python float; any concrete real scalar (Python, numpy, 0-d array)
    but a bool."""
    if isinstance(value, jax.core.Tracer):
        raise ValueError(
            f"{name} must be a concrete real number, not a value traced under jit, "
            f"got {name}={value!r}"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real | np.ndarray | jax.Array):
        raise ValueError(f"{name} must be a real number, got {name}={value!r}")
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    return float(value)


def check_finite(name: str, value, *, positive: bool = False) -> float:
    """``value`` as a finite float (``> 0`` with ``positive``)."""
    v = as_real(name, value)
    if not math.isfinite(v) or (positive and not v > 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name} must be {need}, got {name}={value!r}")
    return v


def check_at_least(name: str, value, low: float, *, allow_inf: bool = False) -> float:
    """``value`` as a float in ``[low, inf)`` (``[low, inf]`` with ``allow_inf``)."""
    upper = "inf]" if allow_inf else "inf)"
    message = f"{name} must be a number in [{low:g}, {upper}, got {name}={value!r}"
    try:
        v = as_real(name, value)
    except ValueError:
        raise ValueError(message) from None
    if not (v >= low and (math.isfinite(v) or (allow_inf and v == math.inf))):
        raise ValueError(message)
    return v


def check_sigma_range(sigma_min, sigma_max) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` as floats, finite with ``0 < sigma_min < sigma_max``."""
    lo = check_finite("sigma_min", sigma_min, positive=True)
    hi = check_finite("sigma_max", sigma_max, positive=True)
    if not hi > lo:
        raise ValueError(
            f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
        )
    return lo, hi


def check_eps(eps, sde, *, name: str = "eps") -> None:
    """Raise unless ``0 < eps < sde.T``, with the SDE's own final time ``T`` (1 for the
    SDEs of Song et al., ``sigma_max`` for :class:`sde.EDMSDE`).

    A concrete number (Python, numpy, 0-d array) is checked; an ``eps`` traced under
    ``jit`` cannot be and passes through.
    """
    T = sde.T
    if isinstance(eps, jax.core.Tracer) or isinstance(T, jax.core.Tracer):
        return
    v = as_real(name, eps)
    if not 0 < v < T:
        raise ValueError(f"{name} must lie in (0, T) = (0, {T!r}), got {name}={eps!r}")
