"""Forward SDEs, their perturbation kernels and an exact Gaussian-mixture oracle.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR 2021.
"""

from ._base import AbstractSDE as AbstractSDE
from ._base import expand_time as expand_time
from ._distillation import CD_WEIGHTINGS as CD_WEIGHTINGS
from ._distillation import DISTANCES as CONSISTENCY_DISTANCES
from ._distillation import consistency_distillation_loss as consistency_distillation_loss
from ._distillation import consistency_training_loss as consistency_training_loss
from ._distillation import ddim_step as ddim_step
from ._distillation import distance as consistency_distance
from ._distillation import ect_pair as ect_pair
from ._distillation import progressive_distillation_loss as progressive_distillation_loss
from ._distillation import sigma_time as sigma_time
from ._edm import EDMSDE as EDMSDE
from ._edm import edm_loss as edm_loss
from ._edm import edm_loss_at as edm_loss_at
from ._losses import dsm_loss as dsm_loss
from ._losses import dsm_loss_at as dsm_loss_at
from ._losses import loss_weight as loss_weight
from ._losses import sample_time as sample_time
from ._meanflow import MEANFLOW_TIMES as MEANFLOW_TIMES
from ._meanflow import conditional_velocity as conditional_velocity
from ._meanflow import meanflow_loss as meanflow_loss
from ._meanflow import meanflow_times as meanflow_times
from ._meanflow import pf_velocity as pf_velocity
from ._mixture import GaussianMixture as GaussianMixture
from ._mixture import MixtureOracle as MixtureOracle
from ._path_change import PATH_TARGETS as PATH_TARGETS
from ._path_change import PathChange as PathChange
from ._path_change import matched_path as matched_path
from ._rectified_flow import RectifiedFlow as RectifiedFlow
from ._time_sampling import NormalLogSNR as NormalLogSNR
from ._time_sampling import TimeSampling as TimeSampling
from ._time_sampling import UniformLogSNR as UniformLogSNR
from ._time_sampling import UniformTime as UniformTime
from ._time_sampling import logit_normal as logit_normal
from ._time_sampling import lognormal as lognormal
from ._time_sampling import time_sampling as time_sampling
from ._types import ScoreFn as ScoreFn
from ._ve import VESDE as VESDE
from ._vp import VPSDE as VPSDE
from ._vp import SubVPSDE as SubVPSDE

__all__ = [
    "conditional_velocity",
    "meanflow_loss",
    "meanflow_times",
    "MEANFLOW_TIMES",
    "pf_velocity",
    "CD_WEIGHTINGS",
    "CONSISTENCY_DISTANCES",
    "consistency_distillation_loss",
    "consistency_training_loss",
    "ddim_step",
    "consistency_distance",
    "ect_pair",
    "progressive_distillation_loss",
    "sigma_time",
    "AbstractSDE",
    "EDMSDE",
    "GaussianMixture",
    "MixtureOracle",
    "NormalLogSNR",
    "PathChange",
    "PATH_TARGETS",
    "matched_path",
    "RectifiedFlow",
    "ScoreFn",
    "SubVPSDE",
    "TimeSampling",
    "UniformLogSNR",
    "UniformTime",
    "VESDE",
    "VPSDE",
    "dsm_loss",
    "dsm_loss_at",
    "edm_loss",
    "edm_loss_at",
    "expand_time",
    "lognormal",
    "logit_normal",
    "loss_weight",
    "sample_time",
    "time_sampling",
]
