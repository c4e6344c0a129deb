"""The command line's argument parser: a usage error is one line on stderr and exit
status 2, never a usage dump or a traceback (every ``scoresde`` command uses it)."""

from __future__ import annotations

import argparse
import math
import pathlib
import sys


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``PROG: message``."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def integer(low: int):
    """An argparse ``type``: an integer ``>= low`` (so ``--n 0`` or ``--n -5`` is a
    usage error, never a silent default)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def finite(text: str) -> float:
    """An argparse ``type``: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0`` (``--rtol 0`` is refused)."""
    try:
        value = finite(text)
    except argparse.ArgumentTypeError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def checkpoint(text: str) -> str | int:
    """An argparse ``type``: ``best``, ``latest`` or a step (an integer >= 0)."""
    if text in ("best", "latest"):
        return text
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(
        f"must be a step (an integer >= 0), best or latest, got {text!r}"
    )


def fork_source(text: str) -> tuple[pathlib.Path, int | None]:
    """``DIR`` or ``DIR:STEP`` (``--fork-from``): the source work dir and the step."""
    head, sep, tail = str(text).rpartition(":")
    if sep and tail.isdigit() and head:
        return pathlib.Path(head), int(tail)
    return pathlib.Path(text), None
