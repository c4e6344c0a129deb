"""Solvers that wrap a predictor (any fixed-step diffrax solver) and add work to each of
its steps."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray

import sde as sde_lib
from sde import ScoreFn

from .._stepping import evaluations_per_step
from .corrector import AbstractCorrector


class WrapsPredictor(diffrax.AbstractWrappedSolver):
    """A solver that wraps a fixed-step ``predictor``: ``isinstance`` checks go to the
    predictor (diffrax's ``AbstractWrappedSolver``), and so do its term structure,
    interpolation, contraction options, order and vector field. The samplers give the
    Brownian path the Lévy area of the innermost solver (ShARK, SRA1: space-time)."""

    predictor: eqx.AbstractVar[diffrax.AbstractSolver]

    @property
    def solver(self) -> diffrax.AbstractSolver:
        return self.predictor

    @property
    def term_structure(self):
        return self.predictor.term_structure

    @property
    def interpolation_cls(self):
        return self.predictor.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.predictor.term_compatible_contr_kwargs

    @property
    def scan_kind(self):
        # diffrax's ForwardMode sets scan_kind="lax" on a Runge-Kutta solver (which
        # isinstance says this is when the predictor is one) through this property.
        return self.predictor.scan_kind

    def order(self, terms):
        return self.predictor.order(terms)

    def strong_order(self, terms):
        return self.predictor.strong_order(terms)

    def func(self, terms, t0, y0, args):
        return self.predictor.func(terms, t0, y0, args)


class PredictorCorrector(WrapsPredictor):
    """A diffrax solver: a corrector at the step's start time, then the predictor.

    Works in the samplers' time ``s = -t``. The corrector's noise comes from a key
    carried in the solver state, split once per step.
    """

    predictor: diffrax.AbstractSolver
    corrector: AbstractCorrector
    score_fn: ScoreFn
    sde: sde_lib.AbstractSDE
    key: PRNGKeyArray

    @property
    def score_evaluations_per_step(self) -> int | None:
        inner = evaluations_per_step(self.predictor)
        return None if inner is None else inner[0] + self.corrector.score_evaluations

    def init(self, terms, t0, t1, y0, args):
        return self.predictor.init(terms, t0, t1, y0, args), self.key

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, key = solver_state
        key, sub = jax.random.split(key)
        if self.corrector.score_evaluations > 0:
            y0 = self.corrector(self.score_fn, self.sde, y0, -t0, t1 - t0, sub)
        y1, y_error, dense, inner_state, result = self.predictor.step(
            terms, t0, t1, y0, args, inner_state, made_jump
        )
        return y1, y_error, dense, (inner_state, key), result
