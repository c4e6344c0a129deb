"""``training.fit``, the in-memory training of the studies: its chunked scan equals the
jitted training step called once per step on the same batches (losses and weights),
class-conditional runs included, and bad arguments name the value."""

import jax
import numpy as np
import pytest

from experiments import build, distributed, training
from experiments import config as config_lib
from experiments.run import Run
from experiments.training import step as step_lib
from experiments.training.fit import Timing

TINY = [
    "train.steps=6",
    "train.batch_size=32",
    "train.warmup_steps=2",
    "train.ema_decay=0.9",
    "model.hidden=16",
    "model.depth=2",
    "model.embed_dim=8",
    "model.cond_dim=8",
]


def stepwise(run: Run, steps: int):
    """The reference: ``make_step``'s jitted step called ``steps`` times, on the batches
    ``training.train`` feeds it."""
    t = run.cfg.train
    mesh = distributed.mesh()
    graphdef, state = step_lib.init(run, build.optimizer(t)[0])
    shardings = distributed.state_shardings(state, mesh)
    state = distributed.put(state, shardings)
    step = step_lib.make_step(run, graphdef, shardings, mesh)
    losses = []
    for i in range(steps):
        batch = run.source.train_batch(t.seed, i, t.batch_size)
        if run.cfg.model.num_classes:
            batch = (batch, run.source.train_labels(t.seed, i, t.batch_size).astype(np.int32))
        state, loss, _ = step(state, batch, np.int32(i))
        losses.append(float(loss))
    return np.asarray(losses), step_lib.items(graphdef, state)["weights"]


def host(x) -> np.ndarray:
    return np.asarray(jax.random.key_data(x) if distributed.is_prng_key(x) else x)


def assert_same(fitted: Run, losses, ref_losses, ref_weights):
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6, atol=1e-7)
    for x, y in zip(jax.tree.leaves(fitted.state), jax.tree.leaves(ref_weights), strict=True):
        np.testing.assert_allclose(host(x), host(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 6])
def test_fit_equals_the_jitted_step_called_per_step(chunk):
    """6 steps in chunks of 4 + 2 (or one chunk of 6) give the losses and weights of 6
    calls of the step: the trajectory of ``training.train`` on the same config."""
    run = Run.create(config_lib.load("checkerboard", TINY))
    fitted, losses, timing = training.fit(run, chunk=chunk)
    ref_losses, ref_weights = stepwise(run, 6)
    assert losses.shape == (6,) and fitted.step == 6
    assert_same(fitted, losses, ref_losses, ref_weights)
    assert timing.seconds > 0 and timing.step_seconds > 0
    # the first steps of a longer config are the same steps
    _, first, _ = training.fit(run, steps=3, chunk=chunk)
    np.testing.assert_allclose(first, ref_losses[:3], rtol=1e-6, atol=1e-7)


def test_fit_class_conditional_feeds_the_labels():
    """Digits with labels (label dropout inside the step): the same as the step."""
    overrides = [*TINY, "train.steps=3", "model.num_classes=10", "data.whiten=none"]
    run = Run.create(config_lib.load("digits", overrides))
    fitted, losses, _ = training.fit(run, chunk=2)
    ref_losses, ref_weights = stepwise(run, 3)
    assert_same(fitted, losses, ref_losses, ref_weights)


def test_fit_trains_on_a_replaced_source():
    """``run.replace(source=...)`` is how a study trains on its own data."""
    run = Run.create(config_lib.load("checkerboard", TINY))
    other = run.replace(source=Run.create(config_lib.load("8gaussians", TINY)).source)
    a = training.fit(run, steps=2, chunk=2)[0]
    b, losses, _ = training.fit(other, steps=2, chunk=2)
    # (the zero-initialised output layer makes the first losses independent of the data)
    assert any(
        not np.allclose(host(x), host(y))
        for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True)
    )
    assert_same(b, losses, *stepwise(other, 2))


def test_fit_errors_name_the_value():
    run = Run.create(config_lib.load("checkerboard", TINY))
    with pytest.raises(ValueError, match="steps=0"):
        training.fit(run, steps=0)
    with pytest.raises(ValueError, match="chunk=0"):
        training.fit(run, chunk=0)
    with pytest.raises(ValueError, match="step 5"):
        training.fit(run.replace(step=5))


def test_timing_leaves_out_the_first_chunk():
    t = Timing.of_chunks([0.0, 10.0, 11.0, 12.0], [5, 5, 5])
    assert t.seconds == 12.0 and t.step_seconds == pytest.approx(0.2)
    assert Timing.of_chunks([1.0, 3.0], [4]).step_seconds == pytest.approx(0.5)
