"""Image data: CIFAR-10 binary files built byte by byte from the format's description,
and random flips as exact mirror images. (MNIST IDX files, gzipped and plain, are
covered in test_data.py.)"""

import numpy as np
import pytest

from experiments import data

# ---- CIFAR-10 (binary) ---------------------------------------------------------------


def _record(label: int, image: np.ndarray) -> bytes:
    """One record as the CIFAR-10 page describes it: the label byte, then the 1024 red,
    1024 green and 1024 blue values, each plane row by row."""
    out = bytearray([label])
    for channel in range(3):
        for row in range(32):
            out += bytes(int(v) for v in image[row, :, channel])
    return bytes(out)


def _write_cifar(directory, n_per_file=2, seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for split, names in data.CIFAR10_FILES.items():
        xs, ys = [], []
        for name in names:
            x = rng.integers(0, 256, size=(n_per_file, 32, 32, 3), dtype=np.uint8)
            y = rng.integers(0, 10, size=n_per_file)
            (directory / name).write_bytes(
                b"".join(_record(int(k), im) for k, im in zip(y, x, strict=True))
            )
            xs.append(x)
            ys.append(y)
        written[split] = (np.concatenate(xs), np.concatenate(ys))
    return written


def test_cifar10_round_trip(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    written = _write_cifar(folder, n_per_file=3)
    for directory in (folder, tmp_path):  # the folder itself or its parent
        for split in ("train", "test"):
            x, y = data.load_cifar10(directory, split)
            assert x.dtype == np.uint8 and x.shape == (len(y), 32, 32, 3)
            assert y.dtype == np.int64
            np.testing.assert_array_equal(x, written[split][0])
            np.testing.assert_array_equal(y, written[split][1])
    assert len(data.load_cifar10(folder, "train")[1]) == 15


def test_cifar10_channel_major_layout(tmp_path):
    # A record whose bytes are 0, 1, 2, ...: pixel (r, c) of channel k is byte
    # 1 + 1024 k + 32 r + c.
    raw = bytes([7]) + bytes(i % 256 for i in range(3072))
    (tmp_path / "test_batch.bin").write_bytes(raw)
    x, y = data.read_cifar10_batch(tmp_path / "test_batch.bin")
    assert y.tolist() == [7]
    for r, c, k in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (31, 31, 0), (0, 0, 1), (5, 9, 2)]:
        assert x[0, r, c, k] == (1024 * k + 32 * r + c) % 256


def test_cifar10_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.bin.*data_batch_5\.bin.*not found"):
        data.load_cifar10(tmp_path, "train")
    # The pickled Python version is recognised and refused.
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(FileNotFoundError, match="pickled Python version.*binary version"):
        data.load_cifar10(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="pickled Python version"):
        data.load_cifar10(py, "train")
    with pytest.raises(ValueError, match="split='val'"):
        data.load_cifar10(tmp_path, "val")
    bad = tmp_path / "test_batch.bin"
    bad.write_bytes(_record(3, np.zeros((32, 32, 3), np.uint8))[:-1])
    with pytest.raises(ValueError, match="3072 bytes is not a positive multiple of the 3073"):
        data.load_cifar10(tmp_path, "test")
    bad.write_bytes(_record(3, np.zeros((32, 32, 3))) + _record(12, np.zeros((32, 32, 3))))
    with pytest.raises(ValueError, match="record 1 has label byte 12"):
        data.load_cifar10(tmp_path, "test")


# ---- flips ------------------------------------------------------------------------


def test_random_flip_exact_mirrors_and_deterministic():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(400, 5, 6, 3), dtype=np.uint8)
    y = data.random_flip(x, seed=3, step=11)
    assert y.dtype == x.dtype and y.shape == x.shape
    same = np.all(y == x, axis=(1, 2, 3))
    mirrored = np.array([np.array_equal(y[i], x[i, :, ::-1, :]) for i in range(len(x))])
    assert np.all(same ^ mirrored)  # each image is itself or its exact mirror
    # about half flip: binomial(400, 1/2) within 4 standard deviations
    assert abs(mirrored.sum() - 200) < 4 * 10
    np.testing.assert_array_equal(data.random_flip(x, seed=3, step=11), y)
    np.testing.assert_array_equal(data.random_flip(y, seed=3, step=11), x)  # an involution
    assert not np.array_equal(data.random_flip(x, seed=3, step=12), y)
    assert not np.array_equal(data.random_flip(x, seed=4, step=11), y)
    with pytest.raises(ValueError, match="shape"):
        data.random_flip(x[0], seed=0, step=0)
