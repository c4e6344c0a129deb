r"""Fast-sampler benchmark: error against NFE for every solver on every step grid.

``scoresde bench solvers`` samples the 16-D Gaussian-mixture oracle (VP, exact score)
with each solver x grid at several budgets of score evaluations (NFE, default 5, 10,
20, 50) and measures, against truths that do not depend on the solver:

- ``traj_rmse`` (deterministic solvers only): the root-mean-square distance, per
  coordinate, between the sample and the probability-flow ODE solution from the *same*
  prior draw, solved with Tsit5 at ``rtol = atol = 1e-7`` (the discretisation error
  itself; ``nan`` for stochastic samplers, whose target is a distribution);
- ``mode_tv``: total variation between the nearest-mode shares and the true weights;
- ``mmd2``: unbiased squared MMD (Gaussian kernel, median bandwidth) against exact
  samples of :math:`p_\epsilon`;
- ``logp_gap``: mean exact :math:`\log p_\epsilon` of the samples minus that of exact
  samples, in nats (positive: samples too concentrated; negative: too spread out).

Rows ``exact`` give each metric's noise floor: a second exact sample set of the same
size. The solver actually spends ``nfe`` evaluations (counted by the samplers), which
can differ from the budget (Heun-type solvers take whole steps).

With ``--workdir RUN`` (a trained digits or MNIST run) the same solvers also sample
the trained model; there the truths are the trajectory from the same prior draw
(Tsit5, ``rtol = atol = 1e-5``) and MMD against the test images.

Output: a markdown table and ``solvers.png`` (error against NFE, one panel per grid),
``solvers.json`` with every row. Example::

    scoresde bench solvers --out benchmarks/solvers          # ~10 min on 2 CPU cores
    scoresde bench solvers --quick --out /tmp/solvers        # smoke run
    scoresde bench solvers --grids uniform tuned --solvers euler unipc --nfe 10 \
        --n 2000 --out /tmp/tuned                            # the tuned grid, ~4 min

The ``tuned`` grid (opt-in) is :func:`samplers.optimize_grid` fitted for UniPC on 4096
prior draws of ``key(777)``, disjoint from the draws it is scored on (``key(seed)``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import samplers
import sde as sde_lib
from experiments import build
from experiments._parser import Parser
from experiments.evaluation import mixture_metrics as metrics
from experiments.run import Run

EPS = 1e-3
GRIDS: dict[str, Callable] = {
    "uniform": lambda sde, n: samplers.uniform_grid(n, eps=EPS),
    "quadratic": lambda sde, n: samplers.quadratic_grid(n, eps=EPS),
    "log_snr": lambda sde, n: samplers.log_snr_grid(sde, n, eps=EPS),
    "karras": lambda sde, n: samplers.karras_grid(sde, n, eps=EPS),
    # Tuned for UniPC on the oracle (whatever ``sde`` is given); opt-in: --grids tuned.
    "tuned": lambda sde, n: _tuned_grid(n),
}
DEFAULT_GRIDS = ["uniform", "quadratic", "log_snr", "karras"]
TUNE_KEY, TUNE_DRAWS = 777, 4096  # training draws, apart from the benchmark's keys


@functools.cache
def _tuned_grid(n: int):
    """The ``n``-step grid :func:`samplers.optimize_grid` fits so that UniPC tracks the
    exact PF-ODE of :func:`oracle_problem` on ``TUNE_DRAWS`` prior draws of
    ``jax.random.key(TUNE_KEY)`` (the benchmark evaluates on ``key(seed)``; keep
    ``seed != 777``). About 2-3 min per ``n`` on 2 CPU cores at n = 10."""
    vp, oracle = oracle_problem()
    return samplers.optimize_grid(
        oracle.score,
        vp,
        samplers.UniPC(),
        n,
        key=jax.random.key(TUNE_KEY),
        shape=(TUNE_DRAWS, oracle.mixture.dim),
        eps=EPS,
    )


@dataclass(frozen=True)
class SolverSpec:
    """How the benchmark runs one solver: ``name`` (its rows' label), the sampler it
    goes through (``kind``: ``sample_ode``, ``sample_sde`` or ``sample_edm``), the
    solver's name in :data:`experiments.build.SOLVERS`, and whether the sample is a
    deterministic function of the prior draw (then ``traj_rmse`` is measured)."""

    name: str
    kind: str  # "ode" | "sde" | "edm"
    solver: str
    deterministic: bool = True

    def make(self):
        return build.solver(self.solver)

    @property
    def per_step(self) -> int:
        """Score evaluations per step, as the solver reports them."""
        return samplers.evaluations_per_step(self.make())[0]

    def steps_for(self, nfe: int) -> int:
        if self.kind == "edm":  # Heun steps, then EDM's Euler step to sigma = 0: 2N - 1
            return max(1, (nfe + 1) // 2)
        return max(1, nfe // self.per_step)


SOLVER_SPECS: tuple[SolverSpec, ...] = (
    SolverSpec("euler", "ode", "euler"),
    SolverSpec("heun", "ode", "heun"),
    SolverSpec("ddim", "ode", "ddim"),
    SolverSpec("dpmpp2m", "ode", "dpmpp2m"),
    SolverSpec("dpmpp3m", "ode", "dpmpp3m"),
    SolverSpec("dpmpp2s", "ode", "dpmpp2s"),
    SolverSpec("unipc", "ode", "unipc"),
    SolverSpec("edm_heun", "edm", "heun"),
    SolverSpec("euler_maruyama", "sde", "euler", deterministic=False),
    SolverSpec("sde_dpmpp2m", "sde", "sde_dpmpp2m", deterministic=False),
)


def solver_specs() -> list[SolverSpec]:
    """Every fixed-step solver the benchmark runs, each built from
    :data:`experiments.build.SOLVERS` (an unknown name there raises)."""
    for spec in SOLVER_SPECS:
        build.lookup(build.SOLVERS, spec.solver, "solver")
    return list(SOLVER_SPECS)


def oracle_problem(dim: int = 16, n_modes: int = 8, seed: int = 0):
    """A 16-D mixture with unequal weights and well-separated isotropic modes."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_modes, dim))
    means = 4.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    weights = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03][:n_modes])
    weights = weights / weights.sum()
    mix = sde_lib.GaussianMixture(weights=weights, means=means, stds=0.5)
    vp = sde_lib.VPSDE()
    return vp, sde_lib.MixtureOracle(mix, vp)


