"""The command line's argument parser: a usage error is one line on stderr and exit
status 2, never a usage dump or a traceback (every ``scoresde`` command uses it)."""

from __future__ import annotations

import argparse
import sys


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``PROG: message``."""

    def error(self, message: str):
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)
