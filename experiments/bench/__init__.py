"""The benchmarks: ``scoresde bench core|train|solvers|scale|gpu_ddpmpp [options]``.

Each benchmark is a module with a ``main(argv) -> int``; :data:`BENCHES` names them and
:func:`main` dispatches (importing only the one named); without a name it lists them
(exit 2) rather than starting one. How each is run and where its measured numbers
live: ``BENCHMARKS.md``; the results themselves are in ``benchmarks/``. Every timing
goes through :mod:`experiments.timing`.

- ``core`` (:mod:`.core`): sampler overhead against a hand-written ``lax.scan``,
  likelihood accuracy with an exact score, compile times.
- ``train`` (:mod:`.train`): the training step against a hand-written JAX/Optax step.
- ``solvers`` (:mod:`.solvers`): error against NFE for every fixed-step solver and grid.
- ``scale`` (:mod:`.scale`): training throughput against the number of devices.
- ``distill`` (:mod:`.distill`): a one-step student's sample against one forward pass.
- ``gpu_ddpmpp`` (:mod:`.gpu_ddpmpp`): DDPM++ at CIFAR-10 size on an accelerator,
  through the real training step: steps/s, MFU, sampling speed.

Example::

    from experiments import bench
    bench.main(["solvers", "--quick", "--out", "/tmp/solvers"])
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence


def _main_of(module: str) -> Callable[[list[str] | None], int]:
    """``experiments.bench.<module>.main``, imported when called (listing the benchmarks
    or a usage error never waits for JAX)."""

    def run(argv: list[str] | None = None) -> int:
        return importlib.import_module(f"{__name__}.{module}").main(argv)

    run.__name__ = f"{module}.main"
    return run


BENCHES: dict[str, Callable[[list[str] | None], int]] = {
    name: _main_of(name) for name in ("core", "train", "solvers", "scale", "gpu_ddpmpp", "distill")
}


SUMMARIES = {
    "core": "sampler overhead against lax.scan, likelihood accuracy, compile times",
    "train": "the training step against a hand-written JAX/Optax step",
    "solvers": "error against NFE for every fixed-step solver and grid",
    "scale": "training throughput against the number of devices",
    "gpu_ddpmpp": "DDPM++ at CIFAR-10 size on an accelerator: steps/s, MFU, sampling",
    "distill": "a one-step student's sample against one forward pass of its network",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` (one of :data:`BENCHES`) with the rest of
    ``argv``. Without a name (or with an unknown one) it lists them, exit status 2."""
    argv = [] if argv is None else list(argv)
    listing = "\n".join(f"  {name:<11} {text}" for name, text in SUMMARIES.items())
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: scoresde bench {{{','.join(BENCHES)}}} [options]\n{listing}")
        print("  scoresde bench NAME --help  shows a benchmark's options (see BENCHMARKS.md)")
        return 0
    if not argv or argv[0] not in BENCHES:
        given = f"unknown benchmark {argv[0]!r}" if argv else "name a benchmark"
        names = "; ".join(f"{name}: {text}" for name, text in SUMMARIES.items())
        print(f"scoresde bench: {given}; choose one of {names}", file=sys.stderr)
        return 2
    return BENCHES[argv[0]](argv[1:]) or 0
