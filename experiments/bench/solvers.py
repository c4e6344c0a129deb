r"""Fast-sampler benchmark: error against NFE for every solver on every step grid and
every forward path.

``scoresde bench solvers`` samples the 16-D Gaussian-mixture oracle (exact score) on
each forward path (``--paths``: VP, rectified flow and EDM by default) with each solver
x grid at several budgets of score evaluations (NFE, default 5, 10, 20, 50) and
measures, against truths that do not depend on the solver:

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

**Paths on equal footing.** Every path samples the same data and ends at the same noise
level: VP (``sde.VPSDE()``) at ``t = eps = 1e-3``, where :math:`\sigma = s/a = 0.0105`,
and rectified flow (``sde.RectifiedFlow()``, ``T = 0.999``) and EDM (``sde.EDMSDE()``,
``T = 80``) at the time where their :math:`\sigma` is the same
(:func:`path_eps`), so that every path's :math:`x/a` has the same law
:math:`x_0 + 0.0105 z` at the end. What differs is each path's own time, schedule and
start: :math:`\sigma(T)` is 152 (VP), 999 (RF) and 80 (EDM). Each path's truths (the
trajectory from the same standard-normal prior draw, the exact samples) are its own;
``traj_rmse`` is measured in the path's ``x`` (:math:`a(\epsilon)` is 0.99995, 0.990
and 1). The grids run from each path's ``T`` (uniform and quadratic in its ``t``).

With ``--workdir RUN`` (a trained digits or MNIST run) the same solvers also sample
the trained model; there the truths are the trajectory from the same prior draw
(Tsit5, ``rtol = atol = 1e-5``) and MMD against the test images.

Output: ``solvers.md`` (per path: a one-line summary at 10 and 20 NFE, the most
accurate runs, a table of error against NFE; every run), ``solvers.png`` (error against
NFE: one row of panels per path and metric, one column per grid), ``solvers.json`` with
every row. Example::

    scoresde bench solvers --out benchmarks/solvers          # ~10 min per path, 2 cores
    scoresde bench solvers --paths vp rf --nfe 10 20 --out /tmp/solvers
    scoresde bench solvers --quick --out /tmp/solvers        # smoke run
    scoresde bench solvers --grids uniform tuned --solvers euler unipc --nfe 10 \
        --n 2000 --out /tmp/tuned                            # the tuned grid, ~4 min

The ``tuned`` grid (opt-in) is :func:`samplers.optimize_grid` fitted for UniPC on 4096
prior draws of ``key(777)``, disjoint from the draws it is scored on (``key(seed)``),
once per path.
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

EPS = 1e-3  # VP's end time; the other paths end at VP's noise level there (path_eps)
# The forward paths, by name (the first of each SDE's ``names``).
PATHS: dict[str, Callable[[], sde_lib.AbstractSDE]] = {
    "vp": sde_lib.VPSDE,
    "rf": sde_lib.RectifiedFlow,
    "edm": sde_lib.EDMSDE,
}
DEFAULT_PATHS = list(PATHS)
GRIDS: dict[str, Callable] = {
    "uniform": lambda sde, n, eps: samplers.uniform_grid(n, eps, sde.T),
    "quadratic": lambda sde, n, eps: samplers.quadratic_grid(n, eps, sde.T),
    "log_snr": lambda sde, n, eps: samplers.log_snr_grid(sde, n, eps),
    "karras": lambda sde, n, eps: samplers.karras_grid(sde, n, eps),
    # Tuned for UniPC on the oracle of the path of ``sde``; opt-in: --grids tuned.
    "tuned": lambda sde, n, eps: _tuned_grid(path_name(sde), n),
}
DEFAULT_GRIDS = ["uniform", "quadratic", "log_snr", "karras"]
TUNE_KEY, TUNE_DRAWS = 777, 4096  # training draws, apart from the benchmark's keys


def path_name(forward: sde_lib.AbstractSDE) -> str:
    """The path's name: the first of the SDE's config names (``"vp"``, ``"rf"``, ...)."""
    return type(forward).names[0] if type(forward).names else type(forward).__name__


def path_eps(path: str) -> float:
    r"""The end time of ``path``: :data:`EPS` for VP, and for any other path the time at
    which its noise level :math:`\sigma = s/a = e^{-\lambda}` equals VP's at ``EPS``
    (0.0105): 0.01038 for RF, 0.01049 for EDM."""
    if path == "vp":
        return EPS
    lam = sde_lib.VPSDE().log_snr(jnp.asarray(EPS, jnp.float32))
    return float(PATHS[path]().log_snr_inverse(lam))


def _sigma(forward: sde_lib.AbstractSDE, t: float) -> float:
    return float(jnp.exp(-forward.log_snr(jnp.asarray(t, jnp.float32))))


@functools.cache
def _tuned_grid(path: str, n: int):
    """The ``n``-step grid :func:`samplers.optimize_grid` fits so that UniPC tracks the
    exact PF-ODE of :func:`oracle_problem` on ``path`` on ``TUNE_DRAWS`` prior draws of
    ``jax.random.key(TUNE_KEY)`` (the benchmark evaluates on ``key(seed)``; keep
    ``seed != 777``). About 2-3 min per ``n`` on 2 CPU cores at n = 10."""
    forward, oracle = oracle_problem(path=path)
    return samplers.optimize_grid(
        oracle.score,
        forward,
        samplers.UniPC(),
        n,
        key=jax.random.key(TUNE_KEY),
        shape=(TUNE_DRAWS, oracle.mixture.dim),
        eps=path_eps(path),
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


def oracle_problem(dim: int = 16, n_modes: int = 8, seed: int = 0, path: str = "vp"):
    """``(forward, oracle)``: a 16-D mixture with unequal weights and well-separated
    isotropic modes, on the forward path named ``path`` (one of :data:`PATHS`)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_modes, dim))
    means = 4.0 * means / np.linalg.norm(means, axis=1, keepdims=True)
    weights = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03][:n_modes])
    weights = weights / weights.sum()
    mix = sde_lib.GaussianMixture(weights=weights, means=means, stds=0.5)
    forward = PATHS[path]()
    return forward, sde_lib.MixtureOracle(mix, forward)


