"""Argument checks shared by the networks: each error names the value and the range."""

from __future__ import annotations

import math
from collections.abc import Sequence


def check_int(name: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def check_positive(name: str, value) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    return float(value)


def check_rate(name: str, value) -> float:
    if not (isinstance(value, int | float) and not isinstance(value, bool)) or not (
        0.0 <= value < 1.0
    ):
        raise ValueError(f"{name} must lie in [0, 1), got {name}={value!r}")
    return float(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
    return value
