"""The training state and the jitted training step.

The state is one nnx state of ``(model, optimizer, ema)``; :func:`init` builds it from
a :class:`~experiments.run.Run`'s weights, :func:`items` splits it into what a
checkpoint holds (``weights``: the network and its EMA copy; ``optimizer``) and
:func:`join` puts them back. :func:`make_step` jits one optimiser step with the
split/merge pattern: the graph is closed over, only the state crosses the boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import networks
from experiments import build, distributed
from experiments.run import Run


def init(run: Run, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, state)`` of ``(model, optimizer, ema)`` from the run's weights."""
    model, ema = nnx.merge(run.graphdef, run.state)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    return nnx.split((model, optimizer, ema))


def items(graphdef: nnx.GraphDef, state: nnx.State) -> dict[str, nnx.State]:
    """What a checkpoint holds: ``weights`` (network and EMA, a :class:`Run`'s state)
    and ``optimizer``. Works on abstract states too (``jax.ShapeDtypeStruct`` leaves)."""
    model, optimizer, ema = nnx.merge(graphdef, state)
    return {"weights": nnx.state((model, ema)), "optimizer": nnx.state(optimizer)}


def join(graphdef: nnx.GraphDef, template: nnx.State, parts: dict[str, nnx.State]) -> nnx.State:
    """The inverse of :func:`items`, shaped like ``template`` (which is not changed)."""
    model, optimizer, ema = nnx.merge(graphdef, jax.tree.map(lambda x: x, template))
    nnx.update((model, ema), parts["weights"])
    nnx.update(optimizer, parts["optimizer"])
    return nnx.state((model, optimizer, ema))


def initial_share(train_cfg) -> float:
    """The weight of the initial (random) parameters in the EMA after ``train.steps``
    steps: the product of the per-step decays (with ``train.ema_warmup``, of
    ``min(decay, (1 + t) / (10 + t))``, which is ~0 after a few steps; without it,
    ``decay ** steps``). Above ~1% the EMA weights are visibly worse than the raw ones."""
    t = np.arange(train_cfg.steps, dtype=np.float64)
    decays = np.full_like(t, train_cfg.ema_decay)
    if train_cfg.ema_warmup:
        decays = np.minimum(decays, (1.0 + t) / (10.0 + t))
    return float(np.exp(np.sum(np.log(decays)))) if train_cfg.ema_decay > 0 else 0.0


def short_run_warning(train_cfg) -> str | None:
    """A sentence when the EMA still holds more than 1% of the initial weights at the
    end of the run (:func:`initial_share`), else None."""
    share = initial_share(train_cfg)
    if share <= 0.01:
        return None
    return (
        f"train.ema_decay={train_cfg.ema_decay:g} over {train_cfg.steps} steps leaves "
        f"{share:.0%} of the initial weights in the EMA: evaluate with --weights raw, "
        "or set train.ema_warmup=true or a lower train.ema_decay"
    )


def make_step(run: Run, graphdef: nnx.GraphDef, state_shardings, mesh, donate: bool = False):
    """``step(state, batch, step_index) -> (state, loss, grad_norm)``, jitted over
    ``mesh``: ``batch`` (an array, or ``(x, labels)`` for a class-conditional run) split
    along ``data``, the state on ``state_shardings``, loss and gradient norm
    replicated. The loss is the config's (:data:`experiments.build.LOSSES`), its key
    ``fold_in(key(train.seed), step_index)``. With ``donate`` the input state's buffers
    are reused for the output (the caller must not touch the old state again)."""
    cfg, forward, param = run.cfg, run.sde, run.param
    loss_of = build.loss(cfg) if run.objective is None else None
    base_key = jax.random.key(cfg.train.seed)
    null_class, p_uncond = cfg.model.num_classes, cfg.train.p_uncond
    rep = distributed.replicated(mesh)
    decay = cfg.train.ema_decay

    def ema_decay(step_index):
        """``train.ema_decay``, warmed up as ``(1 + t) / (10 + t)`` below it when
        ``train.ema_warmup`` (TensorFlow's ``ExponentialMovingAverage(num_updates)``):
        an average over ~t/10 of the steps so far, so a short run's EMA is not stuck
        near its random initialisation. Past t ~ 10 / (1 - decay) it is the plain decay."""
        if not cfg.train.ema_warmup:
            return decay
        t = step_index.astype(jnp.float32)
        return jnp.minimum(decay, (1.0 + t) / (10.0 + t))

    def loss_fn(model, batch, key, step_index):
        labels = None
        if isinstance(batch, tuple):  # (x, labels): class-conditional
            batch, labels = batch
            # classifier-free guidance training: drop each label to the null class
            # with probability p_uncond (Ho & Salimans 2022)
            key, drop_key = jax.random.split(key)
            drop = jax.random.bernoulli(drop_key, p_uncond, labels.shape)
            labels = jnp.where(drop, null_class, labels)
        if run.objective is not None:  # a student's (distillation) objective
            return run.objective(model, batch, key, step_index, labels).mean()
        score = networks.score_fn(model, forward, param)
        if labels is not None:
            conditional = score

            def score(x, t):
                return conditional(x, t, labels)

        return loss_of(score, forward, batch, key).mean()

    def step(state, batch, step_index):
        model, optimizer, ema = nnx.merge(graphdef, state)
        key = jax.random.fold_in(base_key, step_index)
        loss, grads = nnx.value_and_grad(loss_fn)(model, batch, key, step_index)
        optimizer.update(model, grads)
        ema.decay = ema_decay(step_index)  # a traced value, for this update only
        ema.update(model)
        ema.decay = decay
        return nnx.state((model, optimizer, ema)), loss, optax.tree.norm(grads)

    return jax.jit(
        step,
        in_shardings=(state_shardings, distributed.batch_sharded(mesh), rep),
        out_shardings=(state_shardings, rep, rep),
        donate_argnums=(0,) if donate else (),
    )
