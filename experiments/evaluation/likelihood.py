"""Log-likelihoods of a trained run through the probability-flow ODE: nats per example
and bits/dim, in the data's own units (``likelihood.json``).

The model's density of the data adds the log-Jacobian of the fixed maps between data
and model (whitening, Gaussianization; 0 without any) to the ODE's log-density; for
images, the data are dequantised first (uniform noise, or truncated-normal noise with
its own bound terms, i-DODE). With a histogram base the base alone is scored on the
same points (a closed form), which says what the network adds.
"""

from __future__ import annotations

import json
import math
import time

import jax
import numpy as np
from tqdm.auto import tqdm

import networks
import samplers
from experiments import build, distributed
from experiments import data as data_lib
from experiments.evaluation import outputs
from experiments.run import Run

ELBO_TIMES = "lognormal"  # the ELBO's time density (lowest variance on the oracle)


def _dequantizer(run: Run):
    r"""For ``eval.dequantization=truncated_normal`` (i-DODE, Zheng et al. 2023): a map
    from a uniformly dequantised batch to ``(x_eps, correction)``, the ODE's start
    :math:`a(\epsilon) y` with :math:`y` the bin centre plus truncated-normal noise of
    scale :math:`s(\epsilon) / a(\epsilon)`, and the per-example terms that make
    ``log p_eps(x_eps) + correction`` the bound :math:`\log p(y) - \log q(y | k)`
    expressed like a uniform-noise log-density (plus :math:`-D \log w`), so that nats and
    bits/dim are computed one way for both. ``None`` for uniform noise (the data as is,
    with the ODE started at ``eps`` from it) and for data that are not images."""
    eval_cfg, src = run.cfg.eval, run.source
    if eval_cfg.dequantization == "uniform" or not src.discrete:
        return None
    if src.to_data is not None or src.log_det_fn is not None or src.log_det:
        raise ValueError(
            "eval.dequantization=truncated_normal needs a model of the images themselves; "
            "this run maps them first (data.whiten / data.gaussianize)"
        )
    eps, levels, data_range = eval_cfg.likelihood_eps, src.n_levels, src.data_range
    sigma = data_lib.truncated_normal_sigma(run.sde, eps)
    uniform = data_lib.uniform_log_q(src.dim, levels, data_range)

    def apply(chunk, rng):
        k = data_lib.from_continuous(chunk, levels, data_range)
        y, log_q = data_lib.truncated_normal_dequantize(rng, k, levels, data_range, sigma=sigma)
        x_eps, log_det = data_lib.to_ode_start(y, run.sde, eps)
        return x_eps.astype(np.float32), log_det - log_q + uniform

    return apply


def _base_log_density(run: Run):
    """The histogram base's own log-density (closed form, jitted), or None."""
    base = run.param if isinstance(run.param, networks.HistogramResidual) else None
    if base is None:
        return None
    return jax.jit(lambda y: base.base_log_density(run.sde, y, run.cfg.eval.likelihood_eps))


def _bits_per_dim(run: Run, logp: np.ndarray) -> np.ndarray:
    src = run.source
    width = src.data_range[1] - src.data_range[0]
    return np.asarray(
        samplers.bits_per_dim(logp, dim=src.dim, n_levels=src.n_levels, data_range=width)
    )


def _mean_stderr(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))


def _ode_estimate(run: Run, score_fn, solver, rtol, atol, steps=None):
    """``(x, key) -> (logp, nfe)`` through the probability-flow ODE (adaptive, or
    ``steps`` fixed steps uniform in t)."""
    eval_cfg = run.cfg.eval

    def estimate(x, key):
        logp, stats = samplers.log_likelihood(
            score_fn=score_fn,
            sde=run.sde,
            x=x,
            key=key,
            solver=solver,
            steps=steps,
            rtol=rtol,
            atol=atol,
            eps=eval_cfg.likelihood_eps,
            divergence=eval_cfg.divergence,
            n_probes=eval_cfg.n_probes,
        )
        return logp, int(stats["nfe"]), None

    return estimate


def _elbo_estimate(run: Run, score_fn, n_t: int):
    """``(x, key) -> (logp_lower, nfe, stderr)`` by the continuous-time ELBO (jitted once)."""
    eps = run.cfg.eval.likelihood_eps

    @jax.jit
    def bound(x, key):
        lower, stats = samplers.elbo(
            score_fn=score_fn, sde=run.sde, x=x, key=key, n_t=n_t, eps=eps, t_sampling=ELBO_TIMES
        )
        return lower, stats["stderr"]

    def estimate(x, key):
        lower, stderr = bound(x, key)
        return lower, 2 * n_t, stderr

    return estimate


