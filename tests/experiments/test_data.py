"""Offline data sets: toys against closed forms and independent generators, IDX parsing
on fixture files, dequantisation against the bits/dim bound, resumable batching, and
the one table of data sets."""

import gzip
import hashlib
import math
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats
import sklearn.datasets
from sklearn.model_selection import train_test_split

import samplers
from experiments import data

# ---------------------------------------------------------------------------------------
# 2-D toys


@pytest.mark.parametrize("name", data.TOY_DATASETS)
def test_toy_shape_dtype_and_seed(name):
    x = data.sample_toy(name, 257, seed=3)
    assert x.shape == (257, 2) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, data.sample_toy(name, 257, seed=3))
    assert not np.array_equal(x, data.sample_toy(name, 257, seed=4))
    assert data.sample_toy(name, 0, seed=0).shape == (0, 2)


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="unknown toy.*'swissrole'"):
        data.sample_toy("swissrole", 10, seed=0)
    with pytest.raises(ValueError, match="n=-1"):
        data.sample_toy("moons", -1, seed=0)
    with pytest.raises(ValueError, match="no closed form.*'rings'"):
        data.toy_log_prob("rings", np.zeros((1, 2)))
    assert data.toy_entropy("rings") is None


def test_checkerboard_support_and_uniform_squares():
    x = data.sample_toy("checkerboard", 40_000, seed=0)
    assert np.all(np.isfinite(data.toy_log_prob("checkerboard", x)))
    # The 8 black squares of side 2 on [-4, 4)^2: column + row index even.
    col, row = np.floor(x[:, 0] / 2).astype(int) + 2, np.floor(x[:, 1] / 2).astype(int) + 2
    assert np.all((0 <= col) & (col < 4) & (0 <= row) & (row < 4))
    assert np.all((col + row) % 2 == 0)
    counts = np.bincount(col * 4 + row, minlength=16)[[0, 2, 5, 7, 8, 10, 13, 15]]
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    # Uniform inside each square: 4x4 sub-cells of every square.
    sub = np.floor(np.mod(x, 2.0) * 2).astype(int)  # 0..3 per axis within a square
    assert scipy.stats.chisquare(np.bincount(sub[:, 0] * 4 + sub[:, 1])).pvalue > 1e-3


def test_checkerboard_entropy_is_log_area():
    assert data.toy_entropy("checkerboard") == pytest.approx(math.log(32.0), abs=1e-12)
    # The support's area from the fraction of the bounding box [-4, 4]^2 it covers.
    n = 200_000
    u = np.random.default_rng(1).uniform(-4.0, 4.0, size=(n, 2))
    frac = np.mean(np.isfinite(data.toy_log_prob("checkerboard", u)))
    se = math.sqrt(frac * (1 - frac) / n) / frac  # s.e. of log(64 frac)
    assert abs(math.log(64 * frac) - data.toy_entropy("checkerboard")) < 4 * se
    # -E[log p] over samples; the density is constant on the support, so exact.
    lp = data.toy_log_prob("checkerboard", data.sample_toy("checkerboard", 10_000, seed=2))
    assert -lp.mean() == pytest.approx(math.log(32.0), abs=1e-12)
    outside = np.array([[0.5, -0.5], [-1.0, 1.0], [4.0, 0.5], [0.0, -4.5]])
    assert np.all(data.toy_log_prob("checkerboard", outside) == -np.inf)


_R = 4.0 / 1.414  # FFJORD's mode radius and std after dividing by 1.414
_S = 0.5 / 1.414


def _eight_centres_ref():
    a = np.pi / 4 * np.arange(8)
    return _R * np.stack([np.cos(a), np.sin(a)], axis=1)


