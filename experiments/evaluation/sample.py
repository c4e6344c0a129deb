"""Samples of a trained run: batches over every device, class labels and guidance;
``samples/<what was run>.{npz,png,json}`` in the run's work dir, the latest also as
``samples.npz``, ``samples.png`` and ``samples.json`` (:mod:`.outputs`).

Every batch is split over all devices of all processes (``experiments.distributed``):
the jitted samplers then run as one SPMD program, so batch-joint and per-sample
adaptive step control alike take the same steps on every device. Process 0 writes the
files; every process returns the same results.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import numpy as np
from tqdm.auto import tqdm

import samplers
from experiments import build, distributed, plotting
from experiments.evaluation import outputs
from experiments.run import Run


def sampler_kwargs(
    eval_cfg,
    method: str,
    solver: str | None = None,
    steps: int | None = None,
    *,
    sde=None,
    grid: str | None = None,
    eps: float | None = None,
    denoise: bool | None = None,
) -> tuple[build.Method, dict, str]:
    """``(method, keywords, description)``: how ``method`` is called, the same way for
    every sampler: ``eps`` (``eval.sample_eps`` unless given) and the sampler's own
    knobs from ``eval_cfg``, the solver given or the default one (none for a sampler
    with steps of its own), and ``steps`` fixed steps, else ``eval.steps``, or the
    tolerances for an adaptive sampler. The caller adds ``score_fn``, ``sde``,
    ``shape`` and ``key``.

    ``grid`` (a name of :data:`build.GRIDS` but ``tuned``; needs ``sde``) places the
    fixed steps: by default the sampler's own (uniform in t; EDM's for ``edm``), and
    uniform in log-SNR for the exponential integrators (:data:`build.EXPONENTIAL`).
    ``denoise`` overrides the sampler's default final Tweedie step."""
    m = build.sampler(method)
    kwargs = dict(eps=eval_cfg.sample_eps if eps is None else eps, **m.options(eval_cfg))
    if denoise is not None:
        kwargs["denoise"] = denoise
    if m.solver is None:
        if solver is not None:
            raise ValueError(f"--method {method} takes steps of its own: drop --solver")
        name = m.label(eval_cfg)
    else:
        name = solver or (eval_cfg.solver if m.adaptive else m.solver)
        kwargs["solver"] = build.solver(name)
    if steps is None and m.adaptive:
        if grid is not None:
            raise ValueError(
                f"--grid {grid} places fixed steps: give --steps N (the adaptive "
                f"{name} picks its own steps)"
            )
        kwargs.update(rtol=eval_cfg.rtol, atol=eval_cfg.atol)
        return m, kwargs, name
    steps = steps or eval_cfg.steps
    grid = grid or default_grid(method, name)
    if grid == default_grid(method, None) and grid != "log_snr":
        kwargs["steps"] = steps  # the sampler's own grid
    else:
        if sde is None:
            raise ValueError(f"grid {grid!r} needs the SDE (sampler_kwargs(..., sde=...))")
        kwargs["ts"] = build.grid(grid, sde, steps, kwargs["eps"])
    return m, kwargs, name


def default_grid(method: str, solver: str | None) -> str:
    """The grid fixed steps take when ``--grid`` is not given."""
    if solver in build.EXPONENTIAL or method == "consistency":
        return "log_snr"
    return "karras" if method == "edm" else "uniform"


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
    eval_cfg, mesh, score = run.cfg.eval, distributed.mesh(), student_function(run)
    chunks, nfe, key = [], 0, jax.random.key(seed)
    sizes = [min(eval_cfg.batch_size, n - i) for i in range(0, n, eval_cfg.batch_size)]
    bar = tqdm(sizes, desc="sampling", disable=not progress, unit="batch")
    for i, size in enumerate(bar):
        padded = distributed.padded_size(size, mesh)
        score_i = score
        if requested is not None and run.cfg.distill.method == "meanflow":
            if guidance:
                raise ValueError(
                    "a MeanFlow student takes --class without --guidance (its average "
                    "velocity is not a score to guide)"
                )
            chunk = requested[i * eval_cfg.batch_size : i * eval_cfg.batch_size + size]
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], padded - size)])
            score_i = _with_labels(score, chunk)
        elif requested is not None:
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


