"""Offline data sets: FFJORD's 2-D toys, Gaussian mixtures, sklearn digits, MNIST (IDX),
CIFAR-10 (binary).

Host-side numpy arrays throughout, seeded with ``np.random.default_rng(seed)``, plus
uniform dequantisation (numpy or JAX keys) and a resumable batch iterator.
"""

from ._batches import batch_indices as batch_indices
from ._batches import batches as batches
from ._dequantize import dequantize as dequantize
from ._dequantize import dequantized_bits_per_dim as dequantized_bits_per_dim
from ._dequantize import dequantized_log_prob_bound as dequantized_log_prob_bound
from ._dequantize import from_continuous as from_continuous
from ._dequantize import to_continuous as to_continuous
from ._dequantize import to_ode_start as to_ode_start
from ._dequantize import truncated_normal_dequantize as truncated_normal_dequantize
from ._dequantize import truncated_normal_expected_log_q as truncated_normal_expected_log_q
from ._dequantize import truncated_normal_log_q as truncated_normal_log_q
from ._dequantize import truncated_normal_sigma as truncated_normal_sigma
from ._dequantize import uniform_log_q as uniform_log_q
from ._images import CIFAR10_CLASSES as CIFAR10_CLASSES
from ._images import CIFAR10_FILES as CIFAR10_FILES
from ._images import CIFAR10_LEVELS as CIFAR10_LEVELS
from ._images import DIGITS_LEVELS as DIGITS_LEVELS
from ._images import DIGITS_SPLITS as DIGITS_SPLITS
from ._images import MNIST_LEVELS as MNIST_LEVELS
from ._images import load_cifar10 as load_cifar10
from ._images import load_digits as load_digits
from ._images import load_mnist as load_mnist
from ._images import random_flip as random_flip
from ._images import read_cifar10_batch as read_cifar10_batch
from ._images import read_idx as read_idx
from ._prefetch import Prefetcher as Prefetcher
from ._source import WHITENINGS as WHITENINGS
from ._source import DataSource as DataSource
from ._source import flattened as flattened
from ._source import gaussianized as gaussianized
from ._source import level_histogram as level_histogram
from ._source import make_source as make_source
from ._source import whitened as whitened
from ._toys import TOY_DATASETS as TOY_DATASETS
from ._toys import mixture_dataset as mixture_dataset
from ._toys import sample_toy as sample_toy
from ._toys import toy_entropy as toy_entropy
from ._toys import toy_log_prob as toy_log_prob
from ._toys import toy_mixture as toy_mixture

__all__ = [
    "DataSource",
    "WHITENINGS",
    "flattened",
    "gaussianized",
    "level_histogram",
    "make_source",
    "whitened",
    "CIFAR10_CLASSES",
    "CIFAR10_FILES",
    "CIFAR10_LEVELS",
    "DIGITS_LEVELS",
    "DIGITS_SPLITS",
    "MNIST_LEVELS",
    "Prefetcher",
    "TOY_DATASETS",
    "batch_indices",
    "batches",
    "dequantize",
    "dequantized_bits_per_dim",
    "dequantized_log_prob_bound",
    "to_ode_start",
    "truncated_normal_dequantize",
    "truncated_normal_expected_log_q",
    "truncated_normal_log_q",
    "truncated_normal_sigma",
    "uniform_log_q",
    "from_continuous",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "mixture_dataset",
    "random_flip",
    "read_cifar10_batch",
    "read_idx",
    "sample_toy",
    "to_continuous",
    "toy_entropy",
    "toy_log_prob",
    "toy_mixture",
]
