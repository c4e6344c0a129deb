"""``scoresde train | sample | likelihood | evaluate``."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from experiments import config as config_lib


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
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config field by its dotted path, e.g. train.lr=3e-4",
    )
    return p


def train(argv: list[str]) -> int:
    args = _train_parser().parse_args(argv)
    from experiments import evaluate
    from experiments import train as train_lib

    try:
        cfg = config_lib.load(args.config, args.overrides)
        info = train_lib.train(cfg, args.workdir, progress=not args.quiet)
    except (config_lib.ConfigError, train_lib.TrainingDiverged) as err:
        print(f"scoresde train: {err}", file=sys.stderr)
        return 2
    if not args.no_eval:
        s = evaluate.sample(args.workdir, progress=not args.quiet)
        lik = evaluate.likelihood(args.workdir, progress=not args.quiet)
        print(evaluate.report(args.workdir, info, s, lik))
    return 0


def sample(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scoresde sample", description="Sample a trained run.")
    p.add_argument("--workdir", required=True, type=pathlib.Path)
    p.add_argument("--method", choices=["ode", "sde", "pc"])
    p.add_argument("--solver", help="a diffrax solver name (tsit5, dopri5, heun, euler, ...)")
    p.add_argument("--steps", type=int, help="fixed steps (default: adaptive for ode)")
    p.add_argument("--n", type=int, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from experiments import evaluate

    info = evaluate.sample(
        args.workdir,
        method=args.method,
        solver=args.solver,
        steps=args.steps,
        n=args.n,
        seed=args.seed,
    )
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
    args = p.parse_args(argv)
    from experiments import evaluate

    out = evaluate.likelihood(
        args.workdir, split=args.split, solver=args.solver, rtol=args.rtol, atol=args.atol, n=args.n
    )
    print(json.dumps(out, indent=2))
    return 0
