"""Names to objects: every table the command line and the configs look names up in.

The library only ever takes objects (an SDE, a diffrax solver, a network); this module
is the one place where a config's names become them. Each table is a dict from a name
to a builder, and every lookup of an unknown name raises a ``ValueError`` that lists
the valid ones (:func:`lookup`); nothing falls through to a default.

A forward process joins :data:`SDES` by being exported from :mod:`sde` (under the
``names`` it declares); a backbone joins :data:`ARCHITECTURES` by one entry, with its
config section, in :mod:`experiments.architectures`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import diffrax
import optax
from flax import nnx

import networks
import samplers
import sde as sde_lib
from experiments import architectures
from experiments import data as data_lib
from experiments.config import Config, ConfigError, ModelConfig, SDEConfig, TrainConfig
from sde._losses import WEIGHTINGS
from sde._time_sampling import TIME_SAMPLINGS


def lookup(table: dict, name: str, what: str):
    """``table[name]``, or a ``ValueError`` that lists the valid names."""
    key = name.lower() if isinstance(name, str) else name
    try:
        return table[key]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(key), list(table), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown {what} {name!r}{hint}; choose one of {', '.join(sorted(table))}"
        ) from None


# ---------------------------------------------------------------------------- SDEs


def _sde_builder(cls: type[sde_lib.AbstractSDE]) -> Callable[[SDEConfig], sde_lib.AbstractSDE]:
    """``cls`` from the fields of ``sde`` its constructor takes (``beta_min``, ...)."""
    params = inspect.signature(cls).parameters
    fields = [f.name for f in dataclasses.fields(SDEConfig) if f.name in params]
    return lambda c: cls(**{name: getattr(c, name) for name in fields})


# Every forward process the sde package exports, under the names it gives itself
# (``VPSDE.names == ("vp",)``): a new one needs no line here.
SDES: dict[str, Callable[[SDEConfig], sde_lib.AbstractSDE]] = {
    name: _sde_builder(cls)
    for cls in (getattr(sde_lib, n) for n in sde_lib.__all__)
    if isinstance(cls, type) and issubclass(cls, sde_lib.AbstractSDE)
    for name in cls.names
}


def sde(c: SDEConfig | str) -> sde_lib.AbstractSDE:
    """The config's SDE; a bare name gives it with the default hyper-parameters."""
    c = SDEConfig(name=c) if isinstance(c, str) else c
    return lookup(SDES, c.name, "SDE")(c)


# ---------------------------------------------------------------------------- solvers

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "euler": diffrax.Euler,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "bosh3": diffrax.Bosh3,
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "shark": diffrax.ShARK,
    "sra1": diffrax.SRA1,
    "sea": diffrax.SEA,
    "spark": diffrax.SPaRK,
    # exponential integrators for the probability-flow ODE (fixed steps only)
    "ddim": samplers.DDIM,
    "dpmpp2m": samplers.DPMSolverPP2M,
    "dpmpp3m": samplers.DPMSolverPP3M,
    "dpmpp2s": samplers.DPMSolverPP2S,  # 2 score evaluations per step
    "unipc": samplers.UniPC,  # UniP-2 + UniC (bh2): order 3
    "unipc3": lambda: samplers.UniPC(order=3),  # order 4
    "unipc_bh1": lambda: samplers.UniPC(variant="bh1"),
    # exponential integrator for the reverse SDE (sample_sde, fixed steps only)
    "sde_dpmpp2m": samplers.SDEDPMSolverPP2M,
}


def solver(name: str) -> diffrax.AbstractSolver:
    return lookup(SOLVERS, name, "solver")()


def _for_sdes(s: diffrax.AbstractSolver) -> bool:
    """Whether ``s`` steps an SDE (its terms are drift plus a Brownian term)."""
    return typing.get_origin(s.term_structure) is diffrax.MultiTerm


def _adaptive_for_odes(s: diffrax.AbstractSolver) -> bool:
    return isinstance(s, diffrax.AbstractAdaptiveSolver) and not _for_sdes(s)


