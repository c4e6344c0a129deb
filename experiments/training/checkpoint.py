"""Orbax checkpoints of the training state, with fall-back past broken ones.

A checkpoint holds named items, each an nnx state pytree (PRNG keys stored as raw key
data): ``weights`` (the network and its EMA copy) and ``optimizer``, plus JSON
metadata (step, best validation NLL). Restoring names the items it wants, so sampling
and likelihoods read the weights alone. The data position is the step: batches are a
pure function of (seed, step).

Several processes: every process calls :meth:`Checkpoints.save` and
:meth:`Checkpoints.restore_latest` (both are collective). Orbax writes each array once
(the shards of replica 0, spread over the processes that hold them) into a temporary
directory and, after a barrier, process 0 renames it to the step's name: a run killed
mid-save leaves no half checkpoint under a step's name. The directory must be one that
all processes see (a shared file system or a bucket). Arrays are stored whole, not per
device, so a checkpoint restores onto any number of devices and processes and any
sharding given in the abstract state.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import sys
import traceback
import warnings

import jax
import orbax.checkpoint as ocp
from flax import nnx

from experiments.distributed import is_prng_key as _is_key

logging.getLogger("absl").setLevel(logging.ERROR)


# What orbax's concurrent reads and writes report on their own when a save or restore
# fails (a full disk: one report per array, each with its traceback, ~400 lines in
# all, at once, at garbage collection and at exit). The failure itself reaches the
# caller, which reports it once; these add nothing.
_ABANDONED = (
    "_SignalingThread.run() raised an exception",  # absl: a writer thread failed
    "exception was never retrieved",  # asyncio: a read or write left behind
)


class _AbandonedByOrbax(logging.Filter):
    """Drops the reports of orbax's abandoned reads and writes (:data:`_ABANDONED`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(a in str(record.msg) for a in _ABANDONED):
            return True
        text = record.getMessage()
        if record.exc_info and record.exc_info[2] is not None:
            text += " ".join(f.filename for f in traceback.extract_tb(record.exc_info[2]))
        return not any(name in text for name in ("orbax", "tensorstore", "operation_id"))


for _name in ("absl", "asyncio"):
    logging.getLogger(_name).addFilter(_AbandonedByOrbax())


def _closed_loop(err) -> bool:
    return isinstance(err, RuntimeError) and str(err) == "Event loop is closed"


def _quiet_closed_loops() -> None:
    """When a save fails, tensorstore's callbacks for the abandoned writes land on
    orbax's closed event loop, and each prints a ``RuntimeError: Event loop is closed``
    traceback (through ``sys.excepthook`` or ``sys.unraisablehook``): those alone are
    dropped; every other error is printed as before. Installed once, before the first
    save (the callbacks can fire before the failure reaches the caller)."""
    if getattr(sys.excepthook, "scoresde_quiet", False):
        return
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def quiet_except(kind, err, tb):
        if not _closed_loop(err):
            excepthook(kind, err, tb)

    def quiet_unraisable(unraisable):
        if not _closed_loop(unraisable.exc_value):
            unraisablehook(unraisable)

    quiet_except.scoresde_quiet = True
    sys.excepthook, sys.unraisablehook = quiet_except, quiet_unraisable


def _io_error(err: Exception, directory, step: int) -> OSError | None:
    """``err`` as an ``OSError`` naming ``directory``, if it is an I/O error (orbax
    raises tensorstore's as ``ValueError`` with ``[os_error_code='28']``); else None."""
    code = getattr(err, "errno", None) if isinstance(err, OSError) else None
    if code is None:
        found = re.search(r"os_error_code='?(\d+)", str(err))
        code = int(found.group(1)) if found else None
    if code is None:
        return None
    return OSError(code, f"{os.strerror(code)} (saving step {step})", str(directory))


def to_saveable(state: nnx.State) -> dict:
    pure = nnx.to_pure_dict(state)
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, pure)


def from_saveable(abstract: nnx.State, restored: dict) -> nnx.State:
    template = nnx.to_pure_dict(abstract)
    pure = jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r) if _is_key(t) else r,  # default impl keys
        template,
        restored,
    )
    state = jax.tree.map(lambda x: x, abstract)  # a copy to fill
    nnx.replace_by_pure_dict(state, pure)
    return state


def _saveable_target(abstract: nnx.State) -> dict:
    """``jax.ShapeDtypeStruct`` leaves of :func:`to_saveable`, keeping the shardings
    (PRNG keys become their key data, with the key's sharding)."""

    def one(a):
        if _is_key(a):
            data = jax.eval_shape(jax.random.key_data, a)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=a.sharding)
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)

    return jax.tree.map(one, nnx.to_pure_dict(abstract))