def test_eight_gaussians_moments():
    n = 100_000
    x = data.sample_toy("8gaussians", n, seed=0).astype(np.float64)
    # Mean 0; covariance (s^2 + r^2 / 2) I for 8 equally spaced modes.
    var = _S**2 + _R**2 / 2
    se_mean = math.sqrt(var / n)
    assert np.all(np.abs(x.mean(0)) < 4 * se_mean)
    prods = {"xx": x[:, 0] ** 2 - var, "yy": x[:, 1] ** 2 - var, "xy": x[:, 0] * x[:, 1]}
    for key, v in prods.items():
        assert abs(v.mean()) < 4 * v.std() / math.sqrt(n), key
    # Each sample sits near one of the 8 centres, visited ~uniformly.
    nearest = np.argmin(((x[:, None] - _eight_centres_ref()[None]) ** 2).sum(-1), axis=1)
    assert scipy.stats.chisquare(np.bincount(nearest, minlength=8)).pvalue > 1e-3


def test_eight_gaussians_log_prob_matches_scipy_and_sde_mixture():
    x = np.random.default_rng(0).uniform(-4, 4, size=(500, 2))
    pdf = sum(
        scipy.stats.multivariate_normal(c, _S**2 * np.eye(2)).pdf(x) / 8
        for c in _eight_centres_ref()
    )
    lp = data.toy_log_prob("8gaussians", x)
    np.testing.assert_allclose(lp, np.log(pdf), rtol=1e-10, atol=1e-10)
    lp_mix = np.asarray(data.toy_mixture("8gaussians").log_prob(x.astype(np.float32)))
    np.testing.assert_allclose(lp_mix, lp, rtol=1e-4, atol=1e-3)


def test_eight_gaussians_entropy_monte_carlo():
    h = data.toy_entropy("8gaussians")
    # Plain Monte Carlo: -mean log p over samples.
    lp = data.toy_log_prob("8gaussians", data.sample_toy("8gaussians", 200_000, seed=5))
    assert abs(-lp.mean() - h) < 4 * lp.std() / math.sqrt(len(lp))
    # Control variate, written independently: by symmetry sample mode 0 only,
    # H = log 8 + log(2 pi e s^2) - E[log(1 + sum_{k != 0} N_k(x) / N_0(x))].
    n = 1_000_000
    c = _eight_centres_ref()
    x = c[0] + _S * np.random.default_rng(6).standard_normal((n, 2))
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    v = np.log1p(np.exp(-(d2[:, 1:] - d2[:, :1]) / (2 * _S**2)).sum(1))
    h_cv = math.log(8) + math.log(2 * math.pi * math.e * _S**2) - v.mean()
    assert abs(h_cv - h) < 4 * v.std() / math.sqrt(n)


def _moments_close(a, b):
    """Two-sample KS on x, y and radius: p > 1e-4 for each."""
    for f in (lambda z: z[:, 0], lambda z: z[:, 1], lambda z: np.hypot(z[:, 0], z[:, 1])):
        assert scipy.stats.ks_2samp(f(a), f(b)).pvalue > 1e-4


# Independent references: sklearn's generators with FFJORD's transforms, and FFJORD's
# stratified constructions (equal counts per component) for the hand-made toys.
def _ref_swissroll(n, seed):
    x = sklearn.datasets.make_swiss_roll(n, noise=1.0, random_state=seed)[0]
    return x[:, [0, 2]] / 5


def _ref_moons(n, seed):
    x = sklearn.datasets.make_moons(n, noise=0.1, random_state=seed)[0]
    return x * 2 + np.array([-1, -0.2])


def _ref_circles(n, seed):
    return sklearn.datasets.make_circles(n, factor=0.5, noise=0.08, random_state=seed)[0] * 3


def _ref_rings(n, seed):
    rng = np.random.RandomState(seed)
    m = n // 4
    a = np.linspace(0, 2 * np.pi, m, endpoint=False)
    circ = np.concatenate([r * np.stack([np.cos(a), np.sin(a)], 1) for r in (1, 0.75, 0.5, 0.25)])
    return circ * 3.0 + rng.normal(scale=0.08, size=circ.shape)


