"""``scoresde bench scale``: training throughput against the number of devices.

The training step ``scoresde train`` runs (:func:`experiments.training.make_step`)
runs data-parallel over meshes of the first 1, 2, 4, ... devices, with the same global
batch (strong scaling) or the same batch per device (``--per-device-batch``, weak
scaling). Meshes are timed in
alternating rounds (the shared machines drift) and each time is the median over rounds.

On a CPU-only machine the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``; the command restarts itself
with the flag): they share the machine's cores, so the numbers measure the overhead of
splitting the batch and all-reducing the gradients, not a speed-up. Only real
accelerators (or hosts) add compute.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

import numpy as np

from experiments._parser import Parser

_FLAG = "--xla_force_host_platform_device_count"


def run(
    config: str,
    overrides: list[str],
    devices: list[int],
    rounds: int,
    steps: int,
    per_device_batch: int | None,
) -> list[dict]:
    """One row per device count: median step time and examples per second."""
    import jax

    from experiments import config as config_lib
    from experiments import distributed
    from experiments.bench._step import training_step
    from experiments.run import Run
    from experiments.timing import threaded, time_calls

    fns, batches = {}, {}
    for n in devices:
        extra = [] if per_device_batch is None else [f"train.batch_size={per_device_batch * n}"]
        cfg = config_lib.load(config, [*overrides, *extra])
        if cfg.train.batch_size % n:
            raise ValueError(
                f"the global batch {cfg.train.batch_size} is not divisible by {n} devices"
            )
        step, state, batch = training_step(Run.create(cfg), distributed.mesh(jax.devices()[:n]))
        fns[n], batches[n] = threaded(step, state, batch), cfg.train.batch_size
    # 3 warm-up steps per mesh (the first compiles), then alternating rounds
    times = time_calls(fns, rounds=rounds, calls=steps, warmup=3, block_each=False)
    rows = []
    for n in devices:
        b, ms = batches[n], 1e3 * float(np.median(times[n]))
        rows.append(
            {
                "devices": n,
                "global_batch": b,
                "per_device_batch": b // n,
                "step_ms": ms,
                "spread_ms": 1e3 * (max(times[n]) - min(times[n])),
                "examples_per_s": b / ms * 1e3,
            }
        )
    base = rows[0]["examples_per_s"] / rows[0]["devices"]
    for r in rows:
        r["speedup"] = r["examples_per_s"] / rows[0]["examples_per_s"]
        r["efficiency"] = r["examples_per_s"] / (base * r["devices"])
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| devices | global batch | per device | step (ms) | spread (ms) | examples/s "
        "| speed-up | efficiency |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['global_batch']} | {r['per_device_batch']} | "
            f"{r['step_ms']:.2f} | {r['spread_ms']:.2f} | {r['examples_per_s']:.0f} | "
            f"{r['speedup']:.2f}x | {r['efficiency']:.2f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="scoresde bench scale", description=__doc__)
    p.add_argument("--config", default="checkerboard")
    p.add_argument(
        "--devices",
        default="1,2,4,8",
        help="comma-separated device counts (default 1,2,4,8); forced on CPU",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="steps per round")
    p.add_argument(
        "--per-device-batch",
        type=int,
        help="weak scaling: this batch per device (default: the config's global batch)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    try:
        devices = sorted({int(d) for d in args.devices.split(",")})
    except ValueError:
        p.error(f"--devices must be comma-separated integers, got {args.devices!r}")
    if devices[0] < 1:
        p.error(f"--devices must be >= 1, got {args.devices!r}")
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds and --steps must be >= 1, got {args.rounds} and {args.steps}")
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG not in flags and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        import jax

        if jax.default_backend() == "cpu" and jax.device_count() < devices[-1]:
            # the flag must be set before JAX starts: run again in a fresh process
            env = dict(os.environ, XLA_FLAGS=f"{flags} {_FLAG}={devices[-1]}".strip())
            command = [sys.executable, "-m", "experiments.bench", "scale", *argv]
            return subprocess.call(command, env=env)
    import jax

    if jax.device_count() < devices[-1]:
        p.error(f"only {jax.device_count()} devices here; got --devices {args.devices}")
    forced = _FLAG in os.environ.get("XLA_FLAGS", "") and jax.default_backend() == "cpu"
    print(
        f"# Training throughput against devices ({platform.machine()}, {os.cpu_count()} "
        f"cores, {jax.device_count()} {jax.devices()[0].device_kind} devices"
        + (", forced host devices sharing the cores" if forced else "")
        + ")"
    )
    rows = run(args.config, args.overrides, devices, args.rounds, args.steps, args.per_device_batch)
    print(table(rows))
    print(
        f"\nconfig {' '.join([args.config, *args.overrides])}; median of {args.rounds} "
        f"alternating rounds of {args.steps} steps"
        + (
            ". Forced CPU devices share the same cores: this measures the cost of "
            "splitting the batch and all-reducing gradients, not a speed-up."
            if forced
            else ""
        )
    )
    return 0
