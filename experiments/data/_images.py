"""Image data sets read offline: sklearn's 8x8 digits, MNIST from IDX files (gzipped or
not) and CIFAR-10 from its *binary* distribution, plus random horizontal flips.

Images come back as ``uint8`` arrays ``[N, H, W, C]`` (channels last) of integer
levels, with ``int64`` labels; dequantise them with :func:`dequantize`. Nothing is
downloaded and no pickle is ever loaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

DIGITS_LEVELS = 17  # sklearn digits pixels are counts 0..16 of a 4x4 block
DIGITS_SPLITS = ("train", "test", "val", "train_minus_val")
MNIST_LEVELS = 256


def load_digits(
    split: str = "train", *, val_fraction: float = 0.1, val_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: ``(images uint8 [N, 8, 8, 1] in 0..16, labels int64 [N])``.

    The train/test split is ``train_test_split(test_size=0.2, random_state=0)`` on
    ``sklearn.datasets.load_digits()``: 1437 train and 360 test images. A validation set
    is carved out of the train split only: ``np.random.default_rng(val_seed)`` permutes
    the 1437 train indices and the last ``round(val_fraction * 1437)`` of them form
    ``"val"`` (144 for the default 0.1), the rest ``"train_minus_val"`` (1293). Each
    returned subset keeps the order of the train split. Splits:

    - ``"train"``: all 1437 (``val_fraction`` ignored); ``"test"``: the 360;
    - ``"val"`` / ``"train_minus_val"``: the disjoint halves of ``"train"`` described above.

    Select checkpoints on ``"val"`` while training on ``"train_minus_val"``; report on
    ``"test"``. Example::

        x, y = load_digits("test")          # x.shape == (360, 8, 8, 1)
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"unknown digits split={split!r}; choose one of {DIGITS_SPLITS}")
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    bunch = sklearn.datasets.load_digits()
    images = bunch.images.astype(np.uint8)[..., None]  # float64 counts 0..16 -> uint8
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=0
    )
    if split == "train":
        return x_train, y_train
    if split == "test":
        return x_test, y_test
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be in (0, 1) for split={split!r}, got val_fraction={val_fraction!r}"
        )
    n = len(x_train)
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction!r} leaves no training images (n={n})")
    perm = np.random.default_rng(val_seed).permutation(n)
    idx = np.sort(perm[n - n_val :] if split == "val" else perm[: n - n_val])
    return x_train[idx], y_train[idx]


# IDX (LeCun's format): two zero bytes, a type code, the number of dimensions, then each
# dimension as a big-endian int32, then the data in C order, big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({e})") from e
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzipped or not, detected from its bytes) into a numpy array.

    Raises ``ValueError`` naming the file if the magic number, the type code or the
    length implied by the header is wrong.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise ValueError(f"{path}: {len(buf)} bytes is too short for an IDX header")
    if buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_TYPES or buf[3] == 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{buf[:4].hex()}; expected 0x0000TTNN with type "
            f"TT in {{{', '.join(f'{t:02x}' for t in _IDX_TYPES)}}} and NN >= 1 dimensions "
            "(e.g. 0x00000803 for images, 0x00000801 for labels)"
        )
    dtype, ndim = _IDX_TYPES[buf[2]], buf[3]
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(buf)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX file {what}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes in all), file has {len(buf)} bytes"
        )
    data = np.frombuffer(buf, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _read_md5sums(directory: Path) -> dict[str, str]:
    sums = {}
    for line in (directory / "MD5SUMS").read_text().splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2:
            sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def _check_md5(path: Path, sums: dict[str, str], required: bool) -> None:
    if path.name not in sums:
        if required:
            raise ValueError(f"{path}: not listed in {path.parent / 'MD5SUMS'}")
        return
    got = hashlib.md5(path.read_bytes()).hexdigest()
    if got != sums[path.name]:
        raise ValueError(
            f"{path}: MD5 mismatch: MD5SUMS lists {sums[path.name]}, the file has {got}; "
            "the copy is corrupt or a different file"
        )


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"no {stem} or {stem}.gz in {directory}"
        + (
            f" (it holds {sorted(p.name for p in directory.iterdir())})"
            if directory.is_dir()
            else " (not a directory)"
        )
    )


def load_mnist(
    directory: str | os.PathLike, split: str = "train", *, verify: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format IDX files: ``(images uint8 [N, H, W, 1], labels int64 [N])``.

    Reads ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]``
    with ``prefix`` ``"train"`` or ``"t10k"`` (``split="test"``). MD5 checks:
    ``verify=None`` checks each file listed in ``directory/MD5SUMS`` (``md5sum``
    format) when that file exists, ``True`` requires every file to be listed and
    match, ``False`` skips them. Example::

        x, y = load_mnist("../shared/data/mnist", "test")   # x.shape == (10000, 28, 28, 1)
    """
    prefixes = {"train": "train", "test": "t10k"}
    if split not in prefixes:
        raise ValueError(f"unknown MNIST split={split!r}; choose one of {tuple(prefixes)}")
    directory = Path(directory)
    image_path = _find(directory, f"{prefixes[split]}-images-idx3-ubyte")
    label_path = _find(directory, f"{prefixes[split]}-labels-idx1-ubyte")
    if verify is not False:
        has_sums = (directory / "MD5SUMS").is_file()
        if verify and not has_sums:
            raise FileNotFoundError(f"verify=True but there is no {directory / 'MD5SUMS'}")
        if has_sums:
            sums = _read_md5sums(directory)
            for p in (image_path, label_path):
                _check_md5(p, sums, required=bool(verify))
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected uint8 images [N, H, W], got {images.dtype.name} "
            f"of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{label_path}: expected uint8 labels [N], got {labels.dtype.name} "
            f"of shape {labels.shape}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    return images[..., None], labels.astype(np.int64)


