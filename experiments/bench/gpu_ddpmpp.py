"""Accelerator benchmark: DDPM++ at CIFAR-10 size through the real training step.

``scoresde bench gpu_ddpmpp OUT [--quick] [key=value ...]`` builds
``Run.create(config.load("cifar10_ddpmpp", overrides))`` and measures, on the first
device JAX sees, writing ``OUT/gpu_ddpmpp.json`` after every part (so a run cut short
still leaves what it measured):

- training steps/s of :func:`experiments.training.make_step`, the step ``scoresde
  train`` runs (score_sde's DDPM++ cont. network, 61.8M parameters, 32x32x3, batch 128,
  VP, noise prediction, Adam with warm-up, clipping, EMA), in float32 and with bfloat16
  compute (``model.ncsnpp.compute_dtype=bfloat16``, float32 parameters), on one fixed
  batch, median of timed blocks after a warm-up block;
- an MFU estimate: XLA's FLOP count of the lowered, not yet optimised step
  (``Lowered.cost_analysis``; the compiled GPU program's count misses the convolutions,
  which become cuDNN custom calls: it said 0.31 TFLOP for a 7.8 TFLOP step) divided by
  the step time and by the device's peak dense throughput for that dtype (:data:`PEAK`;
  ``null`` for a device not in it);
- samples/s of 1000-step Euler-Maruyama (reverse SDE) and of the adaptive
  probability-flow ODE (Tsit5, rtol = atol = 1e-3), at the training batch, untrained
  network (zero-initialised output: the ODE's step count is not that of a trained
  model).

Without the CIFAR-10 binary files in ``data.directory`` the data are random images in
CIFAR-10's format (the step time does not depend on the pixels); the JSON's ``data``
says which. Budget: about 5 minutes on one H100. ``--quick`` shrinks the network and
the batch (:data:`QUICK`) and every count (a CPU smoke test). Usage::

    python -m experiments.bench gpu_ddpmpp $OUT            # on the GPU machine
    python -m experiments.bench gpu_ddpmpp /tmp/b --quick  # anywhere
"""

from __future__ import annotations

import json
import pathlib
import tempfile

import jax
import numpy as np
from flax import nnx

import networks
import samplers
from experiments import build, distributed
from experiments import config as config_lib
from experiments import data as data_lib
from experiments._parser import Parser
from experiments.bench._step import training_step
from experiments.run import Run
from experiments.timing import median_time, threaded, timed

CONFIG = "cifar10_ddpmpp"
QUICK = (
    "model.ncsnpp.nf=16",
    "model.ncsnpp.ch_mult=1,2",
    "model.ncsnpp.num_res_blocks=1",
    "train.batch_size=4",
)
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


