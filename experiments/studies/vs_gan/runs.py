"""Train and score every ``(family, lr, seed)`` run of one task, then time the samplers.

The score model is a :class:`~experiments.run.Run` trained by
:func:`experiments.training.fit` (the training step of ``scoresde train``, scanned
over chunks of host batches) and its test NLL is
:func:`experiments.evaluation.likelihood` with the study's eval settings (the
log-Jacobian of the data's fixed maps included). The GANs come from :mod:`.gan`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx

import networks
import samplers
from experiments import build, evaluation, training
from experiments import config as config_lib
from experiments.run import Run
from experiments.timing import median_time

from . import gan
from ._curves import window_means
from .results import (
    DIFFUSION,
    GAN_FAMILIES,
    GENERATOR,
    CostRow,
    Entry,
    TaskResult,
    TrainedRun,
    best_lr,
    summarise,
)
from .settings import Settings
from .tasks import Task, score_run

# (score_fn, key, shape) -> (samples, stats)
Draw = Callable[[Callable, jax.Array, tuple[int, ...]], tuple[jax.Array, dict]]


@dataclass(frozen=True)
class Kept:
    """What a run leaves for the sampling-cost table and the figures."""

    model: Run | gan.GANRun
    samples: dict[str, np.ndarray]  # sampler -> samples in the data's units


def diffusion_samplers(forward, settings: Settings) -> dict[str, Draw]:
    """Name -> ``draw(score_fn, key, shape)`` on the SDE ``forward``: 1000-step
    Euler-Maruyama on the reverse SDE, the adaptive probability-flow ODE (Tsit5 at
    ``tol``) and DPM-Solver++(3M) on a log-SNR grid for each of ``fast_steps``."""

    def call(method: str, **kwargs) -> Draw:
        fn = build.sampler(method).fn
        return lambda f, key, shape: fn(score_fn=f, sde=forward, shape=shape, key=key, **kwargs)

    tol = settings.tol
    out = {
        f"Euler-Maruyama {settings.euler_steps} (reverse SDE)": call(
            "sde", solver=build.solver("euler"), steps=settings.euler_steps
        ),
        f"Tsit5 adaptive (PF-ODE, tol {tol:g})": call(
            "ode", solver=build.solver("tsit5"), rtol=tol, atol=tol
        ),
    }
    for k in settings.fast_steps:
        out[f"DPM-Solver++(3M) {k} (log-SNR grid)"] = call(
            "ode", solver=build.solver("dpmpp3m"), ts=samplers.log_snr_grid(forward, k)
        )
    return out


def to_data(run: Run, x) -> np.ndarray:
    """Model samples in the data's own units (undoing a whitening map, if any)."""
    x = np.asarray(x)
    return x if run.source.to_data is None else np.asarray(run.source.to_data(x))


def score_nll(task: Task, run: Run, workdir: pathlib.Path) -> dict:
    """The test NLL through :func:`evaluation.likelihood` (its ``likelihood.json`` goes
    to ``workdir``); for a mixture also the exact NLL of the same points and the KL."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = evaluation.likelihood(run.replace(workdir=workdir), split="test", progress=False)
    row = {
        "n": out["n"],
        "nll_nats": out["nll_nats"],
        "nll_stderr": out["nll_nats_stderr"],
        "nll_median": out["nll_nats_median"],
        "nfe": int(out["nfe"]),
        "seconds": out["seconds"],
    }
    if task.mixture is not None:
        x = run.source.test(run.cfg.train.seed)[: out["n"]]
        true = float(-np.mean(np.asarray(task.mixture.log_prob(x), np.float64)))
        row.update(true_nll_nats=true, kl_nats=row["nll_nats"] - true)
    else:
        row.update(bits_per_dim=out["bits_per_dim"], bits_per_dim_median=out["bits_per_dim_median"])
    return row


def train_diffusion(
    task: Task, lr: float, seed: int, settings: Settings, workdir: pathlib.Path
) -> tuple[TrainedRun, Kept]:
    """One score model: trained, sampled with Euler and the largest fast sampler
    (seed ``1000 + seed``), and scored on the test NLL."""
    run, losses, timing = training.fit(score_run(task, lr, seed), chunk=settings.chunk)
    table, f = diffusion_samplers(run.sde, settings), run.score_function()
    names, shape = list(table), (task.n_eval, *run.source.shape)
    samples, quality = {}, {}
    for name in (names[0], names[-1]):  # the reference sampler and the largest fast one
        x, _ = table[name](f, jax.random.key(1000 + seed), shape)
        samples[name] = to_data(run, x)
        quality[name] = task.quality(samples[name])
    curve = window_means([losses], settings.log_every)
    row = TrainedRun(
        family=DIFFUSION,
        lr=lr,
        seed=seed,
        train_seconds=timing.seconds,
        step_ms=1e3 * timing.step_seconds,
        final_loss=curve["mean"][-1],
        curves={"step": curve["step"], "loss": curve["mean"]},
        quality=quality,
        nll=score_nll(task, run, workdir / "likelihood" / f"{task.name}_lr{lr:g}_seed{seed}"),
        params=networks.count_params(nnx.merge(run.graphdef, run.state)[0]),
    )
    return row, Kept(run, samples)


def train_gan(task: Task, loss: str, lr: float, seed: int) -> tuple[TrainedRun, Kept]:
    g = gan.train(task.gan_cfg(loss, lr, seed), task.source)
    x = np.asarray(gan.sample(g.graphdef, g.state, jax.random.key(1000 + seed), task.n_eval))
    gen, disc = nnx.merge(g.graphdef, g.state)[:2]
    row = TrainedRun(
        family=GAN_FAMILIES[loss],
        lr=lr,
        seed=seed,
        train_seconds=g.timing.seconds,
        step_ms=1e3 * g.timing.step_seconds,
        final_loss=g.history["d_loss"][-1],
        curves=g.history,
        quality={GENERATOR: task.quality(x)},
        nll=None,
        params=networks.count_params(gen) + networks.count_params(disc),
    )
    return row, Kept(g, {GENERATOR: x})


def _cost_row(entry: Entry, lr, nfe, seconds, n, quality) -> CostRow:
    return CostRow(
        family=entry.family,
        sampler=entry.sampler,
        lr=lr,
        nfe_per_sample=int(nfe),
        batch=n,
        seconds_per_batch=seconds,
        microseconds_per_sample=1e6 * seconds / n,
        quality={k: v for k, v in quality.items() if k != "shares"},
    )


def _seconds(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` blocked calls of ``fn()`` (already compiled)."""
    return median_time(lambda i: fn(), rounds=repeats, calls=1, warmup=0)


