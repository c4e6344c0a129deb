"""Figures written by the experiments (matplotlib, non-interactive backend)."""

from __future__ import annotations

import pathlib

import matplotlib
import matplotlib.ticker

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


def loss_curve(rows: list[dict], path: pathlib.Path, title: str = "") -> None:
    """A run's ``metrics.jsonl`` records against step: training loss, validation NLL
    (where logged), gradient norm and learning rate, one panel each."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True, squeeze=False)
    panels = [
        ("loss", "train loss (window mean)", True),
        ("val_nll", "validation NLL (nats)", False),
        ("grad_norm", "gradient norm (window mean)", True),
        ("lr", "learning rate", False),
    ]
    for ax, (key, label, log) in zip(axes.flat, panels, strict=True):
        have = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        if not have:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        x, y = np.array(have, dtype=float).T
        ax.plot(x, y, "o-" if key == "val_nll" else "-", ms=3, lw=1)
        if log and np.all(y > 0) and y.max() > 20 * y.min():  # over a decade wide
            ax.set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6, integer=True))
    last = rows[-1] if rows else {}
    head = f"{title}: " if title else ""
    loss = f", loss {last['loss']:.4g}" if "loss" in last else ""
    fig.suptitle(f"{head}step {last.get('step', 0)}{loss} ({len(rows)} records)", fontsize=10)
    # Fixed margins: tight_layout would double the drawing time, which matters for a
    # figure redrawn during training (see experiments.logs).
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.09, top=0.9, wspace=0.25, hspace=0.25)
    fig.savefig(path, dpi=100)
    plt.close(fig)