def synthetic_cifar10(directory: pathlib.Path, per_file: int = 256, seed: int = 0) -> None:
    """Random images and labels in CIFAR-10's binary format (one label byte, then the
    3x32x32 pixel bytes channel-major), ``per_file`` records in each of its files."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for names in data_lib.CIFAR10_FILES.values():
        for name in names:
            labels = rng.integers(0, 10, size=(per_file, 1), dtype=np.uint8)
            pixels = rng.integers(0, 256, size=(per_file, 3 * 32 * 32), dtype=np.uint8)
            (directory / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())


def make_run(overrides: list[str], scratch: pathlib.Path) -> tuple[Run, str]:
    """``(run, data)``: the config's run on the CIFAR-10 files of ``data.directory``
    (``data`` is that directory), else on synthetic ones written to ``scratch``
    (``data`` is ``"synthetic"``)."""
    cfg = config_lib.load(CONFIG, overrides)
    try:
        return Run.create(cfg), cfg.data.directory
    except FileNotFoundError:
        synthetic_cifar10(scratch, per_file=max(256, cfg.train.batch_size))
        cfg = config_lib.load(CONFIG, [*overrides, f"data.directory={scratch}"])
        return Run.create(cfg), "synthetic"


def flop_count(lowered) -> float:
    """XLA's FLOP count of a lowered (not yet optimised) computation."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def bench_train(run: Run, steps: int, repeats: int) -> dict:
    """Step time, FLOPs and MFU of the run's training step on the first device:
    compiled ahead of time, one first call, then ``repeats`` blocks of ``steps`` steps
    after a warm-up block."""
    mesh = distributed.mesh(jax.devices()[:1])
    step, state, batch = training_step(run, mesh, donate=True)
    lowered = step.lower(state, batch, np.int32(0))
    flops = flop_count(lowered)
    compile_s, _ = timed(lowered.compile)
    first_s, (state, *_) = timed(step, state, batch, np.int32(0))
    seconds = median_time(
        threaded(step, state, batch), rounds=repeats, calls=steps, warmup=steps, block_each=False
    )
    dtype = run.cfg.model.ncsnpp.compute_dtype
    peak = peak_flops(jax.devices()[0], dtype)
    return {
        "dtype": dtype,
        "batch": run.cfg.train.batch_size,
        "params": networks.count_params(nnx.merge(run.graphdef, run.state)[0]),
        "step_ms": 1e3 * seconds,
        "steps_per_s": 1.0 / seconds,
        "compile_s": compile_s,
        "first_call_s": first_s,
        "flops_per_step": flops,
        "achieved_tflops": flops / seconds / 1e12 if flops else None,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": flops / seconds / peak if (flops and peak) else None,
    }


def bench_sampling(run: Run, steps: int) -> dict:
    """Samples/s of fixed-step Euler-Maruyama and the adaptive ODE, the run's untrained
    (EMA) network, one timed call after a first one that compiles."""
    score, forward = run.score_function(), run.sde
    batch = run.cfg.train.batch_size
    shape = (batch, *run.source.shape)
    methods = {
        "euler_maruyama": lambda key: samplers.sample_sde(
            score_fn=score, sde=forward, shape=shape, key=key, solver=build.solver("euler"),
            steps=steps,
        ),
        "ode_tsit5_1e-3": lambda key: samplers.sample_ode(
            score_fn=score, sde=forward, shape=shape, key=key, solver=build.solver("tsit5"),
            rtol=1e-3, atol=1e-3,
        ),
    }  # fmt: skip
    out = {}
    for name, sample in methods.items():
        _, (_, stats) = timed(sample, jax.random.key(0))
        seconds = median_time(lambda i, f=sample: f(jax.random.key(1 + i)), rounds=1, warmup=0)
        out[name] = {
            "batch": batch,
            "nfe": int(stats["nfe"]),
            "seconds": seconds,
            "samples_per_s": batch / seconds,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="scoresde bench gpu_ddpmpp", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default=".", type=pathlib.Path, help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny network, few steps")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"for {CONFIG}")
    args = parser.parse_args(argv)
    if "=" in str(args.out):
        parser.error(f"give the output folder before the overrides, got out={args.out}")
    overrides = [*(QUICK if args.quick else ()), *args.overrides]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_ddpmpp.json"
    device = jax.devices()[0]
    result = {
        "device": str(device),
        "device_kind": getattr(device, "device_kind", ""),
        "jax": jax.__version__,
        "quick": args.quick,
        "config": CONFIG,
        "overrides": overrides,
        "train": [],
    }

    def save():  # after every part, so a run cut short still leaves what it measured
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)

    steps, repeats = (3, 2) if args.quick else (20, 5)
    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dtype in ("float32", "bfloat16"):
            with_dtype = [*overrides, f"model.ncsnpp.compute_dtype={dtype}"]
            runs[dtype], result["data"] = make_run(with_dtype, pathlib.Path(scratch))
            result["train"].append(bench_train(runs[dtype], steps, repeats))
            save()
    result["sampling"] = bench_sampling(runs["float32"], 10 if args.quick else 1000)
    save()
    return 0
