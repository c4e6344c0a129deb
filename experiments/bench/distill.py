"""``scoresde bench distill``: what a one-step student's sample costs against one
forward pass of the same network, measured in one process.

For the networks of the named configs (``checkerboard``: the 3x256 MLP; ``mnist``: the
U-Net, with its histogram base), with the weights as built (a sample's cost does not
depend on their values), it times, alternating rounds (:func:`experiments.timing.time_calls`):

- ``forward``: the network's score, ``score_fn(x, t)`` at ``t = T`` on a batch;
- ``consistency_1``: :func:`samplers.sample_consistency` with 1 step (prior draw,
  one evaluation, the consistency function's blend);
- ``ddim_1``: one DDIM step (a 1-step progressive-distillation student's sampler);
- ``meanflow_1``: :func:`samplers.sample_meanflow` with 1 step, on the network built with
  ``model.interval_time`` (its second embedding included).

The last line is JSON with the medians and each sampler's ratio to the forward pass
(median of per-round ratios). Example::

    scoresde bench distill --configs checkerboard,mnist --batch 256
"""

from __future__ import annotations

import json
import statistics

import jax
import jax.numpy as jnp
from flax import nnx

import networks
import samplers
from experiments import config as config_lib
from experiments._parser import Parser
from experiments.run import Run
from experiments.timing import ratios, time_calls


def _networks(name: str):
    """``(run, meanflow_run)`` of config ``name``: the score model, and the same network
    with MeanFlow's second time input."""
    run = Run.create(config_lib.load(name))
    mf = Run.create(config_lib.load(name, ["model.interval_time=true", "distill.method=meanflow"]))
    return run, mf


def bench(name: str, batch: int, rounds: int) -> dict:
    run, mf = _networks(name)
    f, forward = run.score_function(), run.sde
    model, ema = nnx.merge(mf.graphdef, mf.state)
    u = networks.MeanFlowFunction.from_module(ema.apply_to(model), mf.sde, mf.param)
    shape, key = (batch, *run.source.shape), jax.random.key(0)
    x = forward.prior_sample(key, shape)
    t = jnp.full((batch,), forward.T)
    eps = run.cfg.eval.sample_eps
    grid = samplers.log_snr_grid(forward, 1, eps)
    score = jax.jit(lambda f, x, t: f(x, t))

    def consistency(f, k):
        return samplers.sample_consistency(score_fn=f, sde=forward, shape=shape, key=k, steps=1)[0]

    def ddim(f, k):
        return samplers.sample_ode(
            score_fn=f, sde=forward, shape=shape, key=k, solver=samplers.DDIM(), ts=grid
        )[0]

    def meanflow(u, k):
        return samplers.sample_meanflow(mean_flow=u, sde=forward, shape=shape, key=k, steps=1)[0]

    fns = {
        "forward": lambda i: score(f, x, t),
        "consistency_1": lambda i: consistency(f, jax.random.key(i)),
        "ddim_1": lambda i: ddim(f, jax.random.key(i)),
        "meanflow_1": lambda i: meanflow(u, jax.random.key(i)),
    }
    times = time_calls(fns, rounds=rounds, warmup=2)
    out = {
        "config": name,
        "batch": batch,
        "params": networks.count_params(nnx.merge(run.graphdef, run.state)[0]),
        "params_meanflow": networks.count_params(model),
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
    }
    out["ratio_to_forward"] = {
        k: statistics.median(ratios(times, k, "forward")) for k in fns if k != "forward"
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="scoresde bench distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="checkerboard,mnist")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    results = []
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        row = bench(name, args.batch, args.rounds)
        results.append(row)
        ms = ", ".join(f"{k} {v:.3f} ms" for k, v in row["median_ms"].items())
        rat = ", ".join(f"{k} {v:.2f}x" for k, v in row["ratio_to_forward"].items())
        print(f"{name} (batch {args.batch}, {row['params']:,} parameters): {ms}; {rat}")
    print(json.dumps(results))
    return 0
