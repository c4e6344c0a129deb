"""Checks of experiments.evaluation.image_metrics against closed forms, brute force and known
answers (identical sets, disjoint sets, half the modes)."""

from __future__ import annotations

import itertools
import os

import jax
import numpy as np
import pytest
import scipy.linalg

from experiments.evaluation import image_metrics as sm

# --------------------------------------------------------------------------- Fréchet


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = sm.frechet_distance_from_moments(m1, np.diag(v1), m2, np.diag(v2))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_full_covariance_matches_scipy_sqrtm():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    cross = np.real(scipy.linalg.sqrtm(s1 @ s2))
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * cross)
    got = sm.frechet_distance_from_moments(m1, s1, m2, s2)
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    # Rank-deficient covariance (the case where sqrtm is least stable).
    c = rng.normal(size=(6, 2))
    s3 = c @ c.T
    cross = np.real(scipy.linalg.sqrtm(s3 @ s2))
    expected = np.sum((m1 - m2) ** 2) + np.trace(s3 + s2 - 2 * cross)
    got = sm.frechet_distance_from_moments(m1, s3, m2, s2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_frechet_from_samples_approaches_gaussian_value():
    rng = np.random.default_rng(2)
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 1.0, 0.0])
    v1, v2 = np.array([1.0, 2.0, 0.5]), np.array([0.5, 2.0, 2.0])
    f1 = m1 + np.sqrt(v1) * rng.normal(size=(20000, 3))
    f2 = m2 + np.sqrt(v2) * rng.normal(size=(20000, 3))
    expected = np.sum((m1 - m2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))  # 1.5429
    assert abs(sm.frechet_distance(f1, f2) - expected) < 0.05
    assert sm.frechet_distance(f1, f1) < 1e-9


# --------------------------------------------------------------------------- KID


def _mmd2_brute_force(x, y):
    def k(a, b):
        return (np.dot(a, b) / len(a) + 1.0) ** 3

    m = len(x)
    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    kxx = sum(k(x[i], x[j]) for i, j in pairs) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return kxx + kyy - 2 * kxy


def test_kid_matches_brute_force_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(6, 4))
    # One subset of all 6 points: a permutation, to which the estimator is invariant.
    mean, std = sm.kernel_inception_distance(x, y, subsets=1, subset_size=6)
    np.testing.assert_allclose(mean, _mmd2_brute_force(x, y), rtol=1e-10)
    assert std == 0.0


def test_kid_same_distribution_near_zero_and_shift_positive():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    mean, std = sm.kernel_inception_distance(x, y, subsets=20, subset_size=200)
    assert std > 0 and abs(mean) < 3 * std
    shifted, shifted_std = sm.kernel_inception_distance(x, y + 1.0, subsets=20, subset_size=200)
    assert shifted > 5 * shifted_std and shifted > 10 * std


# --------------------------------------------------------------------------- precision/recall


def _pr_brute_force(real, fake, k):
    def radii(s):
        d = np.linalg.norm(s[:, None] - s[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def covered(points, centres, r):
        d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
        return np.mean([any(d[i, j] <= r[j] for j in range(len(centres))) for i in range(len(d))])

    return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


def test_precision_recall_matches_brute_force_in_small_blocks():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(60, 3)), rng.normal(0.7, 1.3, size=(45, 3))
    got = sm.precision_recall(real, fake, k=4, block=7)
    np.testing.assert_allclose(got, _pr_brute_force(real, fake, 4))


def test_precision_recall_identical_and_disjoint_sets():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 5))
    assert sm.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    assert sm.precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_half_the_modes():
    rng = np.random.default_rng(7)
    modes = 20.0 * np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    real = np.concatenate([m + rng.normal(size=(250, 2)) for m in modes])
    fake = np.concatenate([m + rng.normal(size=(500, 2)) for m in modes[:2]])
    precision, recall = sm.precision_recall(real, fake, k=3)
    assert precision > 0.95
    assert 0.45 < recall <= 0.5  # every real point of the two covered modes, give or take


# --------------------------------------------------------------------------- validation


def test_errors_name_the_bad_value():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="k=0"):
        sm.precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="k=10"):
        sm.precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="1 points; at least 2"):
        sm.frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        sm.kernel_inception_distance(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="subsets=0"):
        sm.kernel_inception_distance(x, x, subsets=0)
    with pytest.raises(ValueError, match=r"\[-1.01, 1.01\]"):
        sm.train_classifier(np.full((4, 8, 8, 1), 2.0, np.float32), np.zeros(4, int), num_classes=2)
    with pytest.raises(ValueError, match="x / 127.5 - 1"):
        sm.train_classifier(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, int), num_classes=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sm.train_classifier(np.zeros((4, 8, 8, 1), np.float32), np.full(4, 2), num_classes=2)


# --------------------------------------------------------------------------- classifier


