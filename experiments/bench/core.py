"""The core benchmark: sampler overhead, likelihood accuracy and compile times.

Three sections, printed in one process (``scoresde bench core``):

1. **Overhead.** Fixed-step Euler-Maruyama on the reverse SDE and fixed-step Euler on
   the probability-flow ODE (VP defaults, 1000 steps, the exact score of a 2-D 8-mode
   ring mixture) through :func:`samplers.sample_sde` / :func:`samplers.sample_ode`,
   against a minimal hand-written ``jax.lax.scan`` loop doing the same update on the
   same grid with the same score function. Both are jitted functions of the key and
   the score's parameters, timed after warm-up in alternating rounds; we report
   medians and the median of the per-round ratios diffrax/scan (target <= 1.1).
2. **Likelihood accuracy.** :func:`samplers.log_likelihood` with the oracle score
   against the closed-form ``log p_eps(x)`` on exact samples of ``p_eps``, for VP,
   sub-VP and VE in 2 and 16 dimensions, at several tolerances, plus one Hutchinson
   row per (SDE, D). Targets at rtol=atol=1e-5: mean |error| <= 1e-3 nats/dim and
   |mean error| <= 5e-4 nats/dim.
3. **Compile times.** First call minus steady state for each sampler, and a check that
   a second call with a new key does not trace again.

Example::

    from experiments.bench import core
    core.main(["--quick"])                         # smoke run, < 90 s on 2 CPU cores
    core.main(["--out", "benchmarks/core.json"])   # also writes benchmarks/core.md
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import samplers
import sde as sde_lib
from experiments import build
from experiments._parser import Parser
from experiments.config import SDEConfig
from experiments.timing import median_time, ratios, time_calls, timed

# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------

LIKELIHOOD_EPS = 1e-5
TARGET_MEAN_ABS = 1e-3  # nats/dim, mean |error| at rtol=atol=1e-5
TARGET_ABS_MEAN = 5e-4  # nats/dim, |mean error| at rtol=atol=1e-5
TARGET_RATIO = 1.1  # diffrax / scan


@dataclass(frozen=True)
class Settings:
    """What one run measures. ``--quick`` shrinks every section (fewer rounds, batches,
    points, tolerances and Hutchinson rows, no overhead probe) but skips none."""

    repeats: int
    batches: tuple[int, ...]
    overhead_probe: bool
    steps: int
    sample_eps: float
    tolerances: tuple[float, ...]
    n_points: int
    hutchinson_sdes: tuple[str, ...]
    compile_batch: int
    compile_repeats: int


def make_settings(quick: bool, repeats: int) -> Settings:
    """The full benchmark (< 10 min on 2 CPU cores) or the ``--quick`` smoke run."""
    if quick:
        return Settings(
            repeats=min(repeats, 3),
            batches=(256,),
            overhead_probe=False,
            steps=1000,
            sample_eps=1e-3,
            tolerances=(1e-5,),
            n_points=64,
            hutchinson_sdes=("VP",),
            compile_batch=500,
            compile_repeats=2,
        )
    return Settings(
        repeats=repeats,
        batches=(4096, 256),
        overhead_probe=True,
        steps=1000,
        sample_eps=1e-3,
        tolerances=(1e-3, 1e-4, 1e-5),
        n_points=256,
        hutchinson_sdes=("VP", "subVP", "VE"),
        compile_batch=500,
        compile_repeats=3,
    )


def machine_info() -> dict:
    """The processor, core count, devices and library versions of this run."""
    return {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "diffrax": diffrax.__version__,
    }


# --------------------------------------------------------------------------------------
# Problems: Gaussian mixtures with an exact score
# --------------------------------------------------------------------------------------


def ring_mixture(n_modes: int = 8, unequal: bool = False) -> sde_lib.GaussianMixture:
    """A 2-D ring of ``n_modes`` Gaussians (radius 4, std 0.3); ``unequal`` weights
    grow linearly around the ring (ratio ``n_modes`` between the largest and smallest)."""
    weights = None
    if unequal:
        w = np.arange(1, n_modes + 1, dtype=np.float64)
        weights = w / w.sum()
    return sde_lib.GaussianMixture.ring(n_modes, radius=4.0, std=0.3, weights=weights)


def random_mixture(dim: int = 16, n_comp: int = 5, seed: int = 0) -> sde_lib.GaussianMixture:
    """``n_comp`` Gaussians in ``dim`` dimensions with unequal weights, means of norm 3
    and random SPD covariances (eigenvalues ~0.05 to ~1), from a fixed seed."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_comp, dim))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    a = rng.normal(size=(n_comp, dim, dim)) / math.sqrt(dim)
    cov = 0.25 * a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(dim)
    weights = rng.dirichlet(np.full(n_comp, 2.0))
    return sde_lib.GaussianMixture(weights=weights, means=means, covariances=cov)