# CIFAR-10, binary version (Krizhevsky 2009; https://www.cs.toronto.edu/~kriz/cifar.html,
# "CIFAR-10 binary version (suitable for C programs)"): each file is a sequence of
# 3073-byte records, one label byte (0..9) then the 32x32 image as 1024 red, 1024 green
# and 1024 blue bytes, each plane row-major (channel-major overall).
CIFAR10_LEVELS = 256
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_CIFAR10_SIDE = 32
_CIFAR10_RECORD = 1 + 3 * _CIFAR10_SIDE * _CIFAR10_SIDE
_CIFAR10_SUBDIR = "cifar-10-batches-bin"


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch file: ``(images uint8 [N, 32, 32, 3], labels int64 [N])``.

    Raises ``ValueError`` naming the file if its length is not a positive multiple of
    3073 bytes or a label byte is not in 0..9.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR10_RECORD:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a positive multiple of the {_CIFAR10_RECORD}-byte "
            "CIFAR-10 record (1 label byte + 3x32x32 pixel bytes); is this the binary version?"
        )
    records = raw.reshape(-1, _CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(
            f"{path}: record {bad} has label byte {labels[bad]}, expected 0..9 "
            "(CIFAR-100's binary files have two label bytes and are not read here)"
        )
    planes = records[:, 1:].reshape(-1, 3, _CIFAR10_SIDE, _CIFAR10_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def _cifar10_directory(directory: Path, names: tuple[str, ...]) -> Path:
    for d in (directory, directory / _CIFAR10_SUBDIR):
        if all((d / n).is_file() for n in names):
            return d
    holds = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else None
    pickled = holds is not None and (
        "cifar-10-batches-py" in holds or any(n[: -len(".bin")] in holds for n in names)
    )
    missing = [n for n in names if not (directory / n).is_file()]
    partial = f" (incomplete: {missing} missing)" if len(missing) < len(names) else ""
    raise FileNotFoundError(
        f"CIFAR-10 binary files {list(names)} not found in {directory}{partial} or "
        f"{directory / _CIFAR10_SUBDIR}; "
        + ("it is not a directory" if holds is None else f"it holds {holds}")
        + (
            ". That looks like the pickled Python version, which is never loaded (pickles "
            "can run code): use the binary version, cifar-10-binary.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html"
            if pickled
            else ". Unpack cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    )


def load_cifar10(
    directory: str | os.PathLike, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 from its binary files: ``(images uint8 [N, 32, 32, 3], labels int64 [N])``.

    ``split="train"`` reads ``data_batch_1.bin`` .. ``data_batch_5.bin`` (50,000 images,
    in file order), ``"test"`` reads ``test_batch.bin`` (10,000). ``directory`` is the
    unpacked ``cifar-10-batches-bin`` folder or the folder that contains it. The pickled
    "python version" is refused. Labels index :data:`CIFAR10_CLASSES`. Example::

        x, y = load_cifar10("~/data/cifar-10-batches-bin", "test")   # (10000, 32, 32, 3)
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"unknown CIFAR-10 split={split!r}; choose one of {tuple(CIFAR10_FILES)}")
    names = CIFAR10_FILES[split]
    folder = _cifar10_directory(Path(directory).expanduser(), names)
    parts = [read_cifar10_batch(folder / n) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def random_flip(images: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Mirror each image of ``images [N, H, W, C]`` left-right with probability 1/2.

    Which images flip is a pure function of ``(seed, step)``
    (``np.random.default_rng([seed, 5, step])``, a stream no other batch helper uses), so
    a resumed run flips exactly as an uninterrupted one. Returns a new array. Example::

        x = random_flip(train[batch_indices(len(train), 128, seed, step)], seed, step)
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape [N, H, W, C], got shape {images.shape}")
    if int(seed) < 0 or int(step) < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed!r}, step={step!r}")
    flip = np.random.default_rng([int(seed), 5, int(step)]).random(len(images)) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1, :], images)
