"""``scoresde oracle``: every sampler and the likelihood on an exact score.

A 2-D Gaussian mixture with unequal weights is diffused by the chosen SDE; its exact
score (:class:`sde.MixtureOracle`) drives each sampler of
:data:`experiments.build.SAMPLERS`, called the way ``scoresde sample`` calls it, and
its exact log-density checks the likelihood with each divergence. Prints a table,
writes ``oracle.json`` and ``samples.png`` to the work dir. Every SDE of
:data:`experiments.build.SDES` works; both SDEs (the sampling one with its default
hyper-parameters, the likelihood one with a longer schedule, :data:`LIKELIHOOD_SDE`)
are built before anything runs. Example::

    scoresde oracle --sde ve --n 2000 --steps 100 --workdir runs/oracle_ve
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

import samplers
import sde
from experiments import build, plotting
from experiments._parser import Parser
from experiments.config import EvalConfig, SDEConfig
from experiments.evaluation import mixture_metrics as metrics
from experiments.evaluation.sample import sampler_kwargs
from experiments.timing import timed

WEIGHTS = (0.05, 0.05, 0.1, 0.1, 0.1, 0.15, 0.2, 0.25)
EPS, LIKELIHOOD_EPS = 1e-3, 1e-5
# The likelihood SDE: the same process with a longer schedule, so that the prior's
# mismatch with the diffused mixture at T is negligible next to the solver's error.
# Each SDE takes the fields it has (beta_max: VP, sub-VP; sigma_max: VE, EDM).
LIKELIHOOD_SDE = {"beta_max": 40.0, "sigma_max": 1000.0}


def sampler_calls(steps: int) -> dict[str, tuple]:
    """``label -> (sampler, keywords)`` for every sampler of ``build.SAMPLERS``, called
    as ``scoresde sample`` calls it with the default eval settings: its default solver,
    ``steps`` fixed steps or, where the sampler is adaptive, the eval tolerances."""
    eval_cfg, out = EvalConfig(steps=steps, sample_eps=EPS), {}
    for name in build.SAMPLERS:
        method, kwargs, desc = sampler_kwargs(eval_cfg, name)
        desc += f", adaptive {eval_cfg.rtol:g}" if method.adaptive else f", {steps} steps"
        out[f"{name} ({desc})"] = (method.fn, kwargs)
    return out


def _stats(stats: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


def _samplers(forward, mixture, key, n: int, steps: int) -> tuple[dict, dict]:
    """Each sampler's mode TV, MMD test against exact samples, NFE and seconds (its
    first call, compilation included); and the samples, for the figure."""
    oracle = sde.MixtureOracle(mixture, forward)
    exact = np.asarray(oracle.sample(jax.random.fold_in(key, 0), n, EPS))
    results, pictures = {}, {"exact": exact}
    print(f"{'sampler':38s} {'nfe':>6s} {'time s':>7s} {'mode TV':>8s} {'MMD p':>6s}")
    for i, (name, (fn, kwargs)) in enumerate(sampler_calls(steps).items(), start=1):
        seconds, (x, stats) = timed(
            fn,
            score_fn=oracle.score,
            sde=forward,
            shape=(n, 2),
            key=jax.random.fold_in(key, i),
            **kwargs,
        )
        x, stats = np.asarray(x), _stats(stats)
        tv = metrics.total_variation(metrics.mode_shares(x, mixture.means), WEIGHTS)
        m = min(n, 2000)
        mmd, p = metrics.mmd_test(x[:m], exact[:m], jax.random.fold_in(key, 100 + i))
        results[name] = {"nfe": stats["nfe"], "seconds": seconds, "mode_tv": tv}
        results[name].update(mmd2=mmd, mmd_p=p)
        pictures[name] = x
        print(f"{name:38s} {stats['nfe']:6d} {seconds:7.2f} {tv:8.4f} {p:6.2f}")
    return results, pictures


def _likelihood(lik_sde, mixture, key, n: int) -> dict:
    """The probability-flow log-likelihood's error per dimension against the exact
    log-density, with each divergence of ``build.DIVERGENCES``."""
    oracle = sde.MixtureOracle(mixture, lik_sde)
    x = oracle.sample(jax.random.fold_in(key, 50), min(n, 512), LIKELIHOOD_EPS)
    exact_logp = np.asarray(oracle.log_prob(x, LIKELIHOOD_EPS), np.float64)
    out = {"n": int(x.shape[0])}
    for div in build.DIVERGENCES:
        seconds, (logp, stats) = timed(
            samplers.log_likelihood,
            score_fn=oracle.score,
            sde=lik_sde,
            x=x,
            key=jax.random.fold_in(key, 51),
            eps=LIKELIHOOD_EPS,
            divergence=div,
        )
        err = (np.asarray(logp, np.float64) - exact_logp) / 2
        r = out[div] = {
            "mean_abs_error_per_dim": float(np.abs(err).mean()),
            "mean_error_per_dim": float(err.mean()),
            "stderr_per_dim": float(err.std(ddof=1) / np.sqrt(len(err))),
            "nfe": _stats(stats)["nfe"],
            "seconds": seconds,
        }
        print(
            f"likelihood ({div:10s}) nfe {r['nfe']:5d}"
            f"  mean|err| {r['mean_abs_error_per_dim']:.2e}"
            f"  mean err {r['mean_error_per_dim']:+.2e} ± {r['stderr_per_dim']:.1e} nats/dim"
        )
    return out


def run(workdir: pathlib.Path, sde_name: str, n: int, seed: int, steps: int) -> dict:
    """The study on the SDE named ``sde_name`` (see the module docstring)."""
    forward = build.sde(sde_name)
    lik_sde = build.sde(SDEConfig(name=sde_name, **LIKELIHOOD_SDE))
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mixture = sde.GaussianMixture.ring(8, radius=3.0, std=0.3, weights=WEIGHTS)
    key = jax.random.key(seed)
    results = {"sde": sde_name, "n": n, "seed": seed}
    results["samplers"], pictures = _samplers(forward, mixture, key, n, steps)
    results["likelihood"] = {
        "sde_hyper": {k: v for k, v in LIKELIHOOD_SDE.items() if hasattr(lik_sde, k)},
        **_likelihood(lik_sde, mixture, key, n),
    }
    (workdir / "oracle.json").write_text(json.dumps(results, indent=2))
    plotting.scatter_grid(
        pictures, workdir / "samples.png", title=f"{sde_name.upper()} SDE, exact score"
    )
    print(f"wrote {workdir / 'oracle.json'} and {workdir / 'samples.png'}")
    return results


def main(argv: list[str] | None = None) -> int:
    """``scoresde oracle [--sde NAME] [--n N] [--steps N] [--seed S] [--workdir DIR]``."""
    parser = Parser(prog="scoresde oracle", description=__doc__)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/oracle"))
    parser.add_argument("--sde", default="vp", choices=sorted(build.SDES))
    parser.add_argument("--n", type=int, default=20000, help="samples per sampler")
    parser.add_argument("--steps", type=int, default=1000, help="steps of the fixed-step samplers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 2 or args.steps < 1:
        parser.error(f"need --n >= 2 and --steps >= 1, got --n {args.n} --steps {args.steps}")
    run(args.workdir, args.sde, args.n, args.seed, args.steps)
    return 0
