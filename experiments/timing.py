"""The benchmarks' one timing helper: seconds per call, median over rounds.

JAX dispatches asynchronously, so a call is timed until every output array is ready
(``jax.block_until_ready``). :func:`time_calls` warms each function up (the first call
compiles), then times it in rounds; with several functions the rounds alternate
(a, b, a, b, ...), so that the slow drifts of a shared machine hit every variant alike,
and a ratio of two variants is best taken per round (:func:`ratios`). :func:`timed` is
one blocked call (a first call's compile time, or a call whose result is wanted).

Example::

    times = time_calls({"ours": lambda i: f(keys[i]), "ref": lambda i: g(keys[i])},
                       rounds=7, min_round_s=0.2)
    statistics.median(times["ours"]), statistics.median(ratios(times, "ours", "ref"))

    # a training step that threads its state: one block of 20 steps per round
    seconds = median_time(threaded(step, state, batch), rounds=5, calls=20, warmup=20,
                          block_each=False)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax
import numpy as np


def timed(fn: Callable, *args, **kwargs) -> tuple[float, Any]:
    """``(seconds, result)`` of one call ``fn(*args, **kwargs)``, waiting for every
    output array."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return time.perf_counter() - start, out


def _check_count(name: str, value, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")


def time_calls(
    fns: Mapping[Hashable, Callable[[int], Any]],
    *,
    rounds: int = 5,
    calls: int | None = 1,
    warmup: int = 1,
    min_round_s: float = 0.0,
    block_each: bool = True,
) -> dict[Hashable, list[float]]:
    """Seconds per call of each ``fns[name](i)``, one value per round.

    Args:
        fns: the functions to time; each takes the running call index ``i`` (0, 1, ...
            over its warm-up and every round), to pick a key or a step index.
        rounds: timed rounds; each round times every function once, in turn.
        calls: calls per round and function; ``None``: as many as make a round last at
            least ``min_round_s``, judged from the last warm-up call.
        warmup: untimed calls of each function first (the first one compiles).
        min_round_s: see ``calls=None``.
        block_each: wait for every call's output (independent calls); ``False`` waits
            for the last call's of each round only (a step that threads its state, whose
            last output depends on every earlier call).

    Returns:
        ``{name: [seconds per call in round 1, round 2, ...]}``.
    """
    _check_count("rounds", rounds, 1)
    _check_count("warmup", warmup, 0 if calls is not None else 1)
    if calls is not None:
        _check_count("calls", calls, 1)
    counter = dict.fromkeys(fns, 0)

    def call(name: str):
        out = fns[name](counter[name])
        counter[name] += 1
        return out

    reps = {}
    for name in fns:
        last = 0.0
        for _ in range(warmup):
            last = timed(call, name)[0]
        reps[name] = calls or max(1, math.ceil(min_round_s / max(last, 1e-6)))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name in fns:
            start = time.perf_counter()
            out = None
            for _ in range(reps[name]):
                out = call(name)
                if block_each:
                    jax.block_until_ready(out)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / reps[name])
    return times


def median_time(fn: Callable[[int], Any], **options) -> float:
    """Median seconds per call of one function: :func:`time_calls` with ``options``."""
    return statistics.median(time_calls({"fn": fn}, **options)["fn"])


def ratios(times: Mapping[Hashable, list[float]], a: Hashable, b: Hashable) -> list[float]:
    """Per-round ratios ``a / b`` of :func:`time_calls`'s result."""
    return [x / y for x, y in zip(times[a], times[b], strict=True)]


def threaded(step: Callable, state, *args) -> Callable[[int], Any]:
    """A ``call(i)`` for :func:`time_calls` that runs ``step(state, *args, int32(i))``
    on its own running state (``step`` returns ``(state, *outputs)``) and returns the
    outputs; the state is replaced on every call, so a donating step is fine."""
    box = [state]

    def call(i: int):
        box[0], *out = step(box[0], *args, np.int32(i))
        return out

    return call
