"""Types shared by the SDEs, losses and samplers."""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Array

ScoreFn = Callable[[Array, Array], Array]
"""A pure ``score_fn(x, t)``: ``x`` of shape ``[B, *dims]``, ``t`` of shape ``[B]``,
returning an estimate of :math:`\\nabla_x \\log p_t(x)` shaped like ``x``."""
