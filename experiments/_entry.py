"""The ``scoresde`` console script (and ``python -m experiments``): ``scoresde plot``
goes straight to :mod:`experiments.logs`, so redrawing a run's figure never imports
JAX (about 1 s instead of the 5-10 s :mod:`experiments.cli` takes to import); every
other command goes to :func:`experiments.cli.main`, which also knows ``plot``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        from experiments import logs

        return logs.main(argv[1:])
    from experiments.cli import main as cli_main

    return cli_main(argv)
