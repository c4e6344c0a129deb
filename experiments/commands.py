"""``scoresde train | sample | likelihood | evaluate``.

Each command runs on every device of the machine and, launched once per host, on every
host: ``--coordinator-address HOST:PORT --num-processes N --process-id I`` join the
processes explicitly; without them a command stays a single process unless it was
started by ``srun`` (SLURM, more than one task), ``mpirun`` (Open MPI) or with
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` set, where JAX
reads the values from the environment (``--distributed on`` also asks JAX to detect a
Cloud TPU pod; ``--distributed off`` never joins). See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from experiments import config as config_lib


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "multi-process (see docs/scaling.md)",
        "run one process per host (or per GPU); all processes get the same arguments "
        "apart from --process-id",
    )
    g.add_argument("--coordinator-address", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    g.add_argument(
        "--distributed",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: join when the flags above are given or SLURM/Open MPI/JAX_* "
        "variables say so; on: always ask JAX to detect the cluster (TPU pods); "
        "off: single process (default: auto)",
    )
    g.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=100,
        metavar="S",
        help="seconds without heartbeats after which a process counts as dead and the "
        "others exit (default: 100)",
    )


def _join(args, prog: str) -> bool:
    """Start jax.distributed as the flags say; True when multi-process."""
    from experiments import distributed

    multi = distributed.initialize(
        args.coordinator_address,
        args.num_processes,
        args.process_id,
        mode=args.distributed,
        heartbeat_timeout=args.heartbeat_timeout,
    )
    if multi:
        print(f"{prog}: {distributed.describe()}", file=sys.stderr, flush=True)
    return multi


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scoresde train",
        description="Train a score model (resumes if WORKDIR has checkpoints), then sample "
        "it, compute its test likelihood and write report.md.",
    )
    p.add_argument(
        "--config",
        required=True,
        help=f"one of {', '.join(config_lib.named_configs())}"
        " or a path to a .py file with get_config()",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--step-timeout",
        type=float,
        metavar="S",
        help="exit with a message if no training step completes for S seconds (off by "
        "default; catches a process that hangs while its heartbeats go on)",
    )
    _add_distributed_args(p)
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config field by its dotted path, e.g. train.lr=3e-4",
    )
    return p


def train(argv: list[str]) -> int:
    p = _train_parser()
    args = p.parse_args(argv)
    try:
        _join(args, "scoresde train")
    except ValueError as err:
        p.error(str(err))
    from experiments import distributed, evaluate
    from experiments import train as train_lib

    with distributed.exit_on_peer_failure("scoresde train"):
        try:
            cfg = config_lib.load(args.config, args.overrides)
            info = train_lib.train(
                cfg, args.workdir, progress=not args.quiet, step_timeout=args.step_timeout
            )
        except (config_lib.ConfigError, train_lib.TrainingDiverged) as err:
            print(f"scoresde train: {err}", file=sys.stderr)
            return 2
        if not args.no_eval:
            s = evaluate.sample(args.workdir, progress=not args.quiet)
            lik = evaluate.likelihood(args.workdir, progress=not args.quiet)
            if distributed.is_main():
                print(evaluate.report(args.workdir, info, s, lik))
    return 0


def sample(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scoresde sample", description="Sample a trained run.")
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument("--method", choices=["ode", "sde", "pc", "edm"])
    p.add_argument("--solver", help="a diffrax solver name (tsit5, dopri5, heun, euler, ...)")
    p.add_argument("--steps", type=int, help="fixed steps (default: adaptive for ode)")
    p.add_argument("--n", type=int, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--metrics",
        action="store_true",
        help="image runs: Fréchet distance, KID, precision/recall (and class accuracy) of "
        "the samples in a locally trained classifier's features (sample_metrics.json)",
    )
    g = p.add_argument_group("class-conditional runs (model.num_classes > 0)")
    g.add_argument(
        "--class",
        dest="label",
        metavar="K",
        help="sample class K (0..num_classes-1), or 'all': n/num_classes of each, one per row",
    )
    g.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        metavar="W",
        help="classifier-free guidance weight w: (1 + w) s(x|c) - w s(x) (default 0)",
    )
    g = p.add_argument_group("inpainting (image runs; replacement method, reverse SDE)")
    g.add_argument(
        "--inpaint",
        metavar="MASK",
        help="fill test images: left|right|top|bottom|center (the half/part kept or "
        "hidden) or random:P; writes inpaint.png/.npz/.json",
    )
    g.add_argument("--mask", type=pathlib.Path, help="a .npy 0/1 mask of the image shape")
    g.add_argument("--fills", type=int, default=4, help="completions per image (default 4)")
    g.add_argument("--corrector-steps", type=int, default=0, help="Langevin steps per step")
    g.add_argument("--resample", type=int, default=1, help="RePaint-style passes per step")
    _add_distributed_args(p)
    args = p.parse_args(argv)
    if args.mask is not None and args.inpaint is None:
        args.inpaint = "array"
    if args.inpaint is not None and args.method not in (None, "sde"):
        p.error("--inpaint runs the reverse SDE (replacement method): drop --method")
    try:
        _join(args, "scoresde sample")
    except ValueError as err:
        p.error(str(err))
    from experiments import distributed, evaluate

    if args.inpaint is not None:
        import numpy as np

        mask = np.load(args.mask, allow_pickle=False) if args.mask else args.inpaint
        try:
            info = evaluate.inpaint(
                args.workdir,
                mask=mask,
                n=args.n or 8,
                fills=args.fills,
                steps=args.steps,
                solver=args.solver,
                corrector_steps=args.corrector_steps,
                resample=args.resample,
                seed=args.seed,
            )
        except ValueError as err:
            p.error(str(err))
        print(json.dumps(info, indent=2))
        return 0
    with distributed.exit_on_peer_failure("scoresde sample"):
        try:
            info = evaluate.sample(
                args.workdir,
                method=args.method,
                solver=args.solver,
                steps=args.steps,
                n=args.n,
                seed=args.seed,
                labels=args.label,
                guidance=args.guidance,
            )
        except ValueError as err:
            p.error(str(err))
    if args.metrics and distributed.is_main():
        try:
            info["metrics"] = evaluate.sample_quality(args.workdir)
        except ValueError as err:
            p.error(str(err))
    if distributed.is_main():
        print(json.dumps(info, indent=2))
    return 0


def likelihood(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="scoresde likelihood",
        description="Test log-likelihood through the probability-flow ODE.",
    )
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--solver")
    p.add_argument("--rtol", type=float)
    p.add_argument("--atol", type=float)
    p.add_argument("--n", type=int, help="use the first N points of the split")
    _add_distributed_args(p)
    args = p.parse_args(argv)
    try:
        _join(args, "scoresde likelihood")
    except ValueError as err:
        p.error(str(err))
    from experiments import distributed, evaluate

    with distributed.exit_on_peer_failure("scoresde likelihood"):
        out = evaluate.likelihood(
            args.workdir,
            split=args.split,
            solver=args.solver,
            rtol=args.rtol,
            atol=args.atol,
            n=args.n,
        )
    if distributed.is_main():
        print(json.dumps(out, indent=2))
    return 0
