r"""A small GAN baseline: MLP generator and discriminator (Flax NNX), Optax Adam.

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014. With a discriminator
logit :math:`D`, a generator :math:`G` and :math:`z \sim N(0, I)`, the losses are

``"ns"`` (non-saturating, Goodfellow et al. 2014, Sec. 3)
    :math:`L_D = E\,\mathrm{softplus}(-D(x)) + E\,\mathrm{softplus}(D(G(z)))`,
    :math:`L_G = E\,\mathrm{softplus}(-D(G(z)))`.
``"r1"`` (Mescheder, Geiger and Nowozin, "Which Training Methods for GANs do actually
Converge?", ICML 2018)
    ``"ns"`` plus :math:`\tfrac{\gamma}{2} E\,\|\nabla_x D(x)\|^2` on real data.
``"wgan-gp"`` (Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017)
    :math:`L_D = E\,D(G(z)) - E\,D(x) + \lambda E(\|\nabla D(\hat x)\|-1)^2` on
    :math:`\hat x = u x + (1-u) G(z)`, :math:`u \sim U[0,1]`; :math:`L_G = -E\,D(G(z))`.

One discriminator update, then one generator update on a fresh latent draw, per step.
The training state is ``nnx.split((generator, discriminator, opt_g, opt_d))`` and the
step merges it inside ``jit`` (as ``experiments.training`` does). Batches come from a
:class:`experiments.data.DataSource`'s ``train_batch(seed, step, batch_size)`` and the
step's key is ``fold_in(key(seed), step)``, so a run is a pure function of its config.
The learning rate lives in the optimiser state (``optax.inject_hyperparams``), so runs
that differ only in seed or learning rate share one compiled step.

Example::

    run = gan.train(gan.GANConfig(steps=2000), source)      # a DataSource
    x = gan.sample(run.graphdef, run.state, jax.random.key(0), 1000)
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments.data import DataSource
from experiments.training.fit import Timing, staged_batches

from ._curves import window_means

LOSSES = ("ns", "r1", "wgan-gp")
DEFAULT_PENALTY = {"ns": 0.0, "r1": 1.0, "wgan-gp": 10.0}


@dataclass(frozen=True)
class GANConfig:
    latent_dim: int = 8
    hidden: int = 128
    depth: int = 2
    loss: str = "ns"  # "ns" | "r1" | "wgan-gp"
    penalty: float | None = None  # R1 gamma / WGAN-GP lambda; None: 1 (r1), 10 (wgan-gp)
    lr: float = 2e-4
    b1: float = 0.5  # DCGAN's Adam betas
    b2: float = 0.999
    batch_size: int = 256
    steps: int = 5000
    seed: int = 0
    log_every: int = 100
    chunk: int = 500  # steps per jitted scan

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got loss={self.loss!r}")
        for name in ("latent_dim", "hidden", "depth", "batch_size", "steps", "log_every", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got lr={self.lr!r}")
        if self.penalty is not None and not self.penalty >= 0:
            raise ValueError(f"penalty must be >= 0, got penalty={self.penalty!r}")

    @property
    def penalty_weight(self) -> float:
        return DEFAULT_PENALTY[self.loss] if self.penalty is None else float(self.penalty)


class Generator(nnx.Module):
    """``z [B, latent_dim] -> x [B, dim]``: ReLU MLP with a linear output."""

    def __init__(self, latent_dim: int, dim: int, *, hidden: int, depth: int, rngs: nnx.Rngs):
        widths = [latent_dim] + [hidden] * depth
        self.latent_dim = latent_dim
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, z):
        for layer in self.layers:
            z = nnx.relu(layer(z))
        return self.out(z)


class Discriminator(nnx.Module):
    """``x [B, dim] -> logit [B]``: LeakyReLU(0.2) MLP."""

    def __init__(self, dim: int, *, hidden: int, depth: int, rngs: nnx.Rngs):
        widths = [dim] + [hidden] * depth
        self.layers = nnx.List(
            [nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = nnx.leaky_relu(layer(x), 0.2)
        return self.out(x)[:, 0]


def init(cfg: GANConfig, dim: int) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, state)`` of ``(generator, discriminator, opt_g, opt_d)`` from ``cfg.seed``."""
    rngs = nnx.Rngs(cfg.seed)
    gen = Generator(cfg.latent_dim, dim, hidden=cfg.hidden, depth=cfg.depth, rngs=rngs)
    disc = Discriminator(dim, hidden=cfg.hidden, depth=cfg.depth, rngs=rngs)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=cfg.lr, b1=cfg.b1, b2=cfg.b2)
    opt_g = nnx.Optimizer(gen, tx, wrt=nnx.Param)
    opt_d = nnx.Optimizer(disc, tx, wrt=nnx.Param)
    return nnx.split((gen, disc, opt_g, opt_d))


def _input_grad(disc, x):
    return jax.grad(lambda y: jnp.sum(disc(y)))(x)


