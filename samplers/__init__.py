"""Diffrax-based samplers and likelihoods for score-based SDE models.

Every sampler shares one keyword signature (``score_fn``, ``sde``, ``shape``, ``key``,
``solver``, ``steps``/``ts`` or ``rtol``/``atol``, ``eps``) and returns
``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent, so swapping one is a
one-name change.
"""

from ._brownian import GridBrownianPath as GridBrownianPath
from ._common import batch_max_rms as batch_max_rms
from ._common import evaluations_per_step as evaluations_per_step
from ._conditional import ClassifierFreeGuidance as ClassifierFreeGuidance
from ._conditional import GuidedScore as GuidedScore
from ._conditional import Imputation as Imputation
from ._conditional import classifier_free_guidance as classifier_free_guidance
from ._conditional import colour_transform as colour_transform
from ._conditional import guided_score as guided_score
from ._conditional import sample_colorize as sample_colorize
from ._conditional import sample_inpaint as sample_inpaint
from ._edm import sample_edm as sample_edm
from ._exponential import DDIM as DDIM
from ._exponential import DPMSolverPP2M as DPMSolverPP2M
from ._exponential import DPMSolverPP2S as DPMSolverPP2S
from ._exponential import DPMSolverPP3M as DPMSolverPP3M
from ._exponential import SDEDPMSolverPP2M as SDEDPMSolverPP2M
from ._grids import karras_grid as karras_grid
from ._grids import log_snr_grid as log_snr_grid
from ._grids import optimize_grid as optimize_grid
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
from ._unipc import UniPC as UniPC

__all__ = [
    "ClassifierFreeGuidance",
    "GridBrownianPath",
    "GuidedScore",
    "Imputation",
    "DDIM",
    "DPMSolverPP2M",
    "DPMSolverPP2S",
    "DPMSolverPP3M",
    "SDEDPMSolverPP2M",
    "UniPC",
    "LangevinCorrector",
    "PredictorCorrector",
    "batch_max_rms",
    "bits_per_dim",
    "classifier_free_guidance",
    "colour_transform",
    "evaluations_per_step",
    "guided_score",
    "exact_divergence",
    "hutchinson_divergence",
    "karras_grid",
    "log_likelihood",
    "log_snr_grid",
    "optimize_grid",
    "quadratic_grid",
    "sample_colorize",
    "sample_inpaint",
    "sample_edm",
    "sample_ode",
    "sample_pc",
    "sample_sde",
    "uniform_grid",
]
