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
from ._dequantize import dequantize, to_continuous
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
    # A fixed elementwise bijection (see :func:`gaussianized`) has a Jacobian that varies
    # from example to example: ``log_det_fn(u)`` is its per-example log-determinant,
    # evaluated on the model-space examples ``u``.
    log_det_fn: Callable[[np.ndarray], np.ndarray] | None = None
    n_train: int | None = None  # size of a finite training set (images)
    # Class labels, for class-conditional training (None: unlabelled data).
    num_classes: int | None = None
    train_labels: Callable[[int, int, int], np.ndarray] | None = None  # as train_batch
    val_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def discrete(self) -> bool:
        return self.n_levels is not None

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def log_jacobian(self, u: np.ndarray) -> np.ndarray:
        """Per-example ``log|det du/dx|`` of the fixed maps between the data ``x`` and the
        model-space examples ``u`` (0 without any): add it to the model's
        log-density of ``u`` to get its log-density of the data."""
        u = np.asarray(u)
        out = np.full(len(u), self.log_det, dtype=np.float64)
        if self.log_det_fn is not None:
            out += self.log_det_fn(u)
        return out


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


def _images(
    name, train, val, test, n_levels, flip: bool = False, labels=None, noise: bool = True
) -> DataSource:
    def train_batch(seed, step, batch_size):
        idx = batch_indices(len(train), batch_size, seed, step)
        rng = np.random.default_rng([seed, 2, step])
        images = random_flip(train[idx], seed, step) if flip else train[idx]
        if not noise:  # bin centres: the diffusion's own noise dequantises (i-DODE)
            return to_continuous(images, n_levels, IMAGE_RANGE)
        return dequantize(rng, images, n_levels, IMAGE_RANGE)

    label_fields = {}
    if labels is not None:  # (num_classes, train, val, test): the batches' own labels
        num_classes, train_y, val_y, test_y = labels
        label_fields = dict(
            num_classes=num_classes,
            train_labels=lambda seed, step, batch_size: train_y[
                batch_indices(len(train), batch_size, seed, step)
            ],
            val_labels=val_y,
            test_labels=test_y,
        )

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
        n_train=len(train),
        **label_fields,
    )


def _mapped(source: DataSource, forward, **changes) -> DataSource:
    """``source`` with every split passed through ``forward`` (a wrapper of a split
    function) and the other fields in ``changes`` replaced."""
    return dataclasses.replace(
        source,
        train_batch=forward(source.train_batch),
        val=forward(source.val),
        test=forward(source.test),
        **changes,
    )


def flattened(source: DataSource) -> DataSource:
    """The same data with each example as a flat vector (for MLP score networks)."""
    if len(source.shape) == 1:
        return source

    def flat(fn):
        return lambda *args: fn(*args).reshape(-1, source.dim)

    return _mapped(source, flat, shape=(source.dim,), image_shape=source.shape)


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

    return _mapped(
        source,
        forward,
        name=f"{source.name}+{method}",
        log_det=source.log_det + log_det,
        to_data=to_data if source.to_data is None else (lambda u: source.to_data(to_data(u))),
        log_det_fn=None if source.log_det_fn is None else (lambda u: source.log_det_fn(to_data(u))),
    )


def level_histogram(source: DataSource, *, pseudo_count: float = 0.1, seed: int = 0) -> np.ndarray:
    r"""``[D, K]``: each coordinate's training frequency of each of the ``K`` levels,
    plus ``pseudo_count`` per level (so every level keeps some mass), normalised.

    Counts every training example once (one epoch of ``train_batch``, whose
    dequantisation noise never leaves a value's bin). Feeds
    :func:`gaussianized` and the histogram base score (``model.histogram_base``).
    """
    if not source.discrete or source.n_train is None or source.to_data is not None:
        raise ValueError(
            "level_histogram needs a finite set of discrete data (images) in their own "
            f"space, got {source.name!r}"
        )
    if not pseudo_count > 0:
        raise ValueError(f"pseudo_count must be > 0, got {pseudo_count!r}")
    n_levels, (lo, hi) = source.n_levels, source.data_range
    width, dim = (hi - lo) / n_levels, source.dim
    x = np.asarray(source.train_batch(seed, 0, source.n_train), np.float64)  # one epoch
    k = np.clip(np.floor((x.reshape(len(x), dim) - lo) / width), 0, n_levels - 1)
    cell = np.arange(dim) * n_levels + k.astype(np.int64)  # (coordinate, level) as one index
    counts = np.bincount(cell.ravel(), minlength=dim * n_levels).reshape(dim, n_levels)
    return (counts + pseudo_count) / (counts + pseudo_count).sum(axis=1, keepdims=True)


