"""Loss curves as means over logging windows, for both families."""

from __future__ import annotations

import numpy as np


def window_means(values, every: int) -> dict[str, list[float]]:
    """``{"step": window ends, "mean": window means}`` of a per-step series given as
    one array or a list of chunks; the last window ends at the last step."""
    v = np.concatenate([np.ravel(np.asarray(x)) for x in values])
    ends = list(range(every, len(v), every)) + [len(v)]
    starts = [0, *ends[:-1]]
    return {
        "step": ends,
        "mean": [float(np.mean(v[a:b])) for a, b in zip(starts, ends, strict=True)],
    }