def adaptive_ode_solver(name: str) -> diffrax.AbstractSolver:
    """``solver(name)`` if it can take adaptive steps of the probability-flow ODE (an
    ODE solver with an error estimate, as ``eval.method=ode`` and every likelihood use
    it), else a ``ValueError`` that says why and names the ones that can."""
    s = solver(name)
    if _adaptive_for_odes(s):
        return s
    why = (
        "is a solver for SDEs (it needs a Brownian term)"
        if _for_sdes(s)
        else "has no error estimate, so it takes fixed steps only"
    )
    fit = [n for n, make in SOLVERS.items() if _adaptive_for_odes(make())]
    raise ValueError(
        f"{name!r} {why}; the probability-flow ODE takes adaptive steps (eval.method=ode "
        f"and the likelihood): choose one of {', '.join(fit)}"
    )


# the solvers above whose steps are exact in the linear part: their natural grid is
# uniform in log-SNR (Lu et al. 2022), the default of --grid for them
EXPONENTIAL = frozenset(
    {"ddim", "dpmpp2m", "dpmpp3m", "dpmpp2s", "unipc", "unipc3", "unipc_bh1", "sde_dpmpp2m"}
)

# --grid NAME: (sde, steps, eps) -> the times from sde.T down to eps; "tuned" (fitted to
# the model's own ODE, samplers.optimize_grid) needs the score and is built by evaluation
GRIDS: dict[str, Callable | None] = {
    "uniform": lambda sde, n, eps: samplers.uniform_grid(n, eps, sde.T),
    "quadratic": lambda sde, n, eps: samplers.quadratic_grid(n, eps, sde.T),
    "log_snr": lambda sde, n, eps: samplers.log_snr_grid(sde, n, eps),
    "karras": lambda sde, n, eps: samplers.karras_grid(sde, n, eps),
    "tuned": None,
}


def grid(name: str, sde, steps: int, eps: float):
    """The times of grid ``name`` (not ``tuned``: see :data:`GRIDS`)."""
    make = lookup(GRIDS, name, "grid")
    if make is None:
        raise ValueError(f"grid {name!r} is fitted to a model: see samplers.optimize_grid")
    return make(sde, steps, eps)


# ---------------------------------------------------------------------------- samplers


@dataclasses.dataclass(frozen=True)
class Method:
    """How the command line calls one sampler: every sampler takes ``score_fn``, ``sde``,
    ``shape``, ``key``, ``eps`` and ``steps`` (or, where ``adaptive``, ``rtol``/``atol``
    when no steps are given); ``solver`` is the default solver's name, ``None`` for a
    sampler with steps of its own, which ``label`` then describes; ``options`` reads
    the sampler's own knobs from ``eval``."""

    fn: Callable
    solver: str | None
    adaptive: bool = False
    options: Callable[[Any], dict] = lambda e: {}
    label: Callable[[Any], str] = lambda e: ""


SAMPLERS: dict[str, Method] = {
    "ode": Method(samplers.sample_ode, solver="tsit5", adaptive=True),
    "sde": Method(samplers.sample_sde, solver="euler"),
    "pc": Method(samplers.sample_pc, solver="euler"),
    "edm": Method(
        samplers.sample_edm,
        solver=None,
        options=lambda eval_cfg: dict(
            denoise=True,  # the last step goes to sigma = 0 (EDM's Algorithm 1)
            s_churn=eval_cfg.s_churn,
            s_tmin=eval_cfg.s_tmin,
            s_tmax=eval_cfg.s_tmax,
            s_noise=eval_cfg.s_noise,
        ),
        label=lambda eval_cfg: (
            "edm heun" + (f", churn {eval_cfg.s_churn:g}" if eval_cfg.s_churn else "")
        ),
    ),
    # students of `scoresde distill` (their work dirs' eval.method)
    "consistency": Method(samplers.sample_consistency, solver=None, label=lambda e: ""),
    "meanflow": Method(
        lambda *, score_fn, **kw: samplers.sample_meanflow(mean_flow=score_fn, **kw),
        solver=None,
        label=lambda e: "",
    ),
}


def sampler(name: str) -> Method:
    return lookup(SAMPLERS, name, "sampling method")


DIVERGENCES = ("exact", "hutchinson")  # samplers.log_likelihood(divergence=...)
DEQUANTIZATIONS = ("uniform", "truncated_normal")  # evaluation of image likelihoods

# ---------------------------------------------------------------------------- networks

