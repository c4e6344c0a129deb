r"""``scoresde experiment distill-oracle``: consistency distillation with the exact
Gaussian-mixture oracle as the teacher, scored against the exact probability-flow map.

On the unequal-weight 8-mode ring (2-D; the vs-GAN task's weights) and the 16-D,
8-mode mixture of ``scoresde bench solvers``, a student MLP (EDM-preconditioned, so
that its one-step map is well conditioned at every noise level) is distilled by
:func:`sde.consistency_distillation_loss` from Heun steps of the oracle's exact score
(:func:`samplers.pf_ode_step`) on the VP SDE, over several seeds. At 1 and 2 steps of
:func:`samplers.sample_consistency` the study reports modes hit (>= 1/4 of a mode's
weight within 3 std), the mode TV, and the per-coordinate RMS distance of the samples to
the exact probability-flow map of the *same* prior draws (a Tsit5 solve of the oracle's
ODE at rtol = atol = 1e-7); for 2 steps the re-noising draws fresh noise, so that
distance includes it. Also the teacher (the oracle's ODE) at 10 NFE of UniPC, and the
wall time of a 1-step sample against one forward pass of the same network.

Example::

    scoresde experiment distill-oracle --workdir runs/distill_oracle       # ~10 min
    scoresde experiment distill-oracle --quick --workdir /tmp/distill_oracle
"""

from __future__ import annotations

import json
import pathlib
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import networks
import samplers
import sde as sde_lib
from experiments._parser import Parser
from experiments.bench.solvers import oracle_problem, reference
from experiments.evaluation import mixture_metrics as metrics
from experiments.studies.vs_gan.tasks import RING_WEIGHTS
from experiments.training.distill import snapped_grid

EPS = 1e-3
N_POINTS = 18  # the CD grid (Song et al. 2023)


def problems() -> dict[str, sde_lib.MixtureOracle]:
    ring = sde_lib.GaussianMixture.ring(8, radius=4.0, std=0.3, weights=RING_WEIGHTS)
    _, mix16 = oracle_problem(16)
    vp = sde_lib.VPSDE()
    return {"ring": sde_lib.MixtureOracle(ring, vp), "mixture16": mix16}


def _student(dim: int, seed: int, sigma_data: float):
    model = networks.MLPScoreNet(dim, hidden=256, depth=3, rngs=nnx.Rngs(seed))
    return model, networks.EDMDenoiser(sigma_data=sigma_data)


def distil(oracle, seed: int, steps: int, n_points: int, batch: int = 512, lr: float = 1e-3):
    """A CD student of ``oracle`` (``steps`` Adam steps, cosine decay); its pure score."""
    forward, mix = oracle.sde, oracle.mixture
    sigma_data = float(np.sqrt(np.mean(np.var(np.asarray(mix.sample(jax.random.key(9), 8192)), 0))))
    model, param = _student(mix.dim, seed, sigma_data)
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.01))
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    teacher = samplers.pf_ode_step(oracle.score, forward, diffrax.Heun())
    ts = samplers.karras_grid(forward, n_points - 1, EPS)[::-1]

    @nnx.jit
    def update(model, opt, key):
        k_data, k_loss = jax.random.split(key)
        x0 = mix.sample(k_data, batch)

        def loss_fn(model):
            score = networks.score_fn(model, forward, param)
            f = networks.consistency_function(score, forward, EPS, sigma_data)
            return sde_lib.consistency_distillation_loss(
                f,
                teacher,
                forward,
                x0,
                k_loss,
                ts=ts,
                distance_kind="pseudo_huber",
                weighting="ict",
            ).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    key = jax.random.key(1000 + seed)
    for i in range(steps):
        update(model, opt, jax.random.fold_in(key, i))
    return networks.ScoreFunction.from_module(model, forward, param), sigma_data


