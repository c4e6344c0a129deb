"""The benchmarks: ``scoresde bench [core|train|solvers|scale|gpu_ddpmpp] [options]``.

Each benchmark is a module with a ``main(argv) -> int``; :data:`BENCHES` names them and
:func:`main` dispatches (``core`` when the first argument names none). How each is run
and where its measured numbers live: ``BENCHMARKS.md``; the results themselves are in
``benchmarks/``. Every timing goes through :mod:`experiments.timing`.

- ``core`` (:mod:`.core`): sampler overhead against a hand-written ``lax.scan``,
  likelihood accuracy with an exact score, compile times.
- ``train`` (:mod:`.train`): the training step against a hand-written JAX/Optax step.
- ``solvers`` (:mod:`.solvers`): error against NFE for every fixed-step solver and grid.
- ``scale`` (:mod:`.scale`): training throughput against the number of devices.
- ``gpu_ddpmpp`` (:mod:`.gpu_ddpmpp`): DDPM++ at CIFAR-10 size on an accelerator,
  through the real training step: steps/s, MFU, sampling speed.

Example::

    from experiments import bench
    bench.main(["solvers", "--quick", "--out", "/tmp/solvers"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import core, gpu_ddpmpp, scale, solvers, train

BENCHES: dict[str, Callable[[list[str] | None], int]] = {
    "core": core.main,
    "train": train.main,
    "solvers": solvers.main,
    "scale": scale.main,
    "gpu_ddpmpp": gpu_ddpmpp.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` (one of :data:`BENCHES`) with the rest of
    ``argv``; ``core`` with all of ``argv`` when its first item names none."""
    argv = [] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: scoresde bench [" + "|".join(BENCHES) + "] [options]  (default: core)")
        print("  scoresde bench NAME --help  shows a benchmark's options")
        return 0
    name, rest = (argv[0], argv[1:]) if argv and argv[0] in BENCHES else ("core", argv)
    return BENCHES[name](rest) or 0
