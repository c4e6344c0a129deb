"""One interface over every data set the experiments train on, and the table of them.

A :class:`DataSource` gives training batches as a pure function of ``(seed, step)`` (so
a resumed run sees exactly the batches an uninterrupted one would), fixed validation and
test sets, and what evaluation needs to know: the shape, whether the examples are
images, whether the data are discrete (and then their levels and range, for bits/dim),
and the exact entropy where known. :func:`make_source` builds one by name from
:data:`DATASETS`, the one names-to-loaders table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

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
    """A data set as pure functions of ``(seed, step)`` and ``seed``, plus its facts.

    ``train_batch(seed, step, batch_size)`` is the training batch at ``step``;
    ``val(seed)`` and ``test(seed)`` the held-out sets, continuous (dequantised where
    the data are discrete). The transforms in :mod:`._transforms` return new sources
    whose fixed maps are recorded in ``log_det``/``log_det_fn``/``to_data``.
    """

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
    def is_image(self) -> bool:
        """Whether each example is an image ``(H, W, C)``, possibly seen flat
        (:func:`flattened` keeps the image's shape in ``image_shape``)."""
        return len(self.image_shape or self.shape) == 3

    @property
    def discrete(self) -> bool:
        """Whether the data are ``n_levels`` discrete levels on ``data_range``,
        dequantised: then bits/dim apply and the dequantisation bound is reported."""
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


def _toy_source(name: str, cfg) -> DataSource:
    return _toy(name, cfg.n_val, cfg.n_test)


def _digits(cfg) -> DataSource:
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


DATA_ENV = "SCORESDE_DATA"  # the folder relative data.directory values are resolved in
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where the named configs' paths start


def resolve_directory(directory: str) -> Path:
    """Where ``data.directory`` points: an absolute path (``~`` expanded) as it is; a
    relative one under ``$SCORESDE_DATA`` when that is set, else under the project root
    (so the named configs' ``../shared/data/mnist`` is the same folder from any current
    directory; never the current directory)."""
    path = Path(directory).expanduser()
    if path.is_absolute():
        return path
    root = os.environ.get(DATA_ENV)
    return (Path(root).expanduser() if root else PROJECT_ROOT) / path


def _read(loader, cfg, what: str, split: str):
    """``loader(data.directory, split)`` (:func:`resolve_directory`); a missing folder
    or file says how to point ``data.directory`` at one."""
    if not cfg.directory:
        raise ValueError(f"data.name={cfg.name} needs data.directory=PATH of {what}")
    directory = resolve_directory(cfg.directory)
    fix = (
        f"point data.directory=PATH at the folder of {what} (an absolute path, or one "
        f"relative to ${DATA_ENV} or, without it, to {PROJECT_ROOT})"
    )
    if not directory.is_dir():
        raise FileNotFoundError(
            f"data.directory={cfg.directory!r} is not a directory (resolved to {directory}); {fix}"
        )
    try:
        return loader(directory, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; {fix}") from e


def _with_validation(images, labels, val_fraction: float):
    """``(train images, val images, train labels, val labels)``: a fixed random
    ``val_fraction`` of the training split held out (seed 0), each part in file order."""
    n_val = int(round(val_fraction * len(images)))
    perm = np.random.default_rng(0).permutation(len(images))
    val_i, train_i = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return images[train_i], images[val_i], labels[train_i], labels[val_i]


_MNIST_FILES = "the MNIST IDX files (train-images-idx3-ubyte[.gz], t10k-..., as distributed)"
_CIFAR10_FILES = "the CIFAR-10 binary version (cifar-10-batches-bin)"


def _mnist(cfg) -> DataSource:
    images, y = _read(load_mnist, cfg, _MNIST_FILES, "train")
    test, test_y = _read(load_mnist, cfg, _MNIST_FILES, "test")
    train, val, train_y, val_y = _with_validation(images, y, cfg.val_fraction)
    labels = (10, train_y, val_y, test_y)
    return _images(
        "mnist", train, val, test, MNIST_LEVELS, labels=labels, noise=cfg.dequantize_train
    )


def _cifar10(cfg) -> DataSource:
    images, y = _read(load_cifar10, cfg, _CIFAR10_FILES, "train")
    train, val, train_y, val_y = _with_validation(images, y, cfg.val_fraction)
    test, test_y = _read(load_cifar10, cfg, _CIFAR10_FILES, "test")
    labels = (10, train_y, val_y, test_y)
    return _images(
        "cifar10",
        train,
        val,
        test,
        CIFAR10_LEVELS,
        flip=cfg.random_flip,
        labels=labels,
        noise=cfg.dequantize_train,
    )


_IMAGE_LOADERS: dict[str, Callable[..., DataSource]] = {
    "digits": _digits,
    "mnist": _mnist,
    "cifar10": _cifar10,
}
# Every data set by name: its loader, called with an ``experiments.config.DataConfig``.
DATASETS: dict[str, Callable[..., DataSource]] = {
    **{name: functools.partial(_toy_source, name) for name in TOY_DATASETS},
    **_IMAGE_LOADERS,
}
IMAGE_DATASETS: tuple[str, ...] = tuple(_IMAGE_LOADERS)


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(
            f"unknown data set data.name={name!r}; choose one of {', '.join(DATASETS)}"
        )


def is_image_dataset(name: str) -> bool:
    """Whether the data set ``name`` is images (``digits``, ``mnist``, ``cifar10``),
    known without loading it; raises ``ValueError`` listing the valid names on an
    unknown one. Example::

        is_image_dataset("mnist")         # True
        is_image_dataset("checkerboard")  # False
    """
    _check_name(name)
    return name in IMAGE_DATASETS


def make_source(cfg) -> DataSource:
    """The data set named by a :class:`experiments.config.DataConfig` (``cfg.name``, one
    of :data:`DATASETS`). Example::

        src = make_source(DataConfig(name="digits"))
        x = src.train_batch(0, 0, 128)   # (seed, step, batch_size) -> [128, 8, 8, 1]
    """
    _check_name(cfg.name)
    return DATASETS[cfg.name](cfg)