def _grid_for(spec: SolverSpec, grid: str, forward, steps: int):
    """The ``ts`` a solver gets for ``steps`` steps; EDM's sampler adds its own final
    Euler step to sigma = 0, so its grid has one interval fewer (NFE = 2N - 1)."""
    if spec.kind == "edm":
        return GRIDS[grid](forward, steps - 1) if steps > 1 else None
    return GRIDS[grid](forward, steps)


def run_sampler(spec: SolverSpec, score_fn, forward, shape, key, ts):
    """``(x, nfe)`` for one solver on grid ``ts``."""
    common = dict(score_fn=score_fn, sde=forward, shape=shape, key=key, eps=EPS)
    common["solver"] = spec.make()
    if spec.kind == "ode":
        x, stats = samplers.sample_ode(**common, ts=ts)
    elif spec.kind == "sde":
        x, stats = samplers.sample_sde(**common, ts=ts)
    elif ts is None:  # one EDM step: Euler from sigma(T) straight to sigma = 0
        x, stats = samplers.sample_edm(**common, steps=0, denoise=True)
    else:  # Heun steps on ts, then EDM's Euler step to sigma = 0
        x, stats = samplers.sample_edm(**common, ts=ts, denoise=True)
    return x, int(stats["nfe"])


def reference(score_fn, forward, shape, key, tol: float):
    x, stats = samplers.sample_ode(
        score_fn=score_fn,
        sde=forward,
        shape=shape,
        key=key,
        solver=build.solver("tsit5"),
        rtol=tol,
        atol=tol,
        eps=EPS,
        max_steps=16384,
    )
    return x, int(stats["nfe"])


