"""GPU benchmark: DDPM++ (CIFAR-10 size) training throughput, MFU, and sampling speed.

Measures, on whatever device JAX sees first, and writes ``gpu_ddpmpp.json`` to the
directory given as the first argument (default ``.``):

- training steps/s of score_sde's DDPM++ cont. network (61.8M parameters, 32x32x3,
  batch 128, VP, noise prediction, Adam, EMA) in float32 and with bfloat16 compute
  (float32 parameters), each after a warm-up, median of timed blocks;
- an MFU estimate: XLA's FLOP count of the lowered, not yet optimised step
  (``Lowered.cost_analysis``; the compiled GPU program's count misses the convolutions,
  which become cuDNN custom calls: it said 0.31 TFLOP for a 7.8 TFLOP step) divided by
  the step time and by the device's peak dense throughput for that dtype (a table of
  known devices below; ``null`` when the device is not in it);
- samples/s of 1000-step Euler-Maruyama (reverse SDE) and of the adaptive
  probability-flow ODE (Tsit5, rtol = atol = 1e-3), batch 128, untrained network
  (zero-initialised output: the ODE's step count is not that of a trained model).

Budget: about 5 minutes on one H100. ``--quick`` shrinks everything (CPU smoke test).
Usage::

    PYTHONPATH=. python benchmarks/gpu_ddpmpp.py $OUT            # on the GPU machine
    PYTHONPATH=. python benchmarks/gpu_ddpmpp.py /tmp/b --quick  # anywhere
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

import networks
import samplers
import sde as sde_lib

# Peak dense throughput (FLOP/s) per device kind and compute dtype, from the vendors'
# data sheets (H100/H200 SXM: 989 TFLOP/s bf16 and 494 TFLOP/s TF32 tensor cores, which
# XLA uses for f32 matmuls by default; A100: 312 and 156).
PEAK = {
    "H100": {"bfloat16": 989e12, "float32": 494e12},
    "H200": {"bfloat16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def peak_flops(device, dtype: str) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, table in PEAK.items():
        if name in kind:
            return table[dtype]
    return None


def build(dtype: str, quick: bool):
    rngs = nnx.Rngs(params=0, dropout=1)
    compute = None if dtype == "float32" else jnp.bfloat16
    if quick:
        net = networks.NCSNpp(
            3, image_size=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
            embedding="sinusoidal", dtype=compute, rngs=rngs,
        )  # fmt: skip
    else:
        net = networks.ddpmpp_cifar10(dtype=compute, rngs=rngs)
    return net


def time_blocks(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (which must block) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_train(dtype: str, batch: int, steps: int, repeats: int, quick: bool) -> dict:
    vp, param = sde_lib.VPSDE(), networks.NoisePrediction()
    model = build(dtype, quick)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(2e-4), wrt=nnx.Param)
    ema = nnx.EMA(model, decay=0.9999, only=nnx.Param)
    graphdef, state = nnx.split((model, optimizer, ema))

    def step(state, batch_x, key):
        model, optimizer, ema = nnx.merge(graphdef, state)

        def loss_fn(model):
            f = networks.score_fn(model, vp, param)
            return sde_lib.dsm_loss(f, vp, batch_x, key).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        ema.update(model)
        return nnx.state((model, optimizer, ema)), loss

    jitted = jax.jit(step, donate_argnums=(0,))
    x = jax.random.uniform(jax.random.key(0), (batch, 32, 32, 3), minval=-1, maxval=1)
    keys = jax.random.split(jax.random.key(1), steps)
    lowered = jitted.lower(state, x, keys[0])
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    lowered.compile()
    start = time.perf_counter()
    state, loss = jitted(state, x, keys[0])
    loss.block_until_ready()
    first = time.perf_counter() - start

    def block():
        nonlocal state
        for k in keys:
            state, loss = jitted(state, x, k)
        loss.block_until_ready()

    block()  # warm-up
    seconds = time_blocks(block, repeats) / steps
    peak = peak_flops(jax.devices()[0], dtype)
    return {
        "dtype": dtype,
        "batch": batch,
        "params": networks.count_params(model),
        "step_ms": 1e3 * seconds,
        "steps_per_s": 1.0 / seconds,
        "first_call_s": first,
        "flops_per_step": flops,
        "achieved_tflops": flops / seconds / 1e12 if flops else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": flops / seconds / peak if (flops and peak) else None,
    }


def bench_sampling(batch: int, steps: int, quick: bool) -> dict:
    vp, param = sde_lib.VPSDE(), networks.NoisePrediction()
    model = build("float32", quick)
    score = networks.ScoreFunction.from_module(model, vp, param)
    shape = (batch, 32, 32, 3)
    out = {}
    for name, run in {
        "euler_maruyama": lambda key: samplers.sample_sde(
            score_fn=score, sde=vp, shape=shape, key=key, solver=diffrax.Euler(), steps=steps
        ),
        "ode_tsit5_1e-3": lambda key: samplers.sample_ode(
            score_fn=score, sde=vp, shape=shape, key=key, rtol=1e-3, atol=1e-3
        ),
    }.items():
        x, stats = run(jax.random.key(0))
        x.block_until_ready()
        seconds = time_blocks(lambda r=run: r(jax.random.key(1))[0].block_until_ready(), 1)
        out[name] = {
            "batch": batch,
            "nfe": int(stats["nfe"]),
            "seconds": seconds,
            "samples_per_s": batch / seconds,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=".", type=pathlib.Path)
    parser.add_argument("--quick", action="store_true", help="tiny network, few steps")
    args = parser.parse_args(argv)
    quick = args.quick
    batch = 8 if quick else 128
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_ddpmpp.json"
    result = {
        "device": str(jax.devices()[0]),
        "device_kind": getattr(jax.devices()[0], "device_kind", ""),
        "jax": jax.__version__,
        "quick": quick,
        "train": [],
    }

    def save():  # after every part, so a run cut short still leaves what it measured
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)

    for dtype in ("float32", "bfloat16"):
        result["train"].append(
            bench_train(dtype, batch, 3 if quick else 20, 2 if quick else 5, quick)
        )
        save()
    result["sampling"] = bench_sampling(batch, 10 if quick else 1000, quick)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