def checkpoint_steps(workdir: pathlib.Path, sub: str = "checkpoints") -> list[int]:
    """The steps saved under ``workdir/checkpoints`` (or ``workdir/<sub>``; read from the
    directory names; creates nothing)."""
    directory = pathlib.Path(workdir) / sub
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _shapes(tree) -> dict[str, str]:
    """``{path: "float32[8, 16]"}`` of every array leaf, the path spelled as orbax
    stores it (every key a string)."""

    def key(k) -> str:
        return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))

    return {
        "/".join(key(k) for k in path): f"{leaf.dtype}{list(leaf.shape)}"
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _check_shapes(path, name: str, target) -> None:
    """Compare a stored item's array shapes and dtypes (its metadata, a small read)
    with ``target``'s before restoring: orbax's own restore of a mismatched array fails
    inside concurrent reads whose leftover errors are printed, tracebacks and all, when
    the process exits."""
    stored = _shapes(ocp.StandardCheckpointHandler().metadata(path).tree)
    wanted = _shapes(target)
    for key in sorted(stored.keys() | wanted.keys()):
        if stored.get(key) != wanted.get(key):
            have, need = stored.get(key, "nothing"), wanted.get(key, "nothing")
            raise ValueError(f"{name}/{key} is stored as {have} but this config needs {need}")


class Checkpoints:
    """Keeps the last ``keep`` checkpoints of a run under ``directory``."""

    def __init__(self, directory: pathlib.Path, keep: int):
        self.last_error = ""  # why the last unreadable checkpoint failed to restore
        self.manager = ocp.CheckpointManager(
            directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=False,
                cleanup_tmp_directories=True,  # what a save killed mid-way left
            ),
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, items: dict[str, nnx.State], meta: dict) -> None:
        """Save the named states ``items`` and the JSON ``meta`` as step ``step``."""
        if step in self.manager.all_steps():
            # an unreadable checkpoint that restore_latest skipped: replace it
            self.manager.delete(step)
        saves = {k: ocp.args.StandardSave(to_saveable(v)) for k, v in items.items()}
        _quiet_closed_loops()
        try:
            self.manager.save(
                step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **saves), force=True
            )
            self.manager.wait_until_finished()
        except Exception as err:
            io = _io_error(err, self.manager.directory, step)  # a full disk: say where
            if io is None:
                raise
            raise io from None

    def restore_latest(
        self, abstract: dict[str, nnx.State]
    ) -> tuple[dict[str, nnx.State], dict] | None:
        """The named items of the newest checkpoint that restores (only those asked
        for are read), and its metadata; broken ones are skipped, with a warning once
        an earlier one has restored. ``None`` when none restores (nothing is said then:
        :attr:`last_error` holds why, for the caller's one message).

        ``abstract`` maps item names to states of ``jax.ShapeDtypeStruct`` leaves; where
        they carry a ``sharding``, the arrays are restored onto it (required with
        several processes).
        """
        skipped = []
        for step in reversed(self.steps()):
            try:
                restored = self.restore(step, abstract)
            except Exception as err:  # noqa: BLE001 - any failure means: try the previous
                self.last_error = f"step {step}: {type(err).__name__}: {str(err)[:200]}"
                skipped.append(self.last_error)
                continue
            for reason in skipped:
                at, why = reason.split(": ", 1)
                warnings.warn(
                    f"checkpoint at {at} in {self.manager.directory} is unreadable ({why}); "
                    f"restored step {step} instead",
                    stacklevel=2,
                )
            return restored
        return None

    def restore(
        self, step: int, abstract: dict[str, nnx.State]
    ) -> tuple[dict[str, nnx.State], dict]:
        """The named items and metadata of the checkpoint at ``step`` (raises if it is
        missing or does not restore into ``abstract``; see :meth:`restore_latest`)."""
        if step not in self.manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint at step {step} in {self.manager.directory} (it has {self.steps()})"
            )
        wanted = {k: _saveable_target(v) for k, v in abstract.items()}
        for name, target in wanted.items():
            _check_shapes(self.manager.directory / str(step) / name, name, target)
        targets = {k: ocp.args.StandardRestore(v) for k, v in wanted.items()}
        out = self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **targets)
        )
        items = {k: from_saveable(v, out[k]) for k, v in abstract.items()}
        return items, dict(out["meta"])

    def close(self) -> None:
        self.manager.close()
