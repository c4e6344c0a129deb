"""Offline data sets: FFJORD's 2-D toys, Gaussian mixtures, sklearn digits, MNIST (IDX),
CIFAR-10 (binary).

Host-side numpy arrays throughout, seeded with ``np.random.default_rng(seed)``: a
:class:`DataSource` (from :func:`make_source`, by name from :data:`DATASETS`) gives
batches as a pure function of ``(seed, step)``; fixed maps to the model's space
(:func:`flattened`, :func:`whitened`, :func:`gaussianized`); uniform and
truncated-normal dequantisation for likelihoods of discrete data.
"""

from ._batches import batch_indices as batch_indices
from ._dequantize import dequantize as dequantize
from ._dequantize import from_continuous as from_continuous
from ._dequantize import to_continuous as to_continuous
from ._dequantize import to_ode_start as to_ode_start
from ._dequantize import truncated_normal_dequantize as truncated_normal_dequantize
from ._dequantize import truncated_normal_sigma as truncated_normal_sigma
from ._dequantize import uniform_log_q as uniform_log_q
from ._images import CIFAR10_FILES as CIFAR10_FILES
from ._images import DIGITS_LEVELS as DIGITS_LEVELS
from ._images import load_cifar10 as load_cifar10
from ._images import load_digits as load_digits
from ._images import load_mnist as load_mnist
from ._images import random_flip as random_flip
from ._images import read_cifar10_batch as read_cifar10_batch
from ._images import read_idx as read_idx
from ._source import DATASETS as DATASETS
from ._source import IMAGE_DATASETS as IMAGE_DATASETS
from ._source import DataSource as DataSource
from ._source import is_image_dataset as is_image_dataset
from ._source import make_source as make_source
from ._toys import TOY_DATASETS as TOY_DATASETS
from ._toys import mixture_dataset as mixture_dataset
from ._toys import sample_toy as sample_toy
from ._toys import toy_entropy as toy_entropy
from ._toys import toy_log_prob as toy_log_prob
from ._toys import toy_mixture as toy_mixture
from ._transforms import WHITENINGS as WHITENINGS
from ._transforms import flattened as flattened
from ._transforms import gaussianized as gaussianized
from ._transforms import level_histogram as level_histogram
from ._transforms import whitened as whitened

__all__ = [
    # sources
    "DATASETS",
    "IMAGE_DATASETS",
    "DataSource",
    "is_image_dataset",
    "make_source",
    "batch_indices",
    # transforms
    "WHITENINGS",
    "flattened",
    "gaussianized",
    "level_histogram",
    "whitened",
    # dequantisation
    "dequantize",
    "from_continuous",
    "to_continuous",
    "to_ode_start",
    "truncated_normal_dequantize",
    "truncated_normal_sigma",
    "uniform_log_q",
    # readers
    "CIFAR10_FILES",
    "DIGITS_LEVELS",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "random_flip",
    "read_cifar10_batch",
    "read_idx",
    # toys
    "TOY_DATASETS",
    "mixture_dataset",
    "sample_toy",
    "toy_entropy",
    "toy_log_prob",
    "toy_mixture",
]
