"""What may change when a run resumes, and where a fork starts.

A run resumes from its own ``config.json`` (``scoresde train --workdir DIR``, with or
without overrides). What decides the trajectory of the weights (network, SDE, data,
loss, optimizer, seed) is fixed for the run's life; bookkeeping and evaluation may
change on resume, and every change is recorded in ``changes.jsonl`` (one line per
resume that changed something: the step, the time and each key's old and new value):

- ``train.steps`` (to extend or shorten a run; not below its last checkpoint),
- ``train.schedule_steps`` (the learning-rate schedule's horizon, see below),
- logging, checkpointing and validation (:data:`BOOKKEEPING`),
- every ``eval.*`` key (sampling and likelihood settings).

**Extending a run keeps its learning-rate schedule.** The cosine schedule decays over
``train.schedule_steps`` steps (0: ``train.steps``). When ``train.steps`` grows on
resume and ``train.schedule_steps`` is not given, the horizon is pinned to the old run's
(so the steps already taken keep their learning rates and the new ones train at the
schedule's floor, ``0.01 lr``); give ``train.schedule_steps=N`` to stretch the
schedule to ``N`` instead (the learning rate then jumps to its value at the current
step of the longer schedule). Either way the start-up line says which.

**A fork** (``scoresde train --fork-from SRC[:STEP] --workdir NEW [overrides]``) starts a
new run from another run's checkpoint (the latest, or ``STEP``): network, EMA and
optimizer state and the step count are taken from it, the config is the source's own
(or ``--config``) with the overrides, and anything may change that keeps the shapes of
the network and of the optimizer state (learning rate and schedule, loss, weighting,
time sampling, batch size, EMA decay, ...). ``fork.json`` in the new work dir records
the source, its step and the keys that differ from the source's config. Since batches
and keys are functions of ``(seed, step)``, a fork that changes nothing continues
exactly as the source did.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

from experiments import config as config_lib
from experiments._parser import fork_source

BOOKKEEPING = frozenset(
    {
        "train.steps",
        "train.schedule_steps",
        "train.log_every",
        "train.ckpt_every",
        "train.keep",
        "train.eval_every",
        "train.n_eval_val",
        "train.val_divergence",
        "train.val_probes",
        "train.val_rtol",
        "train.val_atol",
    }
)


def may_change(key: str) -> bool:
    """Whether ``key`` may differ between a run's saved config and its resume."""
    return key in BOOKKEEPING or key.startswith("eval.")


def horizon(train_cfg) -> int:
    """The steps the learning-rate schedule decays over."""
    return train_cfg.schedule_steps or train_cfg.steps


@dataclasses.dataclass(frozen=True)
class Resumed:
    """A resumed run's config and what changed: ``changes`` maps each changed key to
    ``(old, new)``; ``notes`` are sentences for the start-up line."""

    cfg: config_lib.Config
    changes: dict
    notes: tuple[str, ...] = ()


def reconcile(
    saved: config_lib.Config, cfg: config_lib.Config, workdir, explicit=frozenset()
) -> Resumed:
    """The config a run saved as ``saved`` resumes with when asked for ``cfg``: refuses
    (``ConfigError``, naming the keys) a change to anything but :func:`may_change`
    keys, and keeps the cosine schedule's horizon unless ``train.schedule_steps`` is
    among the ``explicit`` keys (those given on the command line; module docstring)."""
    fixed = [k for k in config_lib.differences(saved, cfg) if not may_change(k)]
    if fixed:
        raise config_lib.ConfigError(
            f"{workdir} holds a run with a different config ({', '.join(fixed)}); only "
            "bookkeeping (train.steps, train.schedule_steps, train.log_every, "
            "train.ckpt_every, train.keep, train.eval_every, train.n_eval_val, "
            "train.val_*) and eval.* may change on resume. Use a new --workdir, "
            "--fork-from to branch off this run with new settings, or --restart to move "
            "the old run aside"
        )
    notes = []
    old, new = saved.train, cfg.train
    if new.schedule == "cosine" and horizon(new) != horizon(old):
        if "train.schedule_steps" in explicit:
            notes.append(
                f"the cosine schedule's horizon changes from {horizon(old)} to "
                f"{horizon(new)} steps (train.schedule_steps)"
            )
        else:
            cfg = config_lib.apply_overrides(cfg, [f"train.schedule_steps={horizon(old)}"])
            if new.steps != old.steps:
                notes.append(
                    f"train.steps {old.steps} -> {new.steps}: the cosine schedule keeps "
                    f"its {horizon(old)}-step horizon (lr {0.01 * old.lr:g} past step "
                    f"{horizon(old)}); train.schedule_steps={new.steps} would stretch it"
                )
    changes = {
        k: (config_lib.get(saved, k), config_lib.get(cfg, k))
        for k in config_lib.differences(saved, cfg)
    }
    return Resumed(cfg=cfg, changes=changes, notes=tuple(notes))


def record(workdir: pathlib.Path, step: int, changes: dict) -> None:
    """Append the changes of a resume at ``step`` to ``workdir/changes.jsonl``."""
    if not changes:
        return
    line = {
        "step": step,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "changes": {k: list(v) for k, v in changes.items()},
    }
    with (pathlib.Path(workdir) / "changes.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


def describe(changes: dict) -> str:
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


@dataclasses.dataclass(frozen=True)
class Fork:
    """Where a fork starts: the source work dir and its checkpoint step (None: the
    latest)."""

    source: pathlib.Path
    step: int | None = None

    @classmethod
    def parse(cls, text: str) -> Fork:
        """``DIR`` or ``DIR:STEP``."""
        return cls(*fork_source(text))

    def config_path(self) -> pathlib.Path:
        path = self.source / "config.json"
        if not path.exists():
            raise FileNotFoundError(
                f"--fork-from {self.source}: no config.json there (not a training run)"
            )
        return path

    def check(self, cfg: config_lib.Config) -> None:
        """Refuse (``ConfigError``) a fork config whose network or optimizer state
        cannot hold the source's checkpoint: a change to a ``model.*`` key (but
        ``model.dropout``), to ``train.optimizer``, or gradient clipping on or off."""
        source = config_lib.read(self.config_path())
        shaped = [
            k
            for k in config_lib.differences(source, cfg)
            if (k.startswith("model.") and k != "model.dropout") or k == "train.optimizer"
        ]
        if (source.train.grad_clip > 0) != (cfg.train.grad_clip > 0):
            shaped.append("train.grad_clip (on/off)")
        if shaped:
            raise config_lib.ConfigError(
                f"--fork-from {self.source}: a fork keeps the network and the optimizer "
                f"state of its source, so it cannot change {', '.join(shaped)}; train a "
                "new run instead"
            )

    def record(self, workdir: pathlib.Path, step: int, cfg: config_lib.Config) -> None:
        """Write ``workdir/fork.json``: the source, its step and what the fork changed."""
        source_cfg = config_lib.read(self.config_path())
        changed = {
            k: [config_lib.get(source_cfg, k), config_lib.get(cfg, k)]
            for k in config_lib.differences(source_cfg, cfg)
        }
        info = {"from": str(self.source.absolute()), "step": step, "changes": changed}
        (pathlib.Path(workdir) / "fork.json").write_text(json.dumps(info, indent=2) + "\n")
