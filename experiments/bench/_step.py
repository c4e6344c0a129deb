"""The training step the benchmarks time: the one ``scoresde train`` runs.

:func:`training_step` builds it exactly as :func:`experiments.training.train` does
(the config's optimizer, :func:`experiments.training.init`, the state's shardings,
:func:`experiments.training.make_step`) and places the initial state on the mesh; the
benchmarks then time it on one fixed batch, so that data loading is not measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jax.sharding import Mesh

from experiments import build, distributed, training
from experiments.run import Run


def training_step(run: Run, mesh: Mesh, donate: bool = True) -> tuple[Callable, Any, Any]:
    """``(step, state, batch)``: the jitted ``step(state, batch, step_index) -> (state,
    loss, grad_norm)`` over ``mesh``, the initial ``(model, optimizer, ema)`` state
    placed on its shardings, and the global batch of training step 0 (with its labels
    for a class-conditional run)."""
    train_cfg = run.cfg.train
    if train_cfg.batch_size % mesh.size:
        raise ValueError(
            f"train.batch_size={train_cfg.batch_size} must be a multiple of the {mesh.size} devices"
        )
    tx, _ = build.optimizer(train_cfg)
    graphdef, initial = training.init(run, tx)
    shardings = distributed.state_shardings(initial, mesh, fsdp=train_cfg.fsdp)
    step = training.make_step(run, graphdef, shardings, mesh, donate=donate)
    batch = training.global_batch(run, 0, distributed.batch_sharded(mesh))
    return step, distributed.put(initial, shardings), batch
