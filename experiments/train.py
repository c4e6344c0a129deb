"""Training: denoising score matching with Optax, EMA weights, Orbax checkpoints.

``train(cfg, workdir)`` runs (or resumes) a run: the step is jitted once with the
split/merge pattern, batches and PRNG keys are pure functions of ``(seed, step)``, so a
run killed at any moment and restarted ends with exactly the parameters of an
uninterrupted one. A non-finite loss stops the run before anything is saved, keeping
the last good checkpoint.

Data parallel over every device of every process (see :mod:`experiments.distributed`):
``train.batch_size`` is the global batch. Each process takes its rows of the batch of
step ``s`` (a pure function of ``(seed, s)``), the step is jitted with explicit
shardings (batch split over the ``data`` axis, state replicated or, with
``train.fsdp=true``, split FSDP-style), and the loss trajectory is that of one device
with the whole batch up to float summation order. Process 0 alone writes
``config.json``, ``metrics.jsonl``, progress images and the progress bar; every
process takes part in computing, checkpointing and restoring.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

import networks
import samplers
import sde as sde_lib
from experiments import config as config_lib
from experiments import distributed
from experiments.checkpoint import Checkpoints
from experiments.data import (
    DataSource,
    flattened,
    gaussianized,
    level_histogram,
    make_source,
    whitened,
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def build_sde(c: config_lib.SDEConfig) -> sde_lib.AbstractSDE:
    if c.name == "vp":
        return sde_lib.VPSDE(beta_min=c.beta_min, beta_max=c.beta_max)
    if c.name == "subvp":
        return sde_lib.SubVPSDE(beta_min=c.beta_min, beta_max=c.beta_max)
    if c.name == "edm":
        return sde_lib.EDMSDE(sigma_min=c.sigma_min, sigma_max=c.sigma_max)
    return sde_lib.VESDE(sigma_min=c.sigma_min, sigma_max=c.sigma_max)


def build_parametrisation(
    c: config_lib.ModelConfig, source: DataSource | None = None, seed: int = 0
) -> networks.AbstractParametrisation:
    """The config's parametrisation; ``model.histogram_base`` needs the data ``source``
    (its training histograms, counted with the training ``seed``)."""
    if c.parametrisation == "noise":
        param = networks.NoisePrediction()
    elif c.parametrisation == "score":
        param = networks.DirectScore()
    else:
        param = networks.EDMDenoiser(sigma_data=c.sigma_data)
    if c.histogram_base:
        if source is None:
            raise ValueError("model.histogram_base needs the data source")
        probs = level_histogram(source, seed=seed)
        return networks.HistogramResidual.from_probs(probs, source.data_range, inner=param)
    return networks.GaussianResidual(param) if c.gaussian_base else param


def build_model(c: config_lib.ModelConfig, shape: tuple[int, ...], seed: int) -> nnx.Module:
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    common = dict(embed_dim=c.embed_dim, embedding=c.embedding, dropout=c.dropout, rngs=rngs)
    if c.architecture == "mlp":
        if len(shape) != 1:
            raise config_lib.ConfigError(
                f"model.architecture=mlp needs flat data, got examples of shape {shape}; "
                "use model.architecture=unet for images"
            )
        return networks.MLPScoreNet(
            shape[0],
            hidden=c.hidden,
            depth=c.depth,
            cond_dim=c.cond_dim,
            num_classes=c.num_classes or None,
            **common,
        )
    if len(shape) != 3:
        raise config_lib.ConfigError(
            f"model.architecture={c.architecture} needs [H, W, C] data, got {shape}"
        )
    if c.architecture in ("ddpmpp", "ncsnpp"):  # score_sde's networks (Song et al. 2021)
        if shape[0] != shape[1] or shape[0] % 2 ** (len(c.ch_mult) - 1):
            raise config_lib.ConfigError(
                f"model.architecture={c.architecture} needs square images whose side is "
                f"divisible by 2^(len(model.ch_mult) - 1); got {shape} and ch_mult={c.ch_mult}"
            )
        return networks.NCSNpp(
            shape[-1],
            image_size=shape[0],
            nf=c.nf,
            ch_mult=tuple(c.ch_mult),
            num_res_blocks=c.num_res_blocks,
            attn_resolutions=tuple(c.attn_resolutions),
            dropout=c.dropout,
            embedding="sinusoidal" if c.architecture == "ddpmpp" else "fourier",
            progressive_input="none" if c.architecture == "ddpmpp" else "residual",
            dtype=None if c.compute_dtype == "float32" else jnp.bfloat16,
            remat=c.remat,
            num_classes=c.num_classes or None,
            rngs=rngs,
        )
    return networks.SmallUNet(
        shape[-1],
        channels=c.channels,
        num_res_blocks=c.num_res_blocks,
        num_classes=c.num_classes or None,
        **common,
    )


def build_optimizer(c: config_lib.TrainConfig):
    if c.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, c.lr, max(c.warmup_steps, 1), max(c.steps, c.warmup_steps + 1), 0.01 * c.lr
        )
    else:
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(0.0, c.lr, max(c.warmup_steps, 1)),
                optax.constant_schedule(c.lr),
            ],
            [max(c.warmup_steps, 1)],
        )
    opt = (
        optax.adamw(schedule, weight_decay=c.weight_decay)
        if c.optimizer == "adamw"
        else optax.adam(schedule)
    )
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip), opt) if c.grad_clip > 0 else opt
    return tx, schedule


class Setup:
    """Everything a config determines: data, SDE, parametrisation, the state and its step."""

    def __init__(self, cfg: config_lib.Config):
        self.cfg = cfg
        self.source: DataSource = make_source(cfg.data)
        if cfg.model.architecture == "mlp":
            self.source = flattened(self.source)  # images become flat vectors
        if cfg.data.gaussianize:
            self.source = gaussianized(self.source, seed=cfg.train.seed)
        if cfg.model.num_classes:
            have = self.source.num_classes
            if have is None or have != cfg.model.num_classes:
                raise config_lib.ConfigError(
                    f"model.num_classes={cfg.model.num_classes} but data.name="
                    f"{cfg.data.name} has {have or 'no'} class labels"
                )
        if cfg.data.whiten != "none":
            if len(self.source.shape) != 1:
                raise config_lib.ConfigError(
                    f"data.whiten={cfg.data.whiten} needs flat examples (model.architecture=mlp)"
                )
            self.source = whitened(self.source, cfg.data.whiten, cfg.train.seed)
        self.sde = build_sde(cfg.sde)
        self.param = build_parametrisation(cfg.model, self.source, cfg.train.seed)
        self.tx, self.schedule = build_optimizer(cfg.train)
        model = build_model(cfg.model, self.source.shape, cfg.train.seed)
        model.train()
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        ema = nnx.EMA(model, decay=cfg.train.ema_decay, only=nnx.Param)
        self.graphdef, self.state = nnx.split((model, optimizer, ema))

    def state_shardings(self, mesh):
        """Replicated state, or FSDP-split with ``train.fsdp``."""
        return distributed.state_shardings(self.state, mesh, fsdp=self.cfg.train.fsdp)

    def abstract_state(self, mesh=None) -> nnx.State:
        """Shapes and dtypes of the state (with its shardings on ``mesh`` if given)."""
        if mesh is None:
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.state)
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.state,
            self.state_shardings(mesh),
        )

    def placed_state(self, mesh) -> nnx.State:
        """The initial state on ``mesh`` (the same on every process)."""
        return distributed.put(self.state, self.state_shardings(mesh))

    def make_step(self, mesh=None, donate: bool = False):
        """``step(state, batch, step_index) -> (state, loss, grad_norm)``, jitted over
        ``mesh`` (default: all devices): ``batch`` split along ``data``, the state on
        :meth:`state_shardings`, loss and gradient norm replicated. With ``donate`` the
        input state's buffers are reused for the output (the caller must not touch the
        old state again)."""
        graphdef, forward, param, t = self.graphdef, self.sde, self.param, self.cfg.train
        base_key = jax.random.key(t.seed)
        mesh = distributed.mesh() if mesh is None else mesh
        state_sh, rep = self.state_shardings(mesh), distributed.replicated(mesh)

        sigma_data = self.cfg.model.sigma_data

        def loss_fn(model, batch, key):
            score_fn = networks.score_fn(model, forward, param)
            if isinstance(batch, tuple):  # (x, labels): class-conditional
                batch, labels = batch
                # classifier-free guidance training: drop each label to the null class
                # with probability p_uncond (Ho & Salimans 2022)
                key, drop_key = jax.random.split(key)
                drop = jax.random.bernoulli(drop_key, t.p_uncond, labels.shape)
                labels = jnp.where(drop, self.cfg.model.num_classes, labels)
                conditional = score_fn

                def score_fn(x, s, labels=labels):
                    return conditional(x, s, labels)

            if t.loss == "edm":
                losses = sde_lib.edm_loss(
                    score_fn,
                    forward,
                    batch,
                    key,
                    p_mean=t.p_mean,
                    p_std=t.p_std,
                    sigma_data=sigma_data,
                )
                return losses.mean()
            losses = sde_lib.dsm_loss(
                score_fn,
                forward,
                batch,
                key,
                weighting=t.weighting,
                t_sampling=t.t_sampling,
                eps=t.eps,
            )
            return losses.mean()

        def step(state, batch, step_index):
            model, optimizer, ema = nnx.merge(graphdef, state)
            key = jax.random.fold_in(base_key, step_index)
            loss, grads = nnx.value_and_grad(loss_fn)(model, batch, key)
            optimizer.update(model, grads)
            ema.update(model)
            return nnx.state((model, optimizer, ema)), loss, optax.tree.norm(grads)

        return jax.jit(
            step,
            in_shardings=(state_sh, distributed.batch_sharded(mesh), rep),
            out_shardings=(state_sh, rep, rep),
            donate_argnums=(0,) if donate else (),
        )

    def score_function(self, state: nnx.State | None = None, use_ema: bool = True):
        """A pure score function of the (EMA) weights in ``state``, for the samplers."""
        model, _, ema = nnx.merge(self.graphdef, self.state if state is None else state)
        if use_ema:
            model = ema.apply_to(model)
        return networks.ScoreFunction.from_module(model, self.sde, self.param)


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """Drop log lines a killed run wrote after its last checkpoint."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= last_step
    ]
    path.write_text("".join(ln + "\n" for ln in keep))