def gaussianized(source: DataSource, *, pseudo_count: float = 0.1, seed: int = 0) -> DataSource:
    r"""Discrete data seen through each coordinate's own marginal, made Gaussian.

    Marginal Gaussianization (Chen & Gopinath 2000): for coordinate :math:`i`, with
    :math:`P_{ik}` the training frequency of level :math:`k` (plus ``pseudo_count`` per
    level, so every level keeps some mass) and :math:`F_i` the CDF of the matching
    piecewise-uniform density on the dequantisation bins (width :math:`w`),

    .. math:: u_i = \Phi^{-1}(F_i(x_i)), \qquad
        \log\left|\frac{du_i}{dx_i}\right| = \log \frac{P_{ik}}{w} - \log \varphi(u_i)
        \quad (x_i \text{ in bin } k).

    An exact, fixed, elementwise bijection (a flow layer fitted once on training data):
    the model's density of the data is its density of :math:`u` plus the per-example
    log-Jacobian (``log_det_fn``), and ``to_data`` maps samples back. If :math:`u` were
    exactly :math:`N(0, I)` the data would follow the product of the per-pixel
    histograms, *with uniform dequantisation exactly*: on MNIST that alone is 1.69
    bits/dim, against 5.3 for a Gaussian in pixel space, because it puts the mass of
    nearly-binary pixels on their own bins. A score model on :math:`u` (with
    ``data.whiten=pca`` and ``model.gaussian_base``: a Gaussian copula, 1.45 bits/dim on
    MNIST, before any training) then learns what the marginals and a covariance miss.

    The histograms count every training image once (one epoch of ``train_batch``).
    Example::

        src = gaussianized(flattened(make_source(DataConfig(name="mnist", directory=d))))
    """
    if not source.discrete or source.n_train is None:
        raise ValueError(
            f"gaussianized needs a finite set of discrete data (images), got {source.name!r}"
        )
    if not pseudo_count > 0:
        raise ValueError(f"pseudo_count must be > 0, got {pseudo_count!r}")
    if source.to_data is not None:
        raise ValueError("gaussianized must be the first map applied to the data (before whiten)")
    from scipy.special import ndtr, ndtri

    n_levels, (lo, hi) = source.n_levels, source.data_range
    width = (hi - lo) / n_levels
    dim = source.dim

    def levels(x):  # the bin of each continuous value, [N, D]
        k = np.floor((np.asarray(x, np.float64).reshape(len(x), dim) - lo) / width)
        return np.clip(k, 0, n_levels - 1).astype(np.int64)

    probs = level_histogram(source, pseudo_count=pseudo_count, seed=seed)
    cdf = np.concatenate([np.zeros((dim, 1)), np.cumsum(probs, axis=1)], axis=1)
    cdf[:, -1] = 1.0
    rows = np.arange(dim)
    tiny = 1e-12  # F in [tiny, 1 - tiny]: |u| <= 7.03

    def log_phi(u):
        return -0.5 * u**2 - 0.5 * np.log(2 * np.pi)

    def forward(fn):
        def mapped(*args):
            x = np.asarray(fn(*args), np.float64)
            k = levels(x)
            frac = (x.reshape(len(x), dim) - (lo + width * k)) / width
            f = np.clip(cdf[rows, k] + probs[rows, k] * frac, tiny, 1 - tiny)
            return ndtri(f).reshape(x.shape).astype(np.float32)

        return mapped

    def inverse(u):  # -> (x [N, D] float64, bins [N, D])
        f = ndtr(np.asarray(u, np.float64).reshape(len(u), dim))
        k = np.empty(f.shape, np.int64)
        for i in range(dim):
            k[:, i] = np.searchsorted(cdf[i], f[:, i], side="right") - 1
        k = np.clip(k, 0, n_levels - 1)
        frac = np.clip((f - cdf[rows, k]) / probs[rows, k], 0.0, 1.0 - 1e-9)
        return lo + width * (k + frac), k

    def to_data(u):
        return inverse(u)[0].reshape(np.shape(u)).astype(np.float32)

    def log_det_fn(u):
        u64 = np.asarray(u, np.float64).reshape(len(u), dim)
        k = inverse(u)[1]
        return (np.log(probs[rows, k] / width) - log_phi(u64)).sum(axis=1)

    return _mapped(
        source,
        forward,
        name=f"{source.name}+gaussianized",
        log_det_fn=log_det_fn,
        to_data=to_data,
    )


def make_source(cfg) -> DataSource:
    """The data set named by a :class:`experiments.config.DataConfig`."""
    if cfg.name in TOY_DATASETS:
        return _toy(cfg.name, cfg.n_val, cfg.n_test)
    if cfg.name == "digits":
        kw = {"val_fraction": cfg.val_fraction}
        (train, train_y), (val, val_y) = (
            load_digits("train_minus_val", **kw),
            load_digits("val", **kw),
        )
        test, test_y = load_digits("test")
        labels = (10, train_y, val_y, test_y)
        return _images(
            "digits", train, val, test, DIGITS_LEVELS, labels=labels, noise=cfg.dequantize_train
        )
    if cfg.name == "mnist":
        if not cfg.directory:
            raise ValueError("data.name=mnist needs data.directory=PATH of the IDX files")
        images, y = load_mnist(cfg.directory, "train")
        test, test_y = load_mnist(cfg.directory, "test")
        n_val = int(round(cfg.val_fraction * len(images)))
        perm = np.random.default_rng(0).permutation(len(images))
        val_i, train_i = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        labels = (10, y[train_i], y[val_i], test_y)
        return _images(
            "mnist",
            images[train_i],
            images[val_i],
            test,
            MNIST_LEVELS,
            labels=labels,
            noise=cfg.dequantize_train,
        )
    if cfg.name == "cifar10":
        if not cfg.directory:
            raise ValueError(
                "data.name=cifar10 needs data.directory=PATH of the binary version "
                "(cifar-10-batches-bin)"
            )
        images, y = load_cifar10(cfg.directory, "train")
        n_val = int(round(cfg.val_fraction * len(images)))
        perm = np.random.default_rng(0).permutation(len(images))
        val_i, train_i = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        test, test_y = load_cifar10(cfg.directory, "test")
        labels = (10, y[train_i], y[val_i], test_y)
        return _images(
            "cifar10",
            images[train_i],
            images[val_i],
            test,
            CIFAR10_LEVELS,
            flip=cfg.random_flip,
            labels=labels,
            noise=cfg.dequantize_train,
        )
    names = ", ".join((*TOY_DATASETS, "digits", "mnist", "cifar10"))
    raise ValueError(f"unknown data set data.name={cfg.name!r}; choose one of {names}")
