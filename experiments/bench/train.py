"""``scoresde bench train``: the project's jitted training step against a minimal
hand-written JAX/Optax step for the same model and batch.

The project's step is :func:`experiments.training.make_step`, the one ``scoresde
train`` runs (built by :func:`experiments.bench._step.training_step`). The hand-written
step is what one would write without the framework: the network as a pure function of
its parameters, eps-prediction DSM with uniform t on the VP SDE, and ``optax.adam``.
The project's step adds gradient clipping, the learning-rate schedule, the EMA update
and the gradient norm. Both are timed in alternating rounds on one fixed batch; the
ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import platform
import statistics

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from experiments import config as config_lib
from experiments import distributed
from experiments._parser import Parser
from experiments.bench._step import training_step
from experiments.run import Run
from experiments.timing import ratios, threaded, time_calls


def hand_written_step(run: Run):
    """A minimal eps-prediction DSM step with plain Optax (no framework code), for the
    run's network and VP hyper-parameters; ``(step, carry)`` with
    ``step(carry, x0, i) -> (carry, loss)``."""
    model = nnx.merge(run.graphdef, run.state)[0]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    beta_min, beta_max = run.cfg.sde.beta_min, run.cfg.sde.beta_max
    tx = optax.adam(run.cfg.train.lr)
    eps = run.cfg.train.eps

    def loss_fn(params, x0, key):
        kt, kz = jax.random.split(key)
        t = jax.random.uniform(kt, (x0.shape[0],), minval=eps, maxval=1.0)
        log_a = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
        a, s = jnp.exp(log_a)[:, None], jnp.sqrt(-jnp.expm1(2 * log_a))[:, None]
        z = jax.random.normal(kz, x0.shape)
        eps_hat = nnx.merge(graphdef, params, rest)(a * x0 + s * z, t)
        return 0.5 * jnp.mean(jnp.sum((eps_hat - z) ** 2, axis=-1))

    @jax.jit
    def step(carry, x0, i):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(
            params, x0, jax.random.fold_in(jax.random.key(0), i)
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step, (params, tx.init(params))


def run(config_name: str, overrides: list[str], rounds: int, steps_per_round: int) -> dict:
    """Both steps on the same batch, 3 warm-up steps each, then ``rounds`` alternating
    rounds of ``steps_per_round`` steps."""
    cfg = config_lib.load(config_name, overrides)
    r = Run.create(cfg)
    ours, state, batch = training_step(r, distributed.mesh())
    ref, ref_carry = hand_written_step(r)
    x0 = batch[0] if isinstance(batch, tuple) else batch
    fns = {"ours": threaded(ours, state, batch), "ref": threaded(ref, ref_carry, x0)}
    times = time_calls(fns, rounds=rounds, calls=steps_per_round, warmup=3, block_each=False)
    per_round = ratios(times, "ours", "ref")
    return {
        "config": config_name,
        "batch_size": cfg.train.batch_size,
        "ours_ms": 1e3 * statistics.median(times["ours"]),
        "hand_written_ms": 1e3 * statistics.median(times["ref"]),
        "ratio_median": statistics.median(per_round),
        "ratio_min": min(per_round),
        "ratio_max": max(per_round),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="scoresde bench train", description=__doc__)
    p.add_argument("--config", default="checkerboard")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=50, help="steps per round")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    print(f"# Training-step benchmark ({platform.machine()}, {jax.devices()})")
    r = run(args.config, args.overrides, args.rounds, args.steps)
    print(
        f"config {r['config']}, batch {r['batch_size']}: project step {r['ours_ms']:.2f} ms, "
        f"hand-written step {r['hand_written_ms']:.2f} ms, ratio {r['ratio_median']:.3f} "
        f"(median of {r['rounds']} alternating rounds; min {r['ratio_min']:.3f}, "
        f"max {r['ratio_max']:.3f})"
    )
    return 0