def student_function(run: Run):
    """What the run's sampler takes: its score function, or for a MeanFlow student its
    average velocity :class:`networks.MeanFlowFunction`."""
    if run.cfg.distill.method != "meanflow":
        return run.score_function()
    from flax import nnx

    import networks

    model, ema = nnx.merge(run.graphdef, run.state)
    return networks.MeanFlowFunction.from_module(ema.apply_to(model), run.sde, run.param)


class _with_labels(eqx.Module):
    """A MeanFlow function with the class of each sample fixed."""

    fn: Callable
    labels: jax.Array

    def __call__(self, x, r, t):
        return self.fn(x, r, t, self.labels)


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
    grid: str | None = None,
    eps: float | None = None,
    denoise: bool | None = None,
    progress: bool = True,
) -> dict:
    """Draw ``n`` samples with the run's (EMA) weights; writes
    ``samples/<name>.{npz,png,json}`` in ``run.workdir``, named by what was run, and
    copies them to ``samples.{npz,png,json}`` (:mod:`.outputs`).

    A class-conditional run (``model.num_classes``) samples class ``labels`` (an int, or
    ``"all"``: ``n / num_classes`` of each class, one class per grid row) with
    classifier-free guidance weight ``guidance`` (:math:`w`: the score
    :math:`(1 + w) s(x | c) - w s(x)`; 0 = plain conditional); ``labels=None`` samples
    the unconditional (null-label) model. ``grid``, ``eps`` and ``denoise`` are as in
    :func:`sampler_kwargs`; ``grid="tuned"`` fits an ``steps``-step grid to the run's
    own probability-flow ODE first (:func:`samplers.optimize_grid`, on 256 prior draws
    of ``seed``; ODE only).
    """
    eval_cfg = run.cfg.eval
    method, n = method or eval_cfg.method, n or eval_cfg.n_samples
    if run.cfg.distill.method and steps is None:  # a student: its first sampling steps
        steps = run.cfg.distill.sample_steps[0]
    if run.cfg.distill.method == "pd" and method == "ode" and solver is None:
        from experiments.training import distill

        solver = "ddim"  # the sampler a PD student was distilled for
        run = distill.pd_student(run, steps)  # the stage that distilled `steps` steps
    if run.workdir is not None and distributed.is_main():
        outputs.check_writable(run.workdir, "samples")
    tuned = grid == "tuned"
    m, kwargs, solver_name = sampler_kwargs(
        eval_cfg,
        method,
        solver,
        steps,
        sde=run.sde,
        grid=None if tuned else grid,
        eps=eps,
        denoise=denoise,
    )
    if method == "consistency":
        kwargs["sigma_data"] = run.cfg.distill.sigma_data
        if grid is None and "ts" in kwargs:  # the student's own times (CD: its grid's)
            from experiments.training import distill

            kwargs["ts"] = distill.sampling_grid(run.cfg, run.sde, len(kwargs["ts"]) - 1)
    requested = requested_labels(run, labels, n)
    if requested is None and guidance:
        raise ValueError("guidance needs a class to guide towards: give labels (--class)")
    if tuned:
        kwargs = _tuned(run, method, kwargs, seed)
    start = time.perf_counter()
    progress = progress and distributed.is_main()
    x, nfe = draw(run, m, kwargs, n, seed, requested, guidance, progress)
    fixed = "ts" in kwargs or "steps" in kwargs
    info = {
        "method": method,
        "solver": solver_name,
        "grid": (grid or default_grid(method, solver_name)) if fixed else "adaptive",
        "steps": (len(kwargs["ts"]) - 1 if "ts" in kwargs else kwargs["steps"]) if fixed else None,
        "rtol": None if fixed else kwargs["rtol"],
        "atol": None if fixed else kwargs["atol"],
        "eps": kwargs["eps"],
        "denoise": bool(kwargs.get("denoise", False)),
        "n": n,
        "nfe": nfe,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "checkpoint_step": run.step,
        "checkpoint": run.checkpoint,
        "weights": run.weights,
    }
    if requested is not None:
        info.update(labels=labels, guidance=guidance)
    if run.source.to_data is not None:  # undo the fixed maps: samples in data space
        x = run.source.to_data(x)
    if distributed.is_main() and run.workdir is not None:
        info = _write(run, x, requested, info)
    return info


