"""Samples of a trained run: batches over every device, class labels and guidance;
``samples.npz``, ``samples.png`` and ``samples.json`` in the run's work dir.

Every batch is split over all devices of all processes (``experiments.distributed``):
the jitted samplers then run as one SPMD program, so batch-joint and per-sample
adaptive step control alike take the same steps on every device. Process 0 writes the
files; every process returns the same results.
"""

from __future__ import annotations

import json
import time

import diffrax
import jax
import numpy as np
from tqdm.auto import tqdm

import samplers
from experiments import build, distributed, plotting
from experiments.run import Run


def sampler_kwargs(
    eval_cfg, method: str, solver: str | None = None, steps: int | None = None
) -> tuple[build.Method, dict, str]:
    """``(method, keywords, description)``: how ``method`` is called, the same way for
    every sampler: ``eps`` and the sampler's own knobs from ``eval_cfg``, the solver
    given or the default one (none for a sampler with steps of its own), and ``steps``
    fixed steps, else ``eval.steps``, or the tolerances for an adaptive sampler. The
    caller adds ``score_fn``, ``sde``, ``shape`` and ``key``."""
    m = build.sampler(method)
    kwargs = dict(eps=eval_cfg.sample_eps, **m.options(eval_cfg))
    if m.solver is None:
        if solver is not None:
            raise ValueError(f"--method {method} takes steps of its own: drop --solver")
        name = m.label(eval_cfg)
    else:
        name = solver or (eval_cfg.solver if m.adaptive else m.solver)
        kwargs["solver"] = build.solver(name)
    if steps is None and m.adaptive:
        kwargs.update(rtol=eval_cfg.rtol, atol=eval_cfg.atol)
    else:
        kwargs["steps"] = steps or eval_cfg.steps
    return m, kwargs, name


def requested_labels(run: Run, labels, n: int) -> np.ndarray | None:
    """The class of each of ``n`` samples, or None for unconditional sampling."""
    if labels is None:
        return None
    k = run.cfg.model.num_classes
    if not k:
        raise ValueError(
            f"--class needs a class-conditional run (model.num_classes > 0); "
            f"{run.cfg.data.name} was trained without labels"
        )
    if labels == "all":
        if n % k:
            raise ValueError(f"--class all needs n divisible by {k} classes, got n={n}")
        return np.repeat(np.arange(k, dtype=np.int32), n // k)
    try:
        label = int(labels)
    except (TypeError, ValueError):
        raise ValueError(
            f"class must be an integer in [0, {k - 1}] or 'all', got {labels!r}"
        ) from None
    if not 0 <= label < k:
        raise ValueError(f"class must lie in [0, {k - 1}] or be 'all', got {labels!r}")
    return np.full(n, label, dtype=np.int32)


def draw(run: Run, method, kwargs: dict, n: int, seed: int, requested, guidance, progress):
    """``n`` samples in batches of ``eval.batch_size`` split over all devices; returns
    the samples (on the host, in the model's space) and the largest NFE of a batch."""
    eval_cfg, mesh, score = run.cfg.eval, distributed.mesh(), run.score_function()
    chunks, nfe, key = [], 0, jax.random.key(seed)
    sizes = [min(eval_cfg.batch_size, n - i) for i in range(0, n, eval_cfg.batch_size)]
    bar = tqdm(sizes, desc="sampling", disable=not progress, unit="batch")
    for i, size in enumerate(bar):
        padded = distributed.padded_size(size, mesh)
        score_i = score
        if requested is not None:
            chunk = requested[i * eval_cfg.batch_size : i * eval_cfg.batch_size + size]
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - size)])
            score_i = samplers.classifier_free_guidance(
                score, chunk, run.cfg.model.num_classes, guidance=guidance
            )
        x, stats = method.fn(
            score_fn=distributed.batch_sharded_score(score_i, mesh),
            sde=run.sde,
            shape=(padded, *run.source.shape),
            key=jax.random.fold_in(key, i),
            **kwargs,
        )
        chunks.append(distributed.to_host(x)[:size])
        nfe = max(nfe, int(stats["nfe"]))
    return np.concatenate(chunks), nfe


