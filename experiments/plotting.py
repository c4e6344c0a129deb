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


def image_grid(
    x: np.ndarray, path: pathlib.Path, data_range=(-1.0, 1.0), title: str = "", ncol: int = 8
) -> None:
    """A grid of ``[N, H, W, C]`` images in ``data_range`` (C = 1 or 3)."""
    lo, hi = data_range
    x = np.clip((np.asarray(x) - lo) / (hi - lo), 0, 1)
    n, h, w, c = x.shape
    nrow = -(-n // ncol)
    canvas = np.ones((nrow * (h + 1) + 1, ncol * (w + 1) + 1, c))
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[i]
    fig, ax = plt.subplots(figsize=(ncol * 0.6 + 0.4, nrow * 0.6 + 0.6))
    ax.imshow(
        canvas[..., 0] if c == 1 else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest"
    )
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_curve(rows: list[dict], path: pathlib.Path) -> None:
    """Training loss (and validation NLL where logged) against step."""
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, [r["loss"] for r in rows], label="train loss (DSM)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    val = [(r["step"], r["val_nll"]) for r in rows if "val_nll" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val, strict=True), "o-", color="C1", label="validation NLL")
        ax2.set_ylabel("validation NLL (nats)")
        ax2.legend(loc="upper center", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
