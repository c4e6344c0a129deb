"""Offline data sets: FFJORD's 2-D toys, Gaussian mixtures, sklearn digits, MNIST (IDX).

Host-side numpy arrays throughout, seeded with ``np.random.default_rng(seed)``, plus
uniform dequantisation (numpy or JAX keys) and a resumable batch iterator.
"""

from ._batches import batch_indices as batch_indices
from ._batches import batches as batches
from ._dequantize import dequantize as dequantize
from ._dequantize import from_continuous as from_continuous
from ._dequantize import to_continuous as to_continuous
from ._images import DIGITS_LEVELS as DIGITS_LEVELS
from ._images import DIGITS_SPLITS as DIGITS_SPLITS
from ._images import MNIST_LEVELS as MNIST_LEVELS
from ._images import load_digits as load_digits
from ._images import load_mnist as load_mnist
from ._images import read_idx as read_idx
from ._source import DataSource as DataSource
from ._source import flattened as flattened
from ._source import make_source as make_source
from ._toys import TOY_DATASETS as TOY_DATASETS
from ._toys import mixture_dataset as mixture_dataset
from ._toys import sample_toy as sample_toy
from ._toys import toy_entropy as toy_entropy
from ._toys import toy_log_prob as toy_log_prob
from ._toys import toy_mixture as toy_mixture

__all__ = [
    "DataSource",
    "flattened",
    "make_source",
    "DIGITS_LEVELS",
    "DIGITS_SPLITS",
    "MNIST_LEVELS",
    "TOY_DATASETS",
    "batch_indices",
    "batches",
    "dequantize",
    "from_continuous",
    "load_digits",
    "load_mnist",
    "mixture_dataset",
    "read_idx",
    "sample_toy",
    "to_continuous",
    "toy_entropy",
    "toy_log_prob",
    "toy_mixture",
]
