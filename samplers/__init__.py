"""Diffrax-based samplers and likelihoods for score-based SDE models.

Every sampler shares one keyword signature (``score_fn``, ``sde``, ``shape``, ``key``,
``solver``, ``steps``/``ts`` or ``rtol``/``atol``, ``eps``, ``denoise``) and returns
``(x, stats)`` with ``stats["nfe"]`` the score evaluations spent, so swapping one is a
one-name change. ``steps=N`` always means ``N`` steps from ``T`` down to ``eps`` (on
the sampler's own grid: uniform in ``t``, or EDM's for :func:`sample_edm`);
``denoise=True`` always adds one Tweedie step (one evaluation) at the end.

Inputs are checked once per call, at entry, with messages that name the argument:
counts (``steps``, ``n_t``, ``max_steps``, ...) take any ``numbers.Integral`` but a bool
(``np.int64(10)`` is ``10``); ``eps``, ``ts`` and ``x`` must be finite and in range
(concrete values in Python, traced ones by ``eqx.error_if``); a score of the wrong shape
is refused while tracing. Every sampler (and :func:`log_likelihood`, :func:`elbo`)
reports ``stats["finite"]``, whether its whole output is finite, and with
``check_finite=True`` raises instead. An adaptive solve whose score turns NaN or inf
raises, naming the time, instead of diffrax's "maximum number of solver steps".
"""

from ._brownian import GridBrownianPath as GridBrownianPath
from ._colorize import colour_transform as colour_transform
from ._colorize import sample_colorize as sample_colorize
from ._consistency import pf_ode_step as pf_ode_step
from ._consistency import sample_consistency as sample_consistency
from ._edm import sample_edm as sample_edm
from ._elbo import elbo as elbo
from ._grid_tuning import optimize_grid as optimize_grid
from ._grids import karras_grid as karras_grid
from ._grids import log_snr_grid as log_snr_grid
from ._grids import quadratic_grid as quadratic_grid
from ._grids import uniform_grid as uniform_grid
from ._guidance import ClassifierFreeGuidance as ClassifierFreeGuidance
from ._guidance import GuidedScore as GuidedScore
from ._guidance import classifier_free_guidance as classifier_free_guidance
from ._guidance import guided_score as guided_score
from ._inpaint import Imputation as Imputation
from ._inpaint import sample_inpaint as sample_inpaint
from ._likelihood import bits_per_dim as bits_per_dim
from ._likelihood import exact_divergence as exact_divergence
from ._likelihood import hutchinson_divergence as hutchinson_divergence
from ._likelihood import log_likelihood as log_likelihood
from ._meanflow import sample_meanflow as sample_meanflow
from ._ode import sample_ode as sample_ode
from ._pc import sample_pc as sample_pc
from ._reverse import reverse_pf_drift as reverse_pf_drift
from ._reverse import reverse_sde_terms as reverse_sde_terms
from ._sde import sample_sde as sample_sde
from ._solvers.corrector import AbstractCorrector as AbstractCorrector
from ._solvers.corrector import LangevinCorrector as LangevinCorrector
from ._solvers.exponential import DDIM as DDIM
from ._solvers.exponential import DPMSolverPP2M as DPMSolverPP2M
from ._solvers.exponential import DPMSolverPP2S as DPMSolverPP2S
from ._solvers.exponential import DPMSolverPP3M as DPMSolverPP3M
from ._solvers.exponential import data_prediction as data_prediction
from ._solvers.sde_dpmpp import SDEDPMSolverPP2M as SDEDPMSolverPP2M
from ._solvers.unipc import UniPC as UniPC
from ._solvers.wrapped import PredictorCorrector as PredictorCorrector
from ._stepping import batch_max_rms as batch_max_rms
from ._stepping import evaluations_per_step as evaluations_per_step

__all__ = [
    "sample_meanflow",
    "pf_ode_step",
    "sample_consistency",
    "AbstractCorrector",
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
    "data_prediction",
    "evaluations_per_step",
    "guided_score",
    "exact_divergence",
    "hutchinson_divergence",
    "karras_grid",
    "log_likelihood",
    "log_snr_grid",
    "optimize_grid",
    "quadratic_grid",
    "reverse_pf_drift",
    "reverse_sde_terms",
    "sample_colorize",
    "sample_inpaint",
    "sample_edm",
    "sample_ode",
    "sample_pc",
    "sample_sde",
    "uniform_grid",
    "elbo",
]
