"""Names to objects, in one place: the library itself only ever takes objects."""

from __future__ import annotations

import difflib

import diffrax

import samplers
import sde

SOLVERS = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "shark": diffrax.ShARK,
    "sra1": diffrax.SRA1,
    "sea": diffrax.SEA,
    "spark": diffrax.SPaRK,
    # exponential integrators for the probability-flow ODE (fixed steps only)
    "ddim": samplers.DDIM,
    "dpmpp2m": samplers.DPMSolverPP2M,
    "dpmpp3m": samplers.DPMSolverPP3M,
    "dpmpp2s": samplers.DPMSolverPP2S,  # 2 score evaluations per step
    "unipc": samplers.UniPC,  # UniP-2 + UniC (bh2): order 3
    "unipc3": lambda: samplers.UniPC(order=3),  # order 4
    "unipc_bh1": lambda: samplers.UniPC(variant="bh1"),
    # exponential integrator for the reverse SDE (sample_sde, fixed steps only)
    "sde_dpmpp2m": samplers.SDEDPMSolverPP2M,
}

SDES = {"vp": sde.VPSDE, "subvp": sde.SubVPSDE, "ve": sde.VESDE, "edm": sde.EDMSDE}


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a ``ValueError`` that lists the valid names."""
    try:
        return table[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), table, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown {what} {name!r}{hint}; choose one of {', '.join(sorted(table))}"
        ) from None


def solver(name: str) -> diffrax.AbstractSolver:
    return lookup(SOLVERS, name, "solver")()


def make_sde(name: str, **hyper) -> sde.AbstractSDE:
    return lookup(SDES, name, "SDE")(**hyper)