def _metrics(x, x_ref, exact, oracle, means, weights, logp_exact, key) -> dict:
    x = np.asarray(x, np.float64)
    row = {
        "traj_rmse": float(np.sqrt(np.mean((x - x_ref) ** 2))) if x_ref is not None else math.nan,
        "mode_tv": metrics.total_variation(metrics.mode_shares(x, means), weights),
        "mmd2": metrics.mmd2(x, exact),
    }
    if oracle is not None:
        logp = np.asarray(oracle.log_prob(jnp.asarray(x, jnp.float32), EPS))
        finite = np.isfinite(logp)
        row["logp_gap"] = float(np.mean(logp[finite]) - logp_exact) if finite.any() else math.nan
    return row


def bench_oracle(specs, nfes, grids, n: int, seed: int, progress: bool = True) -> list[dict]:
    """Every solver x grid x NFE on the 16-D mixture oracle."""
    vp, oracle = oracle_problem()
    mix = oracle.mixture
    key = jax.random.key(seed)
    shape = (n, mix.dim)
    exact = np.asarray(oracle.sample(jax.random.key(seed + 1), n, EPS))
    exact2 = np.asarray(oracle.sample(jax.random.key(seed + 2), n, EPS))
    means, weights = np.asarray(mix.means), np.asarray(mix.weights)
    logp_exact = float(jnp.mean(oracle.log_prob(jnp.asarray(exact), EPS)))
    x_ref, ref_nfe = reference(oracle.score, vp, shape, key, 1e-7)
    x_ref = np.asarray(x_ref, np.float64)
    rows = [
        {"problem": "oracle16", "solver": "exact", "grid": "-", "budget": 0, "nfe": 0}
        | _metrics(exact2, None, exact, oracle, means, weights, logp_exact, key),
        {"problem": "oracle16", "solver": "tsit5_1e-7", "grid": "adaptive", "budget": 0}
        | {"nfe": ref_nfe}
        | _metrics(x_ref, x_ref, exact, oracle, means, weights, logp_exact, key),
    ]
    for spec in specs:
        for grid in grids:
            if spec.name == "euler" and grid != "tuned":  # the reference Euler, 100 NFE
                budgets = sorted(set(nfes) | {100})
            else:
                budgets = list(nfes)
            for budget in budgets:
                steps = spec.steps_for(budget)
                ts = _grid_for(spec, grid, vp, steps)
                started = time.perf_counter()
                x, nfe = run_sampler(spec, oracle.score, vp, shape, key, ts)
                row = {
                    "problem": "oracle16",
                    "solver": spec.name,
                    "grid": grid,
                    "budget": budget,
                    "nfe": nfe,
                    "steps": steps,
                    "seconds": time.perf_counter() - started,
                }
                ref = x_ref if spec.deterministic else None
                row |= _metrics(x, ref, exact, oracle, means, weights, logp_exact, key)
                rows.append(row)
                if progress:
                    print(_line(row), flush=True)
    return rows


def bench_trained(specs, nfes, grids, workdir, n: int, seed: int) -> list[dict]:
    """The same solvers on a trained model: trajectory error and MMD to test images."""
    run = Run.restore(pathlib.Path(workdir))
    score_fn, forward = run.score_function(), run.sde
    test = np.asarray(run.source.test(run.cfg.train.seed), np.float64)
    test = test.reshape(test.shape[0], -1)
    shape = (n, *run.source.shape)
    key = jax.random.key(seed)
    x_ref, ref_nfe = reference(score_fn, forward, shape, key, 1e-5)
    x_ref = np.asarray(x_ref, np.float64).reshape(n, -1)
    name = f"{pathlib.Path(workdir).name}@{run.step}"
    flat = lambda x: np.asarray(x, np.float64).reshape(n, -1)  # noqa: E731
    rows = [
        {"problem": name, "solver": "tsit5_1e-5", "grid": "adaptive", "budget": 0}
        | {"nfe": ref_nfe, "traj_rmse": 0.0, "mmd2": metrics.mmd2(x_ref, test)}
    ]
    for spec in specs:
        for grid in grids:
            for budget in nfes:
                steps = spec.steps_for(budget)
                ts = _grid_for(spec, grid, forward, steps)
                x, nfe = run_sampler(spec, score_fn, forward, shape, key, ts)
                x = flat(x)
                row = {"problem": name, "solver": spec.name, "grid": grid, "budget": budget}
                row |= {
                    "nfe": nfe,
                    "steps": steps,
                    "traj_rmse": float(np.sqrt(np.mean((x - x_ref) ** 2)))
                    if spec.deterministic
                    else math.nan,
                    "mmd2": metrics.mmd2(x, test),
                }
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


