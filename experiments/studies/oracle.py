"""``scoresde oracle``: every sampler and the likelihood on an exact score.

A 2-D Gaussian mixture with unequal weights is diffused by the chosen SDE; its exact
score drives each sampler, and the exact log-density checks the likelihood. Prints a
table, writes ``oracle.json`` and ``samples.png`` to the work dir.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np

import samplers
import sde
from experiments import metrics, plotting, registry

WEIGHTS = (0.05, 0.05, 0.1, 0.1, 0.1, 0.15, 0.2, 0.25)


def _timed(fn, **kwargs):
    start = time.perf_counter()
    out, stats = fn(**kwargs)
    jax.block_until_ready(out)
    return out, {k: np.asarray(v).tolist() for k, v in stats.items()}, time.perf_counter() - start


def run(workdir: pathlib.Path, sde_name: str, n: int, seed: int, steps: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    likelihood_sde = {
        "vp": {"beta_max": 40.0},
        "subvp": {"beta_max": 40.0},
        "ve": {"sigma_max": 1000.0},
    }
    forward = registry.make_sde(sde_name)
    mixture = sde.GaussianMixture.ring(8, radius=3.0, std=0.3, weights=WEIGHTS)
    oracle = sde.MixtureOracle(mixture, forward)
    key = jax.random.key(seed)
    eps = 1e-3
    exact = np.asarray(oracle.sample(jax.random.fold_in(key, 0), n, eps))
    runs = {
        "ode (tsit5, adaptive 1e-5)": (samplers.sample_ode, {}),
        f"sde (euler, {steps} steps)": (samplers.sample_sde, {"steps": steps}),
        f"pc (euler + langevin, {steps} steps)": (samplers.sample_pc, {"steps": steps}),
    }
    results, pictures = {"sde": sde_name, "n": n, "seed": seed, "samplers": {}}, {"exact": exact}
    print(f"{'sampler':38s} {'nfe':>6s} {'time s':>7s} {'mode TV':>8s} {'MMD p':>6s}")
    for i, (name, (fn, kw)) in enumerate(runs.items(), start=1):
        x, stats, seconds = _timed(
            fn,
            score_fn=oracle.score,
            sde=forward,
            shape=(n, 2),
            key=jax.random.fold_in(key, i),
            eps=eps,
            **kw,
        )
        x = np.asarray(x)
        tv = metrics.total_variation(metrics.mode_shares(x, mixture.means), WEIGHTS)
        m = min(n, 2000)
        mmd, p = metrics.mmd_test(x[:m], exact[:m], jax.random.fold_in(key, 100 + i))
        results["samplers"][name] = {
            "nfe": stats["nfe"],
            "seconds": seconds,
            "mode_tv": tv,
            "mmd2": mmd,
            "mmd_p": p,
        }
        pictures[name] = x
        print(f"{name:38s} {stats['nfe']:6d} {seconds:7.2f} {tv:8.4f} {p:6.2f}")

    # Likelihood, with hyper-parameters whose prior mismatch is negligible.
    lik_sde = registry.make_sde(sde_name, **likelihood_sde[sde_name])
    lik_oracle = sde.MixtureOracle(mixture, lik_sde)
    x = lik_oracle.sample(jax.random.fold_in(key, 50), min(n, 512), 1e-5)
    exact_logp = np.asarray(lik_oracle.log_prob(x, 1e-5), np.float64)
    results["likelihood"] = {"sde_hyper": likelihood_sde[sde_name], "n": int(x.shape[0])}
    for div in ("exact", "hutchinson"):
        (logp, stats, seconds) = _timed(
            samplers.log_likelihood,
            score_fn=lik_oracle.score,
            sde=lik_sde,
            x=x,
            key=jax.random.fold_in(key, 51),
            eps=1e-5,
            divergence=div,
        )
        err = (np.asarray(logp, np.float64) - exact_logp) / 2
        results["likelihood"][div] = {
            "mean_abs_error_per_dim": float(np.abs(err).mean()),
            "mean_error_per_dim": float(err.mean()),
            "stderr_per_dim": float(err.std(ddof=1) / np.sqrt(len(err))),
            "nfe": stats["nfe"],
            "seconds": seconds,
        }
        r = results["likelihood"][div]
        print(
            f"likelihood ({div:10s}) nfe {stats['nfe']:5d}"
            f"  mean|err| {r['mean_abs_error_per_dim']:.2e}"
            f"  mean err {r['mean_error_per_dim']:+.2e} ± {r['stderr_per_dim']:.1e} nats/dim"
        )
    (workdir / "oracle.json").write_text(json.dumps(results, indent=2))
    plotting.scatter_grid(
        pictures, workdir / "samples.png", title=f"{sde_name.upper()} SDE, exact score"
    )
    print(f"wrote {workdir / 'oracle.json'} and {workdir / 'samples.png'}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scoresde oracle", description=__doc__)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/oracle"))
    parser.add_argument("--sde", default="vp", choices=sorted(registry.SDES))
    parser.add_argument("--n", type=int, default=20000, help="samples per sampler")
    parser.add_argument("--steps", type=int, default=1000, help="SDE and PC steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 2 or args.steps < 1:
        parser.error(f"need --n >= 2 and --steps >= 1, got --n {args.n} --steps {args.steps}")
    run(args.workdir, args.sde, args.n, args.seed, args.steps)
    return 0