def _ref_pinwheel(n, seed):
    rng = np.random.RandomState(seed)
    per = n // 5
    rads = np.linspace(0, 2 * np.pi, 5, endpoint=False)
    feats = rng.randn(5 * per, 2) * np.array([0.3, 0.1])
    feats[:, 0] += 1.0
    ang = rads[np.repeat(np.arange(5), per)] + 0.25 * np.exp(feats[:, 0])
    rot = np.reshape(np.stack([np.cos(ang), -np.sin(ang), np.sin(ang), np.cos(ang)]).T, (-1, 2, 2))
    return 2 * np.einsum("ti,tij->tj", feats, rot)


def _ref_2spirals(n, seed):
    rng = np.random.RandomState(seed)
    m = n // 2
    t = np.sqrt(rng.rand(m, 1)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(t) * t + rng.rand(m, 1) * 0.5
    d1y = np.sin(t) * t + rng.rand(m, 1) * 0.5
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    return x + rng.randn(*x.shape) * 0.1


@pytest.mark.parametrize(
    "name, ref",
    [
        ("swissroll", _ref_swissroll),
        ("moons", _ref_moons),
        ("circles", _ref_circles),
        ("rings", _ref_rings),
        ("pinwheel", _ref_pinwheel),
        ("2spirals", _ref_2spirals),
    ],
)
def test_toy_matches_reference_distribution(name, ref):
    _moments_close(data.sample_toy(name, 6000, seed=11), ref(6000, 12))


def test_rings_noise_scale():
    # FFJORD adds N(0, 0.08^2) after scaling the rings to radii 3, 2.25, 1.5, 0.75
    # (circles, by contrast, add 0.08 before scaling by 3).
    n = 20_000
    r = np.hypot(*data.sample_toy("rings", n, seed=0).astype(np.float64).T)
    radii = np.array([3.0, 2.25, 1.5, 0.75])
    resid = r - radii[np.argmin(np.abs(r[:, None] - radii), axis=1)]
    assert abs(resid.std() / 0.08 - 1) < 4 / math.sqrt(2 * n)


# ---------------------------------------------------------------------------------------
# Gaussian mixtures


def test_mixture_dataset_moments():
    import sde

    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 3))
    covs = np.einsum("kij,klj->kil", a, a) + 0.3 * np.eye(3)
    w = np.array([0.7, 0.3])
    mu = np.array([[1.0, -2.0, 0.5], [-3.0, 0.0, 2.0]])
    mix = sde.GaussianMixture(weights=w, means=mu, covariances=covs)
    n = 200_000
    x = data.mixture_dataset(mix, n, seed=1)
    assert x.shape == (n, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, data.mixture_dataset(mix, n, seed=1))
    assert not np.array_equal(x, data.mixture_dataset(mix, n, seed=2))
    x = x.astype(np.float64)
    m = w @ mu
    cov = np.einsum("k,kij->ij", w, covs + np.einsum("ki,kj->kij", mu, mu)) - np.outer(m, m)
    assert np.all(np.abs(x.mean(0) - m) < 4 * np.sqrt(np.diag(cov) / n))
    xc = x - m
    prods = xc[:, :, None] * xc[:, None, :] - cov
    assert np.all(np.abs(prods.mean(0)) < 4 * prods.std(0) / math.sqrt(n))


# ---------------------------------------------------------------------------------------
# sklearn digits


def test_digits_splits():
    x_tr, y_tr = data.load_digits("train")
    x_te, y_te = data.load_digits("test")
    assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
    assert x_tr.dtype == np.uint8 and y_tr.shape == (1437,)
    assert set(np.unique(x_tr)) == set(range(17)) == set(range(data.DIGITS_LEVELS))
    # The split, rebuilt from sklearn's flat data.
    bunch = sklearn.datasets.load_digits()
    i_tr, i_te = train_test_split(np.arange(1797), test_size=0.2, random_state=0)
    np.testing.assert_array_equal(x_te.reshape(360, 64), bunch.data[i_te])
    np.testing.assert_array_equal(y_tr, bunch.target[i_tr])


