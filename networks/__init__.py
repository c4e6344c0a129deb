"""Flax (NNX) score networks and the parametrisations that turn them into score
functions.

* Backbones, each ``net(x, cond, labels=None)``: :class:`MLPScoreNet` (flat data),
  :class:`SmallUNet`, :class:`NCSNpp` (score_sde's DDPM++ / NCSN++, with the published
  CIFAR-10 configurations :func:`ddpmpp_cifar10`, :func:`ncsnpp_cifar10`,
  :func:`ddpm_cifar10`); :class:`EDMPrecond` wraps any of them in EDM's
  preconditioning; :class:`DiT` (adaLN-Zero transformer, or U-ViT with long skips),
  with the paper's sizes by name (:func:`dit`) and :func:`uvit_cifar10`.
* Condition embeddings: :class:`GaussianFourierProjection` (its fixed
  :class:`FourierFrequencies`) and :func:`sinusoidal_embedding`.
* Parametrisations (what the output means): :class:`NoisePrediction`,
  :class:`DirectScore`, :class:`DataPrediction`,
  :class:`VelocityPrediction`, :class:`EDMDenoiser`, and the exact bases added to any of them,
  :class:`GaussianResidual` and :class:`HistogramResidual`.
* Score functions for the samplers: :func:`score_fn` (live module) and
  :class:`ScoreFunction` (a snapshot that never recompiles for new weights).
* Helpers: :func:`count_params` (trainable scalars of a module) and
  :func:`truncated_normal_stats` (the histogram base's per-bin moments).

Example::

    model = networks.MLPScoreNet(2, rngs=nnx.Rngs(0))
    score = networks.score_fn(model, sde.VPSDE(), networks.NoisePrediction())
"""

from ._consistency import ConsistencyFunction as ConsistencyFunction
from ._consistency import consistency_function as consistency_function
from ._consistency import output_scale as output_scale
from ._dit import DiT as DiT
from ._dit import dit as dit
from ._dit import uvit_cifar10 as uvit_cifar10
from ._edm import EDMPrecond as EDMPrecond
from ._embedding import FourierFrequencies as FourierFrequencies
from ._embedding import GaussianFourierProjection as GaussianFourierProjection
from ._embedding import sinusoidal_embedding as sinusoidal_embedding
from ._histogram import HistogramResidual as HistogramResidual
from ._histogram import truncated_normal_stats as truncated_normal_stats
from ._layers import count_params as count_params
from ._mean_flow import MeanFlowFunction as MeanFlowFunction
from ._mean_flow import mean_flow_fn as mean_flow_fn
from ._mlp import MLPScoreNet as MLPScoreNet
from ._ncsnpp import NCSNpp as NCSNpp
from ._ncsnpp import ddpm_cifar10 as ddpm_cifar10
from ._ncsnpp import ddpmpp_cifar10 as ddpmpp_cifar10
from ._ncsnpp import ncsnpp_cifar10 as ncsnpp_cifar10
from ._parametrisation import AbstractParametrisation as AbstractParametrisation
from ._parametrisation import DataPrediction as DataPrediction
from ._parametrisation import DirectScore as DirectScore
from ._parametrisation import EDMDenoiser as EDMDenoiser
from ._parametrisation import GaussianResidual as GaussianResidual
from ._parametrisation import NoisePrediction as NoisePrediction
from ._parametrisation import VelocityPrediction as VelocityPrediction
from ._score_function import ScoreFunction as ScoreFunction
from ._score_function import score_fn as score_fn
from ._unet import SmallUNet as SmallUNet

__all__ = [
    "MeanFlowFunction",
    "mean_flow_fn",
    "ConsistencyFunction",
    "output_scale",
    "consistency_function",
    "AbstractParametrisation",
    "DataPrediction",
    "DiT",
    "DirectScore",
    "EDMDenoiser",
    "EDMPrecond",
    "FourierFrequencies",
    "GaussianFourierProjection",
    "GaussianResidual",
    "HistogramResidual",
    "MLPScoreNet",
    "NCSNpp",
    "NoisePrediction",
    "ScoreFunction",
    "SmallUNet",
    "VelocityPrediction",
    "count_params",
    "ddpm_cifar10",
    "ddpmpp_cifar10",
    "dit",
    "ncsnpp_cifar10",
    "score_fn",
    "sinusoidal_embedding",
    "truncated_normal_stats",
    "uvit_cifar10",
]