LIKELIHOOD_SDES = {"VP": "vp", "subVP": "subvp", "VE": "ve"}  # row label: build.SDES name


def likelihood_sdes() -> dict[str, sde_lib.AbstractSDE]:
    """VP, sub-VP (beta 0.1 to 40) and VE (sigma 0.01 to 1000), whose prior mismatch
    ``KL(p_T || prior)`` is negligible next to the errors measured."""
    c = SDEConfig(beta_min=0.1, beta_max=40.0, sigma_min=0.01, sigma_max=1000.0)
    return {label: build.sde(replace(c, name=name)) for label, name in LIKELIHOOD_SDES.items()}


# --------------------------------------------------------------------------------------
# 1. Overhead: diffrax vs a hand-written lax.scan loop
# --------------------------------------------------------------------------------------


def scan_reverse_sde(sde, shape, steps: int, eps: float) -> Callable:
    """Euler-Maruyama for the reverse SDE on the uniform grid ``T -> eps``:

    ``x <- x + (g^2 score - f x) h + g sqrt(h) z``, ``h = t_n - t_{n+1}``.

    Returns a jitted ``run(key, oracle)``. The prior draw uses the same key split as
    :func:`samplers.sample_sde`, so both start from the same ``x_T``; the Brownian
    increments differ.
    """
    ts = jnp.linspace(sde.T, eps, steps + 1)

    @eqx.filter_jit
    def run(key, oracle):
        def step(x, inputs):
            t0, t1, noise_key = inputs
            h = t0 - t1
            t = jnp.full(x.shape[:1], t0, x.dtype)
            g = sde_lib.expand_time(sde.diffusion(t), x)
            dx = (g**2 * oracle.score(x, t) - sde.drift(x, t)) * h
            z = jax.random.normal(noise_key, x.shape, x.dtype)
            return x + dx + g * jnp.sqrt(h) * z, None

        prior_key, path_key, _ = jax.random.split(key, 3)
        x = sde.prior_sample(prior_key, shape)
        inputs = (ts[:-1], ts[1:], jax.random.split(path_key, steps))
        return jax.lax.scan(step, x, inputs)[0]

    return run


def scan_pf_ode(sde, shape, steps: int, eps: float) -> Callable:
    """Euler for the probability-flow ODE on the uniform grid ``T -> eps``:

    ``x <- x + (f x - g^2 score / 2)(t_{n+1} - t_n)``.

    Returns a jitted ``run(key, oracle)`` starting from the same ``x_T`` as
    :func:`samplers.sample_ode` with the same key.
    """
    ts = jnp.linspace(sde.T, eps, steps + 1)

    @eqx.filter_jit
    def run(key, oracle):
        def step(x, inputs):
            t0, t1 = inputs
            t = jnp.full(x.shape[:1], t0, x.dtype)
            g2 = sde_lib.expand_time(sde.diffusion(t) ** 2, x)
            return x + (sde.drift(x, t) - 0.5 * g2 * oracle.score(x, t)) * (t1 - t0), None

        x = sde.prior_sample(key, shape)
        return jax.lax.scan(step, x, (ts[:-1], ts[1:]))[0]

    return run