def test_digits_validation_carved_from_train():
    x_tr, y_tr = data.load_digits("train")
    x_va, y_va = data.load_digits("val", val_fraction=0.1)
    x_rest, y_rest = data.load_digits("train_minus_val", val_fraction=0.1)
    assert len(x_va) == 144 and len(x_rest) == 1437 - 144
    # Train images are all distinct, so rows identify them.
    rows = {r.tobytes(): lab for r, lab in zip(x_tr.reshape(1437, -1), y_tr, strict=True)}
    va = [r.tobytes() for r in x_va.reshape(len(x_va), -1)]
    rest = [r.tobytes() for r in x_rest.reshape(len(x_rest), -1)]
    assert not set(va) & set(rest)
    assert set(va) | set(rest) == set(rows)
    assert [rows[r] for r in va] == list(y_va)
    x_va2, _ = data.load_digits("val", val_fraction=0.1, val_seed=1)
    assert not np.array_equal(x_va, x_va2)
    np.testing.assert_array_equal(x_va, data.load_digits("val")[0])
    with pytest.raises(ValueError, match="val_fraction=0.0"):
        data.load_digits("val", val_fraction=0.0)
    with pytest.raises(ValueError, match="split='valid'"):
        data.load_digits("valid")


# ---------------------------------------------------------------------------------------
# MNIST IDX files


def _idx_bytes(arr: np.ndarray, type_code: int = 0x08, big_endian: str = ">u1") -> bytes:
    head = struct.pack(">BBBB", 0, 0, type_code, arr.ndim) + struct.pack(
        f">{arr.ndim}I", *arr.shape
    )
    return head + arr.astype(big_endian).tobytes()


def _write_mnist(directory: Path, prefix: str, n: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    for stem, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        raw = _idx_bytes(arr)
        name = f"{prefix}-{stem}" + (".gz" if gz else "")
        (directory / name).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz):
    tr = _write_mnist(tmp_path, "train", 7, gz, seed=0)
    te = _write_mnist(tmp_path, "t10k", 3, gz, seed=1)
    for split, (images, labels) in (("train", tr), ("test", te)):
        x, y = data.load_mnist(tmp_path, split)
        assert x.shape == (len(images), 28, 28, 1) and x.dtype == np.uint8
        np.testing.assert_array_equal(x[..., 0], images)
        np.testing.assert_array_equal(y, labels)
        assert y.dtype == np.int64


def test_read_idx_other_types(tmp_path):
    a = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a, 0x0C, ">i4"))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(-1, 1, 5)
    (tmp_path / "f.idx").write_bytes(_idx_bytes(f, 0x0E, ">f8"))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "f.idx"), f)


