"""The checks every sampler makes of its inputs and outputs, written once.

- **Entry, in Python.** :func:`entry_point` (the decorator of the jitted samplers) and
  :func:`normalise_inputs` (called by the others) look at the keyword arguments before
  anything is traced: counts (``steps``, ``n_t``, ...) may be any ``numbers.Integral``
  but a bool (``np.int64(10)`` is ``10``), ``shape`` is ``(B, *dims)`` of positive
  integers, and a concrete ``eps`` or ``ts`` is checked by value. Each raises
  ``ValueError`` naming the argument.
- **Entry, under ``jit``.** Shapes and dtypes are static, so :func:`checked_data` and
  :func:`call_score` check them while tracing (no run-time cost). Values known only
  under ``jit`` (a traced ``eps``, ``ts`` or ``x``) are checked by ``eqx.error_if``
  once per call, at entry (:func:`checked_eps`, :func:`checked_data`, the grid check
  of ``time_grid``), never inside a step.
- **Exit.** :func:`finish_stats` adds ``stats["finite"]`` (all outputs finite) and,
  with ``check_finite=True``, raises when they are not. An adaptive solve that stalls
  on a non-finite value reports where (:mod:`._stepping`'s ``FiniteGuard``).
"""

from __future__ import annotations

import functools
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from sde._checks import check_eps

COUNTS = ("steps", "n_t", "n_probes", "resample", "corrector_steps", "max_steps")
"""The keywords that count something: any ``numbers.Integral`` but a bool is taken."""


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def as_count(value):
    """``value`` as a Python ``int`` where it is a ``numbers.Integral`` other than a
    bool (numpy integers included); anything else unchanged, for the caller's own
    check to report."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def as_shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints ``(B, *dims)``, each ``>= 1``."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if (
        dims is None
        or len(dims) < 2
        or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in dims
        )
    ):
        raise ValueError(
            "shape must be a tuple (B, *dims) of at least two integers >= 1 (batch first; "
            f"1-D data is (B, 1)), got shape={shape!r}"
        )
    return tuple(int(d) for d in dims)


def check_grid(ts, t_start, t_end) -> None:
    """Raise unless a concrete grid ``ts`` is 1-D with >= 2 finite times, strictly
    monotone from ``t_start``'s side to ``t_end``'s, inside ``[0, T]``. A traced grid
    passes (``time_grid`` checks it under ``jit``)."""
    if not _is_concrete(ts) or any(isinstance(v, jax.core.Tracer) for v in (t_start, t_end)):
        return
    grid = np.asarray(ts)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D grid of >= 2 times, got shape {grid.shape}")
    if not np.issubdtype(grid.dtype, np.number) or np.issubdtype(grid.dtype, np.complexfloating):
        raise ValueError(f"ts must hold real times, got dtype {grid.dtype}")
    bad = ~np.isfinite(grid)
    if bad.any():
        raise ValueError(
            f"ts must hold finite times, got ts[{int(np.argmax(bad))}]={grid[bad][0]!r} "
            f"(ts={grid!r})"
        )
    T = max(float(t_start), float(t_end))
    up = float(t_end) > float(t_start)
    steps = np.diff(grid) if up else -np.diff(grid)
    if np.any(steps <= 0) or np.any((grid < 0) | (grid > T)):
        way = "up (eps -> T)" if up else "down (T -> eps)"
        raise ValueError(
            f"ts must be strictly monotone, inside [0, T] = [0, {T!r}], running {way}, "
            f"got ts={grid!r}"
        )


def normalise_inputs(kwargs: dict, *, forward: bool = False) -> dict:
    """The keyword arguments of a sampler with counts as ints and ``shape`` as a tuple
    of ints, after the checks of concrete values (``eps``, ``ts``) that need no trace.

    ``forward``: the sampler runs ``ts`` from ``eps`` up to ``T`` (the likelihood), not
    from ``T`` down.
    """
    out = dict(kwargs)
    for name in COUNTS:
        value = out.get(name)
        if value is not None and not isinstance(value, jax.core.Tracer):
            out[name] = as_count(value)
            if not isinstance(out[name], int):
                raise ValueError(f"{name} must be an integer, got {name}={value!r}")
    if "shape" in out:
        out["shape"] = as_shape(out["shape"])
    if not isinstance(out.get("check_finite", False), bool):
        raise ValueError(
            f"check_finite must be True or False, got check_finite={out['check_finite']!r}"
        )
    sde = out.get("sde")
    T = getattr(sde, "T", None)
    if T is None:
        return out
    if "eps" in out and _is_concrete(out["eps"]):
        check_eps(out["eps"], sde)
    if out.get("ts") is not None:
        check_grid(out["ts"], 0.0 if forward else T, T if forward else 0.0)
    return out


def entry_point(fn=None, *, forward: bool = False):
    """``eqx.filter_jit(fn)`` behind :func:`normalise_inputs`. The jitted function is
    the wrapper's ``jitted`` attribute (e.g. to count its compiles)."""
    if fn is None:
        return functools.partial(entry_point, forward=forward)
    jitted = eqx.filter_jit(fn)

    @functools.wraps(fn)
    def sampler(**kwargs):
        return jitted(**normalise_inputs(kwargs, forward=forward))

    sampler.jitted = jitted
    return sampler