def diffrax_reverse_sde(sde, shape, steps: int, eps: float) -> Callable:
    """:func:`samplers.sample_sde` (Euler-Maruyama) as a jitted ``run(key, oracle)``."""

    @eqx.filter_jit
    def run(key, oracle):
        return samplers.sample_sde(
            score_fn=oracle.score, sde=sde, shape=shape, key=key, steps=steps, eps=eps
        )[0]

    return run


def diffrax_pf_ode(sde, shape, steps: int, eps: float) -> Callable:
    """:func:`samplers.sample_ode` with fixed-step Euler as a jitted ``run(key, oracle)``."""

    @eqx.filter_jit
    def run(key, oracle):
        return samplers.sample_ode(
            score_fn=oracle.score,
            sde=sde,
            shape=shape,
            key=key,
            solver=build.solver("euler"),
            steps=steps,
            eps=eps,
        )[0]

    return run


def agreement(kind: str, oracle, x_diffrax, x_scan, eps: float) -> str:
    """A check that both loops solve the same problem.

    ODE: same ``x_T``, deterministic update, so the maximum difference is round-off.
    SDE: different noise, so compare the mean log-density of the samples under
    ``p_eps`` (equal up to Monte Carlo error).
    """
    if kind == "ode":
        return f"max|dx|={float(jnp.max(jnp.abs(x_diffrax - x_scan))):.1e}"
    lp_d = float(jnp.mean(oracle.log_prob(x_diffrax, eps)))
    lp_s = float(jnp.mean(oracle.log_prob(x_scan, eps)))
    return f"E log p: {lp_d:.3f} vs {lp_s:.3f}"


def overhead_mixtures() -> dict[str, sde_lib.GaussianMixture]:
    """The benchmark's score (a 2-D 8-mode ring) and an overhead probe: ``N(0, I)``,
    whose score is nearly free, so the per-step cost outside the score shows."""
    return {
        "ring8": ring_mixture(8),
        "N(0,I) probe": sde_lib.GaussianMixture(weights=[1.0], means=[[0.0, 0.0]], stds=1.0),
    }


def overhead_row(kind: str, batch: int, mixture: str, settings: Settings) -> dict:
    """Time one (kind, batch, mixture) case in alternating rounds."""
    vp = sde_lib.VPSDE()
    oracle = sde_lib.MixtureOracle(overhead_mixtures()[mixture], vp)
    shape, steps, eps = (batch, 2), settings.steps, settings.sample_eps
    make = {"sde": (diffrax_reverse_sde, scan_reverse_sde), "ode": (diffrax_pf_ode, scan_pf_ode)}
    # The score's parameters enter as a jit argument, as a network's would: captured
    # as constants, they slowed XLA:CPU's scan loop by ~30% here.
    fns = {
        name: functools.partial(builder(vp, shape, steps, eps), oracle=oracle)
        for name, builder in zip(("diffrax", "scan"), make[kind], strict=True)
    }
    warm_key = jax.random.key(12345)
    compile_s = {name: timed(fn, warm_key)[0] for name, fn in fns.items()}
    check = agreement(kind, oracle, fns["diffrax"](warm_key), fns["scan"](warm_key), eps)
    # one key per call; each round repeats the call until it lasts >= 0.2 s
    keyed = {name: lambda i, fn=fn: fn(jax.random.key(i)) for name, fn in fns.items()}
    times = time_calls(keyed, rounds=settings.repeats, calls=None, min_round_s=0.2)
    med_d, med_s = statistics.median(times["diffrax"]), statistics.median(times["scan"])
    per_round = ratios(times, "diffrax", "scan")
    ratio = statistics.median(per_round)
    is_probe = mixture != "ring8"
    return {
        "method": "reverse SDE, Euler-Maruyama" if kind == "sde" else "PF ODE, Euler",
        "score": mixture,
        "batch": batch,
        "steps": steps,
        "diffrax_s": med_d,
        "scan_s": med_s,
        "ratio": ratio,
        "ratio_min": min(per_round),
        "ratio_max": max(per_round),
        "overhead_us_per_step": 1e6 * (med_d - med_s) / steps,
        "first_call_diffrax_s": compile_s["diffrax"],
        "first_call_scan_s": compile_s["scan"],
        "check": check,
        "pass": "probe" if is_probe else ("PASS" if ratio <= TARGET_RATIO else "FAIL"),
    }