def _grid_for(spec: SolverSpec, grid: str, forward, steps: int, eps: float = EPS):
    """The ``ts`` a solver gets for ``steps`` steps; EDM's sampler adds its own final
    Euler step to sigma = 0, so its grid has one interval fewer (NFE = 2N - 1)."""
    if spec.kind == "edm":
        return GRIDS[grid](forward, steps - 1, eps) if steps > 1 else None
    return GRIDS[grid](forward, steps, eps)


def run_sampler(spec: SolverSpec, score_fn, forward, shape, key, ts, eps: float = EPS):
    """``(x, nfe)`` for one solver on grid ``ts`` (``eps``: the end time when ``ts`` is
    ``None``)."""
    common = dict(score_fn=score_fn, sde=forward, shape=shape, key=key, eps=eps)
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


def reference(score_fn, forward, shape, key, tol: float, eps: float = EPS):
    x, stats = samplers.sample_ode(
        score_fn=score_fn,
        sde=forward,
        shape=shape,
        key=key,
        solver=build.solver("tsit5"),
        rtol=tol,
        atol=tol,
        eps=eps,
        max_steps=16384,
    )
    return x, int(stats["nfe"])


def _metrics(x, x_ref, exact, oracle, means, weights, logp_exact, key, eps=EPS) -> dict:
    x = np.asarray(x, np.float64)
    row = {
        "traj_rmse": float(np.sqrt(np.mean((x - x_ref) ** 2))) if x_ref is not None else math.nan,
        "mode_tv": metrics.total_variation(metrics.mode_shares(x, means), weights),
        "mmd2": metrics.mmd2(x, exact),
    }
    if oracle is not None:
        logp = np.asarray(oracle.log_prob(jnp.asarray(x, jnp.float32), eps))
        finite = np.isfinite(logp)
        row["logp_gap"] = float(np.mean(logp[finite]) - logp_exact) if finite.any() else math.nan
    return row