COLUMNS = ("problem", "solver", "grid", "budget", "nfe", "traj_rmse", "mode_tv", "mmd2", "logp_gap")


def _line(row: dict) -> str:
    return "  ".join(f"{c}={_fmt(row.get(c, ''))}" for c in COLUMNS)


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def best_at(rows: list[dict], budget: int, metric: str, problem: str = "oracle16") -> dict:
    """The row with the smallest ``metric`` among those within ``budget`` NFE."""
    cands = [
        r
        for r in rows
        if r["problem"] == problem
        and 0 < r["nfe"] <= budget
        and not math.isnan(r.get(metric, math.nan))
    ]
    return min(cands, key=lambda r: r[metric])


def summary(rows: list[dict], budgets=(10, 20), top: int = 4) -> str:
    """Euler (uniform grid) at 100 NFE and the exact-sample floor against the ``top``
    runs with the smallest trajectory error at each budget, every metric of each run."""
    oracle = [r for r in rows if r["problem"] == "oracle16"]
    euler100 = _euler100(oracle)
    floor = next((r for r in oracle if r["solver"] == "exact"), None)
    if euler100 is None or floor is None:
        return ""
    cols = ("traj_rmse", "mode_tv", "mmd2", "logp_gap")
    out = ["| run | NFE | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]

    def line(label, r):
        return (
            f"| {label} | {r['nfe']} | " + " | ".join(_fmt(r.get(c, math.nan)) for c in cols) + " |"
        )

    out.append(line("exact samples (floor)", floor))
    out.append(line("**Euler, uniform grid, 100 steps**", euler100))
    for budget in budgets:
        cands = [
            r
            for r in oracle
            if r["budget"] == budget and not math.isnan(r.get("traj_rmse", math.nan))
        ]
        for r in sorted(cands, key=lambda r: r["traj_rmse"])[:top]:
            out.append(line(f"{r['solver']}, {r['grid']}", r))
    return "\n".join(out)


def _euler100(rows: list[dict], problem: str = "oracle16") -> dict | None:
    """The yardstick row: Euler on the uniform grid at 100 NFE."""
    return next(
        (
            r
            for r in rows
            if r["problem"] == problem
            and r["solver"] == "euler"
            and r["grid"] == "uniform"
            and r["budget"] == 100
        ),
        None,
    )


def _panel(ax, rows: list[dict], problem: str, metric: str, grid: str, colours: dict) -> None:
    """One panel of :func:`plot`: ``|metric|`` against NFE for each solver on ``grid``,
    with Euler-100 (dashed) and the exact-sample floor (dotted) as lines."""
    import matplotlib.ticker

    for s, colour in colours.items():
        pts = sorted(
            (r["nfe"], abs(r[metric]))
            for r in rows
            if r["problem"] == problem
            and r["solver"] == s
            and r["grid"] == grid
            and r["budget"] <= 50
            and not math.isnan(r.get(metric, math.nan))
            and r[metric] != 0
        )
        if pts:
            ax.loglog(*zip(*pts, strict=True), marker="o", ms=3, label=s, color=colour)
    euler100 = _euler100(rows, problem)
    floor = next((r for r in rows if r["solver"] == "exact" and r["problem"] == problem), None)
    if euler100 is not None and not math.isnan(euler100.get(metric, math.nan)):
        ax.axhline(abs(euler100[metric]), color="k", ls="--", lw=0.8, label="Euler 100")
    if floor is not None and metric != "traj_rmse":
        ax.axhline(abs(floor[metric]), color="grey", ls=":", lw=0.8, label="exact floor")
    ax.set_title(f"{grid}", fontsize=9)
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric if metric != "mmd2" else "|mmd2|")
    ax.set_xticks([5, 10, 20, 50])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot(rows: list[dict], path: pathlib.Path, problem: str = "oracle16") -> None:
    """Error against NFE, one row of panels per metric, one column per grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [g for g in GRIDS if any(r["grid"] == g for r in rows)]
    metrics_ = [m for m in ("traj_rmse", "mmd2", "mode_tv") if any(m in r for r in rows)]
    fig, axes = plt.subplots(
        len(metrics_), len(grids), figsize=(3.6 * len(grids), 3.0 * len(metrics_)), squeeze=False
    )
    solvers = sorted({r["solver"] for r in rows if r["grid"] in grids})
    cmap = plt.get_cmap("tab20")
    colours = {name: cmap(i % 20) for i, name in enumerate(solvers)}
    for i, metric in enumerate(metrics_):
        for j, grid in enumerate(grids):
            _panel(axes[i][j], rows, problem, metric, grid, colours)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=7)
    fig.suptitle(f"{problem}: error against NFE (VP, eps={EPS}); dashed: Euler, 100 NFE")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], meta: dict) -> str:
    return (
        f"# Solvers against NFE\n\n`scoresde bench solvers` ({meta['minutes']:.1f} min, "
        f"n = {meta['n']} samples per row on the oracle, seed {meta['seed']}, VP, "
        f"eps = {EPS}, jax {meta['jax']} on {meta['platform']}). Metrics: see the module "
        f"docstring of `experiments/bench/solvers.py`; `traj_rmse` is the distance to the "
        f"exact probability-flow solution from the same prior draw (deterministic "
        f"solvers only).\n\n"
        f"## The most accurate runs at 10 and 20 NFE against Euler at 100 NFE\n\n"
        f"{summary(rows)}\n\n![error against NFE](solvers.png)\n\n"
        f"## Every run\n\n{markdown(rows)}\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="scoresde bench solvers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_solvers", help="output directory")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--n", type=int, default=4000, help="samples per run (oracle)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--grids",
        nargs="+",
        default=DEFAULT_GRIDS,
        choices=list(GRIDS),
        help="'tuned' (not in the default) fits a grid per step count for UniPC first",
    )
    parser.add_argument("--solvers", nargs="+", default=None, help="subset of solver names")
    parser.add_argument("--workdir", default=None, help="also bench a trained run")
    parser.add_argument("--n-trained", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer samples/NFEs")
    parser.add_argument(
        "--replot", action="store_true", help="rewrite solvers.md/png from OUT/solvers.json"
    )
    return parser


def _write(out: pathlib.Path, rows: list[dict], meta: dict) -> None:
    """``solvers.md`` (the report) and ``solvers.png`` (the plot) of ``rows`` in ``out``."""
    (out / "solvers.md").write_text(report(rows, meta))
    plot(rows, out / "solvers.png")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for v in args.nfe:
        if v < 1:
            parser.error(f"--nfe values must be >= 1, got {v}")
    if args.n < 10:
        parser.error(f"--n must be >= 10, got {args.n}")
    specs = solver_specs()
    if args.solvers:
        known = {s.name for s in specs}
        unknown = sorted(set(args.solvers) - known)
        if unknown:
            parser.error(f"unknown solvers {unknown}; choose from {sorted(known)}")
        specs = [s for s in specs if s.name in args.solvers]
    if args.quick:
        args.n, args.nfe, args.n_trained = min(args.n, 500), [5, 10], min(args.n_trained, 64)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "solvers.json").read_text())
        _write(out, saved["rows"], saved["meta"])
        print(summary(saved["rows"]))
        return 0
    started = time.perf_counter()
    rows = bench_oracle(specs, args.nfe, args.grids, args.n, args.seed)
    if args.workdir:
        trained_specs = [s for s in specs if s.kind != "edm"]
        rows += bench_trained(
            trained_specs, args.nfe, ["uniform", "log_snr"], args.workdir, args.n_trained, args.seed
        )
    meta = {
        "minutes": (time.perf_counter() - started) / 60,
        "n": args.n,
        "seed": args.seed,
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
    }
    (out / "solvers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    _write(out, rows, meta)
    print(summary(rows))
    print(f"wrote {out / 'solvers.md'}, solvers.json, solvers.png in {meta['minutes']:.1f} min")
    return 0
