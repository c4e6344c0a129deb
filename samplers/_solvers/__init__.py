"""The library's own diffrax solvers: the exponential integrators (DDIM, DPM-Solver++,
UniPC, SDE-DPM-Solver++), the correctors and the solvers that wrap a predictor. Each
module holds one family; the public names are re-exported by :mod:`samplers`."""
