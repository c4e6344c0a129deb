"""Inpainting of test images with the replacement method (``samplers.sample_inpaint``):
``inpaint.png`` (rows: masked input, completions, original), ``inpaint.npz`` and
``inpaint.json`` in the run's work dir."""

from __future__ import annotations

import json
import time

import jax
import numpy as np

import samplers
from experiments import build, distributed, plotting
from experiments.run import Run

MASKS = ("left", "right", "top", "bottom", "center", "random:P")


def _random_mask(spec: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    try:
        p = float(spec.split(":", 1)[1])
    except ValueError:
        p = -1.0
    if not 0 <= p <= 1:
        raise ValueError(f"--inpaint random:P needs P in [0, 1], got {spec!r}")
    return np.random.default_rng(seed).random(shape[:2]) < p


def inpaint_mask(spec: str, image_shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A 0/1 mask of ``image_shape`` ``(H, W, C)``; 1 marks the pixels that are kept.

    ``left``/``right``/``top``/``bottom`` keep that half, ``center`` hides the central
    square of half the side, ``random:P`` keeps each pixel with probability ``P``.
    """
    h, w = image_shape[0], image_shape[1]
    mask = np.zeros(image_shape, np.float32)
    halves = {
        "left": (slice(None), slice(0, w // 2)),
        "right": (slice(None), slice(w // 2, None)),
        "top": (slice(0, h // 2),),
        "bottom": (slice(h // 2, None),),
    }
    if spec in halves:
        mask[halves[spec]] = 1
    elif spec == "center":
        mask[:] = 1
        mask[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = 0
    elif spec.startswith("random:"):
        mask[_random_mask(spec, image_shape, seed)] = 1
    else:
        raise ValueError(f"unknown --inpaint mask {spec!r}; choose one of {', '.join(MASKS)}")
    return mask


def _check(run: Run, mask, seed: int) -> np.ndarray:
    """The 0/1 mask of ``mask`` (a name or an array) for an image run."""
    src = run.source
    if not src.is_image:
        raise ValueError(f"inpainting needs image data; {run.cfg.data.name} is not images")
    if src.to_data is not None:
        raise ValueError(
            f"this run models whitened data (data.whiten={run.cfg.data.whiten}), where a "
            "pixel mask is not a coordinate mask; inpaint a run with data.whiten=none"
        )
    image_shape = tuple(src.image_shape or src.shape)
    m = inpaint_mask(mask, image_shape, seed) if isinstance(mask, str) else np.asarray(mask)
    if m.shape != image_shape:
        raise ValueError(f"the mask must have the image shape {image_shape}, got {m.shape}")
    return m


def inpaint(
    run: Run,
    *,
    mask: str | np.ndarray = "left",
    n: int = 8,
    fills: int = 4,
    steps: int | None = None,
    solver: str | None = None,
    corrector_steps: int = 0,
    snr: float = 0.16,
    resample: int = 1,
    seed: int = 0,
) -> dict:
    """Fill the hidden pixels of ``n`` test images (``fills`` samples each) with the
    replacement method, reverse SDE with ``solver`` (default Euler-Maruyama), optional
    Langevin corrector steps and RePaint-style ``resample`` passes."""
    src, eval_cfg = run.source, run.cfg.eval
    m = _check(run, mask, seed)
    images = np.asarray(src.test(run.cfg.train.seed))[:n]
    known = np.repeat(images, fills, axis=0)  # [n * fills, *shape]
    flat_mask = m.reshape(src.shape)
    start = time.perf_counter()
    x, stats = samplers.sample_inpaint(
        score_fn=run.score_function(),
        sde=run.sde,
        x_known=jax.numpy.asarray(known),
        mask=flat_mask,
        key=jax.random.key(seed),
        solver=build.solver(solver or "euler"),
        steps=steps or eval_cfg.steps,
        eps=eval_cfg.sample_eps,
        corrector_steps=corrector_steps,
        snr=snr,
        resample=resample,
        denoise=True,
    )
    x = np.asarray(x)
    info = {
        "mask": mask if isinstance(mask, str) else "array",
        "n_images": int(len(images)),
        "fills": fills,
        "nfe": int(stats["nfe"]),
        "seconds": time.perf_counter() - start,
        "known_pixels_kept_exactly": bool(np.all((x == known)[..., flat_mask.astype(bool)])),
        "checkpoint_step": run.step,
    }
    if distributed.is_main():
        _write(run, images, x, known, m, info)
    return info


def _write(run: Run, images, x, known, m, info: dict) -> None:
    src, fills = run.source, info["fills"]
    image_shape = src.image_shape or src.shape
    shown = np.asarray(src.data_range[0] + (images - src.data_range[0]) * m.reshape(src.shape))
    rows = [shown] + [x[j::fills] for j in range(fills)] + [images]
    grid = np.stack(rows, axis=1).reshape(-1, *image_shape)  # image by image: columns
    plotting.image_grid(
        grid,
        run.workdir / "inpaint.png",
        src.data_range,
        title=f"inpainting ({info['mask']}): masked | {fills} fills | original",
        ncol=fills + 2,
    )
    np.savez(run.workdir / "inpaint.npz", samples=x, known=known, mask=m)
    (run.workdir / "inpaint.json").write_text(json.dumps(info, indent=2) + "\n")
