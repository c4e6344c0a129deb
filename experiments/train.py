"""Training: denoising score matching with Optax, EMA weights, Orbax checkpoints.

``train(cfg, workdir)`` runs (or resumes) a run: the step is jitted once with the
split/merge pattern, batches and PRNG keys are pure functions of ``(seed, step)``, so a
run killed at any moment and restarted ends with exactly the parameters of an
uninterrupted one. A non-finite loss stops the run before anything is saved, keeping
the last good checkpoint.
"""

from __future__ import annotations

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
from experiments.checkpoint import Checkpoints
from experiments.data import DataSource, flattened, make_source


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def build_sde(c: config_lib.SDEConfig) -> sde_lib.AbstractSDE:
    if c.name == "vp":
        return sde_lib.VPSDE(beta_min=c.beta_min, beta_max=c.beta_max)
    if c.name == "subvp":
        return sde_lib.SubVPSDE(beta_min=c.beta_min, beta_max=c.beta_max)
    return sde_lib.VESDE(sigma_min=c.sigma_min, sigma_max=c.sigma_max)


def build_parametrisation(c: config_lib.ModelConfig) -> networks.AbstractParametrisation:
    if c.parametrisation == "noise":
        return networks.NoisePrediction()
    if c.parametrisation == "score":
        return networks.DirectScore()
    return networks.EDMDenoiser(sigma_data=c.sigma_data)


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
            shape[0], hidden=c.hidden, depth=c.depth, cond_dim=c.cond_dim, **common
        )
    if len(shape) != 3:
        raise config_lib.ConfigError(f"model.architecture=unet needs [H, W, C] data, got {shape}")
    return networks.SmallUNet(
        shape[-1], channels=c.channels, num_res_blocks=c.num_res_blocks, **common
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
        self.sde = build_sde(cfg.sde)
        self.param = build_parametrisation(cfg.model)
        self.tx, self.schedule = build_optimizer(cfg.train)
        model = build_model(cfg.model, self.source.shape, cfg.train.seed)
        model.train()
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        ema = nnx.EMA(model, decay=cfg.train.ema_decay, only=nnx.Param)
        self.graphdef, self.state = nnx.split((model, optimizer, ema))

    def abstract_state(self) -> nnx.State:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.state)

    def make_step(self):
        graphdef, forward, param, t = self.graphdef, self.sde, self.param, self.cfg.train
        base_key = jax.random.key(t.seed)

        def loss_fn(model, batch, key):
            score_fn = networks.score_fn(model, forward, param)
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

        @jax.jit
        def step(state, batch, step_index):
            model, optimizer, ema = nnx.merge(graphdef, state)
            key = jax.random.fold_in(base_key, step_index)
            loss, grads = nnx.value_and_grad(loss_fn)(model, batch, key)
            optimizer.update(model, grads)
            ema.update(model)
            return nnx.state((model, optimizer, ema)), loss, optax.tree.norm(grads)

        return step

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


def validation_nll(setup: Setup, state: nnx.State, n: int) -> float:
    """Mean NLL (nats per example) of the EMA model on the first ``n`` validation points."""
    x = jnp.asarray(setup.source.val(setup.cfg.train.seed)[:n])
    e = setup.cfg.eval
    logp, _ = samplers.log_likelihood(
        score_fn=setup.score_function(state),
        sde=setup.sde,
        x=x,
        key=jax.random.key(0),
        rtol=e.rtol,
        atol=e.atol,
        eps=e.likelihood_eps,
        divergence=e.divergence,
        n_probes=e.n_probes,
    )
    return float(-jnp.mean(logp))


def progress_samples(setup: Setup, state: nnx.State, step: int, workdir: pathlib.Path) -> None:
    """A quick look at the EMA model during training: progress/samples_STEP.png."""
    import diffrax

    from experiments import plotting

    n = 64 if setup.source.discrete else 2000
    x, _ = samplers.sample_ode(
        score_fn=setup.score_function(state),
        sde=setup.sde,
        shape=(n, *setup.source.shape),
        key=jax.random.key(step),
        solver=diffrax.Heun(),
        steps=50,
        eps=setup.cfg.eval.sample_eps,
    )
    out = workdir / "progress"
    out.mkdir(exist_ok=True)
    title = f"step {step} (EMA, PF-ODE Heun 50 steps)"
    if setup.source.discrete:
        images = np.asarray(x).reshape(-1, *(setup.source.image_shape or setup.source.shape))
        plotting.image_grid(
            images, out / f"samples_{step}.png", setup.source.data_range, title=title
        )
    else:
        plotting.scatter_grid({title: np.asarray(x)}, out / f"samples_{step}.png")


