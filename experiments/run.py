"""A :class:`Run`: everything a config determines, built once and handed on.

``Run.create(cfg)`` builds the data source, the SDE, the parametrisation and the
network (with its EMA copy) from a config; ``Run.restore(workdir)`` rebuilds the same
from a work dir's ``config.json`` and restores the weights of its best (or latest)
checkpoint, without the optimizer state. Training (:mod:`experiments.training`)
returns a Run holding the trained weights, and evaluation
(:mod:`experiments.evaluation`) takes one, so ``scoresde train`` builds the world once.

Example::

    run = Run.create(config.load("checkerboard"))
    run = Run.restore("runs/checkerboard")
    x, stats = samplers.sample_ode(score_fn=run.score_function(), sde=run.sde, ...)
"""

from __future__ import annotations

import dataclasses
import numbers
import pathlib
from collections.abc import Callable

import jax
from flax import nnx

import networks
import sde as sde_lib
from experiments import build, distributed
from experiments import config as config_lib
from experiments.data import DataSource


def abstract(state, shardings=None):
    """``jax.ShapeDtypeStruct`` leaves of ``state`` (with ``shardings`` if given)."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )


def _is_step(checkpoint) -> bool:
    if isinstance(checkpoint, str):
        return checkpoint.isdigit()
    return (
        isinstance(checkpoint, numbers.Integral)
        and not isinstance(checkpoint, bool)
        and checkpoint >= 0
    )


def _networks(cfg: config_lib.Config, shape: tuple[int, ...]) -> tuple[nnx.Module, nnx.EMA]:
    model = build.model(cfg.model, shape, cfg.train.seed)
    model.train()
    return model, nnx.EMA(model, decay=cfg.train.ema_decay, only=nnx.Param)


@dataclasses.dataclass(frozen=True)
class Run:
    """A config and the objects it determines; ``state`` holds the weights of the
    network and of its EMA copy (``graphdef`` their structure), ``step`` the training
    step they are from (0: initial weights), ``workdir`` where the run's files live."""

    cfg: config_lib.Config
    source: DataSource
    sde: sde_lib.AbstractSDE
    param: networks.AbstractParametrisation
    graphdef: nnx.GraphDef
    state: nnx.State
    step: int = 0
    workdir: pathlib.Path | None = None
    weights: str = "ema"  # what the EMA slot holds: "ema", or "raw" (with_weights)
    checkpoint: str = "latest"  # which checkpoint the weights are: "best", "latest", "step"
    # what training minimises instead of the config's loss (a distillation objective,
    # experiments.training.distill): objective(model, x0, key, step, labels) -> [B]
    objective: Callable | None = None

    def describe(self) -> str:
        """Which weights these are, for a start-up line."""
        kind = {"best": "best on validation", "latest": "latest", "step": "chosen"}[self.checkpoint]
        return f"checkpoint step {self.step} ({kind}) of {self.workdir}, {self.weights} weights"

    @classmethod
    def create(cls, cfg: config_lib.Config, workdir: pathlib.Path | None = None) -> Run:
        """Build everything ``cfg`` names, with freshly initialised weights."""
        source = build.source(cfg)
        graphdef, state = nnx.split(_networks(cfg, source.shape))
        workdir = None if workdir is None else pathlib.Path(workdir)
        return cls._of(cfg, source, graphdef, state, workdir=workdir)

    @classmethod
    def _of(cls, cfg, source, graphdef, state, **rest) -> Run:
        """The run of ``cfg`` with these weights: the SDE and parametrisation built here."""
        return cls(
            cfg=cfg,
            source=source,
            sde=build.sde(cfg.sde),
            param=build.parametrisation(cfg.model, source, cfg.train.seed),
            graphdef=graphdef,
            state=state,
            **rest,
        )

    @classmethod
    def restore(
        cls,
        workdir: pathlib.Path,
        *,
        checkpoint: int | str | None = None,
        prefer_best: bool = True,
        mesh=None,
    ) -> Run:
        """The run trained in ``workdir`` with the weights of one checkpoint, placed on
        ``mesh`` (default: all devices; replicated, or FSDP-split as the run was
        trained). The network is built abstractly (``nnx.eval_shape``) and the
        optimizer state is never read.

        ``checkpoint``: ``"best"`` (the best-on-validation one, kept with
        ``train.eval_every > 0``), ``"latest"``, or a step saved under ``checkpoints/``;
        ``None`` (default) takes the best where there is one (``prefer_best``), else the
        latest. ``run.checkpoint`` says which was taken (``"best"``, ``"latest"``,
        ``"step"``)."""
        from experiments.training import Checkpoints

        workdir = pathlib.Path(workdir)
        path = workdir / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{workdir} has no config.json: train a model there first")
        if checkpoint is None:
            best = prefer_best and (workdir / "best").is_dir()
            checkpoint, fallback = ("best", True) if best else ("latest", False)
        else:
            fallback = False
            if not (checkpoint in ("best", "latest") or _is_step(checkpoint)):
                raise ValueError(
                    f"checkpoint must be 'best', 'latest' or a step (an integer >= 0), "
                    f"got {checkpoint!r}"
                )
        cfg = config_lib.read(path)
        source = build.source(cfg)
        graphdef, shapes = nnx.split(nnx.eval_shape(lambda: _networks(cfg, source.shape)))
        mesh = distributed.mesh() if mesh is None else mesh
        target = {
            "weights": abstract(shapes, distributed.state_shardings(shapes, mesh, cfg.train.fsdp))
        }
        restored, kind = None, "best" if checkpoint == "best" else "latest"
        sub = workdir / ("best" if checkpoint == "best" else "checkpoints")
        if not sub.is_dir():
            what = (
                "no best/ checkpoint (train.eval_every was 0)"
                if kind == "best"
                else "no checkpoints"
            )
            raise FileNotFoundError(f"{workdir} has {what}")
        ckpts = Checkpoints(sub, keep=1_000_000)  # reads only: keeps every checkpoint
        try:
            if _is_step(checkpoint):
                restored, kind = ckpts.restore(int(checkpoint), target), "step"
            else:
                restored = ckpts.restore_latest(target)
        finally:
            ckpts.close()
        if restored is None and fallback:  # an unreadable best/: the latest, as before
            return cls.restore(workdir, checkpoint="latest", mesh=mesh)
        if restored is None:
            why = f" ({ckpts.last_error})" if ckpts.last_error else ""
            raise FileNotFoundError(f"{workdir} has no readable checkpoint in {sub.name}/{why}")
        items, meta = restored
        step = int(meta["step"])
        return cls._of(
            cfg, source, graphdef, items["weights"], step=step, workdir=workdir, checkpoint=kind
        )

    def replace(self, **changes) -> Run:
        return dataclasses.replace(self, **changes)

    def with_weights(self, weights: str) -> Run:
        """The run whose evaluation weights are ``"ema"`` (the default everywhere) or
        ``"raw"`` (the network's own: the EMA copy is replaced by them)."""
        if weights == "ema":
            return self
        if weights != "raw":
            raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
        model, ema = nnx.merge(self.graphdef, self.state)
        raw = nnx.EMA(model, decay=ema.decay, only=nnx.Param)
        graphdef, state = nnx.split((model, raw))
        return self.replace(graphdef=graphdef, state=state, weights="raw")

    def score_function(self, use_ema: bool = True) -> networks.ScoreFunction:
        """A pure score function of the (EMA) weights, for the samplers."""
        model, ema = nnx.merge(self.graphdef, self.state)
        if use_ema:
            model = ema.apply_to(model)
        return networks.ScoreFunction.from_module(model, self.sde, self.param)
