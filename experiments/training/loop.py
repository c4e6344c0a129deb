"""The training loop: denoising score matching with Optax, EMA weights, Orbax checkpoints.

``train(run, workdir)`` runs (or resumes) a run: the step is jitted once, batches and
PRNG keys are pure functions of ``(seed, step)``, so a run killed at any moment and
restarted ends with exactly the parameters of an uninterrupted one. A non-finite loss
stops the run before anything is saved, keeping the last good checkpoint.

Data parallel over every device of every process (see :mod:`experiments.distributed`):
``train.batch_size`` is the global batch. Each process takes its rows of the batch of
step ``s``, the step is jitted with explicit shardings (batch split over the ``data``
axis, state replicated or, with ``train.fsdp=true``, split FSDP-style), and the loss
trajectory is that of one device with the whole batch up to float summation order.
Process 0 alone writes ``config.json``, ``metrics.jsonl`` (and its TensorBoard events
and ``loss.png``: :mod:`experiments.logs`), progress images and the progress bar;
every process takes part in computing, checkpointing and restoring.
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from experiments import build, distributed, logs
from experiments import config as config_lib
from experiments.run import Run, abstract
from experiments.training import guard, resume
from experiments.training import step as step_lib
from experiments.training.checkpoint import Checkpoints


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """Drop log lines a killed run wrote after its last checkpoint (and one it was
    killed in the middle of)."""
    if not path.exists():
        return
    keep = [r for r in logs.read_metrics(path.parent) if r["step"] <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))


class UnreadableRun(ValueError):
    """The work dir holds checkpoints, none of which restores into this config."""


def check_workdir(
    cfg: config_lib.Config, workdir: pathlib.Path, explicit=frozenset()
) -> resume.Resumed:
    """The config ``cfg`` runs with in ``workdir``: refuses a work dir that is a file,
    or whose run's config differs in more than what may change on resume
    (:func:`resume.reconcile`, which also keeps the schedule's horizon unless
    ``train.schedule_steps`` is among the ``explicit`` keys). Reads only."""
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
    path = workdir / "config.json"
    if path.exists() and (workdir / "checkpoints").exists():
        return resume.reconcile(config_lib.read(path), cfg, workdir, explicit)
    return resume.Resumed(cfg=cfg, changes={})


def prepare_workdir(cfg: config_lib.Config, workdir: pathlib.Path) -> None:
    """Write ``config.json``. Every process has checked the work dir before; after a
    barrier, process 0 alone writes."""
    distributed.barrier("scoresde-prepare-workdir")  # all have read before anyone writes
    if distributed.is_main():
        workdir.mkdir(parents=True, exist_ok=True)
        config_lib.save(cfg, workdir / "config.json")
    distributed.barrier("scoresde-workdir-ready")


def _unreadable(workdir: pathlib.Path, ckpts: Checkpoints) -> UnreadableRun:
    return UnreadableRun(
        f"{workdir / 'checkpoints'} holds checkpoints at steps {ckpts.steps()} and none of "
        f"them restores into this config ({ckpts.last_error}); nothing was changed. Train "
        "with the run's own config, or pass --restart to move the old run aside "
        "(into WORKDIR/replaced-<time>/) and start over"
    )


def _fork_start(fork: resume.Fork, target: dict) -> tuple[dict, dict]:
    """The items and metadata of the checkpoint a fork starts from."""
    directory = fork.source / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"--fork-from {fork.source}: no checkpoints there")
    source = Checkpoints(directory, keep=1_000_000)  # keeps all: a fork never deletes
    try:
        step = fork.step if fork.step is not None else (source.steps() or [None])[-1]
        if step is None:
            raise FileNotFoundError(f"--fork-from {fork.source}: no checkpoints there")
        try:
            return source.restore(step, target)
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - orbax raises many kinds on a mismatch
            raise ValueError(
                f"--fork-from {fork.source}:{step}: its checkpoint does not fit this config "
                f"({type(err).__name__}: {str(err)[:160]}); a fork may change anything but "
                "the shapes of the network and of the optimizer state (model.*, "
                "train.optimizer, train.grad_clip on or off)"
            ) from None
    finally:
        source.close()


def _check_batch(cfg: config_lib.Config, mesh) -> None:
    if cfg.train.batch_size % mesh.size:
        raise config_lib.ConfigError(
            f"train.batch_size={cfg.train.batch_size} is the global batch and must be a "
            f"multiple of the number of devices ({mesh.size}); e.g. "
            f"train.batch_size={distributed.padded_size(cfg.train.batch_size, mesh)}"
        )


def global_batch(run: Run, step: int, sharding):
    """The global batch of ``step`` (with its labels for a class-conditional run)."""
    train_cfg = run.cfg.train
    x = distributed.global_batch(
        run.source.train_batch(train_cfg.seed, step, train_cfg.batch_size), sharding
    )
    if not run.cfg.model.num_classes:
        return x
    labels = run.source.train_labels(train_cfg.seed, step, train_cfg.batch_size).astype(np.int32)
    return x, distributed.global_batch(labels, sharding)


class _Log:
    """Means of loss and gradient norm over each logging window, as ``metrics.jsonl``
    records."""

    def __init__(self, schedule):
        self.schedule, self.window, self.since = schedule, [], time.perf_counter()

    def add(self, loss: float, grad_norm: float) -> None:
        self.window.append((loss, grad_norm))

    def record(self, done: int) -> dict:
        now = time.perf_counter()
        out = {
            "step": done,
            "loss": float(np.mean([w[0] for w in self.window])),
            "grad_norm": float(np.mean([w[1] for w in self.window])),
            "lr": float(self.schedule(done)),
            "steps_per_sec": len(self.window) / (now - self.since),
        }
        self.window, self.since = [], now
        return out


def _diverged(loss: float, step: int, ckpts: Checkpoints, workdir, train_cfg) -> TrainingDiverged:
    last = ckpts.steps()[-1] if ckpts.steps() else None
    return TrainingDiverged(
        f"loss is {loss} at step {step + 1}; training stopped. The last good "
        f"checkpoint (step {last}) is kept in {workdir / 'checkpoints'}. Try a "
        f"lower train.lr (now {train_cfg.lr}) or train.grad_clip > 0 (now {train_cfg.grad_clip})."
    )


def train(
    run: Run | config_lib.Config,
    workdir: pathlib.Path,
    progress: bool = True,
    mesh=None,
    step_timeout: float | None = None,
    restart: bool = False,
    announce=None,
    fork: resume.Fork | None = None,
    explicit=frozenset(),
    stop_at: int | None = None,
) -> tuple[Run, dict]:
    """Train (or resume) ``run`` in ``workdir``; returns the run with the weights that
    evaluation uses (as :meth:`Run.restore` picks them: the best-on-validation
    checkpoint's with ``train.eval_every > 0``, else the last step's) and a summary.
    See the module docstring.

    ``run`` may be a config, built here (before anything is written: a bad config
    writes nothing). ``mesh`` (default: every device of every process) carries the data
    parallelism. ``step_timeout`` (seconds, default off) arms a
    :class:`distributed.Watchdog` after the first step: a process that makes no
    progress for that long exits with a message.
    Process 0 holds a lock on ``workdir`` throughout (a second ``train`` there is
    refused: :class:`guard.RunLocked`). The first SIGINT/SIGTERM stops at the next
    step boundary with a checkpoint and raises :class:`guard.TrainingInterrupted`.
    Checkpoints that exist but do not restore are refused (:class:`UnreadableRun`),
    never silently replaced; ``restart=True`` first moves the old run's files aside
    (:func:`guard.move_aside`). ``announce(start_step, notes)``, if given, is called on
    process 0 once all of that has passed, before the first step (``notes``: what
    changed on resume, where a fork started).

    A resume may change bookkeeping and evaluation keys (recorded in
    ``changes.jsonl``) and keeps the learning-rate schedule's horizon unless
    ``train.schedule_steps`` is among the ``explicit`` keys (:mod:`.resume`). ``fork``
    (:class:`resume.Fork`) starts an empty work dir from another run's checkpoint.
    ``stop_at`` (default ``train.steps``) ends this call at that step, with a
    checkpoint there: a run in stages (progressive distillation) calls it once per stage.
    """
    workdir = pathlib.Path(workdir)
    run = Run.create(run) if isinstance(run, config_lib.Config) else run
    mesh = distributed.mesh() if mesh is None else mesh
    _check_batch(run.cfg, mesh)
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
    lock = guard.WorkdirLock(workdir) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        if restart and distributed.is_main():
            moved = guard.move_aside(workdir)
            if moved is not None:
                print(f"scoresde train: moved the old run aside into {moved}", flush=True)
        distributed.barrier("scoresde-restart")
        resumed = check_workdir(run.cfg, workdir, explicit)
        run = run.replace(cfg=resumed.cfg)
        cfg, train_cfg = run.cfg, run.cfg.train
        tx, schedule = build.optimizer(train_cfg)
        graphdef, initial = step_lib.init(run, tx)
        shardings = distributed.state_shardings(initial, mesh, fsdp=train_cfg.fsdp)
        target = step_lib.items(graphdef, abstract(initial, shardings))
        ckpts = Checkpoints(workdir / "checkpoints", keep=train_cfg.keep)
        try:
            restored, notes = ckpts.restore_latest(target), list(resumed.notes)
            short = step_lib.short_run_warning(train_cfg)
            if short is not None:
                notes.append(f"warning: {short}")
            forked = restored is None and fork is not None and not ckpts.steps()
            if restored is None and ckpts.steps():
                raise _unreadable(workdir, ckpts)
            if forked:
                restored = _fork_start(fork, target)
                notes.append(f"forked from {fork.source} at step {restored[1]['step']}")
            elif fork is not None:
                notes.append("the fork's own checkpoints resume (--fork-from is not read again)")
            start = 0 if restored is None else int(restored[1]["step"])
            if start > train_cfg.steps:
                raise config_lib.ConfigError(
                    f"train.steps={train_cfg.steps} is below the run's last checkpoint "
                    f"(step {start}); nothing was changed. Give train.steps >= {start}, or "
                    f"evaluate an earlier checkpoint with sample/likelihood --checkpoint"
                )
            prepare_workdir(cfg, workdir)
            if restored is None:
                state, best_val, window = distributed.put(initial, shardings), math.inf, []
            else:
                state = step_lib.join(graphdef, initial, restored[0])
                meta = restored[1]
                # a fork keeps its own best checkpoint, not the source's figure
                best_val = math.inf if forked else float(meta.get("best_val_nll", math.inf))
                window = [tuple(w) for w in meta.get("log_window", [])]
            if distributed.is_main():
                _truncate_metrics(workdir / "metrics.jsonl", start)
                if resumed.changes:
                    resume.record(workdir, start, resumed.changes)
                    notes.insert(0, f"changed: {resume.describe(resumed.changes)}")
                if forked:
                    fork.record(workdir, start, cfg)
                if announce is not None:
                    announce(start, notes)
            loop = _Loop(run.replace(workdir=workdir), graphdef, shardings, mesh, ckpts, schedule)
            started = time.perf_counter()
            end = train_cfg.steps if stop_at is None else min(stop_at, train_cfg.steps)
            state, best_val = loop.go(
                state, start, best_val, progress, step_timeout, window, max(end, start)
            )
        finally:
            ckpts.close()
    weights, step = step_lib.items(graphdef, state)["weights"], max(end, start)
    kind = "latest"
    if train_cfg.eval_every > 0 and (workdir / "best").exists():
        best = Checkpoints(workdir / "best", keep=1)
        restored = best.restore_latest({"weights": abstract(weights, shardings_of(weights))})
        best.close()
        if restored is not None:
            weights, step = restored[0]["weights"], int(restored[1]["step"])
            kind = "best"
    info = {
        "steps": train_cfg.steps,
        "resumed_from": start,
        "train_seconds": time.perf_counter() - started,
        "best_val_nll": best_val if math.isfinite(best_val) else None,
        "devices": mesh.size,
        "processes": jax.process_count(),
    }
    if distributed.is_main():  # what report.md is rebuilt from after later evaluations
        (workdir / "train.json").write_text(json.dumps(info, indent=2) + "\n")
    return run.replace(state=weights, step=step, workdir=workdir, checkpoint=kind), info


def _stop_requested(interrupts: guard.Interrupts, done: int, every: int) -> str | None:
    """The signal that asked to stop, agreed by every process (a collective every
    ``every`` steps when there are several; every step when there is one)."""
    if jax.process_count() == 1:
        return interrupts.signal_name
    if done % every:
        return None
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(interrupts.signal_name is not None))
    return (interrupts.signal_name or "a signal to another process") if np.any(flags) else None


def validation_due(train_cfg, done: int) -> bool:
    """Whether step ``done`` validates: every ``train.eval_every`` steps, and at the last
    step of a run at least that long (a run shorter than one interval never does)."""
    every, steps = train_cfg.eval_every, train_cfg.steps
    return every > 0 and (done % every == 0 or (done == steps and steps >= every))


def shardings_of(state):
    """The shardings of a placed state's arrays."""
    return jax.tree.map(lambda x: x.sharding, state)


