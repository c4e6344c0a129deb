"""In-memory training for studies: the training step of :func:`~experiments.training.train`
scanned over chunks of pre-staged host batches, with no work dir and no checkpoints.

:func:`fit` runs the same step (:func:`~experiments.training.step.make_step`: the
config's loss, optimizer, schedule, clipping, EMA and label dropout) on the same
batches (``run.source.train_batch(train.seed, step, train.batch_size)``, with
``train_labels`` for a class-conditional run) with the same step keys, so its loss
trajectory is that of ``scoresde train`` on the config; only the host loop differs:
``chunk`` steps are staged on the host and run as one jitted ``lax.scan``, which is
what makes the many short runs of a study cheap. Example::

    run = Run.create(config.load("8gaussians", ["train.steps=300"]))
    run, losses, timing = training.fit(run, chunk=100)
    x, stats = samplers.sample_ode(score_fn=run.score_function(), sde=run.sde, ...)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from experiments import build, distributed
from experiments.data import DataSource
from experiments.run import Run
from experiments.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall time of a chunked training run."""

    seconds: float  # the whole run, including the first chunk's compilation
    step_seconds: float  # per step, after the first chunk (no compilation)

    @classmethod
    def of_chunks(cls, ends: list[float], sizes: list[int]) -> Timing:
        """From the start time and each chunk's end time (``ends``, one more than
        ``sizes``) and each chunk's number of steps. The first chunk compiles, or not,
        depending on what ran before, so the per-step cost leaves it out (with one
        chunk only, it is the whole run's mean)."""
        if len(ends) != len(sizes) + 1 or not sizes:
            raise ValueError(f"need one end per chunk plus the start, got {ends} for {sizes}")
        if len(sizes) == 1:
            per_step = (ends[1] - ends[0]) / sizes[0]
        else:
            per_step = (ends[-1] - ends[1]) / sum(sizes[1:])
        return cls(seconds=ends[-1] - ends[0], step_seconds=per_step)


def staged_batches(
    source: DataSource,
    seed: int,
    steps: range,
    batch_size: int,
    chunk: int,
    labels: bool = False,
) -> Iterator[tuple[jax.Array, jax.Array | tuple[jax.Array, jax.Array]]]:
    """Yield ``(step indices [K], batches [K, B, ...])`` for the ``steps``, ``chunk`` at
    a time, from ``source.train_batch(seed, step, batch_size)`` on the host; with
    ``labels`` each batch is ``(x, labels)`` (``source.train_labels``, int32)."""
    if chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got chunk={chunk!r}")
    for first in range(steps.start, steps.stop, chunk):
        idx = np.arange(first, min(first + chunk, steps.stop), dtype=np.int32)
        x = np.stack([source.train_batch(seed, int(i), batch_size) for i in idx])
        if not labels:
            yield jnp.asarray(idx), jnp.asarray(x)
            continue
        y = np.stack([source.train_labels(seed, int(i), batch_size) for i in idx])
        yield jnp.asarray(idx), (jnp.asarray(x), jnp.asarray(y.astype(np.int32)))


def _scanned(step):
    """``run(state, idx [K], batches [K, ...]) -> (state, losses [K])``, jitted."""

    @jax.jit
    def run(state, idx, batches):
        def body(state, inputs):
            i, batch = inputs
            state, loss, _ = step(state, batch, i)
            return state, loss

        return jax.lax.scan(body, state, (idx, batches))

    return run


def fit(
    run: Run, *, steps: int | None = None, chunk: int = 500, mesh=None
) -> tuple[Run, np.ndarray, Timing]:
    """Train ``run`` in memory from its initial weights for the first ``steps`` steps
    of its config (default ``train.steps``); returns the run with the trained weights
    (network and EMA), the loss of every step ``[steps]`` and the :class:`Timing`.

    The data are ``run.source`` (replace it, ``run.replace(source=...)``, to train on
    other data). Non-finite losses are returned, not raised (``train`` stops instead).
    One process only; ``mesh`` (default: all its devices) splits each batch.
    """
    t = run.cfg.train
    steps = t.steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got steps={steps!r}")
    if run.step != 0:
        raise ValueError(
            f"fit starts at step 0 with a fresh optimizer; got a run at step {run.step} "
            "(resume with training.train)"
        )
    if jax.process_count() > 1:
        raise ValueError("fit trains in one process; use training.train for multi-process runs")
    mesh = distributed.mesh() if mesh is None else mesh
    tx, _ = build.optimizer(t)
    graphdef, state = step_lib.init(run, tx)
    shardings = distributed.state_shardings(state, mesh, fsdp=t.fsdp)
    state = distributed.put(state, shardings)
    scan = _scanned(step_lib.make_step(run, graphdef, shardings, mesh))
    span, labelled = range(steps), bool(run.cfg.model.num_classes)
    losses, ends = [], [time.perf_counter()]
    for idx, batches in staged_batches(run.source, t.seed, span, t.batch_size, chunk, labelled):
        state, loss = scan(state, idx, batches)
        losses.append(np.asarray(loss))
        ends.append(time.perf_counter())
    weights = step_lib.items(graphdef, state)["weights"]
    timing = Timing.of_chunks(ends, [len(x) for x in losses])
    return run.replace(state=weights, step=span.stop), np.concatenate(losses), timing