def prepare_workdir(cfg: config_lib.Config, workdir: pathlib.Path) -> config_lib.Config:
    """Write ``config.json``, or check a resumed run's config against it."""
    path = workdir / "config.json"
    if path.exists():
        saved = config_lib.read(path)
        changed = [k for k in config_lib.differences(saved, cfg) if k != "train.steps"]
        if changed and (workdir / "checkpoints").exists():
            raise config_lib.ConfigError(
                f"{workdir} holds a run with a different config ({', '.join(changed)}); "
                "use a new --workdir, or the same config (only train.steps may change)"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    config_lib.save(cfg, path)
    return cfg


def train(cfg: config_lib.Config, workdir: pathlib.Path, progress: bool = True) -> dict:
    """Train (or resume) and return a summary; see the module docstring."""
    workdir = pathlib.Path(workdir)
    setup = Setup(cfg)  # builds everything first: a bad config writes nothing
    prepare_workdir(cfg, workdir)
    t = cfg.train
    ckpts = Checkpoints(workdir / "checkpoints", keep=t.keep)
    best = Checkpoints(workdir / "best", keep=1) if t.eval_every > 0 else None
    state, start, best_val = setup.state, 0, math.inf
    restored = ckpts.restore_latest(setup.abstract_state())
    if restored is not None:
        state, meta = restored
        start, best_val = int(meta["step"]), float(meta.get("best_val_nll", math.inf))
    metrics_path = workdir / "metrics.jsonl"
    _truncate_metrics(metrics_path, start)
    step_fn = setup.make_step()
    bar = tqdm(
        total=t.steps,
        initial=start,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    window, last_log_time, started = [], time.perf_counter(), time.perf_counter()
    try:
        with metrics_path.open("a") as log:
            for step in range(start, t.steps):
                batch = setup.source.train_batch(t.seed, step, t.batch_size)
                new_state, loss, grad_norm = step_fn(state, batch, jnp.int32(step))
                loss = float(loss)
                if not math.isfinite(loss):
                    last = ckpts.steps()[-1] if ckpts.steps() else None
                    raise TrainingDiverged(
                        f"loss is {loss} at step {step + 1}; training stopped. The last good "
                        f"checkpoint (step {last}) is kept in {workdir / 'checkpoints'}. Try a "
                        f"lower train.lr (now {t.lr}) or train.grad_clip > 0 (now {t.grad_clip})."
                    )
                state = new_state
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
                        record["val_nll"] = validation_nll(setup, state, t.n_eval_val)
                        progress_samples(setup, state, done, workdir)
                        if record["val_nll"] < best_val:
                            best_val = record["val_nll"]
                            best.save(done, state, {"step": done, "val_nll": best_val})
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                if done % t.ckpt_every == 0 or done == t.steps:
                    ckpts.save(done, state, {"step": done, "best_val_nll": best_val})
    finally:
        bar.close()
        ckpts.close()
    return {
        "steps": t.steps,
        "resumed_from": start,
        "train_seconds": time.perf_counter() - started,
        "best_val_nll": best_val if math.isfinite(best_val) else None,
    }


def load_state(workdir: pathlib.Path, prefer_best: bool = True) -> tuple[Setup, nnx.State, int]:
    """The run's setup and its best-on-validation (else latest) state."""
    workdir = pathlib.Path(workdir)
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{workdir} has no config.json: train a model there first")
    setup = Setup(config_lib.read(path))
    for sub in ("best", "checkpoints") if prefer_best else ("checkpoints",):
        if (workdir / sub).exists():
            restored = Checkpoints(workdir / sub, keep=10).restore_latest(setup.abstract_state())
            if restored is not None:
                return setup, restored[0], int(restored[1]["step"])
    raise FileNotFoundError(f"{workdir} has no readable checkpoint")