def sampling_cost(task: Task, runs, kept, settings: Settings) -> list[CostRow]:
    """NFE and seconds per sample of each sampler, on the best lr's first-seed model (a
    warm-up call first: it compiles, and its samples give the quality column)."""
    n, seed, repeats = task.n_eval, settings.seeds[0], settings.repeats
    out = []
    for loss in settings.gan_losses:
        entry = Entry(GAN_FAMILIES[loss], GENERATOR)
        lr = best_lr(runs, entry)
        g, key = kept[(entry.family, lr, seed)].model, jax.random.key(7)
        x = np.asarray(gan.sample(g.graphdef, g.state, key, n))
        sec = _seconds(lambda g=g, key=key: gan.sample(g.graphdef, g.state, key, n), repeats)
        out.append(_cost_row(entry, lr, 1, sec, n, task.quality(x)))
    reference = next(r for r in runs if r.family == DIFFUSION).entries()[0]  # Euler
    lr = best_lr(runs, reference)
    run = kept[(DIFFUSION, lr, seed)].model
    f, shape = run.score_function(), (n, *run.source.shape)
    for name, draw in diffusion_samplers(run.sde, settings).items():
        key = jax.random.key(7)
        x, stats = draw(f, key, shape)
        sec = _seconds(lambda draw=draw, key=key: draw(f, key, shape)[0], repeats)
        quality = task.quality(to_data(run, x))
        out.append(_cost_row(Entry(DIFFUSION, name), lr, stats["nfe"], sec, n, quality))
    out += distilled_cost(run, lr, task, settings)
    return out


def distilled_cost(run: Run, lr: float, task: Task, settings: Settings) -> list[CostRow]:
    """Rows of one- and few-step students of ``run`` (``settings.distill_methods``,
    each trained by :func:`experiments.training.distill.in_memory` for
    ``distill_steps``): NFE, seconds per sample and quality at each of ``distill_nfe``."""
    from experiments.training import distill

    n, repeats, out = task.n_eval, settings.repeats, []
    shape = (n, *run.source.shape)
    for method in settings.distill_methods:
        steps = [f"train.steps={settings.distill_steps}"]
        if method == "pd":  # its stages must fit in the steps: 2^k -> 1 with k <= 4
            steps.append(f"distill.pd_start={min(16, 2 ** max(1, settings.distill_steps // 200))}")
        student, seconds = distill.in_memory(run, method, steps, chunk=settings.chunk)
        for nfe in settings.distill_nfe:
            draw, key = distill.sampler(student, nfe), jax.random.key(7)
            x, stats = draw(key, shape)
            sec = _seconds(lambda draw=draw, key=key: draw(key, shape)[0], repeats)
            name = f"{method.upper()} student, {nfe} step(s) ({seconds:.0f} s to distil)"
            quality = task.quality(to_data(run, x))
            out.append(_cost_row(Entry(DIFFUSION, name), lr, stats["nfe"], sec, n, quality))
    return out


def _log_line(name: str, row: TrainedRun) -> str:
    q = next(iter(row.quality.values()))
    nll = f", NLL {row.nll['nll_nats']:.3f}" if row.nll else ""
    return (
        f"[{name}] {row.family:9s} lr={row.lr:g} seed={row.seed}: train "
        f"{row.train_seconds:.1f} s, hit {q['hit']}/{q['of']}, TV {q['tv']:.3f}{nll}"
    )


def run_task(
    task: Task, settings: Settings, workdir: pathlib.Path, log=print
) -> tuple[TaskResult, dict]:
    """Every (family, lr, seed) run on one data set, then the sampling-cost table;
    returns the result and, per ``(family, lr, seed)``, what the figures need."""
    runs, kept = [], {}
    for lr in settings.lrs:
        for seed in settings.seeds:
            trained = [train_diffusion(task, lr, seed, settings, workdir)]
            trained += [train_gan(task, loss, lr, seed) for loss in settings.gan_losses]
            for row, keep in trained:
                runs.append(row)
                kept[(row.family, lr, seed)] = keep
                log(_log_line(task.name, row))
    lr0, seed0 = settings.lrs[0], settings.seeds[0]
    families = [DIFFUSION] + [GAN_FAMILIES[x] for x in settings.gan_losses]
    result = TaskResult(
        kind=task.kind,
        sharpness=task.sharpness,
        score_config=config_lib.to_dict(task.score_cfg(lr0, seed0)),
        gan_configs={
            GAN_FAMILIES[x]: dataclasses.asdict(task.gan_cfg(x, lr0, seed0))
            for x in settings.gan_losses
        },
        truth=task.truth,
        reference=task.reference,
        runs=runs,
        summary=summarise(runs, families, settings.lrs),
        sampling_cost=sampling_cost(task, runs, kept, settings),
    )
    return result, kept
