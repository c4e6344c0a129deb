"""Checks of a whole config before anything is built or written.

Names (an SDE, a solver, a data set) and the facts objects own (an SDE's end time T,
which data sets are images) are checked by building or asking the objects
(:func:`experiments.build.check`); what is left here are the ranges of plain numbers
that no object owns. Comparisons are written so that NaN fails them.
"""

from __future__ import annotations

import dataclasses
import math

from experiments.architectures import sections

from ._overrides import ConfigError, get
from ._schema import Config

POSITIVE = (
    "train.steps",
    "train.batch_size",
    "train.lr",
    "train.log_every",
    "train.ckpt_every",
    "train.keep",
    "train.n_eval_val",
    "train.val_probes",
    "train.val_rtol",
    "train.val_atol",
    "eval.n_samples",
    "eval.steps",
    "eval.batch_size",
    "eval.n_probes",
    "eval.dequant_repeats",
    "eval.rtol",
    "eval.atol",
    "model.embed_dim",
)  # and every number of an architecture's section (model.mlp.hidden, ...)
NON_NEGATIVE = (
    "eval.n_likelihood",
    "train.grad_clip",
    "train.weight_decay",
    "train.eval_every",
    "train.warmup_steps",
    "train.schedule_steps",
    "train.seed",
    "model.num_classes",
    "eval.s_churn",
)
NON_EMPTY = ("model.unet.channels", "model.ncsnpp.ch_mult")
UNIT_INTERVAL = {  # key: (lowest, highest, highest included)
    "train.ema_decay": (0.0, 1.0, False),
    "train.p_uncond": (0.0, 1.0, True),
    "model.dropout": (0.0, 1.0, False),
    "data.val_fraction": (0.0, 1.0, False),
}


def _floats(node, prefix: str = "") -> None:
    """Every float of the config is finite (``inf`` and ``nan`` mean nothing in any)."""
    for f in dataclasses.fields(node):
        v, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            _floats(v, key + ".")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key} must be a finite number, got {v!r}")


def _numbers(cfg: Config) -> None:
    _floats(cfg)
    for key in POSITIVE:
        if not get(cfg, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {get(cfg, key)!r}")
    for key in NON_NEGATIVE:
        if not get(cfg, key) >= 0:
            raise ConfigError(f"{key} must be >= 0, got {get(cfg, key)!r}")
    for key, (lo, hi, closed) in UNIT_INTERVAL.items():
        v = get(cfg, key)
        if not (lo <= v <= hi if closed else lo <= v < hi):
            raise ConfigError(
                f"{key} must lie in [{lo:g}, {hi:g}{']' if closed else ')'}, got {v!r}"
            )
    _sections(cfg)
    if cfg.train.eval_every % cfg.train.log_every:
        raise ConfigError(
            f"train.eval_every must be a multiple of train.log_every ({cfg.train.log_every}), "
            f"got {cfg.train.eval_every}"
        )
    if not cfg.eval.s_noise > 0 or not cfg.eval.s_tmin <= cfg.eval.s_tmax:
        raise ConfigError(
            "eval.s_noise must be > 0 and eval.s_tmin <= eval.s_tmax; got "
            f"{cfg.eval.s_noise!r}, {cfg.eval.s_tmin!r}, {cfg.eval.s_tmax!r}"
        )
    _time_sampling(cfg.train)


def _time_sampling(t) -> None:
    """The parameters of the loss's time density: finite means, positive spreads."""
    uses = {
        ("p_mean", "p_std"): t.loss == "edm" or t.t_sampling == "lognormal",
        ("logit_mean", "logit_std"): t.loss == "dsm" and t.t_sampling == "logit_normal",
    }
    for (mean, std), used in uses.items():
        if not used:
            continue
        if not math.isfinite(getattr(t, mean)):
            raise ConfigError(f"train.{mean} must be finite, got {getattr(t, mean)!r}")
        if not getattr(t, std) > 0 or not math.isfinite(getattr(t, std)):
            raise ConfigError(f"train.{std} must be finite and > 0, got {getattr(t, std)!r}")
    if t.weighting != "likelihood" and t.t_sampling == "importance":
        raise ConfigError(
            "train.t_sampling=importance needs train.weighting=likelihood, "
            f"got train.weighting={t.weighting}"
        )


def _sections(cfg: Config) -> None:
    """Every number of an architecture's section is a positive size; every tuple a list
    of them (``model.unet.channels`` and ``model.ncsnpp.ch_mult`` also non-empty)."""
    for section in sections():
        options = getattr(cfg.model, section)
        for f in dataclasses.fields(options):
            key, v = f"model.{section}.{f.name}", getattr(options, f.name)
            if isinstance(v, bool) or isinstance(v, str):
                continue
            if isinstance(v, tuple):
                if any(not x >= 1 for x in v) or (not v and key in NON_EMPTY):
                    raise ConfigError(f"{key} must be positive integers, got {v!r}")
            elif not v > 0:
                raise ConfigError(f"{key} must be > 0, got {v!r}")


def _combinations(cfg: Config) -> None:
    if cfg.model.histogram_base and (
        cfg.model.gaussian_base or cfg.data.gaussianize or cfg.data.whiten != "none"
    ):
        raise ConfigError(
            "model.histogram_base is the score of the pixels' own histograms: it needs "
            "data.gaussianize=false, data.whiten=none and model.gaussian_base=false"
        )
    students = {"consistency": ("cd", "ect"), "meanflow": ("meanflow",)}
    if cfg.eval.method in students and cfg.distill.method not in students[cfg.eval.method]:
        raise ConfigError(
            f"eval.method={cfg.eval.method} samples a student of scoresde distill "
            f"(distill.method={' or '.join(students[cfg.eval.method])}); this run has "
            f"distill.method={cfg.distill.method or 'none'}"
        )
    if cfg.model.interval_time and cfg.distill.method != "meanflow":
        raise ConfigError(
            "model.interval_time=true gives the network MeanFlow's second time input; "
            "it needs distill.method=meanflow"
        )


def validate(cfg: Config) -> Config:
    """``cfg`` if it can be built, else a :class:`ConfigError` naming the key."""
    from experiments import build

    _numbers(cfg)
    _combinations(cfg)
    build.check(cfg)
    return cfg
