r"""``scoresde experiment vs-gan``: score-based diffusion against a GAN baseline, measured.

On three data sets whose truth is known — an unequal-weight 8-mode Gaussian ring, a
5x5 grid of Gaussians (both exact mixtures, training data drawn from them) and sklearn's
8x8 digits (flattened to 64-D, uniformly dequantised into [-1, 1]) — both families are
trained over several seeds and a small grid of learning rates with the same number of
steps and the same batch size, and the run reports:

mode coverage
    Mixtures: a sample's mode is its nearest mean (``metrics.mode_shares``); the total
    variation (TV) between those shares and the true weights, with non-finite samples
    as a mode of weight 0. Mode ``k`` is *hit* when at least ``HIT_FRACTION`` (1/4) of
    its expected share, :math:`w_k / 4`, of the samples lies within ``RADIUS`` (3)
    component stds of :math:`\mu_k`; the fraction of samples within 3 stds of some mode
    is the *high-quality* fraction (Srivastava et al. 2017, VEEGAN; Metz et al. 2017,
    Unrolled GANs; exact samples give 0.989). Digits: a logistic-regression classifier
    trained on the train split assigns each (clipped) sample a class; class shares are
    compared with the test split's class shares, a class is hit with >= 1/4 of its test
    share, and the classifier's mean top probability is reported as *confidence*.
    Unbiased Gaussian-kernel MMD^2 (median bandwidth) to the held-out test set as well.
stability
    The spread (median, min, max) of final quality over seeds x learning rates, and
    the loss curves (DSM loss; GAN discriminator and generator losses).
likelihood
    The score model's test NLL through the probability-flow ODE (Tsit5): exact
    divergence in 2-D, Hutchinson probes for digits (bits/dim). For the mixtures the
    exact NLL of the same test points gives KL = NLL - NLL_true. A GAN defines no
    tractable density, so it has no likelihood to report.
sampling cost
    Network evaluations and wall time per sample: the GAN's one generator pass; the
    score model with 1000 Euler-Maruyama steps of the reverse SDE, the adaptive
    probability-flow ODE (Tsit5) and DPM-Solver++(3M) on a log-SNR grid at 10 and 20
    evaluations; each timed after a compiling warm-up call, median of repeats.

Score models are trained with :class:`experiments.train.Setup` (named configs with
overrides: MLP, noise prediction, VP SDE, EMA); the step is scanned over chunks of
host-side batches. GANs come from :mod:`experiments.gan`. Everything is seeded;
``--quick`` is a one-minute smoke version. Example::

    scoresde experiment vs-gan --workdir runs/vs_gan          # about 20 min on 2 cores
    scoresde experiment vs-gan --quick --workdir /tmp/vs_gan
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx

import samplers
import sde as sde_lib
from experiments import config as config_lib
from experiments import distributed, gan, metrics
from experiments import train as train_lib
from experiments.data import (
    DIGITS_LEVELS,
    DataSource,
    dequantize,
    flattened,
    load_digits,
    make_source,
    mixture_dataset,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DATASETS = ("ring", "grid", "digits")
RING_WEIGHTS = (0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.06, 0.04)
HIT_FRACTION = 0.25
RADIUS = 3.0
_TEST_SEED, _REFERENCE_SEED = 8_000_001, 8_000_002
DIFFUSION = "diffusion"
GAN_LABELS = {"ns": "GAN", "r1": "GAN+R1", "wgan-gp": "WGAN-GP"}
_GAN_DOC = {
    "ns": "non-saturating loss",
    "r1": f"non-saturating loss plus the R1 penalty (gamma = {gan.DEFAULT_PENALTY['r1']:g}) "
    "on real data",
    "wgan-gp": f"Wasserstein loss with gradient penalty (lambda = "
    f"{gan.DEFAULT_PENALTY['wgan-gp']:g}), Adam(0, 0.9)",
}


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0, 1, 2)
    lrs: tuple[float, ...] = (2e-4, 1e-3)
    gan_losses: tuple[str, ...] = ("ns", "r1")
    steps_2d: int = 3000
    batch_2d: int = 256
    steps_digits: int = 3000
    batch_digits: int = 128
    n_eval_2d: int = 2000
    n_eval_digits: int = 1000
    n_nll_2d: int = 1000
    n_nll_digits: int = 360
    euler_steps: int = 1000
    fast_steps: tuple[int, ...] = (10, 20)
    tol: float = 1e-5  # rtol = atol of the likelihood and of the adaptive sampler
    digits_probes: int = 4
    repeats: int = 3
    ema_decay: float = 0.999
    chunk: int = 500
    log_every: int = 100

    def __post_init__(self):
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ValueError(f"datasets must be among {', '.join(DATASETS)}; got {self.datasets}")
        bad = [x for x in self.gan_losses if x not in gan.LOSSES]
        if bad:
            raise ValueError(f"gan losses must be among {', '.join(gan.LOSSES)}; got {bad}")
        if not self.seeds or not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"need >= 1 seed and lrs > 0; got {self.seeds}, {self.lrs}")


QUICK = Settings(
    seeds=(0,),
    lrs=(1e-3,),
    gan_losses=("ns",),
    steps_2d=300,
    steps_digits=300,
    n_eval_2d=500,
    n_eval_digits=200,
    n_nll_2d=200,
    n_nll_digits=50,
    fast_steps=(10,),
    tol=1e-3,
    digits_probes=1,
    repeats=1,
    ema_decay=0.95,
    chunk=150,
    log_every=50,
)


# ----------------------------------------------------------------------------- data


@dataclass
class Task:
    """A data set with its held-out truth, its models' configs and its quality metric."""

    name: str
    source: DataSource
    test: np.ndarray
    score_cfg: Callable[[float, int], config_lib.Config]  # (lr, seed) -> config
    gan_cfg: Callable[[str, float, int], gan.GANConfig]  # (loss, lr, seed) -> config
    quality: Callable[[np.ndarray], dict]
    reference: dict  # quality of real data: the floor of every metric
    truth: dict
    n_eval: int
    n_nll: int
    mixture: sde_lib.GaussianMixture | None = None
    replace_score_source: bool = True  # train the score model on ``source`` (else its own)

    @property
    def dim(self) -> int:
        return self.source.dim


