"""``python -m experiments.bench [core|train|solvers|scale|gpu_ddpmpp] [options]``: the
same as ``scoresde bench``, without the rest of the command line."""

import sys

from experiments.bench import main

raise SystemExit(main(sys.argv[1:]))