class _Loop:
    """The steps from ``start`` to ``train.steps``: logging, validation with the best
    checkpoint kept, periodic checkpoints, the divergence stop and the watchdog."""

    def __init__(self, run: Run, graphdef, shardings, mesh, ckpts: Checkpoints, schedule):
        self.run, self.graphdef, self.mesh, self.ckpts = run, graphdef, mesh, ckpts
        self.step_fn = step_lib.make_step(run, graphdef, shardings, mesh, donate=True)
        self.schedule = schedule
        self.best = None  # the best-on-validation checkpoint, opened at the first save

    def _items(self, state):
        return step_lib.items(self.graphdef, state)

    def _validate(self, state, done: int, best_val: float) -> tuple[float, float]:
        """Validation NLL of the EMA weights and a progress image; keeps the best."""
        from experiments.evaluation import progress_samples, validation_nll

        snapshot = self.run.replace(state=self._items(state)["weights"], step=done)
        val = validation_nll(snapshot, self.run.cfg.train.n_eval_val, self.mesh)
        progress_samples(snapshot, self.mesh)
        if val < best_val:
            best_val = val
            if self.best is None:
                self.best = Checkpoints(self.run.workdir / "best", keep=1)
            self.best.save(done, {"weights": snapshot.state}, {"step": done, "val_nll": val})
        return val, best_val

    def go(self, state, start, best_val, progress, step_timeout, window=(), end: int | None = None):
        run, train_cfg, main = self.run, self.run.cfg.train, distributed.is_main()
        end = train_cfg.steps if end is None else end
        sharding = distributed.batch_sharded(self.mesh)
        bar = tqdm(
            total=train_cfg.steps,
            initial=start,
            disable=not (progress and main),
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        watchdog, log = distributed.Watchdog(step_timeout, "scoresde train"), _Log(self.schedule)
        log.window = list(window)  # a window a checkpoint cut (kept in its metadata)
        try:
            with (
                logs.RunLog(run.workdir, start) if main else contextlib.nullcontext() as out,
                logs.tqdm_safe_warnings(),
                guard.Interrupts() as interrupts,
            ):
                for step in range(start, end):
                    new_state, loss, grad_norm = self.step_fn(
                        state, global_batch(run, step, sharding), np.int32(step)
                    )
                    loss = float(loss)  # replicated: every process sees the same value
                    if not math.isfinite(loss):
                        raise _diverged(loss, step, self.ckpts, run.workdir, train_cfg)
                    state, done = new_state, step + 1
                    watchdog.beat()
                    log.add(loss, float(grad_norm))
                    bar.update(1)
                    if done % train_cfg.log_every == 0 or done == end:
                        record = log.record(done)
                        if validation_due(train_cfg, done):
                            record["val_nll"], best_val = self._validate(state, done, best_val)
                            watchdog.beat()
                        if main:
                            out.write(record)  # metrics.jsonl, TensorBoard, loss.png
                        bar.set_postfix(loss=f"{record['loss']:.4f}")
                    stop = _stop_requested(interrupts, done, train_cfg.log_every)
                    if done % train_cfg.ckpt_every == 0 or done == end or stop:
                        meta = {"step": done, "best_val_nll": best_val, "log_window": log.window}
                        self.ckpts.save(done, self._items(state), meta)
                        watchdog.beat()
                    if stop and done < end:
                        raise guard.TrainingInterrupted(
                            f"{stop} at step {done} of {train_cfg.steps}: checkpoint saved in "
                            f"{run.workdir / 'checkpoints'}; run the same command to resume"
                        )
        finally:
            watchdog.stop()
            bar.close()
            if self.best is not None:
                self.best.close()
        return state, best_val