def test_mnist_md5sums(tmp_path):
    _write_mnist(tmp_path, "t10k", 3, gz=True)
    names = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(FileNotFoundError, match="MD5SUMS"):
        data.load_mnist(tmp_path, "test", verify=True)
    sums = {n: hashlib.md5((tmp_path / n).read_bytes()).hexdigest() for n in names}
    (tmp_path / "MD5SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    data.load_mnist(tmp_path, "test", verify=True)
    (tmp_path / "MD5SUMS").write_text(f"{'0' * 32}  {names[1]}\n")
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: MD5 mismatch"):
        data.load_mnist(tmp_path, "test")
    data.load_mnist(tmp_path, "test", verify=False)


def test_mnist_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path, "train")
    images, _ = _write_mnist(tmp_path, "train", 4, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(b"\x00\x01" + raw[2:])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: bad IDX magic number"):
        data.load_mnist(tmp_path, "train")
    path.write_bytes(raw[:-5])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: IDX file truncated.*\(4, 28"):
        data.load_mnist(tmp_path, "train")
    path.write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        data.load_mnist(tmp_path, "train")
    path.write_bytes(_idx_bytes(images[:3]))
    with pytest.raises(ValueError, match="3 images but .* 4 labels"):
        data.load_mnist(tmp_path, "train")
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(ValueError, match="x.gz: corrupt or truncated gzip"):
        data.read_idx(tmp_path / "x.gz")


_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"


@pytest.mark.slow
@pytest.mark.skipif(not (_MNIST / "MD5SUMS").is_file(), reason="no local MNIST copy")
def test_real_mnist():
    x, y = data.load_mnist(_MNIST, "train", verify=True)
    x_te, y_te = data.load_mnist(_MNIST, "test", verify=True)
    assert x.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
    assert set(np.unique(y)) == set(range(10)) and len(y_te) == 10000
    # The well-known training-set pixel statistics (/255).
    assert x.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert x.std() / 255 == pytest.approx(0.3081, abs=1e-4)


# ---------------------------------------------------------------------------------------
# Dequantisation


@pytest.mark.parametrize("backend", ["numpy", "jax"])
@pytest.mark.parametrize("n_levels, lo, hi", [(17, 0.0, 1.0), (256, -1.0, 1.0)])
def test_dequantize_inside_bin_and_uniform(backend, n_levels, lo, hi):
    k = np.random.default_rng(0).integers(0, n_levels, size=(2000, 5))
    rng = np.random.default_rng(1) if backend == "numpy" else jax.random.key(1)
    x = data.dequantize(rng, k, n_levels, data_range=(lo, hi))
    assert x.shape == k.shape and x.dtype == np.float32
    assert isinstance(x, np.ndarray) == (backend == "numpy")
    x = np.asarray(x, dtype=np.float64)
    w = (hi - lo) / n_levels
    assert np.all(lo + w * k <= x) and np.all(x < lo + w * (k + 1))
    np.testing.assert_array_equal(data.from_continuous(x, n_levels, (lo, hi)), k)
    u = (x - lo) / w - k  # the offsets inside the bins: U[0, 1)
    assert scipy.stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    rng = np.random.default_rng(1) if backend == "numpy" else jax.random.key(1)
    again = data.dequantize(rng, k, n_levels, (lo, hi))
    np.testing.assert_array_equal(np.asarray(again, np.float64), x)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_dequantize_float32_rounding_stays_in_bin(backend):
    # Level 2^24 - 1 of unit width: k + u rounds up to k + 1 in float32 for u >= 1/2.
    n = 2**24
    k = np.full(1000, n - 1)
    rng = np.random.default_rng(0) if backend == "numpy" else jax.random.key(0)
    x = np.asarray(data.dequantize(rng, k, n, data_range=(0.0, float(n))), np.float64)
    assert np.all(x < n) and np.all(x >= n - 1)


def test_to_from_continuous():
    k = np.arange(256)
    c = data.to_continuous(k, 256, (-1.0, 1.0))
    np.testing.assert_allclose(c, -1 + (2 * k + 1) / 256, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.from_continuous(c, 256, (-1.0, 1.0)), k)
    cj = data.to_continuous(jax.numpy.asarray(k), 256, (-1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(data.from_continuous(cj, 256, (-1.0, 1.0))), k)
    np.testing.assert_array_equal(
        data.from_continuous(np.array([-5.0, 5.0]), 256, (-1, 1)), [0, 255]
    )
    with pytest.raises(ValueError, match="n_levels=1"):
        data.to_continuous(k, 1)
    with pytest.raises(ValueError, match="hi > lo"):
        data.dequantize(np.random.default_rng(0), k, 256, data_range=(1.0, 1.0))


def test_dequantisation_bits_per_dim_consistent():
    n_levels, lo, hi, dim = 17, -1.0, 1.0, 6
    w = (hi - lo) / n_levels
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(n_levels), size=dim)  # per-dimension categorical P_d
    k = np.stack([rng.choice(n_levels, size=500, p=p) for p in probs], axis=1)
    x = data.dequantize(np.random.default_rng(1), k, n_levels, data_range=(lo, hi))
    # A model constant on each bin, p(x) = prod_d P_d(k_d) / w, attains the bound:
    # its bits/dim equal the exact discrete -log2 P(k) / D.
    kx = data.from_continuous(x, n_levels, (lo, hi))
    logp = np.log(probs[np.arange(dim), kx] / w).sum(1)
    bpd = samplers.bits_per_dim(logp, dim=dim, n_levels=n_levels, data_range=hi - lo)
    exact = -np.log2(probs[np.arange(dim), k]).sum(1) / dim
    np.testing.assert_allclose(np.asarray(bpd), exact, rtol=1e-5, atol=1e-5)
    # The uniform density on [lo, hi]^D is the uniform distribution over levels.
    uniform = samplers.bits_per_dim(
        -dim * math.log(hi - lo), dim=dim, n_levels=n_levels, data_range=hi - lo
    )
    assert float(uniform) == pytest.approx(math.log2(n_levels), abs=1e-6)


# ---------------------------------------------------------------------------------------
# Batches


def test_batch_indices_resume_and_epochs():
    n, bs = 23, 5  # 4 batches per epoch, 3 items dropped each epoch
    full = [data.batch_indices(n, bs, 7, s) for s in range(14)]
    for idx in full:
        assert idx.shape == (bs,) and idx.dtype == np.int64
    for k in (1, 4, 5, 9):  # a resumed run, asking from step k on, sees the same batches
        data.batch_indices(n, bs, 8, 3 * k)  # another seed's epochs in the cache meanwhile
        resumed = [data.batch_indices(n, bs, 7, s) for s in range(k, 14)]
        for a, b in zip(full[k:], resumed, strict=True):
            np.testing.assert_array_equal(a, b)
    for e in range(3):  # each epoch: 20 distinct items
        items = np.concatenate([full[s] for s in range(4 * e, 4 * e + 4)])
        assert len(np.unique(items)) == 20
    assert not np.array_equal(full[0], full[4])  # a fresh order each epoch
    assert not np.array_equal(data.batch_indices(n, bs, 8, 0), full[0])


def test_batch_indices_bad_arguments():
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 4\]"):
        data.batch_indices(4, 5, 0, 0)
    with pytest.raises(ValueError, match="step=-1"):
        data.batch_indices(10, 2, 0, -1)


# --------------------------------------------------------------------------------------
# Whitening: an exact change of variables
# --------------------------------------------------------------------------------------


def _gaussian_source(dim=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) * np.linspace(0.05, 2.0, dim)
    cov = a @ a.T + 0.01 * np.eye(dim)
    mean = rng.normal(size=dim)
    draw = lambda s, n: np.random.default_rng(s).multivariate_normal(mean, cov, n)  # noqa: E731
    src = data.DataSource(
        name="gauss",
        shape=(dim,),
        train_batch=lambda seed, step, b: draw([seed, step], b).astype(np.float32),
        val=lambda seed: draw([seed, 10**6 + 1], 500).astype(np.float32),
        test=lambda seed: draw([seed, 10**6 + 2], 500).astype(np.float32),
    )
    return src, mean, cov


@pytest.mark.parametrize("method", ["standardize", "pca", "zca"])
def test_whitening_is_an_exact_change_of_variables(method):
    src, mean, cov = _gaussian_source()
    white = data.whitened(src, method)
    x = src.test(0)
    u = white.test(0)
    # log N(x; mean, cov) == log p_U(u) + log_det, with p_U the exact law of u
    # (Gaussian with the transformed moments): the Jacobian term is right.
    lin = np.linalg.lstsq(np.c_[x - x.mean(0)], u - u.mean(0), rcond=None)[0]
    u_mean = (mean - x.mean(0)) @ lin + u.mean(0)
    u_cov = lin.T @ cov @ lin
    lhs = scipy.stats.multivariate_normal(mean, cov).logpdf(x)
    rhs = scipy.stats.multivariate_normal(u_mean, u_cov).logpdf(u) + white.log_det
    np.testing.assert_allclose(lhs, rhs, atol=2e-3)
    # the map's inverse recovers the data; the fitted statistics whiten the training data
    np.testing.assert_allclose(white.to_data(u), x, atol=1e-4)
    fit = np.concatenate([white.train_batch(0, s, 128) for s in range(64)])
    np.testing.assert_allclose(fit.mean(0), 0.0, atol=1e-4)
    c = np.cov(fit, rowvar=False)
    if method == "standardize":
        np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-4)
    else:
        np.testing.assert_allclose(c, np.eye(5), atol=1e-4)