PARAMETRISATIONS: dict[str, Callable[[ModelConfig], networks.AbstractParametrisation]] = {
    "noise": lambda c: networks.NoisePrediction(),
    "score": lambda c: networks.DirectScore(),
    "denoiser": lambda c: networks.EDMDenoiser(sigma_data=c.sigma_data),
    "velocity": lambda c: networks.VelocityPrediction(),  # flow matching's target
    "data": lambda c: networks.DataPrediction(),  # x0-prediction
}


def parametrisation(
    c: ModelConfig, source: data_lib.DataSource | None = None, seed: int = 0
) -> networks.AbstractParametrisation:
    """The config's parametrisation, with its base score if it has one;
    ``model.histogram_base`` needs the data ``source`` (its training histograms, counted
    with the training ``seed``)."""
    inner = lookup(PARAMETRISATIONS, c.parametrisation, "parametrisation")(c)
    if c.histogram_base:
        if source is None:
            raise ValueError("model.histogram_base needs the data source")
        probs = data_lib.level_histogram(source, seed=seed)
        return networks.HistogramResidual.from_probs(probs, source.data_range, inner=inner)
    return networks.GaussianResidual(inner) if c.gaussian_base else inner


ARCHITECTURES = architectures.ARCHITECTURES  # with each one's config section
COMPUTE_DTYPES = architectures.COMPUTE_DTYPES