def checked_eps(eps, sde):
    """``eps``, checked to lie in ``(0, sde.T)``: in Python where it is concrete, by
    ``eqx.error_if`` where it is traced (once, here)."""
    if _is_concrete(eps) and _is_concrete(sde.T):
        check_eps(eps, sde)
        return eps
    eps = jnp.asarray(eps)
    if eps.ndim != 0 or not jnp.issubdtype(eps.dtype, jnp.floating):
        raise ValueError(f"eps must be a real scalar, got shape {eps.shape} dtype {eps.dtype}")
    return eqx.error_if(
        eps,
        ~((eps > 0) & (eps < sde.T)),
        f"eps must lie in (0, T) = (0, sde.T), got a traced eps outside it (or NaN); "
        f"sde={type(sde).__name__}",
    )


def checked_data(name: str, x) -> Array:
    """``x`` as a float array ``[B, *dims]``, its shape and dtype checked while tracing
    and its finiteness by ``eqx.error_if`` (once per call)."""
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a float array of shape [B, *dims] (1-D data as [B, 1]), got "
            f"shape {x.shape} and dtype {x.dtype}"
        )
    return eqx.error_if(
        x, ~jnp.all(jnp.isfinite(x)), f"{name} must be finite, got NaN or inf in {name}"
    )


def call_score(score_fn, x: Array, t: Array) -> Array:
    """``score_fn(x, t)``, its shape and dtype checked while tracing (no run-time cost):
    a score of the wrong shape would otherwise broadcast silently or fail deep inside
    a solver."""
    out = score_fn(x, t)
    shape, dtype = jnp.shape(out), jnp.result_type(out)
    if shape != x.shape or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"score_fn(x, t) must return a float array of x's shape {x.shape}, got shape "
            f"{shape} and dtype {dtype} (for x of shape {x.shape}, t of shape "
            f"{jnp.shape(t)})"
        )
    return out


def finish_stats(name: str, out: Array, stats: dict, check_finite: bool):
    """``(out, stats)`` with ``stats["finite"]``: whether every value of ``out`` is
    finite. With ``check_finite=True``, an ``eqx.error_if`` raises where one is not."""
    if not isinstance(check_finite, bool):
        raise ValueError(f"check_finite must be True or False, got check_finite={check_finite!r}")
    finite = jnp.all(jnp.isfinite(out))
    if check_finite:
        out = eqx.error_if(
            out,
            ~finite,
            f"{name} returned non-finite values (NaN or inf) with check_finite=True: the "
            "score function returned NaN or inf, or the steps were too large for it "
            "(check it, or take more steps)",
        )
    return out, {**stats, "finite": finite}


# ---- where an adaptive solve stalled -----------------------------------------------

_LOW, _HIGH = -12, 6  # decades of t the messages cover; outside, the nearest end


@functools.cache
def _nonfinite_messages(name: str) -> tuple[str, ...]:
    """One message per time ``m / 10 * 10**e`` with two digits ``m`` in 10..99."""
    return tuple(
        f"{name}: the score function returned a non-finite value (NaN or inf) near "
        f"t={m / 10 * 10.0**e:.2g} for at least one sample (or the state overflowed), so "
        "the adaptive solve rejected every step from there on (diffrax alone reports this "
        "as 'The maximum number of solver steps was reached')"
        for e in range(_LOW, _HIGH + 1)
        for m in range(10, 100)
    )


def nonfinite_error_if(value, name: str, failed, t):
    """``value``, raising (``eqx.branched_error_if``, once per call) where ``failed``
    with the time ``t`` (to two digits) in the message."""
    t = jnp.clip(jnp.abs(t), 10.0**_LOW, 9.9 * 10.0**_HIGH)
    e = jnp.floor(jnp.log10(t))
    m = jnp.round(t / 10.0**e * 10)  # 10..100
    e, m = jnp.where(m >= 100, e + 1, e), jnp.where(m >= 100, 10, jnp.maximum(m, 10))
    index = jnp.clip((e - _LOW) * 90 + (m - 10), 0, (_HIGH - _LOW + 1) * 90 - 1)
    index = jnp.where(failed, index, 0).astype(jnp.int32)
    return eqx.branched_error_if(value, failed, index, _nonfinite_messages(name))
