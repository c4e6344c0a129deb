"""Class labels through the data pipeline, class-conditional training with label dropout,
``--class/--guidance`` sampling, and the marginal Gaussianization of image pixels."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import networks
from experiments import config as config_lib
from experiments import evaluation, training
from experiments.config import DataConfig
from experiments.data import (
    DIGITS_LEVELS,
    batch_indices,
    flattened,
    gaussianized,
    load_digits,
    make_source,
)
from experiments.run import Run

SMALL = [
    "train.batch_size=32",
    "train.log_every=1",
    "train.eval_every=0",
    "model.hidden=16",
    "model.depth=1",
    "model.embed_dim=8",
    "model.cond_dim=8",
    "model.num_classes=10",
    "eval.rtol=1e-3",
    "eval.atol=1e-3",
    "eval.batch_size=20",
]


# ---- labels in the data pipeline -------------------------------------------------------


def test_labels_are_those_of_the_batch_images():
    src = make_source(DataConfig(name="digits"))
    images, labels = load_digits("train_minus_val")
    assert src.num_classes == 10 and src.n_train == len(images)
    for step in (0, 7, 100):  # across epochs
        idx = batch_indices(len(images), 32, 3, step)
        np.testing.assert_array_equal(src.train_labels(3, step, 32), labels[idx])
        x = src.train_batch(3, step, 32)
        # the dequantised batch lies in the bins of exactly those images
        width = 2.0 / DIGITS_LEVELS
        np.testing.assert_array_equal(np.floor((x + 1.0) / width), images[idx])
    np.testing.assert_array_equal(src.test_labels, load_digits("test")[1])
    np.testing.assert_array_equal(src.val_labels, load_digits("val")[1])
    flat = flattened(src)  # flattening keeps them
    np.testing.assert_array_equal(flat.train_labels(3, 0, 32), src.train_labels(3, 0, 32))


# ---- marginal Gaussianization ----------------------------------------------------------


def test_gaussianized_standard_normal_is_exactly_the_pixel_histogram_model():
    """With u ~ N(0, I) the model is the product of the per-pixel training histograms,
    uniformly dequantised: log N(u) + log|du/dx| must equal sum_i log(P_ik / w), with
    P counted here from the raw training images."""
    src = gaussianized(flattened(make_source(DataConfig(name="digits"))), pseudo_count=0.1)
    images, _ = load_digits("train_minus_val")
    test_images, _ = load_digits("test")
    flat, test_flat = images.reshape(len(images), -1), test_images.reshape(len(test_images), -1)
    counts = np.stack([np.bincount(c, minlength=DIGITS_LEVELS) for c in flat.T]) + 0.1
    probs = counts / counts.sum(axis=1, keepdims=True)
    width = 2.0 / DIGITS_LEVELS
    expected = np.log(probs[np.arange(64), test_flat] / width).sum(axis=1)
    u = src.test(0).astype(np.float64)
    log_normal = -0.5 * (u**2).sum(axis=1) - 32 * math.log(2 * math.pi)
    got = log_normal + src.log_jacobian(src.test(0))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3)  # float32 u, 64 pixels
    # an exact bijection: back to the dequantised test images
    x = make_source(DataConfig(name="digits")).test(0).reshape(len(u), -1)
    np.testing.assert_allclose(src.to_data(src.test(0)), x, atol=2e-5)
    with pytest.raises(ValueError, match="finite set of discrete data"):
        gaussianized(make_source(DataConfig(name="checkerboard")))


def test_gaussianized_composes_with_whitening():
    """pca after Gaussianization: the log-Jacobians add (constant + per example)."""
    cfg = config_lib.load("digits", [*SMALL, "data.gaussianize=true", "model.num_classes=0"])
    setup = Run.create(cfg)
    plain = gaussianized(flattened(make_source(DataConfig(name="digits"))))
    u = setup.source.test(0)[:8]
    v = plain.test(0)[:8]
    np.testing.assert_allclose(
        setup.source.log_jacobian(u),
        plain.log_jacobian(v) + setup.source.log_det,
        rtol=1e-5,
    )
    np.testing.assert_allclose(setup.source.to_data(u), plain.to_data(v), atol=1e-4)


# ---- networks with labels --------------------------------------------------------------


def test_mlp_labels_null_class_and_errors():
    net = networks.MLPScoreNet(4, hidden=16, depth=1, num_classes=3, rngs=nnx.Rngs(0))
    net.out.kernel[...] = jax.random.normal(jax.random.key(1), net.out.kernel[...].shape)
    x, t = jax.random.normal(jax.random.key(2), (4, 4)), jnp.full((4,), 0.3)
    np.testing.assert_array_equal(net(x, t), net(x, t, labels=jnp.full((4,), 3)))
    out = net(x, t, labels=jnp.array([0, 1, 2, 0]))
    other = net(x, t, labels=jnp.array([0, 2, 2, 1]))
    changed = ~np.all(np.isclose(out, other), axis=1)
    np.testing.assert_array_equal(changed, [False, True, False, True])
    with pytest.raises(ValueError, match="num_classes=None"):
        networks.MLPScoreNet(4, hidden=8, depth=1, rngs=nnx.Rngs(0))(x, t, labels=out[:, 0])
    with pytest.raises(ValueError, match=r"labels must be integers of shape \[B\]"):
        net(x, t, labels=jnp.zeros(3, jnp.int32))


def test_small_unet_labels_null_class_and_errors():
    net = networks.SmallUNet(1, channels=(16,), num_classes=3, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)  # zero-initialised convs: perturb
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [v + 0.1 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys, strict=True)]
    net = nnx.merge(graphdef, jax.tree.unflatten(tree, leaves), rest)
    x, t = jax.random.normal(jax.random.key(2), (4, 4, 4, 1)), jnp.full((4,), 0.3)
    np.testing.assert_array_equal(net(x, t), net(x, t, labels=jnp.full((4,), 3)))
    out = net(x, t, labels=jnp.array([0, 1, 2, 0]))
    other = net(x, t, labels=jnp.array([0, 2, 2, 1]))
    changed = ~np.all(np.isclose(out, other).reshape(4, -1), axis=1)
    np.testing.assert_array_equal(changed, [False, True, False, True])
    with pytest.raises(ValueError, match="num_classes=None"):
        networks.SmallUNet(1, channels=(8,), rngs=nnx.Rngs(0))(x, t, labels=jnp.zeros(4, int))


# ---- training with label dropout -------------------------------------------------------


def _label_rows(run):
    model, _ = nnx.merge(run.graphdef, run.state)
    return np.asarray(model.label.table.embedding[...])


@pytest.mark.parametrize("p_uncond", [0.0, 1.0])
def test_label_dropout_trains_only_the_rows_it_uses(tmp_path, p_uncond):
    """p_uncond = 1: every label is dropped, so only the null row of the label
    embedding gets gradients; p_uncond = 0: the null row never does."""
    cfg = config_lib.load(
        "digits", [*SMALL, "train.steps=3", "train.ckpt_every=3", f"train.p_uncond={p_uncond}"]
    )
    before = _label_rows(Run.create(cfg))
    training.train(cfg, tmp_path / "run", progress=False)
    after = _label_rows(Run.restore(tmp_path / "run"))
    moved = ~np.all(np.isclose(before, after, rtol=0, atol=1e-7), axis=1)
    if p_uncond == 1.0:
        np.testing.assert_array_equal(moved, [False] * 10 + [True])
    else:
        assert not moved[10] and moved[:10].sum() >= 8  # 32 labels cover most classes


def test_class_conditional_sampling_and_errors(tmp_path):
    cfg = config_lib.load("digits", [*SMALL, "train.steps=2", "train.ckpt_every=2"])
    run, _ = training.train(cfg, tmp_path / "cond", progress=False)
    info = evaluation.sample(
        run, n=20, steps=3, method="sde", labels="all", guidance=2.0, progress=False
    )
    saved = np.load(tmp_path / "cond" / "samples.npz")
    np.testing.assert_array_equal(saved["labels"], np.repeat(np.arange(10), 2))
    assert saved["samples"].shape == (20, 64) and info["guidance"] == 2.0
    with pytest.raises(ValueError, match=r"class must lie in \[0, 9\]"):
        evaluation.sample(run, n=4, steps=2, labels=10, progress=False)
    with pytest.raises(ValueError, match="n divisible by 10"):
        evaluation.sample(run, n=15, steps=2, labels="all", progress=False)
    with pytest.raises(ValueError, match="guidance needs a class"):
        evaluation.sample(run, n=4, steps=2, guidance=1.0, progress=False)
    plain = config_lib.load(
        "digits", [*SMALL, "model.num_classes=0", "train.steps=1", "train.ckpt_every=1"]
    )
    run, _ = training.train(plain, tmp_path / "plain", progress=False)
    with pytest.raises(ValueError, match="class-conditional run"):
        evaluation.sample(run, n=4, steps=2, labels=3, progress=False)


@pytest.mark.slow  # the classifier fit is ~30 s on 2 cores; its metrics are tested
# on their own in test_image_metrics.py
def test_sample_quality_of_the_test_images_is_at_the_metrics_floor(tmp_path):
    """The test images themselves as "samples" sit at the metrics' floor, and their
    class accuracy is the classifier's own test accuracy."""
    cfg = config_lib.load("digits", [*SMALL, "train.steps=2", "train.ckpt_every=2"])
    run, _ = training.train(cfg, tmp_path / "cond", progress=False)
    test = make_source(DataConfig(name="digits"))
    np.savez(tmp_path / "cond" / "samples.npz", samples=test.test(0), labels=test.test_labels)
    m = evaluation.sample_quality(run, progress=False)
    assert m["fid"] < 1e-6 and m["precision"] == m["recall"] == 1.0
    assert m["accuracy"] == m["reference_accuracy"] > 0.9
    assert (tmp_path / "cond" / "classifier.npz").exists()


def test_num_classes_must_match_the_data():
    with pytest.raises(config_lib.ConfigError, match="has no class labels"):
        Run.create(config_lib.load("checkerboard", ["model.num_classes=10"]))
    with pytest.raises(config_lib.ConfigError, match="train.p_uncond must lie in"):
        config_lib.load("digits", ["train.p_uncond=1.5"])