def bench_overhead(settings: Settings) -> list[dict]:
    cases = [(batch, "ring8") for batch in settings.batches]
    if settings.overhead_probe:
        cases.append((256, "N(0,I) probe"))
    return [
        overhead_row(kind, batch, mixture, settings)
        for batch, mixture in cases
        for kind in ("sde", "ode")
    ]


# --------------------------------------------------------------------------------------
# 2. Likelihood accuracy against the closed-form log p_eps
# --------------------------------------------------------------------------------------


def error_stats(logp, ref, dim: int) -> dict:
    """Per-dimension error summaries of ``logp`` against the exact ``ref``."""
    err = np.asarray(logp - ref, dtype=np.float64)
    per_dim = err / dim
    n = len(err)
    se = float(np.std(per_dim, ddof=1) / math.sqrt(n))
    return {
        "mean_abs_err": float(np.mean(np.abs(per_dim))),
        "mean_err": float(np.mean(per_dim)),
        "se_mean_err": se,
        "spread_nats_per_point": float(np.std(err, ddof=1)),
        "max_abs_err_nats_per_point": float(np.max(np.abs(err))),
    }


def likelihood_row(
    sde_name: str, sde, dim: int, oracle, x, ref, tol: float, divergence: str, key
) -> dict:
    """One ``log_likelihood`` call (timed after a warm-up call) and its errors;
    ``key`` draws the Hutchinson probes."""

    def call():
        return samplers.log_likelihood(
            score_fn=oracle.score,
            sde=sde,
            x=x,
            key=key,
            rtol=tol,
            atol=tol,
            eps=LIKELIHOOD_EPS,
            divergence=divergence,
            n_probes=1,
        )

    first_s, _ = timed(call)
    wall_s, (logp, stats) = timed(call)
    row = {
        "sde": sde_name,
        "dim": dim,
        "divergence": divergence,
        "tol": tol,
        "n": int(x.shape[0]),
        "nfe": int(stats["nfe"]),
        "num_steps": int(stats["num_steps"]),
        "wall_s": wall_s,
        "first_call_s": first_s,
        **error_stats(logp, ref, dim),
    }
    row["pass"] = likelihood_verdict(row)
    return row


def likelihood_verdict(row: dict) -> str:
    """PASS/FAIL against the targets (exact rows at 1e-5; Hutchinson: within 3 s.e.)."""
    if row["divergence"] == "hutchinson":
        return "PASS" if abs(row["mean_err"]) <= 3 * row["se_mean_err"] else "FAIL"
    if row["tol"] != 1e-5:
        return "-"
    ok = row["mean_abs_err"] <= TARGET_MEAN_ABS and abs(row["mean_err"]) <= TARGET_ABS_MEAN
    return "PASS" if ok else "FAIL"


def bench_likelihood(settings: Settings) -> list[dict]:
    """The same points for every SDE (exact samples of each ``p_eps``, which differ only
    by the tiny noise at ``eps``), and independent Hutchinson probes per (SDE, D): the
    three SDEs share one probability-flow map up to a change of time and scale, so
    with shared probes their Hutchinson errors would nearly coincide."""
    mixtures = {2: ring_mixture(6, unequal=True), 16: random_mixture(16)}
    rows = []
    for i, (sde_name, sde) in enumerate(likelihood_sdes().items()):
        for dim, mix in mixtures.items():
            oracle = sde_lib.MixtureOracle(mix, sde)
            x = oracle.sample(jax.random.key(dim), settings.n_points, t=LIKELIHOOD_EPS)
            ref = oracle.log_prob(x, LIKELIHOOD_EPS)
            args = (sde_name, sde, dim, oracle, x, ref)
            probe_key = jax.random.key(1000 * i + dim)
            rows += [likelihood_row(*args, tol, "exact", probe_key) for tol in settings.tolerances]
            if sde_name in settings.hutchinson_sdes:
                rows.append(likelihood_row(*args, 1e-5, "hutchinson", probe_key))
    return rows