def test_whitening_refuses_bad_input():
    src, _, _ = _gaussian_source()
    with pytest.raises(ValueError, match="unknown whitening 'pcaa'"):
        data.whitened(src, "pcaa")
    assert data.whitened(src, "none") is src
    images = data.DataSource(name="img", shape=(2, 2, 1), train_batch=None, val=None, test=None)
    with pytest.raises(ValueError, match="flat examples"):
        data.whitened(images, "pca")


# --------------------------------------------------------------------------------------
# The data-set table
# --------------------------------------------------------------------------------------


class _DataConfig:
    """The fields of ``experiments.config.DataConfig`` that :func:`make_source` reads."""

    def __init__(self, name, directory="", **changes):
        self.name, self.directory = name, directory
        self.random_flip, self.val_fraction, self.dequantize_train = False, 0.1, True
        self.n_val, self.n_test = 20, 30
        for key, value in changes.items():
            setattr(self, key, value)


def test_every_data_set_is_in_one_table():
    assert tuple(data.DATASETS) == (*data.TOY_DATASETS, "digits", "mnist", "cifar10")
    assert data.IMAGE_DATASETS == ("digits", "mnist", "cifar10")
    for name in data.DATASETS:
        assert data.is_image_dataset(name) == (name in data.IMAGE_DATASETS)
    for lookup in (data.is_image_dataset, lambda name: data.make_source(_DataConfig(name))):
        with pytest.raises(ValueError, match="unknown data set data.name='mnits'") as err:
            lookup("mnits")
        assert all(name in str(err.value) for name in data.DATASETS)