def _mixture(name: str) -> sde_lib.GaussianMixture:
    if name == "ring":
        return sde_lib.GaussianMixture.ring(8, radius=4.0, std=0.25, weights=np.array(RING_WEIGHTS))
    return sde_lib.GaussianMixture.grid(5, spacing=2.0, std=0.2)


def mixture_quality(x: np.ndarray, mix: sde_lib.GaussianMixture, test: np.ndarray) -> dict:
    """Mode coverage of samples ``x`` against the exact mixture (see the module doc)."""
    x = np.asarray(x, np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    good, n = x[finite], len(x)
    w = np.asarray(mix.weights, np.float64)
    means = np.asarray(mix.means, np.float64)
    std = np.sqrt(np.asarray(mix.eigvals, np.float64)[:, 0])
    shares = metrics.mode_shares(good, means) * len(good) / n if len(good) else 0 * w
    near = np.sqrt(np.sum((good[:, None] - means[None]) ** 2, -1)) <= RADIUS * std[None]
    hit = near.sum(0) / n >= HIT_FRACTION * w
    return {
        "hit": int(hit.sum()),
        "of": len(w),
        "tv": 0.5 * (float(np.abs(shares - w).sum()) + (1 - finite.mean())),
        "high_quality": float(near.any(1).sum() / n),
        "mmd2": _mmd2(good, test),
        "finite": float(finite.mean()),
        "shares": [float(s) for s in shares],
    }


def _mmd2(x, test) -> float:
    return metrics.mmd2(x[:2000], test[:2000]) if len(x) >= 10 else math.nan


def class_quality(x, classifier, test_shares, test) -> dict:
    """Class coverage of 64-D samples through ``classifier`` (see the module doc)."""
    x = np.asarray(x, np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    good = np.clip(x[finite], -1.0, 1.0)
    k = len(test_shares)
    if len(good):
        proba = classifier.predict_proba(good)
        shares = np.bincount(proba.argmax(1), minlength=k) / len(x)
        confidence = float(proba.max(1).sum() / len(x))
    else:
        shares, confidence = np.zeros(k), 0.0
    return {
        "hit": int(np.sum(shares >= HIT_FRACTION * test_shares)),
        "of": k,
        "tv": 0.5 * (float(np.abs(shares - test_shares).sum()) + (1 - finite.mean())),
        "confidence": confidence,
        "mmd2": _mmd2(good, test),
        "finite": float(finite.mean()),
        "shares": [float(s) for s in shares],
    }


def make_task(name: str, s: Settings) -> Task:
    if name == "digits":
        return _digits_task(s)
    mix = _mixture(name)

    def train_batch(seed, step, batch_size):
        return mixture_dataset(mix, batch_size, [seed, 1, step])

    test = mixture_dataset(mix, max(s.n_eval_2d, s.n_nll_2d), _TEST_SEED)
    source = DataSource(name, (2,), train_batch, val=lambda seed: test, test=lambda seed: test)

    def score_cfg(lr, seed):
        # the named 2-D config (MLP, noise prediction, VP); its data set is replaced below
        return config_lib.load(
            "8gaussians", _score_overrides(s, s.steps_2d, s.batch_2d, lr, seed, 128)
        )

    def gan_cfg(loss, lr, seed):
        return _gan(loss, lr, seed, s, latent_dim=8, hidden=128, steps=s.steps_2d, batch=s.batch_2d)

    def quality(x):
        return mixture_quality(x, mix, test)

    stds = np.sqrt(np.asarray(mix.eigvals)[:, 0])
    truth = {
        "kind": f"{mix.num_components}-component Gaussian mixture ({name})",
        "weights": [round(float(v), 6) for v in mix.weights],
        "std": float(stds[0]),
        "n_test": len(test),
    }
    reference = quality(mixture_dataset(mix, s.n_eval_2d, _REFERENCE_SEED))
    return Task(
        name,
        source,
        test,
        score_cfg,
        gan_cfg,
        quality,
        reference,
        truth,
        s.n_eval_2d,
        s.n_nll_2d,
        mix,
    )


def _score_overrides(s, steps, batch, lr, seed, hidden, extra=()):
    return [
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        f"train.lr={lr}",
        f"train.seed={seed}",
        f"train.ema_decay={s.ema_decay}",
        f"model.hidden={hidden}",
        "model.depth=3",
        *extra,
    ]


def _gan(loss, lr, seed, s, *, latent_dim, hidden, steps, batch):
    # DCGAN's Adam(0.5, 0.999); WGAN-GP's own Adam(0, 0.9)
    b1, b2 = (0.0, 0.9) if loss == "wgan-gp" else (0.5, 0.999)
    return gan.GANConfig(
        latent_dim=latent_dim,
        hidden=hidden,
        depth=2,
        loss=loss,
        lr=lr,
        b1=b1,
        b2=b2,
        batch_size=batch,
        steps=steps,
        seed=seed,
        log_every=s.log_every,
        chunk=s.chunk,
    )


def _digits_task(s: Settings) -> Task:
    from sklearn.linear_model import LogisticRegression

    base = config_lib.load("digits")
    source = flattened(make_source(base.data))
    test = source.test(0)
    _, y_test = load_digits("test")
    x_train, y_train = load_digits("train")
    rng = np.random.default_rng(0)
    dq = [dequantize(rng, x_train, DIGITS_LEVELS, (-1.0, 1.0)) for _ in range(3)]
    features = np.concatenate(dq[:2]).reshape(-1, 64)
    classifier = LogisticRegression(max_iter=1000).fit(features, np.tile(y_train, 2))
    test_shares = np.bincount(y_test, minlength=10) / len(y_test)
    accuracy = float(classifier.score(test, y_test))

    def score_cfg(lr, seed):
        extra = ("train.eval_every=0",)
        return config_lib.load(
            "digits", _score_overrides(s, s.steps_digits, s.batch_digits, lr, seed, 256, extra)
        )

    def gan_cfg(loss, lr, seed):
        return _gan(
            loss, lr, seed, s, latent_dim=32, hidden=256, steps=s.steps_digits, batch=s.batch_digits
        )

    def quality(x):
        return class_quality(x, classifier, test_shares, test)

    truth = {
        "kind": "sklearn digits, 8x8 flattened to 64-D, 17 levels dequantised into [-1, 1]",
        "test_class_shares": [float(v) for v in test_shares],
        "classifier": "LogisticRegression on the 1437 train images (2 dequantisation draws)",
        "classifier_test_accuracy": accuracy,
        "n_test": len(test),
    }
    reference = quality(dq[2].reshape(-1, 64))  # a third, unseen dequantisation draw
    return Task(
        "digits",
        source,
        test,
        score_cfg,
        gan_cfg,
        quality,
        reference,
        truth,
        s.n_eval_digits,
        min(s.n_nll_digits, len(test)),
        replace_score_source=False,
    )


# ----------------------------------------------------------------------------- training


def train_score(cfg: config_lib.Config, source: DataSource | None, chunk: int):
    """DSM training through ``Setup.make_step`` (EMA, clipping, cosine schedule), the step
    scanned over chunks of host batches from ``source`` (default: the config's own data
    source, whitened if the config says so); returns ``(setup, state, losses, (seconds,
    seconds per step after the first, compiling, chunk))``."""
    setup = train_lib.Setup(cfg)
    if source is not None:
        setup.source = source
    source = setup.source
    mesh = distributed.mesh()
    step = setup.make_step(mesh)

    @jax.jit
    def run(state, idx, batches):
        def body(state, inputs):
            i, batch = inputs
            state, loss, _ = step(state, batch, i)
            return state, loss

        return jax.lax.scan(body, state, (idx, batches))

    t = cfg.train
    # placed as the step returns it, so that the second chunk does not compile again
    state, losses, ends = setup.placed_state(mesh), [], [time.perf_counter()]
    for idx, batches in gan.batch_chunks(source, t.seed, t.steps, t.batch_size, chunk):
        state, loss = run(state, idx, batches)
        losses.append(np.asarray(loss))
        ends.append(time.perf_counter())
    return setup, state, losses, (ends[-1] - ends[0], gan.step_seconds(ends, losses))


def diffusion_samplers(vp, s: Settings) -> dict[str, Callable]:
    """Name -> ``draw(score_fn, key, n, dim) -> (x, stats)``."""
    out = {
        f"Euler-Maruyama {s.euler_steps} (reverse SDE)": lambda f, key, n, d: samplers.sample_sde(
            score_fn=f, sde=vp, shape=(n, d), key=key, solver=diffrax.Euler(), steps=s.euler_steps
        ),
        f"Tsit5 adaptive (PF-ODE, tol {s.tol:g})": lambda f, key, n, d: samplers.sample_ode(
            score_fn=f,
            sde=vp,
            shape=(n, d),
            key=key,
            solver=diffrax.Tsit5(),
            rtol=s.tol,
            atol=s.tol,
        ),
    }
    for k in s.fast_steps:
        grid = samplers.log_snr_grid(vp, k)
        out[f"DPM-Solver++(3M) {k} (log-SNR grid)"] = lambda f, key, n, d, grid=grid: (
            samplers.sample_ode(
                score_fn=f, sde=vp, shape=(n, d), key=key, solver=samplers.DPMSolverPP3M(), ts=grid
            )
        )
    return out


def _per_run_samplers(names: list[str]) -> list[str]:
    """The samplers evaluated on every run: Euler (the reference) and the largest fast one."""
    return [names[0], names[-1]]


def to_data(setup, x) -> np.ndarray:
    """Model samples in the data's own units (undoing a whitening map, if the config has one)."""
    to_data = getattr(setup.source, "to_data", None)
    return np.asarray(x) if to_data is None else np.asarray(to_data(np.asarray(x)))


def _score_nll(task: Task, setup, state, s: Settings) -> dict:
    # the test points as the model sees them; log|det| of a whitening map turns the model's
    # log-density into the data's (0 without one)
    held_out = task.test if task.replace_score_source else setup.source.test(0)
    x = jnp.asarray(held_out[: task.n_nll])
    log_det = float(getattr(setup.source, "log_det", 0.0))
    exact = task.mixture is not None
    start = time.perf_counter()
    logp, stats = samplers.log_likelihood(
        score_fn=setup.score_function(state),
        sde=setup.sde,
        x=x,
        key=jax.random.key(0),
        rtol=s.tol,
        atol=s.tol,
        eps=1e-5,
        divergence="exact" if exact else "hutchinson",
        n_probes=1 if exact else s.digits_probes,
    )
    nll = -np.asarray(logp, np.float64) - log_det
    out = {
        "n": len(nll),
        "nll_nats": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else math.nan,
        "nll_median": float(np.median(nll)),
        "nfe": int(stats["nfe"]),
        "seconds": time.perf_counter() - start,
    }
    if exact:
        out["true_nll_nats"] = float(-np.mean(np.asarray(task.mixture.log_prob(x), np.float64)))
        out["kl_nats"] = out["nll_nats"] - out["true_nll_nats"]
    else:
        bpd = samplers.bits_per_dim(-nll, dim=64, n_levels=DIGITS_LEVELS, data_range=2.0)
        out["bits_per_dim"] = float(np.mean(bpd))
        out["bits_per_dim_median"] = float(np.median(bpd))
    return out


def _count_params(module) -> int:
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def run_task(task: Task, s: Settings, workdir: pathlib.Path, log=print) -> dict:
    """Every (family, lr, seed) run on one data set, then the sampling-cost table."""
    runs, keep = [], {}
    names = None
    for lr in s.lrs:
        for seed in s.seeds:
            setup, state, losses, (seconds, per_step) = train_score(
                task.score_cfg(lr, seed),
                task.source if task.replace_score_source else None,
                s.chunk,
            )
            f = setup.score_function(state)
            sampler_table = diffusion_samplers(setup.sde, s)
            names = list(sampler_table)
            quality, samples = {}, {}
            for name in _per_run_samplers(names):
                x, _ = sampler_table[name](f, jax.random.key(1000 + seed), task.n_eval, task.dim)
                samples[name] = to_data(setup, x)
                quality[name] = task.quality(samples[name])
            curve = gan.window_means(losses, s.log_every)
            row = {
                "family": DIFFUSION,
                "lr": lr,
                "seed": seed,
                "train_seconds": seconds,
                "step_ms": 1e3 * per_step,
                "final_loss": curve["mean"][-1],
                "curves": {"step": curve["step"], "loss": curve["mean"]},
                "quality": quality,
                "nll": _score_nll(task, setup, state, s),
                "params": _count_params(nnx.merge(setup.graphdef, setup.state)[0]),
            }
            runs.append(row)
            keep[(DIFFUSION, lr, seed)] = (setup, state, samples)
            log(_summary_line(task.name, row))
            for loss in s.gan_losses:
                g = gan.train(task.gan_cfg(loss, lr, seed), task.source)
                x = np.asarray(
                    gan.sample(g.graphdef, g.state, jax.random.key(1000 + seed), task.n_eval)
                )
                gen, disc = nnx.merge(g.graphdef, g.state)[:2]
                row = {
                    "family": GAN_LABELS[loss],
                    "lr": lr,
                    "seed": seed,
                    "train_seconds": g.train_seconds,
                    "step_ms": 1e3 * g.step_seconds,
                    "final_loss": g.history["d_loss"][-1],
                    "curves": g.history,
                    "quality": {"generator": task.quality(x)},
                    "nll": None,
                    "params": _count_params(gen) + _count_params(disc),
                }
                runs.append(row)
                keep[(GAN_LABELS[loss], lr, seed)] = (g, None, {"generator": x})
                log(_summary_line(task.name, row))
    cost = sampling_cost(task, runs, keep, s, names)
    figures(task, runs, keep, s, workdir)
    families = [DIFFUSION] + [GAN_LABELS[x] for x in s.gan_losses]
    return {
        "score_config": config_lib.to_dict(task.score_cfg(s.lrs[0], s.seeds[0])),
        "gan_configs": {
            GAN_LABELS[x]: dataclasses.asdict(task.gan_cfg(x, s.lrs[0], s.seeds[0]))
            for x in s.gan_losses
        },
        "truth": task.truth,
        "reference": task.reference,
        "runs": runs,
        "summary": summarise(runs, families, s),
        "sampling_cost": cost,
    }


def _summary_line(name, row) -> str:
    q = next(iter(row["quality"].values()))
    nll = f", NLL {row['nll']['nll_nats']:.3f}" if row["nll"] else ""
    return (
        f"[{name}] {row['family']:9s} lr={row['lr']:g} seed={row['seed']}: train "
        f"{row['train_seconds']:.1f} s, hit {q['hit']}/{q['of']}, TV {q['tv']:.3f}{nll}"
    )


# ----------------------------------------------------------------------------- summaries


def _entries(runs, families):
    """(label, family, quality-key) for every row of the quality tables."""
    out = []
    for fam in families:
        keys = next(r["quality"] for r in runs if r["family"] == fam)
        for key in keys:
            out.append((fam if fam != DIFFUSION else f"diffusion, {key}", fam, key))
    return out


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "median": float(np.median(v)),
        "mean": float(np.mean(v)),
        "std": float(np.std(v)),
        "min": float(np.min(v)),
        "max": float(np.max(v)),
    }


def summarise(runs, families, s: Settings) -> dict:
    """Per entry, over all seeds x lrs and per lr: spreads of TV, modes hit and MMD^2."""
    out = {}
    for label, fam, key in _entries(runs, families):
        rows = [r for r in runs if r["family"] == fam]
        q = [r["quality"][key] for r in rows]
        entry = {
            "runs": len(rows),
            "all_hit": int(sum(x["hit"] == x["of"] for x in q)),
            "tv": _stats([x["tv"] for x in q]),
            "hit": _stats([x["hit"] for x in q]),
            "mmd2": _stats([x["mmd2"] for x in q]),
            "train_seconds": _stats([r["train_seconds"] for r in rows]),
            "step_ms": _stats([r["step_ms"] for r in rows]),
            "per_lr": {},
        }
        for lr in s.lrs:
            ql = [r["quality"][key] for r in rows if r["lr"] == lr]
            entry["per_lr"][f"{lr:g}"] = {
                "tv": _stats([x["tv"] for x in ql]),
                "hit": _stats([x["hit"] for x in ql]),
                "mmd2": _stats([x["mmd2"] for x in ql]),
            }
        if fam == DIFFUSION:
            entry["nll_nats"] = _stats([r["nll"]["nll_nats"] for r in rows])
        out[label] = entry
    return out


def _best_lr(runs, family, key):
    by_lr = {}
    for r in runs:
        if r["family"] == family:
            by_lr.setdefault(r["lr"], []).append(r["quality"][key]["tv"])
    return min(by_lr, key=lambda lr: np.median(by_lr[lr]))


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def sampling_cost(task: Task, runs, keep, s: Settings, names) -> list[dict]:
    """NFE and seconds per sample for each sampler, on the best lr's seed-0 model (warm-up
    call first: it compiles, and its samples give the quality column)."""
    n, seed = task.n_eval, s.seeds[0]
    out = []
    for loss in s.gan_losses:
        fam = GAN_LABELS[loss]
        lr = _best_lr(runs, fam, "generator")
        g = keep[(fam, lr, seed)][0]
        key = jax.random.key(7)
        x = np.asarray(gan.sample(g.graphdef, g.state, key, n))
        sec = _time(lambda g=g, key=key: gan.sample(g.graphdef, g.state, key, n), s.repeats)
        out.append(_cost_row(f"{fam} generator (lr {lr:g})", 1, sec, n, task.quality(x)))
    lr = _best_lr(runs, DIFFUSION, names[0])
    setup, state, _ = keep[(DIFFUSION, lr, seed)]
    f = setup.score_function(state)
    for name, draw in diffusion_samplers(setup.sde, s).items():
        key = jax.random.key(7)
        x, stats = draw(f, key, n, task.dim)
        sec = _time(lambda draw=draw, key=key: draw(f, key, n, task.dim)[0], s.repeats)
        nfe = int(stats["nfe"])
        q = task.quality(to_data(setup, x))
        out.append(_cost_row(f"diffusion (lr {lr:g}): {name}", nfe, sec, n, q))
    return out


def _cost_row(method, nfe, seconds, n, quality) -> dict:
    return {
        "method": method,
        "nfe_per_sample": nfe,
        "batch": n,
        "seconds_per_batch": seconds,
        "microseconds_per_sample": 1e6 * seconds / n,
        "quality": {k: v for k, v in quality.items() if k != "shares"},
    }


# ----------------------------------------------------------------------------- figures


def _mosaic(x, side=5):
    img = np.clip((np.asarray(x[: side * side]).reshape(-1, 8, 8) + 1) / 2, 0, 1)
    img = np.nan_to_num(img)
    canvas = np.ones((side * 9 + 1, side * 9 + 1))
    for i, im in enumerate(img):
        r, c = divmod(i, side)
        canvas[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = im
    return canvas


def _panel(ax, x, task, title):
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    if task.mixture is None:
        ax.imshow(_mosaic(x), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        return
    x = np.asarray(x)
    ax.scatter(x[:, 0], x[:, 1], s=0.4, alpha=0.4, rasterized=True)
    m = np.asarray(task.mixture.means)
    ax.scatter(m[:, 0], m[:, 1], s=6, c="red", marker="x", linewidths=0.6)
    lim = 1.3 * np.abs(m).max() + 0.5
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def figures(task: Task, runs, keep, s: Settings, workdir: pathlib.Path) -> None:
    """samples_NAME.png (seed 0, every lr, each family) and loss_NAME.png (every run)."""
    seed = s.seeds[0]
    first = [r for r in runs if r["seed"] == seed and r["lr"] == s.lrs[0]]
    rows = [(r["family"], name) for r in first for name in r["quality"]]
    ncol = len(s.lrs) + 1
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.1 * ncol, 2.2 * len(rows)), squeeze=False)
    for i, (fam, name) in enumerate(rows):
        if i == 0:
            _panel(axes[0, 0], task.test[: task.n_eval], task, "data (test)")
        else:
            axes[i, 0].set_visible(False)
        for j, lr in enumerate(s.lrs):
            x = keep[(fam, lr, seed)][2][name]
            q = task.quality(x)
            label = fam if fam != DIFFUSION else f"diffusion\n{name}"
            _panel(
                axes[i, j + 1],
                x,
                task,
                f"{label}\nlr {lr:g}: hit {q['hit']}/{q['of']}, TV {q['tv']:.3f}",
            )
    fig.suptitle(f"{task.name}: seed {seed}, n = {task.n_eval} per panel", fontsize=9)
    fig.tight_layout()
    fig.savefig(workdir / f"samples_{task.name}.png", dpi=110)
    plt.close(fig)

    fams = list(dict.fromkeys(r["family"] for r in runs))
    panels = [(DIFFUSION, "loss", "diffusion: DSM loss")]
    for fam in fams[1:]:
        panels += [(fam, "d_loss", f"{fam}: discriminator"), (fam, "g_loss", f"{fam}: generator")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    colours = {lr: f"C{i}" for i, lr in enumerate(s.lrs)}
    for ax, (fam, key, title) in zip(axes[0], panels, strict=True):
        for r in runs:
            if r["family"] == fam:
                label = f"lr {r['lr']:g}" if r["seed"] == seed else None
                ax.plot(
                    r["curves"]["step"],
                    r["curves"][key],
                    color=colours[r["lr"]],
                    lw=0.8,
                    alpha=0.8,
                    label=label,
                )
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.tick_params(labelsize=6)
        if fam == DIFFUSION:
            ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.suptitle(f"{task.name}: loss curves, every seed", fontsize=9)
    fig.tight_layout()
    fig.savefig(workdir / f"loss_{task.name}.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def _fmt(st: dict, digits: int = 3) -> str:
    return f"{st['median']:.{digits}f} [{st['min']:.{digits}f}, {st['max']:.{digits}f}]"


def write_report(results: dict, path: pathlib.Path) -> None:
    s = results["settings"]
    lines = [
        "# Diffusion vs GAN, measured",
        "",
        f"Generated by `scoresde experiment vs-gan{' --quick' if s['quick'] else ''}` in "
        f"{results['wall_seconds'] / 60:.1f} min (process CPU time "
        f"{results['cpu_seconds'] / 60:.1f} min) on {results['machine']}. Every number below "
        "comes from this run; `results.json` holds them all, per run.",
        "",
        "## Settings",
        "",
        f"- seeds {s['seeds']} x learning rates {s['lrs']}, the same grid for every family; "
        f"2-D: {s['steps_2d']} steps of batch {s['batch_2d']}, digits: {s['steps_digits']} "
        f"steps of batch {s['batch_digits']}, for both families.",
        "- diffusion: `experiments.train.Setup` with the named config `8gaussians` (2-D; its "
        "data replaced by the mixture) or `digits` (64-D) and the overrides listed per data "
        "set: MLP, noise prediction, VP SDE, Adam with warm-up and cosine decay, grad-norm "
        "clip 1, EMA weights for sampling and likelihood.",
        "- GAN: `experiments.gan`, MLP generator (ReLU) and discriminator (LeakyReLU 0.2), one "
        "D and one G update per step, Adam(0.5, 0.999), constant learning rate; "
        + "; ".join(f"{GAN_LABELS[x]}: {_GAN_DOC[x]}" for x in s["gan_losses"])
        + ".",
        f"- quality: n = {s['n_eval_2d']} samples per 2-D run, {s['n_eval_digits']} per "
        f"digits run; mode hit = at least {HIT_FRACTION:g} x its expected share within "
        f"{RADIUS:g} stds of the mode (digits: class share >= {HIT_FRACTION:g} x test share); "
        "TV between nearest-mode (digits: classifier) shares and the true weights "
        "(test class shares); MMD^2 to the test set (Gaussian kernel, median bandwidth).",
        f"- likelihood: PF-ODE, Tsit5, rtol = atol = {s['tol']:g}, eps = 1e-5; exact "
        f"divergence on {s['n_nll_2d']} test points in 2-D, Hutchinson ({s['digits_probes']} "
        f"Rademacher probes) on {s['n_nll_digits']} digits test images.",
        f"- sampling cost: batch = the evaluation n, median of {s['repeats']} timed calls "
        "after a compiling warm-up; NFE = network evaluations per sample.",
        "",
        "Tables give median [min, max] over all seeds x learning rates unless stated.",
        "",
    ]
    lines += _headlines(results)
    for name, res in results["datasets"].items():
        lines += _dataset_section(name, res, s)
    strengths = _gan_strengths(results) or ["nowhere in this run's measurements."]
    lines += ["", "## Where the GAN does well", ""] + [f"- {t}" for t in strengths]
    path.write_text("\n".join(lines) + "\n")


def _diff_label(res):
    return next(k for k in res["summary"] if k.startswith("diffusion, Euler"))


def _headlines(results) -> list[str]:
    out = ["## Headline", ""]
    for name, res in results["datasets"].items():
        parts = []
        for label, e in res["summary"].items():
            parts.append(
                f"{label}: all modes hit in {e['all_hit']}/{e['runs']} runs, TV {_fmt(e['tv'])}"
            )
        ref = res["reference"]
        out.append(f"- **{name}** (real-data floor TV {ref['tv']:.3f}): " + "; ".join(parts) + ".")
        nll = res["summary"][_diff_label(res)]["nll_nats"]
        runs = [r for r in res["runs"] if r["family"] == DIFFUSION]
        if "kl_nats" in runs[0]["nll"]:
            kl = _stats([r["nll"]["kl_nats"] for r in runs])
            out.append(
                f"  Diffusion test NLL {_fmt(nll)} nats, KL to the truth {_fmt(kl)}; "
                "GAN: no likelihood."
            )
        else:
            bpd = _stats([r["nll"]["bits_per_dim"] for r in runs])
            out.append(f"  Diffusion test NLL {_fmt(bpd, 2)} bits/dim; GAN: no likelihood.")
        cost = res["sampling_cost"]
        g = cost[0]
        fastest = min(
            (c for c in cost if "diffusion" in c["method"]), key=lambda c: c["nfe_per_sample"]
        )
        euler = next(c for c in cost if "Euler" in c["method"])
        out.append(
            f"  Sampling: GAN 1 pass, {g['microseconds_per_sample']:.2f} us/sample; diffusion "
            f"{euler['nfe_per_sample']} NFE ({euler['microseconds_per_sample']:.0f} us/sample) "
            f"with Euler, {fastest['nfe_per_sample']} NFE "
            f"({fastest['microseconds_per_sample']:.1f} us/sample) with DPM-Solver++(3M)."
        )
    return out + [""]


def _dataset_section(name, res, s) -> list[str]:
    truth, ref = res["truth"], res["reference"]
    extra = "high_quality" if "high_quality" in ref else "confidence"
    extra_name = "high-quality fraction" if extra == "high_quality" else "classifier confidence"
    ref_name = (
        f"exact samples (n = {s['n_eval_2d']})"
        if "weights" in truth
        else "real images (train split, unseen dequantisation)"
    )
    lines = ["", f"## {name}: {truth['kind']}", ""]
    if "weights" in truth:
        lines.append(
            f"True weights {truth['weights']}, component std {truth['std']:g}, "
            f"{truth['n_test']} test points."
        )
    else:
        lines.append(
            f"Test class shares {[round(v, 3) for v in truth['test_class_shares']]}; "
            f"classifier: {truth['classifier']}, test accuracy "
            f"{truth['classifier_test_accuracy']:.3f}."
        )
    sc, params = res["score_config"], _params(res)
    t = sc["train"]
    lines.append(
        f"\nDiffusion: MLP {sc['model']['hidden']}x{sc['model']['depth']} "
        f"({params[DIFFUSION]:,} parameters), {t['steps']} steps of batch {t['batch_size']}, "
        f"warm-up {t['warmup_steps']}, EMA {t['ema_decay']}"
        + (
            f", data.whiten={sc['data']['whiten']}"
            if sc["data"].get("whiten", "none") != "none"
            else ""
        )
        + (", Gaussian base score" if sc["model"].get("gaussian_base") else "")
        + "."
    )
    for label, g in res["gan_configs"].items():
        lines.append(
            f"{label}: generator and discriminator MLPs {g['hidden']}x{g['depth']}, latent "
            f"{g['latent_dim']} ({params[label]:,} parameters together), {g['steps']} steps of "
            f"batch {g['batch_size']}, Adam({g['b1']}, {g['b2']})."
        )
    lines += [
        "",
        f"![samples](samples_{name}.png)",
        "",
        f"### Mode coverage and stability ({name})",
        "",
        f"| model | lr | runs | modes hit | TV | {extra_name} | MMD^2 |",
        "|---|---|---|---|---|---|---|",
        f"| {ref_name} | - | - | {ref['hit']}/{ref['of']} | {ref['tv']:.3f} | {ref[extra]:.3f} | "
        f"{ref['mmd2']:.2e} |",
    ]
    for label, e in res["summary"].items():
        fam, key = _split_label(label)
        for lr, pl in e["per_lr"].items():
            q = [
                r["quality"][key]
                for r in res["runs"]
                if r["family"] == fam and f"{r['lr']:g}" == lr
            ]
            ex = _stats([x[extra] for x in q])
            lines.append(
                f"| {label} | {lr} | {len(q)} | {_fmt(pl['hit'], 1)} | {_fmt(pl['tv'])} | "
                f"{_fmt(ex)} | {pl['mmd2']['median']:.2e} |"
            )
    lines += [
        "",
        "Stability over all seeds x learning rates:",
        "",
        "| model | runs | all modes hit | TV median | TV worst | TV spread (std) | "
        "train s/run (incl. compile) | ms/step (after compile) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, e in res["summary"].items():
        lines.append(
            f"| {label} | {e['runs']} | {e['all_hit']} | {e['tv']['median']:.3f} | "
            f"{e['tv']['max']:.3f} | {e['tv']['std']:.3f} | {e['train_seconds']['median']:.1f} | "
            f"{e['step_ms']['median']:.2f} |"
        )
    lines += ["", f"![loss curves](loss_{name}.png)", "", f"### Likelihood ({name})", ""]
    runs = [r for r in res["runs"] if r["family"] == DIFFUSION]
    unit = "KL (nats)" if "kl_nats" in runs[0]["nll"] else "bits/dim"
    lines += [f"| lr | seed | test NLL (nats) | {unit} | NFE |", "|---|---|---|---|---|"]
    for r in runs:
        n = r["nll"]
        v = n.get("kl_nats", n.get("bits_per_dim"))
        lines.append(
            f"| {r['lr']:g} | {r['seed']} | {n['nll_nats']:.3f} ± {n['nll_stderr']:.3f} | "
            f"{v:.3f} | {n['nfe']} |"
        )
    if "true_nll_nats" in runs[0]["nll"]:
        lines.append(
            f"\nExact NLL of the same {runs[0]['nll']['n']} test points under the true "
            f"mixture: {runs[0]['nll']['true_nll_nats']:.3f} nats."
        )
    lines.append(
        "\nThe GANs have no likelihood: the generator is an implicit model whose "
        "density is not tractable (and is singular when the latent dimension is below "
        "the data dimension), so no NLL is reported for them."
    )
    lines += [
        "",
        f"### Sampling cost ({name}, seed {s['seeds'][0]}, best learning rate)",
        "",
        f"| sampler | NFE/sample | us/sample | batch s | modes hit | TV | {extra_name} |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in res["sampling_cost"]:
        q = c["quality"]
        lines.append(
            f"| {c['method']} | {c['nfe_per_sample']} | {c['microseconds_per_sample']:.2f} | "
            f"{c['seconds_per_batch']:.3f} | {q['hit']}/{q['of']} | {q['tv']:.3f} | "
            f"{q[extra]:.3f} |"
        )
    return lines


def _params(res) -> dict:
    return {r["family"]: r["params"] for r in res["runs"]}


def _split_label(label):
    if label.startswith("diffusion, "):
        return DIFFUSION, label[len("diffusion, ") :]
    return label, "generator"


def _gan_strengths(results) -> list[str]:
    """Statements, each decided by this run's numbers, of where a GAN matches or wins."""
    out = []
    for name, res in results["datasets"].items():
        cost = res["sampling_cost"]
        g = cost[0]
        diff = [c for c in cost if "diffusion" in c["method"]]
        cheapest = min(diff, key=lambda c: c["seconds_per_batch"])
        out.append(
            f"{name}: sampling is {cheapest['seconds_per_batch'] / g['seconds_per_batch']:.0f}x "
            f"faster than the fastest diffusion sampler ({cheapest['nfe_per_sample']} NFE) and "
            f"{max(c['seconds_per_batch'] for c in diff) / g['seconds_per_batch']:.0f}x faster "
            "than the slowest, with one network pass per sample."
        )
        diff = {k: e for k, e in res["summary"].items() if k.startswith("diffusion")}
        best, d = min(diff.items(), key=lambda kv: kv[1]["tv"]["median"])
        best = best[len("diffusion, ") :]
        for label, e in res["summary"].items():
            if label in diff:
                continue
            ratio = d["step_ms"]["median"] / e["step_ms"]["median"]
            if ratio >= 1.2:
                out.append(
                    f"{name}: {label}'s training step is {ratio:.1f}x cheaper "
                    f"({e['step_ms']['median']:.2f} ms vs {d['step_ms']['median']:.2f} ms per "
                    "step after compilation; same steps and batch)."
                )
            if e["tv"]["median"] <= d["tv"]["median"]:
                out.append(
                    f"{name}: {label}'s median TV ({e['tv']['median']:.3f}) is no worse than "
                    f"that of diffusion with its best sampler ({best}: {d['tv']['median']:.3f})."
                )
            elif e["tv"]["min"] <= d["tv"]["median"]:
                out.append(
                    f"{name}: {label}'s best run (TV {e['tv']['min']:.3f}) beats the median "
                    f"diffusion run ({best}: {d['tv']['median']:.3f}), though its median "
                    f"({e['tv']['median']:.3f}) does not."
                )
            if e["all_hit"] == e["runs"]:
                out.append(
                    f"{name}: {label} hit every mode in all {e['runs']} runs (diffusion, "
                    f"{best}: {d['all_hit']}/{d['runs']})."
                )
        extra = "high_quality" if "high_quality" in res["reference"] else "confidence"
        med = {}
        for r in res["runs"]:
            for key, q in r["quality"].items():
                label = r["family"] if r["family"] != DIFFUSION else f"diffusion, {key}"
                med.setdefault(label, []).append(q[extra])
        d_med = max(np.median(v) for k, v in med.items() if k.startswith("diffusion"))
        what = (
            "fraction of samples near a mode"
            if extra == "high_quality"
            else "classifier confidence"
        )
        for label, v in med.items():
            if not label.startswith("diffusion") and np.median(v) >= d_med:
                out.append(
                    f"{name}: {label}'s median {what} ({np.median(v):.3f}) is at least the best "
                    f"diffusion sampler's ({d_med:.3f}): its samples are as sharp or sharper."
                )
    return out


# ----------------------------------------------------------------------------- main


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def run(s: Settings, workdir: pathlib.Path, quick: bool = False, log=print) -> dict:
    """Run the experiment; writes report.md, results.json and the figures to ``workdir``."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    results = {"settings": {**dataclasses.asdict(s), "quick": quick}, "datasets": {}}
    results["machine"] = f"{jax.devices()[0].platform}, {jax.device_count()} device(s)"
    for name in s.datasets:
        t0 = time.perf_counter()
        task = make_task(name, s)
        results["datasets"][name] = run_task(task, s, workdir, log)
        results["datasets"][name]["seconds"] = time.perf_counter() - t0
        log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
        # written after every data set, so an interrupted run keeps what it finished
        results["wall_seconds"] = time.perf_counter() - start
        results["cpu_seconds"] = time.process_time() - cpu
        results["complete"] = name == s.datasets[-1]
        out = _jsonable(results)
        (workdir / "results.json").write_text(json.dumps(out, indent=1) + "\n")
        write_report(out, workdir / "report.md")
    log(f"wrote {workdir / 'report.md'} in {results['wall_seconds'] / 60:.1f} min")
    return out


def _floats(text):
    return tuple(float(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    """``scoresde experiment vs-gan [--workdir DIR] [--quick] [...]``."""
    parser = argparse.ArgumentParser(
        prog="scoresde experiment",
        description="Score-based diffusion vs a GAN baseline: mode coverage, stability, "
        "likelihood and sampling cost (report.md, results.json, figures in --workdir).",
    )
    parser.add_argument("experiment", nargs="?", default="vs-gan", choices=["vs-gan"])
    parser.add_argument("--workdir", default="runs/vs_gan")
    parser.add_argument("--quick", action="store_true", help="smoke version (~1-2 min)")
    parser.add_argument("--datasets", help=f"comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    parser.add_argument("--lrs", help="comma-separated learning rates, e.g. 2e-4,1e-3")
    parser.add_argument("--gan-losses", help=f"comma-separated subset of {','.join(gan.LOSSES)}")
    parser.add_argument(
        "--steps-2d", type=int, help="training steps on the mixtures (both families)"
    )
    parser.add_argument("--steps-digits", type=int, help="training steps on digits (both families)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    s = QUICK if args.quick else Settings()
    try:
        if args.datasets:
            s = dataclasses.replace(s, datasets=tuple(args.datasets.split(",")))
        if args.seeds is not None:
            if args.seeds < 1:
                raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
            s = dataclasses.replace(s, seeds=tuple(range(args.seeds)))
        if args.lrs:
            s = dataclasses.replace(s, lrs=_floats(args.lrs))
        if args.gan_losses:
            s = dataclasses.replace(s, gan_losses=tuple(args.gan_losses.split(",")))
        for name in ("steps_2d", "steps_digits"):
            value = getattr(args, name)
            if value is not None:
                if value < 1:
                    raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
                s = dataclasses.replace(s, **{name: value})
    except ValueError as e:
        parser.error(str(e))
    run(s, pathlib.Path(args.workdir), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