def validation_nll(setup: Setup, state: nnx.State, n: int, mesh=None) -> float:
    """Mean NLL (nats per example) of the EMA model on the first ``n`` validation points,
    the batch split over ``mesh`` (default: all devices)."""
    mesh = distributed.mesh() if mesh is None else mesh
    val = setup.source.val(setup.cfg.train.seed)[:n]
    x, n = distributed.shard_batch(val, mesh)
    e = setup.cfg.eval
    logp, _ = samplers.log_likelihood(
        score_fn=distributed.batch_sharded_score(setup.score_function(state), mesh),
        sde=setup.sde,
        x=x,
        key=jax.random.key(0),
        rtol=e.rtol,
        atol=e.atol,
        eps=e.likelihood_eps,
        divergence=setup.cfg.train.val_divergence,
        n_probes=setup.cfg.train.val_probes,
    )
    # in the data's own units: add the log-Jacobian of the fixed maps (0 without any)
    logp = distributed.to_host(logp)[:n] + setup.source.log_jacobian(val)
    return float(-np.mean(logp))


def progress_samples(
    setup: Setup, state: nnx.State, step: int, workdir: pathlib.Path, mesh=None
) -> None:
    """A quick look at the EMA model during training: progress/samples_STEP.png
    (sampled on every process, written by process 0)."""
    import diffrax

    from experiments import plotting

    mesh = distributed.mesh() if mesh is None else mesh
    n = 64 if setup.source.discrete else 2000
    x, _ = samplers.sample_ode(
        score_fn=distributed.batch_sharded_score(setup.score_function(state), mesh),
        sde=setup.sde,
        shape=(distributed.padded_size(n, mesh), *setup.source.shape),
        key=jax.random.key(step),
        solver=diffrax.Heun(),
        steps=50,
        eps=setup.cfg.eval.sample_eps,
    )
    x = distributed.to_host(x)[:n]
    if setup.source.to_data is not None:
        x = setup.source.to_data(x)
    if not distributed.is_main():
        return
    out = workdir / "progress"
    out.mkdir(exist_ok=True)
    title = f"step {step} (EMA, PF-ODE Heun 50 steps)"
    if setup.source.discrete:
        images = x.reshape(-1, *(setup.source.image_shape or setup.source.shape))
        plotting.image_grid(
            images, out / f"samples_{step}.png", setup.source.data_range, title=title
        )
    else:
        plotting.scatter_grid({title: x}, out / f"samples_{step}.png")