# --------------------------------------------------------------------------------------
# 3. Compile times and retracing
# --------------------------------------------------------------------------------------


def counting(score_fn: Callable) -> tuple[Callable, list[int]]:
    """Wrap ``score_fn`` so that every trace of it bumps a counter (Python side
    effects run only while tracing, never inside compiled code)."""
    count = [0]

    def wrapped(x, t):
        count[0] += 1
        return score_fn(x, t)

    return wrapped, count


def compile_row(name: str, call: Callable, count: list[int], repeats: int) -> dict:
    """First call, second call with a new key, steady state; traces added by the
    second call (0 means no recompilation)."""
    first_s, _ = timed(call, jax.random.key(0))
    traced = count[0]
    second_s, _ = timed(call, jax.random.key(1))
    retraces = count[0] - traced
    steady_s = median_time(lambda i: call(jax.random.key(2 + i)), rounds=repeats, warmup=0)
    return {
        "function": name,
        "first_call_s": first_s,
        "second_call_s": second_s,
        "steady_s": steady_s,
        "compile_s": first_s - steady_s,
        "score_traces_first_call": traced,
        "score_traces_second_call": retraces,
        "recompiled": "yes" if retraces else "no",
    }


def bench_compile(settings: Settings) -> list[dict]:
    """Shapes used nowhere else in this process, so every first call compiles."""
    vp = sde_lib.VPSDE()
    oracle = sde_lib.MixtureOracle(ring_mixture(8), vp)
    shape = (settings.compile_batch, 2)
    x = oracle.sample(jax.random.key(3), settings.compile_batch - 1, t=LIKELIHOOD_EPS)
    calls = {
        "sample_ode (Tsit5, adaptive 1e-5)": lambda s, k: samplers.sample_ode(
            score_fn=s, sde=vp, shape=shape, key=k, solver=build.solver("tsit5")
        ),
        "sample_sde (Euler, 1000 steps)": lambda s, k: samplers.sample_sde(
            score_fn=s, sde=vp, shape=shape, key=k, steps=1000
        ),
        "sample_pc (1000 steps)": lambda s, k: samplers.sample_pc(
            score_fn=s, sde=vp, shape=shape, key=k, steps=1000
        ),
        "log_likelihood (exact, Tsit5 1e-5)": lambda s, k: samplers.log_likelihood(
            score_fn=s, sde=vp, x=x, key=k, eps=LIKELIHOOD_EPS
        ),
    }
    rows = []
    for name, call in calls.items():
        score_fn, count = counting(oracle.score)
        rows.append(
            compile_row(
                name, lambda k, c=call, s=score_fn: c(s, k), count, settings.compile_repeats
            )
        )
    return rows


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------