def model(c: ModelConfig, shape: tuple[int, ...], seed: int) -> nnx.Module:
    """The config's network for examples of ``shape``, initialised from ``seed``."""
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    lookup(ARCHITECTURES, c.architecture, "architecture")
    try:
        return architectures.build(
            c.architecture.lower(), c, tuple(shape), rngs, c.num_classes or None
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None


# ---------------------------------------------------------------------------- training

Loss = Callable[..., Any]  # loss(score_fn, sde, x0, key) -> per-example losses [B]


def time_sampling(t: TrainConfig) -> sde_lib.TimeSampling:
    """The density over log-SNR that ``train.t_sampling`` names, with its parameters."""
    make = lookup(TIME_SAMPLINGS, t.t_sampling, "time sampling")
    params = {
        "logit_normal": dict(mean=t.logit_mean, std=t.logit_std),
        "lognormal": dict(p_mean=t.p_mean, p_std=t.p_std),
    }
    return make(**params.get(t.t_sampling, {}))


def _dsm(t: TrainConfig, m: ModelConfig) -> Loss:
    density = time_sampling(t)

    def loss(score_fn, forward, x0, key):
        return sde_lib.dsm_loss(
            score_fn, forward, x0, key, weighting=t.weighting, t_sampling=density, eps=t.eps
        )

    return loss


def _edm(t: TrainConfig, m: ModelConfig) -> Loss:
    def loss(score_fn, forward, x0, key):
        return sde_lib.edm_loss(
            score_fn, forward, x0, key, p_mean=t.p_mean, p_std=t.p_std, sigma_data=m.sigma_data
        )

    return loss


LOSSES: dict[str, Callable[[TrainConfig, ModelConfig], Loss]] = {
    "dsm": _dsm,  # denoising score matching (Song et al. 2021), train.weighting/t_sampling
    "edm": _edm,  # EDM's log-normal-sigma loss (Karras et al. 2022), train.p_mean/p_std
}


def loss(cfg: Config) -> Loss:
    return lookup(LOSSES, cfg.train.loss, "loss")(cfg.train, cfg.model)


SCHEDULES: dict[str, Callable[[TrainConfig], optax.Schedule]] = {
    "cosine": lambda c: optax.warmup_cosine_decay_schedule(
        0.0,
        c.lr,
        max(c.warmup_steps, 1),
        max(c.schedule_steps or c.steps, c.warmup_steps + 1),
        0.01 * c.lr,
    ),
    "constant": lambda c: optax.join_schedules(
        [optax.linear_schedule(0.0, c.lr, max(c.warmup_steps, 1)), optax.constant_schedule(c.lr)],
        [max(c.warmup_steps, 1)],
    ),
}
OPTIMIZERS: dict[str, Callable[[TrainConfig, optax.Schedule], optax.GradientTransformation]] = {
    "adam": lambda c, lr: optax.adam(lr),
    "adamw": lambda c, lr: optax.adamw(lr, weight_decay=c.weight_decay),
}


def optimizer(c: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``(tx, schedule)``: the optimizer with warm-up and schedule, after global-norm
    clipping when ``grad_clip > 0``."""
    schedule = lookup(SCHEDULES, c.schedule, "learning-rate schedule")(c)
    opt = lookup(OPTIMIZERS, c.optimizer, "optimizer")(c, schedule)
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip), opt) if c.grad_clip > 0 else opt
    return tx, schedule


# ---------------------------------------------------------------------------- data


def source(cfg: Config) -> data_lib.DataSource:
    """The config's data as the model sees it: the data set, flattened for an MLP,
    Gaussianized and whitened if the config says so (the fixed maps are fitted on the
    training split with ``train.seed``)."""
    src = data_lib.make_source(cfg.data)
    if cfg.model.architecture == "mlp":
        src = data_lib.flattened(src)  # images become flat vectors
    if cfg.data.gaussianize:
        src = data_lib.gaussianized(src, seed=cfg.train.seed)
    if cfg.model.num_classes and src.num_classes != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes={cfg.model.num_classes} but data.name={cfg.data.name} has "
            f"{src.num_classes or 'no'} class labels"
        )
    if cfg.data.whiten != "none":
        if len(src.shape) != 1:
            raise ConfigError(
                f"data.whiten={cfg.data.whiten} needs flat examples (model.architecture=mlp)"
            )
        src = data_lib.whitened(src, cfg.data.whiten, cfg.train.seed)
    return src


# ---------------------------------------------------------------------------- checks


@contextlib.contextmanager
def _at(key: str, section=None):
    """Re-raise a ``ValueError`` from building ``key``'s object as a ConfigError naming
    it; the fields of the config ``section`` it was built from get their dotted names."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        text = str(err)
        if section is not None:
            names = "|".join(f.name for f in dataclasses.fields(section))
            text = re.sub(rf"(?<![.\w])({names})\b", rf"{key}.\1", text)
        raise ConfigError(f"{key}: {text}") from None


NAMES: dict[str, tuple[Any, str]] = {  # dotted key: (the table it names, what it is)
    "data.name": (data_lib.DATASETS, "data set"),
    "data.whiten": (data_lib.WHITENINGS, "whitening"),
    "model.architecture": (ARCHITECTURES, "architecture"),
    "model.parametrisation": (PARAMETRISATIONS, "parametrisation"),
    **{  # every architecture section that has a compute dtype
        f"model.{section}.compute_dtype": (COMPUTE_DTYPES, "compute dtype")
        for section, cls in architectures.sections().items()
        if "compute_dtype" in {f.name for f in dataclasses.fields(cls)}
    },
    "sde.name": (SDES, "SDE"),
    "train.loss": (LOSSES, "loss"),
    "train.optimizer": (OPTIMIZERS, "optimizer"),
    "train.schedule": (SCHEDULES, "learning-rate schedule"),
    "train.weighting": (WEIGHTINGS, "DSM weighting"),
    "train.t_sampling": (TIME_SAMPLINGS, "time sampling"),
    "train.val_divergence": (DIVERGENCES, "divergence"),
    "eval.method": (SAMPLERS, "sampling method"),
    "eval.solver": (SOLVERS, "solver"),
    "eval.divergence": (DIVERGENCES, "divergence"),
    "eval.dequantization": (DEQUANTIZATIONS, "dequantization"),
}


def check(cfg: Config) -> None:
    """Raise a :class:`ConfigError` naming the dotted key of the first name no table
    holds, or of a value the objects refuse; builds nothing large (no data, no model)."""
    from experiments.config import get

    for key, (table, what) in NAMES.items():
        value = get(cfg, key)
        if value not in table:
            with _at(key):
                lookup(dict.fromkeys(table), value, what)
    with _at("eval.solver"):
        adaptive_ode_solver(cfg.eval.solver)
    with _at("sde", cfg.sde):
        forward = sde(cfg.sde)
    for key in ("train.eps", "eval.sample_eps", "eval.likelihood_eps"):
        if not 0 < get(cfg, key) < forward.T:
            raise ConfigError(
                f"{key} must lie in (0, T) = (0, {forward.T:g}) for sde.name={cfg.sde.name}, "
                f"got {get(cfg, key)!r}"
            )
    for key in ("data.gaussianize", "model.histogram_base"):
        if get(cfg, key) and cfg.data.name not in data_lib.IMAGE_DATASETS:
            raise ConfigError(
                f"{key} needs image data ({', '.join(data_lib.IMAGE_DATASETS)}), got "
                f"data.name={cfg.data.name!r}"
            )
