"""Figures written by the experiments (matplotlib, non-interactive backend)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def scatter_grid(panels: dict[str, np.ndarray], path: pathlib.Path, title: str = "") -> None:
    """One 2-D scatter panel per entry, sharing axes limits."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    every = np.concatenate(list(panels.values()))
    lo, hi = np.percentile(every, [0.5, 99.5], axis=0)
    pad = 0.1 * (hi - lo)
    for ax, (name, x) in zip(axes[0], panels.items(), strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.4, rasterized=True)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