def _quality(x, mix, x_ref) -> dict:
    """Modes hit (a nearest-mode share >= 1/4 of the mode's weight), mode TV, and the
    RMS distance per coordinate to ``x_ref``."""
    w = np.asarray(mix.weights, np.float64)
    x = np.asarray(x, np.float64)
    shares = metrics.mode_shares(x, np.asarray(mix.means, np.float64))
    return {
        "hit": int((shares >= 0.25 * w).sum()),
        "of": len(w),
        "mode_tv": metrics.total_variation(shares, w),
        "rmse_to_pf_map": float(np.sqrt(np.mean((x - np.asarray(x_ref)) ** 2))),
    }


def _median_seconds(fn, repeats: int = 7) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate(oracle, student, sigma_data: float, n: int, seed: int) -> dict:
    forward, mix = oracle.sde, oracle.mixture
    shape, key = (n, mix.dim), jax.random.key(seed)
    key_prior = jax.random.split(key)[0]  # sample_consistency's prior draw
    x_ref, _ = reference(oracle.score, forward, shape, key_prior, 1e-7, EPS)
    out = {}
    train_grid = samplers.karras_grid(forward, N_POINTS - 1, EPS)[::-1]
    for steps in (1, 2, 4):
        ts = snapped_grid(forward, steps, EPS, train_grid)  # the times the student saw
        x, stats = samplers.sample_consistency(
            score_fn=student, sde=forward, shape=shape, key=key, ts=ts, eps=EPS,
            sigma_data=sigma_data,
        )  # fmt: skip
        out[f"student_{steps}"] = {**_quality(x, mix, x_ref), "nfe": int(stats["nfe"])}
    x, stats = samplers.sample_ode(
        score_fn=oracle.score, sde=forward, shape=shape, key=key_prior,
        solver=samplers.UniPC(), ts=samplers.log_snr_grid(forward, 10, EPS), eps=EPS,
    )  # fmt: skip
    out["teacher_unipc10"] = {**_quality(x, mix, x_ref), "nfe": int(stats["nfe"])}
    t = jnp.full((n,), forward.T)
    x_T = forward.prior_sample(key_prior, shape)
    forward_pass = jax.jit(lambda f, x, t: f(x, t))
    one_step = jax.jit(
        lambda f, k: samplers.sample_consistency(
            score_fn=f, sde=forward, shape=shape, key=k, steps=1, eps=EPS, sigma_data=sigma_data
        )[0]
    )
    out["seconds_forward"] = _median_seconds(lambda: forward_pass(student, x_T, t))
    out["seconds_one_step"] = _median_seconds(lambda: one_step(student, key))
    return out


def run(workdir: pathlib.Path, quick: bool, steps: int | None = None, seeds=None) -> dict:
    steps, seeds, n = (600, (0,), 2000) if quick else (steps or 3000, seeds or (0,), 10000)
    results = {"steps": steps, "seeds": list(seeds), "n": n, "problems": {}}
    for name, oracle in problems().items():
        rows = []
        for seed in seeds:
            start = time.perf_counter()
            student, sigma_data = distil(oracle, seed, steps, n_points=N_POINTS)
            row = evaluate(oracle, student, sigma_data, n, seed)
            row["distill_seconds"] = time.perf_counter() - start
            rows.append(row)
            print(name, seed, json.dumps(row), flush=True)
        results["problems"][name] = rows
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "distill_oracle.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="scoresde experiment distill-oracle", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=pathlib.Path, required=True)
    p.add_argument("--quick", action="store_true", help="one seed, 600 steps (a smoke run)")
    p.add_argument("--steps", type=int, help="distillation steps (default 3000)")
    p.add_argument("--seeds", type=int, nargs="+", help="student seeds (default 0)")
    args = p.parse_args(argv)
    run(args.workdir, args.quick, args.steps, tuple(args.seeds) if args.seeds else None)
    return 0


__all__ = ["distil", "evaluate", "main", "problems", "run"]
