"""One interface over every data set the experiments train on.

A :class:`DataSource` gives training batches as a pure function of ``(seed, step)`` (so
a resumed run sees exactly the batches an uninterrupted one would), fixed validation and
test sets, and what evaluation needs to know: the shape, whether the data are discrete
(and then their levels and range, for bits/dim), and the exact entropy where known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ._batches import batch_indices
from ._dequantize import dequantize
from ._images import (
    CIFAR10_LEVELS,
    DIGITS_LEVELS,
    MNIST_LEVELS,
    load_cifar10,
    load_digits,
    load_mnist,
    random_flip,
)
from ._toys import TOY_DATASETS, sample_toy, toy_entropy

# Held-out toy points come from fixed seeds, independent of the training seed, so every
# run of a toy is evaluated on the same points.
_VAL_SEED, _TEST_SEED = 7_000_001, 7_000_002
IMAGE_RANGE = (-1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class DataSource:
    name: str
    shape: tuple[int, ...]  # one example
    train_batch: Callable[[int, int, int], np.ndarray]  # (seed, step, batch_size)
    val: Callable[[int], np.ndarray]  # (seed) -> continuous validation set
    test: Callable[[int], np.ndarray]  # (seed) -> continuous test set
    n_levels: int | None = None  # discrete data only
    data_range: tuple[float, float] | None = None
    entropy: float | None = None  # exact differential entropy (nats), where known
    image_shape: tuple[int, ...] | None = None  # for display, when examples are images
    # A fixed invertible affine map u = (x - mean) @ matrix may stand between the data and
    # the model (see :func:`whitened`): the model's log-density of x is its log-density of
    # u plus ``log_det``, and ``to_data`` maps model samples back.
    log_det: float = 0.0
    to_data: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def discrete(self) -> bool:
        return self.n_levels is not None

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))


def _toy(name: str, n_val: int, n_test: int) -> DataSource:
    def train_batch(seed, step, batch_size):
        return sample_toy(name, batch_size, np.random.SeedSequence([seed, 1, step]))

    return DataSource(
        name=name,
        shape=(2,),
        train_batch=train_batch,
        val=lambda seed: sample_toy(name, n_val, _VAL_SEED),
        test=lambda seed: sample_toy(name, n_test, _TEST_SEED),
        entropy=toy_entropy(name),
    )


def _images(name, train, val, test, n_levels, flip: bool = False) -> DataSource:
    def train_batch(seed, step, batch_size):
        idx = batch_indices(len(train), batch_size, seed, step)
        rng = np.random.default_rng([seed, 2, step])
        images = random_flip(train[idx], seed, step) if flip else train[idx]
        return dequantize(rng, images, n_levels, IMAGE_RANGE)

    def held_out(images, stream):
        # dequantisation noise of held-out sets is fixed by the seed: repeats differ
        return lambda seed: dequantize(
            np.random.default_rng([seed, stream]), images, n_levels, IMAGE_RANGE
        )

    return DataSource(
        name=name,
        shape=train.shape[1:],
        train_batch=train_batch,
        val=held_out(val, 3),
        test=held_out(test, 4),
        n_levels=n_levels,
        data_range=IMAGE_RANGE,
    )


def flattened(source: DataSource) -> DataSource:
    """The same data with each example as a flat vector (for MLP score networks)."""
    if len(source.shape) == 1:
        return source

    def flat(fn):
        return lambda *args: fn(*args).reshape(-1, source.dim)

    return dataclasses.replace(
        source,
        shape=(source.dim,),
        train_batch=flat(source.train_batch),
        val=flat(source.val),
        test=flat(source.test),
        image_shape=source.shape,
    )


WHITENINGS = ("none", "standardize", "pca", "zca")


def whitened(source: DataSource, method: str, seed: int = 0) -> DataSource:
    r"""The same data seen through a fixed affine map fitted on the training split.

    With mean :math:`\mu` and covariance :math:`\Sigma = U \Lambda U^T` of (dequantised)
    training data, the model sees :math:`u = (x - \mu) W` with

    - ``"standardize"``: :math:`W = \operatorname{diag}(\Sigma)^{-1/2}` (per coordinate);
    - ``"pca"``: :math:`W = U \Lambda^{-1/2}` (decorrelated, unit variance);
    - ``"zca"``: :math:`W = U \Lambda^{-1/2} U^T` (the same, staying close to pixel space).

    The change of variables is exact: :math:`\log p_X(x) = \log p_U(u) + \log|\det W|`,
    stored as ``log_det`` so that likelihoods and bits/dim stay those of the data. The map
    is part of the model (a fixed linear flow layer, as in the preprocessing of
    normalising flows); it is fitted once, from the training images only, and it puts
    every coordinate on the unit scale that the VP/VE noise schedules assume (sklearn
    digits has border pixels whose only variance is the dequantisation noise,
    std 0.034 against ~0.6 elsewhere). Example::

        src = whitened(flattened(make_source(DataConfig(name="digits"))), "pca")
    """
    if method not in WHITENINGS:
        raise ValueError(f"unknown whitening {method!r}; choose one of {', '.join(WHITENINGS)}")
    if method == "none":
        return source
    if len(source.shape) != 1:
        raise ValueError(
            f"whitening needs flat examples (an MLP's input), got shape {source.shape}"
        )
    # the first 64 training batches of 128 (dequantised): the fit is a function of the seed
    fit = np.concatenate([source.train_batch(seed, step, 128) for step in range(64)])
    fit = fit.astype(np.float64)
    mean = fit.mean(axis=0)
    cov = np.cov(fit, rowvar=False)
    if method == "standardize":
        matrix = np.diag(1.0 / np.sqrt(np.diag(cov)))
    else:
        eigvals, eigvecs = np.linalg.eigh(cov)
        if eigvals.min() <= 1e-12 * eigvals.max():
            raise ValueError(
                f"the training covariance of {source.name} is singular (smallest eigenvalue "
                f"{eigvals.min():.3g}); use data.whiten=standardize or none"
            )
        matrix = eigvecs / np.sqrt(eigvals)
        if method == "zca":
            matrix = matrix @ eigvecs.T
    inverse = np.linalg.inv(matrix)
    log_det = float(np.linalg.slogdet(matrix)[1])
    dtype = np.float32
    mean32, matrix32, inverse32 = (a.astype(dtype) for a in (mean, matrix, inverse))

    def forward(fn):
        return lambda *args: ((np.asarray(fn(*args)) - mean32) @ matrix32).astype(dtype)

    def to_data(u):
        return (np.asarray(u, dtype) @ inverse32 + mean32).astype(dtype)

    return dataclasses.replace(
        source,
        name=f"{source.name}+{method}",
        train_batch=forward(source.train_batch),
        val=forward(source.val),
        test=forward(source.test),
        log_det=source.log_det + log_det,
        to_data=to_data if source.to_data is None else (lambda u: source.to_data(to_data(u))),
    )


def make_source(cfg) -> DataSource:
    """The data set named by a :class:`experiments.config.DataConfig`."""
    if cfg.name in TOY_DATASETS:
        return _toy(cfg.name, cfg.n_val, cfg.n_test)
    if cfg.name == "digits":
        kw = {"val_fraction": cfg.val_fraction}
        train = load_digits("train_minus_val", **kw)[0]
        val, test = load_digits("val", **kw)[0], load_digits("test")[0]
        return _images("digits", train, val, test, DIGITS_LEVELS)
    if cfg.name == "mnist":
        if not cfg.directory:
            raise ValueError("data.name=mnist needs data.directory=PATH of the IDX files")
        images = load_mnist(cfg.directory, "train")[0]
        n_val = int(round(cfg.val_fraction * len(images)))
        perm = np.random.default_rng(0).permutation(len(images))
        val, train = images[np.sort(perm[:n_val])], images[np.sort(perm[n_val:])]
        return _images("mnist", train, val, load_mnist(cfg.directory, "test")[0], MNIST_LEVELS)
    if cfg.name == "cifar10":
        if not cfg.directory:
            raise ValueError(
                "data.name=cifar10 needs data.directory=PATH of the binary version "
                "(cifar-10-batches-bin)"
            )
        images = load_cifar10(cfg.directory, "train")[0]
        n_val = int(round(cfg.val_fraction * len(images)))
        perm = np.random.default_rng(0).permutation(len(images))
        val, train = images[np.sort(perm[:n_val])], images[np.sort(perm[n_val:])]
        test = load_cifar10(cfg.directory, "test")[0]
        return _images("cifar10", train, val, test, CIFAR10_LEVELS, flip=cfg.random_flip)
    names = ", ".join((*TOY_DATASETS, "digits", "mnist", "cifar10"))
    raise ValueError(f"unknown data set data.name={cfg.name!r}; choose one of {names}")