def test_is_image_and_discrete():
    toy = data.make_source(_DataConfig("moons"))
    digits = data.make_source(_DataConfig("digits"))
    assert not toy.is_image and not toy.discrete
    assert digits.is_image and digits.discrete
    flat = data.flattened(digits)
    assert flat.shape == (64,) and flat.is_image and flat.discrete
    assert data.whitened(flat, "standardize").is_image


def test_image_data_sets_say_how_to_point_at_their_files(tmp_path):
    for name in ("mnist", "cifar10"):
        with pytest.raises(ValueError, match=f"data.name={name} needs data.directory=PATH"):
            data.make_source(_DataConfig(name))
        missing = tmp_path / "nowhere"
        with pytest.raises(FileNotFoundError, match="is not a directory.*data.directory=PATH"):
            data.make_source(_DataConfig(name, str(missing)))
        with pytest.raises(FileNotFoundError, match="not found|no train.*data.directory=PATH"):
            data.make_source(_DataConfig(name, str(tmp_path)))


def test_relative_data_directories_resolve_under_the_env_var_or_the_project_root(
    tmp_path, monkeypatch
):
    """A relative data.directory never depends on the current directory: it is taken
    under $SCORESDE_DATA, or (unset) under the project root."""
    from experiments.data import _source

    (tmp_path / "mnist").mkdir()
    _write_mnist(tmp_path / "mnist", "train", 3, gz=False)
    _write_mnist(tmp_path / "mnist", "t10k", 2, gz=False)
    monkeypatch.chdir(tmp_path / "mnist")  # from here "." would be the data; it is not used
    monkeypatch.delenv("SCORESDE_DATA", raising=False)
    root = Path(__file__).resolve().parents[2]
    assert _source.resolve_directory("../shared/data/mnist") == root / "../shared/data/mnist"
    assert _source.resolve_directory(str(tmp_path)) == tmp_path  # absolute: as given
    with pytest.raises(FileNotFoundError, match=f"resolved to {root}"):
        data.make_source(_DataConfig("mnist", "mnist"))
    monkeypatch.setenv("SCORESDE_DATA", str(tmp_path))
    assert _source.resolve_directory("mnist") == tmp_path / "mnist"
    source = data.make_source(_DataConfig("mnist", "mnist", val_fraction=1 / 3))
    assert len(source.test(0)) == 2