def prepare_workdir(cfg: config_lib.Config, workdir: pathlib.Path) -> config_lib.Config:
    """Write ``config.json``, or check a resumed run's config against it. Every process
    checks; after a barrier, process 0 alone writes."""
    path = workdir / "config.json"
    if path.exists():
        saved = config_lib.read(path)
        changed = [k for k in config_lib.differences(saved, cfg) if k != "train.steps"]
        if changed and (workdir / "checkpoints").exists():
            raise config_lib.ConfigError(
                f"{workdir} holds a run with a different config ({', '.join(changed)}); "
                "use a new --workdir, or the same config (only train.steps may change)"
            )
    distributed.barrier("scoresde-prepare-workdir")  # all have read before anyone writes
    if distributed.is_main():
        workdir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, path)
    distributed.barrier("scoresde-workdir-ready")
    return cfg


def _check_batch(cfg: config_lib.Config, mesh) -> None:
    if cfg.train.batch_size % mesh.size:
        raise config_lib.ConfigError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must be a "
            f"multiple of the number of devices ({mesh.size}); e.g. "
            f"train.batch_size={distributed.padded_size(cfg.train.batch_size, mesh)}"
        )


def train(
    cfg: config_lib.Config,
    workdir: pathlib.Path,
    progress: bool = True,
    mesh=None,
    step_timeout: float | None = None,
) -> dict:
    """Train (or resume) and return a summary; see the module docstring.

    ``mesh`` (default: every device of every process) carries the data parallelism.
    ``step_timeout`` (seconds, default off) arms a :class:`distributed.Watchdog` after
    the first step: a process that makes no progress for that long exits with a message.
    """
    workdir = pathlib.Path(workdir)
    mesh = distributed.mesh() if mesh is None else mesh
    setup = Setup(cfg)  # builds everything first: a bad config writes nothing
    _check_batch(cfg, mesh)
    prepare_workdir(cfg, workdir)
    t, main = cfg.train, distributed.is_main()
    ckpts = Checkpoints(workdir / "checkpoints", keep=t.keep)
    best = Checkpoints(workdir / "best", keep=1) if t.eval_every > 0 else None
    start, best_val = 0, math.inf
    restored = ckpts.restore_latest(setup.abstract_state(mesh))
    if restored is not None:
        state, meta = restored
        start, best_val = int(meta["step"]), float(meta.get("best_val_nll", math.inf))
    else:
        state = setup.placed_state(mesh)
    metrics_path = workdir / "metrics.jsonl"
    if main:
        _truncate_metrics(metrics_path, start)
    step_fn = setup.make_step(mesh, donate=True)
    batch_sharding = distributed.batch_sharded(mesh)
    bar = tqdm(
        total=t.steps,
        initial=start,
        disable=not (progress and main),
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    watchdog = distributed.Watchdog(step_timeout, "scoresde train")
    window, last_log_time, started = [], time.perf_counter(), time.perf_counter()
    try:
        with metrics_path.open("a") if main else contextlib.nullcontext() as log:
            for step in range(start, t.steps):
                batch = distributed.global_batch(
                    setup.source.train_batch(t.seed, step, t.batch_size), batch_sharding
                )
                if cfg.model.num_classes:
                    labels = setup.source.train_labels(t.seed, step, t.batch_size)
                    batch = (
                        batch,
                        distributed.global_batch(labels.astype(np.int32), batch_sharding),
                    )
                new_state, loss, grad_norm = step_fn(state, batch, np.int32(step))
                loss = float(loss)  # replicated: every process sees the same value
                if not math.isfinite(loss):
                    last = ckpts.steps()[-1] if ckpts.steps() else None
                    raise TrainingDiverged(
                        f"loss is {loss} at step {step + 1}; training stopped. The last good "
                        f"checkpoint (step {last}) is kept in {workdir / 'checkpoints'}. Try a "
                        f"lower train.lr (now {t.lr}) or train.grad_clip > 0 (now {t.grad_clip})."
                    )
                state = new_state
                watchdog.beat()
                window.append((loss, float(grad_norm)))
                done = step + 1
                bar.update(1)
                if done % t.log_every == 0 or done == t.steps:
                    now = time.perf_counter()
                    record = {
                        "step": done,
                        "loss": float(np.mean([w[0] for w in window])),
                        "grad_norm": float(np.mean([w[1] for w in window])),
                        "lr": float(setup.schedule(done)),
                        "steps_per_sec": len(window) / (now - last_log_time),
                    }
                    window, last_log_time = [], now
                    if best is not None and (done % t.eval_every == 0 or done == t.steps):
                        record["val_nll"] = validation_nll(setup, state, t.n_eval_val, mesh)
                        progress_samples(setup, state, done, workdir, mesh)
                        if record["val_nll"] < best_val:
                            best_val = record["val_nll"]
                            best.save(done, state, {"step": done, "val_nll": best_val})
                        watchdog.beat()
                    if main:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                if done % t.ckpt_every == 0 or done == t.steps:
                    ckpts.save(done, state, {"step": done, "best_val_nll": best_val})
                    watchdog.beat()
    finally:
        watchdog.stop()
        bar.close()
        ckpts.close()
    return {
        "steps": t.steps,
        "resumed_from": start,
        "train_seconds": time.perf_counter() - started,
        "best_val_nll": best_val if math.isfinite(best_val) else None,
        "devices": mesh.size,
        "processes": jax.process_count(),
    }


def load_state(
    workdir: pathlib.Path, prefer_best: bool = True, mesh=None
) -> tuple[Setup, nnx.State, int]:
    """The run's setup and its best-on-validation (else latest) state, restored onto
    ``mesh`` (default: all devices; replicated, or FSDP-split as the run was trained)."""
    workdir = pathlib.Path(workdir)
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} has no config.json: train a model there first")
    setup = Setup(config_lib.read(path))
    abstract = setup.abstract_state(distributed.mesh() if mesh is None else mesh)
    for sub in ("best", "checkpoints") if prefer_best else ("checkpoints",):
        if (workdir / sub).exists():
            ckpts = Checkpoints(workdir / sub, keep=10)
            restored = ckpts.restore_latest(abstract)
            ckpts.close()
            if restored is not None:
                return setup, restored[0], int(restored[1]["step"])
    raise FileNotFoundError(f"{workdir} has no readable checkpoint")