def bench_oracle(
    specs, nfes, grids, n: int, seed: int, progress: bool = True, paths=("vp",)
) -> list[dict]:
    """Every path x solver x grid x NFE on the 16-D mixture oracle."""
    rows = []
    for path in paths:
        rows += _bench_path(path, specs, nfes, grids, n, seed, progress)
    return rows


def _bench_path(path: str, specs, nfes, grids, n: int, seed: int, progress: bool) -> list[dict]:
    """Every solver x grid x NFE on the oracle of one path, ending at ``path_eps(path)``;
    the same keys on every path (so the same standard-normal prior draw)."""
    forward, oracle = oracle_problem(path=path)
    eps = path_eps(path)
    mix = oracle.mixture
    key = jax.random.key(seed)
    shape = (n, mix.dim)
    exact = np.asarray(oracle.sample(jax.random.key(seed + 1), n, eps))
    exact2 = np.asarray(oracle.sample(jax.random.key(seed + 2), n, eps))
    means, weights = np.asarray(mix.means), np.asarray(mix.weights)
    logp_exact = float(jnp.mean(oracle.log_prob(jnp.asarray(exact), eps)))
    x_ref, ref_nfe = reference(oracle.score, forward, shape, key, 1e-7, eps)
    x_ref = np.asarray(x_ref, np.float64)
    measure = functools.partial(
        _metrics,
        exact=exact,
        oracle=oracle,
        means=means,
        weights=weights,
        logp_exact=logp_exact,
        key=key,
        eps=eps,
    )
    head = {"problem": "oracle16", "path": path}
    rows = [
        head | {"solver": "exact", "grid": "-", "budget": 0, "nfe": 0} | measure(exact2, None),
        head
        | {"solver": "tsit5_1e-7", "grid": "adaptive", "budget": 0, "nfe": ref_nfe}
        | measure(x_ref, x_ref),
    ]
    for spec in specs:
        for grid in grids:
            if spec.name == "euler" and grid != "tuned":  # the reference Euler, 100 NFE
                budgets = sorted(set(nfes) | {100})
            else:
                budgets = list(nfes)
            for budget in budgets:
                steps = spec.steps_for(budget)
                ts = _grid_for(spec, grid, forward, steps, eps)
                started = time.perf_counter()
                x, nfe = run_sampler(spec, oracle.score, forward, shape, key, ts, eps)
                row = head | {
                    "solver": spec.name,
                    "grid": grid,
                    "budget": budget,
                    "nfe": nfe,
                    "steps": steps,
                    "seconds": time.perf_counter() - started,
                }
                row |= measure(x, x_ref if spec.deterministic else None)
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
    head = {"problem": f"{pathlib.Path(workdir).name}@{run.step}", "path": path_name(forward)}
    flat = lambda x: np.asarray(x, np.float64).reshape(n, -1)  # noqa: E731
    rows = [
        head
        | {"solver": "tsit5_1e-5", "grid": "adaptive", "budget": 0}
        | {"nfe": ref_nfe, "traj_rmse": 0.0, "mmd2": metrics.mmd2(x_ref, test)}
    ]
    for spec in specs:
        for grid in grids:
            for budget in nfes:
                steps = spec.steps_for(budget)
                ts = _grid_for(spec, grid, forward, steps)
                x, nfe = run_sampler(spec, score_fn, forward, shape, key, ts)
                x = flat(x)
                row = head | {"solver": spec.name, "grid": grid, "budget": budget}
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


# ---- the report ----------------------------------------------------------------------


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    return str(v)


COLUMNS = (
    "problem",
    "path",
    "solver",
    "grid",
    "budget",
    "nfe",
    "traj_rmse",
    "mode_tv",
    "mmd2",
    "logp_gap",
)


def _path_of(row: dict) -> str:
    """A row's path (rows written before there were paths are VP's)."""
    return row.get("path", "vp")