def _d_loss(disc, real, fake, key, loss, weight):
    d_real, d_fake = disc(real), disc(fake)
    if loss == "wgan-gp":
        u = jax.random.uniform(key, (real.shape[0], 1))
        grad = _input_grad(disc, u * real + (1 - u) * fake)
        gap = jnp.mean(d_fake) - jnp.mean(d_real)
        return gap + weight * jnp.mean((jnp.linalg.norm(grad, axis=-1) - 1) ** 2), gap
    value = jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
    if loss == "r1":
        grad = _input_grad(disc, real)
        return value + 0.5 * weight * jnp.mean(jnp.sum(grad**2, axis=-1)), value
    return value, value


def _g_loss(gen, disc, z, loss):
    logit = disc(gen(z))
    return -jnp.mean(logit) if loss == "wgan-gp" else jnp.mean(jax.nn.softplus(-logit))


def _step_fn(graphdef, loss: str, weight: float):
    """The pure step ``(state, batch, key) -> (state, (d_loss, g_loss))``."""

    def step(state, batch, key):
        gen, disc, opt_g, opt_d = nnx.merge(graphdef, state)
        k_fake, k_pen, k_gen = jax.random.split(key, 3)
        z = jax.random.normal(k_fake, (batch.shape[0], gen.latent_dim))
        fake = jax.lax.stop_gradient(gen(z))
        (_, d_value), grads = nnx.value_and_grad(_d_loss, has_aux=True)(
            disc, batch, fake, k_pen, loss, weight
        )
        opt_d.update(disc, grads)
        z = jax.random.normal(k_gen, (batch.shape[0], gen.latent_dim))
        g_value, grads = nnx.value_and_grad(_g_loss)(gen, disc, z, loss)
        opt_g.update(gen, grads)
        return nnx.state((gen, disc, opt_g, opt_d)), (d_value, g_value)

    return step


def make_step(graphdef: nnx.GraphDef, cfg: GANConfig):
    """Jitted ``step(state, batch, step_index) -> (state, (d_loss, g_loss))``; the key is
    ``fold_in(key(cfg.seed), step_index)``."""
    step, base = _step_fn(graphdef, cfg.loss, cfg.penalty_weight), jax.random.key(cfg.seed)
    return jax.jit(lambda state, batch, i: step(state, batch, jax.random.fold_in(base, i)))


@functools.lru_cache(maxsize=16)
def _chunk_fn(graphdef, loss: str, weight: float):
    """Jitted scan of the step over ``[K, B, D]`` batches; shared by seeds and lrs."""
    step = _step_fn(graphdef, loss, weight)

    @jax.jit
    def run(state, batches, indices, base_key):
        def body(state, inputs):
            batch, i = inputs
            return step(state, batch, jax.random.fold_in(base_key, i))

        return jax.lax.scan(body, state, (batches, indices))

    return run


@dataclass
class GANRun:
    config: GANConfig
    graphdef: nnx.GraphDef
    state: nnx.State
    history: dict[str, list[float]]  # "step", "d_loss", "g_loss" (window means)
    timing: Timing  # wall time (first chunk's compilation included) and per step after it


def train(cfg: GANConfig, source: DataSource) -> GANRun:
    """Train on ``source.train_batch(cfg.seed, step, cfg.batch_size)`` for ``cfg.steps``.

    Runs ``cfg.chunk`` steps per jitted ``lax.scan`` on batches staged as
    :func:`experiments.training.fit` stages them; the result equals ``cfg.steps``
    calls of :func:`make_step`'s step. Non-finite losses are recorded, not raised: a
    diverged GAN is one of the outcomes the comparison measures.
    """
    graphdef, state = init(cfg, source.dim)
    run = _chunk_fn(graphdef, cfg.loss, cfg.penalty_weight)
    base = jax.random.key(cfg.seed)
    d_hist, g_hist = [], []
    ends = [time.perf_counter()]
    for idx, batches in staged_batches(
        source, cfg.seed, range(cfg.steps), cfg.batch_size, cfg.chunk
    ):
        state, (d_loss, g_loss) = run(state, batches, idx, base)
        d_hist.append(np.asarray(d_loss))
        g_hist.append(np.asarray(g_loss))
        ends.append(time.perf_counter())
    d, g = window_means(d_hist, cfg.log_every), window_means(g_hist, cfg.log_every)
    history = {"step": d["step"], "d_loss": d["mean"], "g_loss": g["mean"]}
    return GANRun(cfg, graphdef, state, history, Timing.of_chunks(ends, [len(x) for x in d_hist]))


@functools.lru_cache(maxsize=16)
def _sampler(graphdef, n: int):
    @jax.jit
    def draw(state, key):
        gen = nnx.merge(graphdef, state)[0]
        return gen(jax.random.normal(key, (n, gen.latent_dim)))

    return draw


def sample(graphdef: nnx.GraphDef, state: nnx.State, key: jax.Array, n: int) -> jax.Array:
    """``n`` generator samples ``G(z)``, ``z ~ N(0, I)``: one network pass."""
    return _sampler(graphdef, n)(state, key)