def _score(run: Run, split: str, make_estimate, n, progress, desc="likelihood"):
    """Per-example log-densities of the model (with the fixed maps' and the
    dequantisation's corrections), of the base alone where there is one, the NFE of each
    batch and, for a Monte Carlo estimate, each example's standard error."""
    eval_cfg, mesh = run.cfg.eval, distributed.mesh()
    estimate = make_estimate(distributed.batch_sharded_score(run.score_function(), mesh))
    dequantize, base_logp = _dequantizer(run), _base_log_density(run)
    logps, corrections, base_logps, nfes, stderrs = [], [], [], [], []
    for r in range(eval_cfg.dequant_repeats if run.source.discrete else 1):
        data = getattr(run.source, split)(run.cfg.train.seed + r)[:n]
        batches = range(0, len(data), eval_cfg.batch_size)
        for i in tqdm(batches, desc=f"{desc} {r + 1}", disable=not progress, unit="batch"):
            chunk = data[i : i + eval_cfg.batch_size]
            correction = run.source.log_jacobian(chunk)
            if dequantize is not None:
                chunk, extra = dequantize(chunk, np.random.default_rng([r, i, 5]))
                correction = correction + extra
            x, size = distributed.shard_batch(chunk, mesh)
            logp, nfe, stderr = estimate(x, jax.random.key(1000 * r + i))
            logps.append(distributed.to_host(logp)[:size].astype(np.float64))
            if stderr is not None:
                stderrs.append(distributed.to_host(stderr)[:size].astype(np.float64))
            if base_logp is not None:
                base_logps.append(np.asarray(base_logp(jax.numpy.asarray(chunk)), np.float64))
            corrections.append(correction)
            nfes.append(nfe)
    correction = np.concatenate(corrections)
    logp = np.concatenate(logps) + correction
    base = np.concatenate(base_logps) + correction if base_logps else None
    return logp, base, nfes, (np.concatenate(stderrs) if stderrs else None)


def _summary(run: Run, logp: np.ndarray, base: np.ndarray | None) -> dict:
    """NLL statistics (and bits/dim for images, the base's and the entropy's)."""
    nll, src = -logp, run.source
    mean, stderr = _mean_stderr(nll)
    out = {
        "n": int(len(nll)),
        "nll_nats": mean,
        "nll_nats_stderr": stderr,
        "nll_nats_median": float(np.median(nll)),
        "nll_nats_p99": float(np.percentile(nll, 99)),
    }
    if src.discrete:  # discrete levels: bits/dim of the dequantised data
        bpd = _bits_per_dim(run, logp)
        eval_cfg = run.cfg.eval
        out.update(
            bits_per_dim=float(bpd.mean()),
            bits_per_dim_stderr=_mean_stderr(bpd)[1],
            bits_per_dim_median=float(np.median(bpd)),
            dequantization=f"{eval_cfg.dequantization.replace('_', '-')}, "
            f"{eval_cfg.dequant_repeats} draw(s) per image",
        )
    if base is not None:
        gain = (logp - base) / (src.dim * math.log(2))  # bits/dim the network adds
        out["histogram_base_alone"] = {
            "nll_nats": float(-base.mean()),
            "bits_per_dim": float(_bits_per_dim(run, base).mean()),
            "network_gain_bits_per_dim_stderr": _mean_stderr(gain)[1],
        }
    if src.entropy is not None:
        out.update(entropy_nats=src.entropy, kl_nats=out["nll_nats"] - src.entropy)
    return out


def _latest(split: str, kind: str) -> str:
    """The top-level file of the latest ``kind`` result for ``split``."""
    return f"{kind}.json" if split == "test" else f"{kind}_{split}.json"


def likelihood(
    run: Run,
    *,
    split: str = "test",
    solver: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    steps: int | None = None,
    n: int | None = None,
    progress: bool = True,
) -> dict:
    """NLL of the ``split`` (nats per example, and bits/dim for images) under the run's
    (EMA) weights, adaptive (``rtol``/``atol``, default ``eval.*``) or with ``steps``
    fixed steps; writes ``likelihood/<what was run>.json`` in ``run.workdir`` and copies
    it to ``likelihood.json`` (test split) or ``likelihood_val.json`` (:mod:`.outputs`)."""
    eval_cfg = run.cfg.eval
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if run.workdir is not None and distributed.is_main():
        outputs.check_writable(run.workdir, "likelihood")
    solver_name = solver or eval_cfg.solver
    if steps is not None and (rtol is not None or atol is not None):
        raise ValueError("give fixed steps or tolerances (rtol/atol), not both")
    rtol, atol = (None, None) if steps else (rtol or eval_cfg.rtol, atol or eval_cfg.atol)
    start = time.perf_counter()
    solver_obj = build.solver(solver_name)
    logp, base, nfes, _ = _score(
        run,
        split,
        lambda score_fn: _ode_estimate(run, score_fn, solver_obj, rtol, atol, steps),
        n or eval_cfg.n_likelihood or None,
        progress and distributed.is_main(),
    )
    out = {
        "split": split,
        "checkpoint_step": run.step,
        "checkpoint": run.checkpoint,
        "weights": run.weights,
    }
    out.update(_summary(run, logp, base))
    out.update(nfe=float(np.mean(nfes)), seconds=time.perf_counter() - start)
    out["settings"] = {
        "solver": solver_name,
        "steps": steps,
        "rtol": rtol,
        "atol": atol,
        "eps": eval_cfg.likelihood_eps,
        "divergence": eval_cfg.divergence,
        "n_probes": eval_cfg.n_probes,
        "step_control": "fixed steps, uniform in t" if steps else "batch-joint, worst-sample norm",
        "batch_size": eval_cfg.batch_size,
        "whiten": run.cfg.data.whiten,
        "gaussianize": run.cfg.data.gaussianize,
    }
    if distributed.is_main() and run.workdir is not None:
        spacing = f"steps{steps}" if steps else f"rtol{rtol:g}-atol{atol:g}"
        stem = outputs.name(run.step, run.weights, split, "ode", solver_name, spacing, n=out["n"])
        out = outputs.save_json(run.workdir, "likelihood", stem, out, _latest(split, "likelihood"))
    return out