def _paths(rows: list[dict], problem: str = "oracle16") -> list[str]:
    """The paths that ``rows`` hold for ``problem``, in :data:`PATHS` order."""
    present = {_path_of(r) for r in rows if r["problem"] == problem}
    return [p for p in PATHS if p in present] + sorted(present - set(PATHS))


def _select(rows: list[dict], problem: str = "oracle16", path: str | None = None) -> list[dict]:
    return [r for r in rows if r["problem"] == problem and path in (None, _path_of(r))]


def _line(row: dict) -> str:
    return "  ".join(
        f"{c}={_fmt(row.get(c, '') if c != 'path' else _path_of(row))}" for c in COLUMNS
    )


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    cell = lambda r, c: _fmt(_path_of(r) if c == "path" else r.get(c, ""))  # noqa: E731
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def best_at(
    rows: list[dict], budget: int, metric: str, problem: str = "oracle16", path: str | None = None
) -> dict:
    """The row with the smallest ``metric`` among those within ``budget`` NFE (on
    ``path``, or on any)."""
    cands = [
        r
        for r in _select(rows, problem, path)
        if 0 < r["nfe"] <= budget and not math.isnan(r.get(metric, math.nan))
    ]
    return min(cands, key=lambda r: r[metric])


def _deterministic_at(rows: list[dict], budget: int) -> list[dict]:
    """The runs at ``budget`` with a trajectory error (deterministic solvers)."""
    return [
        r for r in rows if r["budget"] == budget and not math.isnan(r.get("traj_rmse", math.nan))
    ]


