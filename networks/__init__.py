"""Flax (NNX) score networks and the parametrisations that turn them into score
functions. (Filled in by the training issue.)"""

from ._embedding import FourierFrequencies as FourierFrequencies
from ._embedding import GaussianFourierProjection as GaussianFourierProjection
from ._embedding import sinusoidal_embedding as sinusoidal_embedding
from ._mlp import MLPScoreNet as MLPScoreNet
from ._parametrisation import AbstractParametrisation as AbstractParametrisation
from ._parametrisation import DirectScore as DirectScore
from ._parametrisation import EDMDenoiser as EDMDenoiser
from ._parametrisation import NoisePrediction as NoisePrediction
from ._score_function import ScoreFunction as ScoreFunction
from ._score_function import score_fn as score_fn
from ._unet import SmallUNet as SmallUNet

__all__ = [
    "AbstractParametrisation",
    "DirectScore",
    "EDMDenoiser",
    "FourierFrequencies",
    "GaussianFourierProjection",
    "MLPScoreNet",
    "NoisePrediction",
    "ScoreFunction",
    "SmallUNet",
    "score_fn",
    "sinusoidal_embedding",
]
