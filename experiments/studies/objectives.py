"""``scoresde experiment objectives``: time sampling x parametrisation at equal steps.

Each cell trains the data set's own config (MLP 3x256, batch 1024) on one path (the
rectified flow by default) for the same number of steps, with ``train.t_sampling`` in
``uniform | logit_normal | lognormal`` and ``model.parametrisation`` in ``noise |
velocity | data``, each trained with its own regression loss by default (noise: the
noise-prediction loss ``std2``; velocity: flow matching; data: x-prediction), so that
the time density is the weighting, as in SD3 and EDM. Every cell is scored the same
way: test NLL through the probability-flow ODE (exact divergence, Tsit5 1e-5), and
samples from the same ODE against the exact law: the unbiased MMD^2 to held-out data,
the share of samples off the support (checkerboard) or the nearest-mode total
variation (8gaussians).

Results go to ``--workdir``: one run per cell (kept, so an interrupted study resumes
where it stopped), ``results.json`` and ``report.md`` with the table. Example::

    scoresde experiment objectives --workdir runs/objectives             # ~40 min
    scoresde experiment objectives --quick --workdir /tmp/objectives     # smoke
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import config as config_lib
from experiments import evaluation, training
from experiments._parser import Parser
from experiments.data import toy_log_prob
from experiments.evaluation import mixture_metrics
from experiments.run import Run

DATASETS = ("checkerboard", "8gaussians")
TIME_SAMPLINGS = ("uniform", "logit_normal", "lognormal")
PARAMETRISATIONS = ("noise", "velocity", "data")
MATCHED_LOSS = {"noise": "std2", "velocity": "velocity", "data": "data"}


def _cell_overrides(args, dataset: str, t_sampling: str, param: str) -> list[str]:
    weighting = MATCHED_LOSS[param] if args.weighting == "matched" else args.weighting
    return [
        f"sde.name={args.sde}",
        f"train.steps={args.steps}",
        f"train.ckpt_every={args.steps}",
        f"train.log_every={min(200, args.steps)}",
        f"train.t_sampling={t_sampling}",
        f"train.weighting={weighting}",
        f"model.parametrisation={param}",
        f"eval.n_samples={args.n}",
        f"eval.n_likelihood={args.n}",
    ]


def _quality(dataset: str, x: np.ndarray, test: np.ndarray) -> dict:
    """MMD^2 to held-out points, and the share off the support or the modes' TV."""
    n = min(len(x), len(test), 2000)
    out = {"mmd2": float(mixture_metrics.mmd2(jnp.asarray(x[:n]), jnp.asarray(test[:n])))}
    if dataset == "checkerboard":
        out["off_support"] = float(np.mean(~np.isfinite(toy_log_prob(dataset, x))))
    else:  # 8gaussians: the 8 centres on the radius-4 circle, / 1.414, equal weights
        angles = np.arange(8) * np.pi / 4
        centres = 4 * np.stack([np.cos(angles), np.sin(angles)], 1) / 1.414
        shares = mixture_metrics.mode_shares(x, centres)
        out["mode_tv"] = mixture_metrics.total_variation(shares, np.full(8, 1 / 8))
    return out


def run_cell(args, dataset: str, t_sampling: str, param: str, root: pathlib.Path) -> dict:
    """Train (or resume) one cell, then score it; the row is cached as cell.json."""
    workdir = root / dataset / f"{t_sampling}-{param}"
    cached = workdir / "cell.json"
    if cached.exists():
        return json.loads(cached.read_text())
    cfg = config_lib.load(dataset, _cell_overrides(args, dataset, t_sampling, param))
    start = time.perf_counter()
    run, _ = training.train(cfg, workdir, progress=False)
    seconds = time.perf_counter() - start
    lik = evaluation.likelihood(run, n=args.n, progress=False)
    drawn = evaluation.sample(run, n=args.n, method="ode", progress=False)
    x = np.load(workdir / "samples.npz", allow_pickle=False)["samples"]
    row = {
        "dataset": dataset,
        "t_sampling": t_sampling,
        "parametrisation": param,
        "weighting": cfg.train.weighting,
        "steps": cfg.train.steps,
        "train_seconds": seconds,
        "nll": lik["nll_nats"],
        "nll_stderr": lik["nll_nats_stderr"],
        "kl": lik.get("kl_nats"),
        "likelihood_nfe": lik["nfe"],
        "sample_nfe": drawn["nfe"],
        **_quality(dataset, x, Run.restore(workdir).source.test(cfg.train.seed)),
    }
    cached.write_text(json.dumps(row, indent=2) + "\n")
    return row


def markdown(rows: list[dict], args) -> str:
    lines = [
        "# Time sampling x parametrisation at equal steps",
        "",
        f"`scoresde experiment objectives` on the `{args.sde}` path, {args.steps} steps of "
        f"batch 1024 per cell, weighting `{args.weighting}`; NLL and samples from the "
        f"adaptive probability-flow ODE, n = {args.n}.",
        "",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        extra = "off support" if dataset == "checkerboard" else "mode TV"
        key = "off_support" if dataset == "checkerboard" else "mode_tv"
        lines += [
            f"## {dataset}",
            "",
            f"| t sampling | parametrisation (loss) | test NLL (nats) | KL (nats) | MMD^2 | "
            f"{extra} | NFE (lik / sample) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["dataset"] == dataset):
            kl = "" if r["kl"] is None else f"{r['kl']:.4f}"
            lines.append(
                f"| {r['t_sampling']} | {r['parametrisation']} ({r['weighting']}) | "
                f"{r['nll']:.4f} ± {r['nll_stderr']:.4f} | {kl} | {r['mmd2']:.2e} | "
                f"{r[key]:.4f} | {r['likelihood_nfe']:.0f} / {r['sample_nfe']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def parser() -> Parser:
    p = Parser(
        prog="scoresde experiment objectives",
        description="Time sampling x parametrisation at equal steps on 2-D data "
        "(report.md, results.json in --workdir).",
    )
    p.add_argument("--workdir", default="runs/objectives")
    p.add_argument("--quick", action="store_true", help="smoke version (~1 minute)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--t-samplings", nargs="+", default=list(TIME_SAMPLINGS), choices=TIME_SAMPLINGS)
    p.add_argument(
        "--parametrisations", nargs="+", default=list(PARAMETRISATIONS), choices=PARAMETRISATIONS
    )
    p.add_argument("--sde", default="rf", help="the path every cell trains on (default rf)")
    p.add_argument(
        "--weighting",
        default="matched",
        choices=["matched", "std2", "velocity", "data", "likelihood"],
        help="matched: each parametrisation's own regression loss (default)",
    )
    p.add_argument("--steps", type=int, default=4000, help="training steps per cell")
    p.add_argument("--n", type=int, default=2000, help="test points and samples per cell")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.steps, args.n = 20, 200
        args.datasets, args.t_samplings = args.datasets[:1], args.t_samplings[:2]
    if args.steps < 1 or args.n < 10:
        raise ValueError(f"--steps must be >= 1 and --n >= 10, got {args.steps}, {args.n}")
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    cells = list(itertools.product(args.datasets, args.t_samplings, args.parametrisations))
    for i, (dataset, t_sampling, param) in enumerate(cells):
        print(f"[{i + 1}/{len(cells)}] {dataset} {t_sampling} {param}", flush=True)
        rows.append(run_cell(args, dataset, t_sampling, param, root))
        jax.clear_caches()
    (root / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (root / "report.md").write_text(markdown(rows, args))
    print(markdown(rows, args))
    return 0