def _tuned(run: Run, method: str, kwargs: dict, seed: int) -> dict:
    """``kwargs`` with ``ts`` the grid fitted to the run's own ODE (``grid=tuned``)."""
    if method != "ode" or "steps" not in kwargs and "ts" not in kwargs:
        raise ValueError(
            "--grid tuned fits fixed steps to the probability-flow ODE: use --method ode "
            "with --steps N"
        )
    steps = kwargs.pop("steps", None) or len(kwargs.pop("ts")) - 1
    kwargs["ts"] = samplers.optimize_grid(
        run.score_function(),
        run.sde,
        kwargs["solver"],
        steps,
        key=jax.random.fold_in(jax.random.key(seed), 1),
        shape=(256, *run.source.shape),
        eps=kwargs["eps"],
    )
    return kwargs


def _stem(info: dict) -> str:
    """The kept files' name: what was run (:func:`outputs.name`)."""
    spacing = (
        f"{info['grid']}{info['steps']}"
        if info["steps"] is not None
        else f"rtol{info['rtol']:g}-atol{info['atol']:g}"
    )
    return outputs.name(
        info["checkpoint_step"],
        info["weights"],
        info["method"],
        info["solver"] or None,
        spacing,
        "denoise" if info["denoise"] else None,
        eps=info["eps"],
        n=info["n"],
        seed=info["seed"],
        **{"class": info.get("labels"), "w": info.get("guidance")},
    )


def _write(run: Run, x: np.ndarray, requested, info: dict) -> dict:
    workdir, src, k = run.workdir, run.source, run.cfg.model.num_classes
    stem = _stem(info)
    (workdir / "samples").mkdir(exist_ok=True)
    kept = workdir / "samples" / stem
    arrays = {"samples": x} if requested is None else {"samples": x, "labels": requested}
    np.savez(f"{kept}.npz", **arrays)
    spacing = f"{info['steps']} steps ({info['grid']} grid)" if info["steps"] else "adaptive"
    title = (
        f"{run.cfg.data.name}, step {info['checkpoint_step']}: {info['method']} "
        f"({info['solver'] + ', ' if info['solver'] else ''}{spacing}), NFE {info['nfe']}"
    )
    if requested is not None:
        title += f", class {info['labels']}, guidance {info['guidance']:g}"
    if src.is_image:
        shown, ncol, n = slice(0, 64), 8, info["n"]
        if info.get("labels") == "all":  # one class per row
            ncol = min(n // k, 16)
            shown = np.arange(n).reshape(k, -1)[:, :ncol].reshape(-1)
        images = x[shown].reshape(-1, *(src.image_shape or src.shape))
        plotting.image_grid(images, f"{kept}.png", src.data_range, title=title, ncol=ncol)
    else:
        reference = src.test(run.cfg.train.seed)[: info["n"]]
        if src.to_data is not None:
            reference = src.to_data(reference)
        plotting.scatter_grid({"data (test)": reference, "samples": x}, f"{kept}.png", title=title)
    outputs.latest_copy(workdir, "samples", stem, (".npz", ".png"))
    return outputs.save_json(workdir, "samples", stem, info, "samples.json")


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