def _patterns(n, seed):
    """Three classes of 8x8 images: a horizontal bar, a vertical bar or a 3x3 square at
    a random place, +1 on a -1 background, plus N(0, 0.3^2) noise, clipped."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = -np.ones((n, 8, 8, 1), np.float32)
    rows, cols = rng.integers(0, 6, n), rng.integers(0, 6, n)
    for i, (label, a, b) in enumerate(zip(y, rows, cols, strict=True)):
        if label == 0:
            x[i, a + 1, 1:7] = 1.0
        elif label == 1:
            x[i, 1:7, a + 1] = 1.0
        else:
            x[i, a : a + 3, b : b + 3] = 1.0
    x = np.clip(x + 0.3 * rng.normal(size=x.shape), -1.0, 1.0).astype(np.float32)
    return x, y


TINY = dict(steps=150, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def data():
    return _patterns(600, seed=0), _patterns(300, seed=1)


@pytest.fixture(scope="module")
def classifier(data):
    (x, y), _ = data
    return sm.train_classifier(x, y, num_classes=3, progress=False, **TINY)


def test_classifier_learns_held_out_patterns(classifier, data):
    _, (xt, yt) = data
    assert np.mean(np.argmax(np.asarray(classifier(xt)), 1) == yt) >= 0.95


def test_batched_outputs_equal_one_forward_pass_and_compile_once(classifier, data):
    _, (xt, _) = data
    direct_logits = np.asarray(classifier(xt))
    direct_features = np.asarray(classifier.embed(xt))
    feats, logits = classifier.features_and_logits(xt, batch_size=70)  # 300 = 4 * 70 + 20
    assert feats.shape == (300, sm.Classifier.FEATURE_DIM) and logits.shape == (300, 3)
    np.testing.assert_allclose(logits, direct_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats, direct_features, rtol=1e-5, atol=1e-5)
    compiled = sm._forward._cache_size()
    classifier.logits(xt[:250], batch_size=70)  # a different N, the same batch shape
    assert sm._forward._cache_size() == compiled


def test_load_or_train_round_trip_and_retrain_on_new_fingerprint(tmp_path, data, monkeypatch):
    (x, y), (xt, _) = data
    x, y = x[:200], y[:200]
    path = tmp_path / "clf.npz"
    first = sm.load_or_train(path, x, y, num_classes=3, progress=False, steps=20)
    assert path.is_file()
    info = sm.cache_info(path)
    assert info["train_accuracy"] == np.mean(np.argmax(np.asarray(first(x)), 1) == y)
    with np.load(path, allow_pickle=False) as saved:  # plain arrays, no pickled objects
        assert all(saved[name].dtype != object for name in saved.files)
    mtime = os.stat(path).st_mtime_ns

    def must_not_train(*args, **kwargs):
        raise AssertionError("load_or_train retrained although the cache matched")

    monkeypatch.setattr(sm, "train_classifier", must_not_train)
    again = sm.load_or_train(path, x, y, num_classes=3, progress=False, steps=20)
    np.testing.assert_array_equal(again.logits(xt), first.logits(xt))
    assert os.stat(path).st_mtime_ns == mtime

    calls = []
    monkeypatch.setattr(sm, "train_classifier", lambda *a, **kw: calls.append(kw) or first)
    sm.load_or_train(path, x, y, num_classes=3, progress=False, steps=21)  # hyper-parameter
    y_changed = y.copy()
    y_changed[0] = (y_changed[0] + 1) % 3
    sm.load_or_train(path, x, y_changed, num_classes=3, progress=False, steps=21)  # data
    assert [c["steps"] for c in calls] == [21, 21]


def test_sample_metrics_of_reference_against_itself(classifier, data):
    _, (xt, yt) = data
    out = sm.sample_metrics(classifier, xt, xt, labels=yt, reference_labels=yt, kid_subset_size=100)
    predicted = np.argmax(np.asarray(classifier(xt)), 1)
    assert out["n_samples"] == out["n_reference"] == 300
    assert out["fid"] < 1e-6
    assert (out["precision"], out["recall"]) == (1.0, 1.0)
    assert out["class_histogram"] == [int(np.sum(predicted == c)) for c in range(3)]
    assert out["accuracy"] == out["reference_accuracy"] == np.mean(predicted == yt)
    # Noise moves every metric the wrong way from the floor set by fresh clean samples.
    (x, _), _ = data
    floor = sm.sample_metrics(classifier, x[:300], xt, kid_subset_size=100)
    rng = np.random.default_rng(8)
    noisy = np.clip(xt + 0.8 * rng.normal(size=xt.shape), -1, 1).astype(np.float32)
    worse = sm.sample_metrics(classifier, noisy, xt, kid_subset_size=100)
    assert worse["fid"] > 10 * floor["fid"]
    assert worse["kid"] > floor["kid"] + 3 * floor["kid_std"]
    assert worse["kid"] > 2 * worse["kid_std"]
    assert worse["precision"] < floor["precision"] - 0.3
    assert worse["recall"] < floor["recall"] - 0.1
    assert "accuracy" not in worse and "reference_accuracy" not in worse
    assert out["confident"] == out["reference_confident"] == floor["reference_confident"]
    assert worse["confident"] < floor["confident"]
    with pytest.raises(ValueError, match=r"image shape \(7, 8, 1\)"):
        sm.sample_metrics(classifier, xt[:, :7], xt)


def test_random_shift_translates_with_background_fill():
    x = np.random.default_rng(9).uniform(-1, 1, size=(40, 5, 6, 2)).astype(np.float32)
    shifted = np.asarray(sm._random_shift(x, jax.random.key(0), 1))

    def translate(img, dy, dx):  # out[i, j] = img[i - dy, j - dx], -1 outside
        out = -np.ones_like(img)
        h, w = img.shape[:2]
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
            max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
        ]
        return out

    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    used = set()
    for img, out in zip(x, shifted, strict=True):
        match = [m for m in moves if np.array_equal(out, translate(img, *m))]
        assert len(match) == 1
        used.add(match[0])
    assert len(used) == 9  # every offset occurs among 40 draws


def test_confident_fraction_against_a_direct_softmax():
    logits = np.array(
        [[10.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 0.5], [-900.0, -905.0, -910.0]]
    )
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for threshold in (0.5, 0.9, 0.99):
        expected = np.mean(probs.max(1) >= threshold)
        assert sm.confident_fraction(logits, threshold) == pytest.approx(expected)
    assert sm.confident_fraction(logits, 0.9) == 0.5  # rows 0 and 3 (p = 0.9999, 0.9933)
    with pytest.raises(ValueError, match="threshold must lie in"):
        sm.confident_fraction(logits, 1.0)
