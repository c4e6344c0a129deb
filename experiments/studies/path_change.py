"""``scoresde experiment path-change``: a trained model used on another linear path.

:class:`sde.PathChange` turns a score learned on one path into the score of another at
equal log-SNR. The probability-flow ODE is the same flow in both coordinates, so a
model sampled on the new path from the same prior draws must give the same samples, up
to solver error; and its log-density at matched times differs by the exact
log-Jacobian ``D log r``. This study measures both on a trained run:

1. the new path is chosen with the run's log-SNR range (``T'`` and ``eps'`` with
   ``lambda'(T') = lambda(T)`` and ``lambda'(eps') = lambda(eps)``), so the model is
   never queried at a noise level it was not trained on;
2. samples: the run's own ODE and the new path's ODE (Tsit5, ``--rtol``) from the same
   key, compared after the exact rescaling ``x = r x'``; the yardstick is the solver's
   own error, the run's ODE at ``--rtol`` against a 100x tighter solve, and the same
   comparison with both paths solved 100x tighter (it shrinks with the tolerance when
   the difference is solver error);
3. likelihoods of test points on both paths, compared after ``+ D log r``.

Example::

    scoresde experiment path-change --workdir runs/checkerboard --to rf
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

import samplers
import sde as sde_lib
from experiments._parser import Parser
from experiments.run import Run

TARGETS = sde_lib.PATH_TARGETS


def _ratio(trained_on, used_on, t_used) -> float:
    """``r = a(t) / a'(t')`` at matched log-SNR: ``x = r x'`` in law."""
    t = trained_on.log_snr_inverse(used_on.log_snr(t_used))
    return float(trained_on.mean_coeff(t) / used_on.mean_coeff(t_used))


def compare(run: Run, kind: str, *, n: int, n_lik: int, rtol: float, eps: float, seed: int):
    forward, score_fn = run.sde, run.score_function()
    used_on, eps_used = sde_lib.matched_path(forward, kind, eps)
    changed = sde_lib.PathChange(score_fn, trained_on=forward, used_on=used_on)
    shape, key = (n, *run.source.shape), jax.random.key(seed)

    def ode(score, path, eps_, tol):
        return samplers.sample_ode(
            score_fn=score, sde=path, shape=shape, key=key, rtol=tol, atol=tol, eps=eps_
        )

    x, st = ode(score_fn, forward, eps, rtol)
    x_ref, _ = ode(score_fn, forward, eps, rtol / 100)
    x_new, st_new = ode(changed, used_on, eps_used, rtol)
    x_new_ref, _ = ode(changed, used_on, eps_used, rtol / 100)
    r_end = _ratio(forward, used_on, eps_used)
    # the prior draws: x_T = prior_std z on both paths; x_T = r(T) x'_T needs
    # prior_std = r(T) prior_std', which holds up to s(T) = sqrt(1 - a(T)^2) on VP
    r_T = _ratio(forward, used_on, used_on.T)
    prior_mismatch = abs(forward.prior_std / (r_T * used_on.prior_std) - 1)

    def dist(a, b):
        d = np.asarray(jnp.reshape(a - b, (n, -1)), np.float64)
        return float(np.mean(np.linalg.norm(d, axis=1))), float(np.max(np.abs(d)))

    test = run.source.test(run.cfg.train.seed)[:n_lik]
    lik = {}
    for name, score, path, eps_ in (
        ("trained", score_fn, forward, eps),
        (kind, changed, used_on, eps_used),
    ):
        x_in = test if name == "trained" else test / _ratio(forward, used_on, eps_used)
        logp, stats = samplers.log_likelihood(
            score_fn=score, sde=path, x=jnp.asarray(x_in), key=key, rtol=rtol, atol=rtol, eps=eps_
        )
        lik[name] = (np.asarray(logp, np.float64), int(stats["nfe"]))
    d = math.prod(run.source.shape)
    # p'(x') = r^D p(r x'): log p(x) = log p'(x / r) - D log r
    logp_back = lik[kind][0] - d * math.log(_ratio(forward, used_on, eps_used))
    gap = logp_back - lik["trained"][0]
    mean_sample, max_sample = dist(x, r_end * x_new)
    mean_solver, max_solver = dist(x, x_ref)
    mean_tight, max_tight = dist(x_ref, r_end * x_new_ref)  # both paths at rtol / 100
    return {
        "workdir": str(run.workdir),
        "trained_on": type(forward).__name__,
        "used_on": repr(used_on),
        "eps": eps,
        "eps_used": eps_used,
        "rtol": rtol,
        "n": n,
        "prior_scale_mismatch": prior_mismatch,
        "samples_mean_l2": mean_sample,
        "samples_max_abs": max_sample,
        "solver_error_mean_l2": mean_solver,
        "solver_error_max_abs": max_solver,
        "tight_samples_mean_l2": mean_tight,
        "tight_samples_max_abs": max_tight,
        "nfe": {"trained": int(st["nfe"]), kind: int(st_new["nfe"])},
        "n_likelihood": n_lik,
        "nll_trained": float(-lik["trained"][0].mean()),
        "nll_changed": float(-logp_back.mean()),
        "nll_gap_mean_abs": float(np.mean(np.abs(gap))),
        "nll_gap_max_abs": float(np.max(np.abs(gap))),
        "likelihood_nfe": {"trained": lik["trained"][1], kind: lik[kind][1]},
    }


def parser() -> Parser:
    p = Parser(
        prog="scoresde experiment path-change",
        description="A trained run sampled and scored on another linear path through "
        "sde.PathChange, against its own ODE (path_change_<to>.json in --workdir).",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path, help="a trained run")
    p.add_argument("--to", default="rf", choices=TARGETS, help="the new path (default rf)")
    p.add_argument("--n", type=int, default=2000, help="samples (default 2000)")
    p.add_argument("--n-likelihood", type=int, default=500, help="test points (default 500)")
    p.add_argument("--rtol", type=float, default=1e-5, help="rtol = atol of every solve")
    p.add_argument("--eps", type=float, default=1e-3, help="the run's end time")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.n < 2 or args.n_likelihood < 2 or not 0 < args.rtol < 1:
        raise ValueError(
            f"--n and --n-likelihood must be >= 2 and --rtol in (0, 1), got "
            f"{args.n}, {args.n_likelihood}, {args.rtol}"
        )
    run = Run.restore(args.workdir)
    out = compare(
        run,
        args.to,
        n=args.n,
        n_lik=args.n_likelihood,
        rtol=args.rtol,
        eps=args.eps,
        seed=args.seed,
    )
    (args.workdir / f"path_change_{args.to}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0
