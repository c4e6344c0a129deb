"""Diffrax-based samplers and likelihoods for score-based SDE models.

Every sampler shares one keyword signature (``score_fn``, ``sde``, ``shape``, ``key``,
``solver``, ``steps``/``ts`` or ``rtol``/``atol``, ``eps``) and returns
``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent, so swapping one is a
one-name change.
"""

from ._brownian import GridBrownianPath as GridBrownianPath
from ._common import batch_max_rms as batch_max_rms
from ._common import evaluations_per_step as evaluations_per_step
from ._exponential import DDIM as DDIM
from ._exponential import DPMSolverPP2M as DPMSolverPP2M
from ._exponential import DPMSolverPP3M as DPMSolverPP3M
from ._grids import karras_grid as karras_grid
from ._grids import log_snr_grid as log_snr_grid
from ._grids import quadratic_grid as quadratic_grid
from ._grids import uniform_grid as uniform_grid
from ._likelihood import bits_per_dim as bits_per_dim
from ._likelihood import exact_divergence as exact_divergence
from ._likelihood import hutchinson_divergence as hutchinson_divergence
from ._likelihood import log_likelihood as log_likelihood
from ._ode import sample_ode as sample_ode
from ._pc import LangevinCorrector as LangevinCorrector
from ._pc import PredictorCorrector as PredictorCorrector
from ._pc import sample_pc as sample_pc
from ._sde import sample_sde as sample_sde

__all__ = [
    "GridBrownianPath",
    "DDIM",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "LangevinCorrector",
    "PredictorCorrector",
    "batch_max_rms",
    "bits_per_dim",
    "evaluations_per_step",
    "exact_divergence",
    "hutchinson_divergence",
    "karras_grid",
    "log_likelihood",
    "log_snr_grid",
    "quadratic_grid",
    "sample_ode",
    "sample_pc",
    "sample_sde",
    "uniform_grid",
]