OVERHEAD_COLUMNS = {
    "method": "{}",
    "score": "{}",
    "batch": "{}",
    "steps": "{}",
    "diffrax_s": "{:.4f}",
    "scan_s": "{:.4f}",
    "ratio": "{:.3f}",
    "ratio_min": "{:.3f}",
    "ratio_max": "{:.3f}",
    "overhead_us_per_step": "{:+.1f}",
    "check": "{}",
    "pass": "{}",
}
LIKELIHOOD_COLUMNS = {
    "sde": "{}",
    "dim": "{}",
    "divergence": "{}",
    "tol": "{:.0e}",
    "n": "{}",
    "mean_abs_err": "{:.2e}",
    "mean_err": "{:+.2e}",
    "se_mean_err": "{:.1e}",
    "spread_nats_per_point": "{:.2e}",
    "nfe": "{}",
    "num_steps": "{}",
    "wall_s": "{:.3f}",
    "pass": "{}",
}
COMPILE_COLUMNS = {
    "function": "{}",
    "first_call_s": "{:.2f}",
    "second_call_s": "{:.3f}",
    "steady_s": "{:.3f}",
    "compile_s": "{:.2f}",
    "score_traces_first_call": "{}",
    "score_traces_second_call": "{}",
    "recompiled": "{}",
}


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A GitHub-flavoured markdown table of ``rows``, one column per ``columns`` key
    formatted with its format string."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt.format(row[col]) for col, fmt in columns.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SECTION_NOTES = {
    "overhead": (
        "Seconds per call, medians over alternating rounds (each measurement repeats the "
        "call for >= 0.2 s); `ratio` is the median of per-round "
        f"diffrax/scan ratios (target <= {TARGET_RATIO}); `overhead_us_per_step` is "
        "(median diffrax - median scan) / steps. VP defaults, eps=1e-3. The target "
        "applies to the 2-D 8-mode ring; the N(0,I) probe has a nearly free score, so "
        "its rows show the per-step cost outside the score (for the reverse SDE: the "
        "Brownian increments)."
    ),
    "likelihood": (
        "Errors in nats/dim against the closed-form log p_eps(x), eps=1e-5, on exact "
        "samples of p_eps. Targets at rtol=atol=1e-5 (exact divergence): mean|err| <= "
        f"{TARGET_MEAN_ABS:g} and |mean err| <= {TARGET_ABS_MEAN:g}. Hutchinson (1 "
        "Rademacher probe): PASS if |mean err| <= 3 s.e.; spread = std of the per-point "
        "error in nats. `wall_s` is a second (compiled) call."
    ),
    "compile": (
        "compile_s = first call - steady state; traces counted by a score wrapper "
        "(0 on the second call = no recompilation)."
    ),
}


def section_markdown(title: str, key: str, rows: list[dict], columns: dict[str, str]) -> str:
    return f"## {title}\n\n{SECTION_NOTES[key]}\n\n{markdown_table(rows, columns)}\n"


def write_results(path: Path, results: dict, markdown: str) -> None:
    """``path`` gets the JSON, ``path`` with suffix ``.md`` the markdown tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    path.with_suffix(".md").write_text(markdown)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="scoresde bench core",
        description="Sampler overhead vs lax.scan, likelihood accuracy with an exact "
        "score, and compile times.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 90 s on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON here (+ .md)")
    parser.add_argument("--repeats", type=int, default=7, help="timing rounds (default 7)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = make_settings(args.quick, args.repeats)
    start = time.perf_counter()
    machine = machine_info()
    header = (
        "# Core benchmark"
        + (" (quick)" if args.quick else "")
        + "\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in machine.items())
    )
    print(header + "\n", flush=True)
    sections = [
        ("1. Overhead: diffrax vs lax.scan", "overhead", bench_overhead, OVERHEAD_COLUMNS),
        ("2. Likelihood accuracy", "likelihood", bench_likelihood, LIKELIHOOD_COLUMNS),
        ("3. Compile times", "compile", bench_compile, COMPILE_COLUMNS),
    ]
    results = {"machine": machine, "settings": asdict(settings)}
    parts = [header]
    for title, key, run, columns in sections:
        section_start = time.perf_counter()
        rows = run(settings)
        results[key] = rows
        parts.append(section_markdown(title, key, rows, columns))
        print(parts[-1], flush=True)
        print(f"({time.perf_counter() - section_start:.1f} s)\n", flush=True)
    results["total_s"] = time.perf_counter() - start
    print(f"total: {results['total_s']:.1f} s")
    if args.out is not None:
        write_results(args.out, results, "\n\n".join(parts) + "\n")
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
