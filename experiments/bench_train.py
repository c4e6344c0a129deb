"""``scoresde bench train``: the project's jitted training step against a minimal
hand-written JAX/Optax step for the same model and batch.

The hand-written step is what one would write without the framework: the network as a
pure function of its parameters, eps-prediction DSM with uniform t on the VP SDE, and
``optax.adam``. The project's step adds gradient clipping, the EMA update and the
gradient norm. Both are timed in alternating rounds; the ratio is the median of the
per-round ratios.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments import config as config_lib
from experiments.train import Setup


def hand_written_step(setup: Setup):
    """A minimal eps-prediction DSM step with plain Optax (no framework code)."""
    model = nnx.merge(setup.graphdef, setup.state)[0]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    beta_min, beta_max = setup.cfg.sde.beta_min, setup.cfg.sde.beta_max
    tx = optax.adam(setup.cfg.train.lr)
    eps = setup.cfg.train.eps

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


def _time(fn, carry, batch, n):
    start = time.perf_counter()
    for i in range(n):
        carry, *out = fn(carry, batch, jnp.int32(i))
    jax.block_until_ready(out)
    return carry, (time.perf_counter() - start) / n


def run(config_name: str, overrides: list[str], rounds: int, steps_per_round: int) -> dict:
    cfg = config_lib.load(config_name, overrides)
    setup = Setup(cfg)
    ours = setup.make_step()
    ref, ref_carry = hand_written_step(setup)
    batch = jnp.asarray(setup.source.train_batch(0, 0, cfg.train.batch_size))
    state = setup.state
    state, _ = _time(ours, state, batch, 3)  # compile and warm up
    ref_carry, _ = _time(ref, ref_carry, batch, 3)
    ratios, t_ours, t_ref = [], [], []
    for _ in range(rounds):
        state, a = _time(ours, state, batch, steps_per_round)
        ref_carry, b = _time(ref, ref_carry, batch, steps_per_round)
        t_ours.append(a)
        t_ref.append(b)
        ratios.append(a / b)
    return {
        "config": config_name,
        "batch_size": cfg.train.batch_size,
        "ours_ms": 1e3 * float(np.median(t_ours)),
        "hand_written_ms": 1e3 * float(np.median(t_ref)),
        "ratio_median": float(np.median(ratios)),
        "ratio_min": float(np.min(ratios)),
        "ratio_max": float(np.max(ratios)),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scoresde bench train", description=__doc__)
    p.add_argument("--config", default="checkerboard")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=50, help="steps per round")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    print(f"# Training-step benchmark ({platform.machine()}, {jax.devices()})")
    r = run(args.config, args.overrides, args.rounds, args.steps)
    print(
        f"config {r['config']}, batch {r['batch_size']}: project step {r['ours_ms']:.2f} ms, "
        f"hand-written step {r['hand_written_ms']:.2f} ms, ratio {r['ratio_median']:.3f} "
        f"(median of {r['rounds']} alternating rounds; min {r['ratio_min']:.3f}, "
        f"max {r['ratio_max']:.3f})"
    )
    return 0
