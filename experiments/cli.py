"""The ``scoresde`` command line: ``scoresde COMMAND [options]``."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("experiments.commands:train", "train a score model, then sample and evaluate it"),
    "sample": ("experiments.commands:sample", "sample a trained run (samples.png, samples.npz)"),
    "likelihood": ("experiments.commands:likelihood", "test log-likelihood (likelihood.json)"),
    "oracle": ("experiments.oracle", "every sampler and the likelihood on an exact score"),
    "bench": (
        "experiments.cli:bench",
        "benchmarks: 'bench core' (samplers), 'bench train', 'bench solvers'",
    ),
    "experiment": ("experiments.vs_gan", "reproducible experiments: 'experiment vs-gan'"),
}


def _usage() -> str:
    lines = ["usage: scoresde COMMAND [options]", "", "commands:"]
    lines += [f"  {name:12s} {doc}" for name, (_, doc) in COMMANDS.items()]
    lines += ["", "scoresde COMMAND --help shows a command's options."]
    return "\n".join(lines)


BENCHES = {
    "core": "experiments.bench",
    "train": "experiments.bench_train",
    "solvers": "experiments.bench_solvers",
    "scale": "experiments.bench_scale",
}


def bench(argv: list[str]) -> int:
    """``scoresde bench [core|train|solvers|...] [options]`` (``core`` by default)."""
    import importlib

    which, rest = (argv[0], argv[1:]) if argv and argv[0] in BENCHES else ("core", argv)
    return importlib.import_module(BENCHES[which]).main(rest) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"scoresde: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    import importlib

    module_name, _, func = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func or "main")(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