def sample(
    run: Run,
    *,
    method: str | None = None,
    solver: str | None = None,
    steps: int | None = None,
    n: int | None = None,
    seed: int = 0,
    labels: int | str | None = None,
    guidance: float = 0.0,
    progress: bool = True,
) -> dict:
    """Draw ``n`` samples with the EMA weights; writes samples.npz, samples.png and
    samples.json in ``run.workdir``.

    A class-conditional run (``model.num_classes``) samples class ``labels`` (an int, or
    ``"all"``: ``n / num_classes`` of each class, one class per grid row) with
    classifier-free guidance weight ``guidance`` (:math:`w`: the score
    :math:`(1 + w) s(x | c) - w s(x)`; 0 = plain conditional); ``labels=None`` samples
    the unconditional (null-label) model.
    """
    eval_cfg = run.cfg.eval
    method, n = method or eval_cfg.method, n or eval_cfg.n_samples
    m, kwargs, solver_name = sampler_kwargs(eval_cfg, method, solver, steps)
    requested = requested_labels(run, labels, n)
    if requested is None and guidance:
        raise ValueError("guidance needs a class to guide towards: give labels (--class)")
    start = time.perf_counter()
    progress = progress and distributed.is_main()
    x, nfe = draw(run, m, kwargs, n, seed, requested, guidance, progress)
    info = {
        "method": method,
        "solver": solver_name,
        "n": n,
        "nfe": nfe,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "checkpoint_step": run.step,
        "weights": run.weights,
    }
    if requested is not None:
        info.update(labels=labels, guidance=guidance)
    if run.source.to_data is not None:  # undo the fixed maps: samples in data space
        x = run.source.to_data(x)
    if distributed.is_main():
        _write(run, x, requested, info)
    return info


def _write(run: Run, x: np.ndarray, requested, info: dict) -> None:
    workdir, src, k = run.workdir, run.source, run.cfg.model.num_classes
    arrays = {"samples": x} if requested is None else {"samples": x, "labels": requested}
    np.savez(workdir / "samples.npz", **arrays)
    title = f"{run.cfg.data.name}: {info['method']} ({info['solver']}), NFE {info['nfe']}"
    if requested is not None:
        title += f", class {info['labels']}, guidance {info['guidance']:g}"
    if src.is_image:
        shown, ncol, n = slice(0, 64), 8, info["n"]
        if info.get("labels") == "all":  # one class per row
            ncol = min(n // k, 16)
            shown = np.arange(n).reshape(k, -1)[:, :ncol].reshape(-1)
        images = x[shown].reshape(-1, *(src.image_shape or src.shape))
        plotting.image_grid(images, workdir / "samples.png", src.data_range, title=title, ncol=ncol)
    else:
        reference = src.test(run.cfg.train.seed)[: info["n"]]
        if src.to_data is not None:
            reference = src.to_data(reference)
        plotting.scatter_grid(
            {"data (test)": reference, "samples": x}, workdir / "samples.png", title=title
        )
    (workdir / "samples.json").write_text(json.dumps(info, indent=2) + "\n")


def progress_samples(run: Run, mesh=None) -> None:
    """A quick look at the EMA model during training: progress/samples_STEP.png in the
    run's work dir (sampled on every process, written by process 0)."""
    mesh = distributed.mesh() if mesh is None else mesh
    src = run.source
    n = 64 if src.is_image else 2000
    x, _ = samplers.sample_ode(
        score_fn=distributed.batch_sharded_score(run.score_function(), mesh),
        sde=run.sde,
        shape=(distributed.padded_size(n, mesh), *src.shape),
        key=jax.random.key(run.step),
        solver=diffrax.Heun(),
        steps=50,
        eps=run.cfg.eval.sample_eps,
    )
    x = distributed.to_host(x)[:n]
    if src.to_data is not None:
        x = src.to_data(x)
    if not distributed.is_main():
        return
    out = run.workdir / "progress"
    out.mkdir(exist_ok=True)
    path, title = out / f"samples_{run.step}.png", f"step {run.step} (EMA, PF-ODE Heun 50 steps)"
    if src.is_image:
        images = x.reshape(-1, *(src.image_shape or src.shape))
        plotting.image_grid(images, path, src.data_range, title=title)
    else:
        plotting.scatter_grid({title: x}, path)