def summary(rows: list[dict], budgets=(10, 20), top: int = 4) -> str:
    """Per path: Euler (uniform grid) at 100 NFE and the exact-sample floor against the
    ``top`` runs with the smallest trajectory error at each budget, every metric of each
    run."""
    cols = ("traj_rmse", "mode_tv", "mmd2", "logp_gap")
    out = ["| path | run | NFE | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]

    def line(path, label, r):
        values = " | ".join(_fmt(r.get(c, math.nan)) for c in cols)
        return f"| {path} | {label} | {r['nfe']} | {values} |"

    for path in _paths(rows):
        oracle = _select(rows, path=path)
        euler100 = _euler100(oracle, path=path)
        floor = next((r for r in oracle if r["solver"] == "exact"), None)
        if euler100 is None or floor is None:
            continue
        out.append(line(path, "exact samples (floor)", floor))
        out.append(line(path, "**Euler, uniform grid, 100 steps**", euler100))
        for budget in budgets:
            for r in sorted(_deterministic_at(oracle, budget), key=lambda r: r["traj_rmse"])[:top]:
                out.append(line(path, f"{r['solver']}, {r['grid']}", r))
    return "\n".join(out) if len(out) > 2 else ""


def path_summary(rows: list[dict], budgets=(10, 20)) -> str:
    """One line per path: its sigma range, and at each budget the most accurate run
    (trajectory error) and the median over every deterministic solver x grid; with
    Euler-100 as the yardstick."""
    lines = []
    for path in _paths(rows):
        oracle = _select(rows, path=path)
        parts = []
        for budget in budgets:
            runs = _deterministic_at(oracle, budget)
            if not runs:
                continue
            best = min(runs, key=lambda r: r["traj_rmse"])
            median = float(np.median([r["traj_rmse"] for r in runs]))
            parts.append(
                f"at {budget} NFE best {best['solver']}/{best['grid']} "
                f"{_fmt(best['traj_rmse'])} (mode TV {_fmt(best['mode_tv'])}), "
                f"median of {len(runs)} runs {_fmt(median)}"
            )
        if not parts:
            continue
        euler100 = _euler100(oracle, path=path)
        tail = f"; Euler-100 {_fmt(euler100['traj_rmse'])}" if euler100 else ""
        span = ""
        if path in PATHS:
            forward = PATHS[path]()
            span = (
                f" (sigma {_fmt(_sigma(forward, forward.T))} -> "
                f"{_fmt(_sigma(forward, path_eps(path)))})"
            )
        lines.append(f"- **{path}**{span}: traj_rmse " + "; ".join(parts) + tail)
    return "\n".join(lines)


def nfe_table(rows: list[dict], path: str, metric: str = "traj_rmse") -> str:
    """``metric`` against NFE on ``path``: one row per solver x grid (the deterministic
    solvers for ``traj_rmse``), one column per budget."""
    oracle = [r for r in _select(rows, path=path) if r["budget"] > 0]
    runs = [r for r in oracle if not math.isnan(r.get(metric, math.nan))]
    budgets = sorted({r["budget"] for r in runs})
    if not budgets:
        return ""
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        cells.setdefault((r["solver"], r["grid"]), {})[r["budget"]] = r[metric]
    out = [
        "| solver | grid | " + " | ".join(f"{b}" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for (solver, grid), by_budget in cells.items():
        values = " | ".join(_fmt(by_budget[b]) if b in by_budget else "" for b in budgets)
        out.append(f"| {solver} | {grid} | {values} |")
    return "\n".join(out)


def _euler100(rows: list[dict], problem: str = "oracle16", path: str | None = None) -> dict | None:
    """The yardstick row: Euler on the uniform grid at 100 NFE (on ``path``, or the first)."""
    return next(
        (
            r
            for r in _select(rows, problem, path)
            if r["solver"] == "euler" and r["grid"] == "uniform" and r["budget"] == 100
        ),
        None,
    )


def _panel(ax, rows: list[dict], metric: str, grid: str, colours: dict, title: str) -> None:
    """One panel of :func:`plot`: ``|metric|`` against NFE for each solver on ``grid``
    (``rows``: one problem and path), with Euler-100 (dashed) and the exact-sample
    floor (dotted) as lines."""
    import matplotlib.ticker

    for s, colour in colours.items():
        pts = sorted(
            (r["nfe"], abs(r[metric]))
            for r in rows
            if r["solver"] == s
            and r["grid"] == grid
            and r["budget"] <= 50
            and not math.isnan(r.get(metric, math.nan))
            and r[metric] != 0
        )
        if pts:
            ax.loglog(*zip(*pts, strict=True), marker="o", ms=3, label=s, color=colour)
    euler100 = _euler100(rows)
    floor = next((r for r in rows if r["solver"] == "exact"), None)
    if euler100 is not None and not math.isnan(euler100.get(metric, math.nan)):
        ax.axhline(abs(euler100[metric]), color="k", ls="--", lw=0.8, label="Euler 100")
    if floor is not None and metric != "traj_rmse":
        ax.axhline(abs(floor[metric]), color="grey", ls=":", lw=0.8, label="exact floor")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric if metric != "mmd2" else "|mmd2|")
    ax.set_xticks([5, 10, 20, 50])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot(rows: list[dict], path: pathlib.Path, problem: str = "oracle16") -> None:
    """Error against NFE: one row of panels per forward path and metric, one column per
    grid (the panels of one metric share their y-axis across paths)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = [g for g in GRIDS if any(r["grid"] == g for r in rows)]
    metrics_ = [m for m in ("traj_rmse", "mmd2", "mode_tv") if any(m in r for r in rows)]
    paths = _paths(rows, problem)
    panel_rows = [(p, m) for p in paths for m in metrics_]
    fig, axes = plt.subplots(
        len(panel_rows),
        len(grids),
        figsize=(3.4 * len(grids), 2.7 * len(panel_rows)),
        squeeze=False,
    )
    solvers = sorted({r["solver"] for r in rows if r["grid"] in grids})
    cmap = plt.get_cmap("tab20")
    colours = {name: cmap(i % 20) for i, name in enumerate(solvers)}
    for i, (p, metric) in enumerate(panel_rows):
        for j, grid in enumerate(grids):
            _panel(axes[i][j], _select(rows, problem, p), metric, grid, colours, f"{p}: {grid}")
    for m in metrics_:  # one y-range per metric, so that the paths compare by eye
        share = [
            axes[i][j] for i, (_, mm) in enumerate(panel_rows) if mm == m for j in range(len(grids))
        ]
        lows, highs = zip(*(ax.get_ylim() for ax in share), strict=True)
        for ax in share:
            ax.set_ylim(min(lows), max(highs))
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=7)
    fig.suptitle(
        f"{problem}: error against NFE on the paths {', '.join(paths)} (each ends at "
        f"VP's noise level at t = {EPS}); dashed: Euler, 100 NFE"
    )
    fig.tight_layout(rect=(0, 0, 0.9, 0.99))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _path_lines(meta: dict) -> str:
    eps = meta.get("eps", {"vp": EPS})
    out = []
    for p in meta.get("paths", ["vp"]):
        e = eps.get(p, EPS)
        if p in PATHS:
            forward = PATHS[p]()
            out.append(
                f"`{p}` ({type(forward).__name__}, T = {_fmt(float(forward.T))}, "
                f"eps = {_fmt(e)}: sigma from {_fmt(_sigma(forward, forward.T))} to "
                f"{_fmt(_sigma(forward, e))})"
            )
        else:
            out.append(f"`{p}` (eps = {_fmt(e)})")
    return "; ".join(out)


def report(rows: list[dict], meta: dict) -> str:
    note = f" {meta['note']}" if meta.get("note") else ""  # e.g. where some rows came from
    per_path = "\n\n".join(
        f"### {p}\n\n{nfe_table(rows, p)}" for p in _paths(rows) if nfe_table(rows, p)
    )
    return (
        f"# Solvers against NFE\n\n`scoresde bench solvers` ({meta['minutes']:.1f} min, "
        f"n = {meta['n']} samples per row on the oracle, seed {meta['seed']}, jax "
        f"{meta['jax']} on {meta['platform']}). Paths: {_path_lines(meta)}. Metrics: see "
        f"the module docstring of `experiments/bench/solvers.py`; `traj_rmse` is the "
        f"distance to the exact probability-flow solution of the same path from the same "
        f"prior draw (deterministic solvers only).{note}\n\n"
        f"## Which path is easiest to integrate\n\n{path_summary(rows)}\n\n"
        f"## The most accurate runs at 10 and 20 NFE against Euler at 100 NFE\n\n"
        f"{summary(rows)}\n\n![error against NFE](solvers.png)\n\n"
        f"## traj_rmse against NFE, per path\n\n{per_path}\n\n"
        f"## Every run\n\n{markdown(rows)}\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="scoresde bench solvers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_solvers", help="output directory")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--n", type=int, default=4000, help="samples per run (oracle)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--paths",
        nargs="+",
        default=DEFAULT_PATHS,
        choices=list(PATHS),
        help="forward paths of the oracle, each ending at VP's noise level at t = 1e-3",
    )
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
    paths = list(dict.fromkeys(args.paths))
    if args.quick:
        args.n, args.nfe, args.n_trained = min(args.n, 500), [5, 10], min(args.n_trained, 64)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "solvers.json").read_text())
        _write(out, saved["rows"], saved["meta"])
        print(path_summary(saved["rows"]))
        return 0
    started = time.perf_counter()
    rows = bench_oracle(specs, args.nfe, args.grids, args.n, args.seed, paths=paths)
    if args.workdir:
        trained_specs = [s for s in specs if s.kind != "edm"]
        rows += bench_trained(
            trained_specs, args.nfe, ["uniform", "log_snr"], args.workdir, args.n_trained, args.seed
        )
    meta = {
        "minutes": (time.perf_counter() - started) / 60,
        "n": args.n,
        "seed": args.seed,
        "paths": paths,
        "eps": {p: path_eps(p) for p in paths},
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
    }
    (out / "solvers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    _write(out, rows, meta)
    print(path_summary(rows))
    print(f"wrote {out / 'solvers.md'}, solvers.json, solvers.png in {meta['minutes']:.1f} min")
    return 0