def elbo(
    run: Run,
    *,
    split: str = "test",
    n_t: int = 16,
    n: int | None = None,
    progress: bool = True,
) -> dict:
    """The continuous-time variational bound (:func:`samplers.elbo`, ``n_t`` times per
    example, ``2 n_t`` score evaluations): an upper bound on the NLL (and on bits/dim
    for images) of the reverse-SDE model, beside the ODE figure of ``likelihood.json``
    when that file is for the same checkpoint. Writes ``elbo/<what was run>.json`` in
    ``run.workdir`` and copies it to ``elbo.json`` (test) or ``elbo_val.json``."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if run.workdir is not None and distributed.is_main():
        outputs.check_writable(run.workdir, "elbo")
    if not isinstance(n_t, int) or n_t < 2:
        raise ValueError(f"n_t must be an integer >= 2, got {n_t!r}")
    start = time.perf_counter()
    logp, base, nfes, stderr = _score(
        run,
        split,
        lambda score_fn: _elbo_estimate(run, score_fn, n_t),
        n or run.cfg.eval.n_likelihood or None,
        progress and distributed.is_main(),
        desc="elbo",
    )
    seconds = time.perf_counter() - start
    out = {
        "split": split,
        "checkpoint_step": run.step,
        "checkpoint": run.checkpoint,
        "weights": run.weights,
    }
    out["bound"] = "upper bound on the NLL"
    out.update(_summary(run, logp, base))
    out.update(
        # the Monte Carlo part of the spread: the RMS of the per-example standard errors
        mc_stderr_nats_rms=float(np.sqrt(np.mean(stderr**2))),
        nfe=float(np.mean(nfes)),
        seconds=seconds,
        seconds_per_example=seconds / len(logp),
        settings={"n_t": n_t, "eps": run.cfg.eval.likelihood_eps, "t_sampling": ELBO_TIMES},
    )
    ode = _ode_figures(run, split)
    if ode is not None:
        out["ode"] = ode
    if distributed.is_main() and run.workdir is not None:
        stem = outputs.name(run.step, run.weights, split, "elbo", n_t=n_t, n=out["n"])
        out = outputs.save_json(run.workdir, "elbo", stem, out, _latest(split, "elbo"))
    return out


def _ode_figures(run: Run, split: str) -> dict | None:
    """The ODE's figures from likelihood.json when it is for this checkpoint and split."""
    path = None if run.workdir is None else run.workdir / _latest(split, "likelihood")
    if path is None or not path.exists():
        return None
    try:
        ode = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (ode.get("checkpoint_step"), ode.get("split"), ode.get("weights", "ema"))
    if same != (run.step, split, run.weights):
        return None
    keys = ("n", "nll_nats", "nll_nats_stderr", "bits_per_dim", "bits_per_dim_stderr", "nfe")
    return {k: ode[k] for k in keys if k in ode} | {
        "seconds_per_example": ode["seconds"] / ode["n"]
    }


def validation_nll(run: Run, n: int, mesh=None) -> float:
    """Mean NLL (nats per example, in the data's units) of the EMA weights on the first
    ``n`` validation points, the batch split over ``mesh`` (default: all devices), with
    ``train.val_divergence``, ``train.val_probes`` and the tolerances
    ``train.val_rtol``/``val_atol``."""
    mesh = distributed.mesh() if mesh is None else mesh
    val = run.source.val(run.cfg.train.seed)[:n]
    x, n = distributed.shard_batch(val, mesh)
    eval_cfg, train_cfg = run.cfg.eval, run.cfg.train
    logp, _ = samplers.log_likelihood(
        score_fn=distributed.batch_sharded_score(run.score_function(), mesh),
        sde=run.sde,
        x=x,
        key=jax.random.key(0),
        rtol=train_cfg.val_rtol,
        atol=train_cfg.val_atol,
        eps=eval_cfg.likelihood_eps,
        divergence=train_cfg.val_divergence,
        n_probes=train_cfg.val_probes,
    )
    logp = distributed.to_host(logp)[:n] + run.source.log_jacobian(val)
    return float(-np.mean(logp))
