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
import pathlib
import warnings

import jax
import orbax.checkpoint as ocp
from flax import nnx

from experiments.distributed import is_prng_key as _is_key

logging.getLogger("absl").setLevel(logging.ERROR)


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


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    """The steps saved under ``workdir/checkpoints`` (read from the directory names;
    creates nothing)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


class Checkpoints:
    """Keeps the last ``keep`` checkpoints of a run under ``directory``."""

    def __init__(self, directory: pathlib.Path, keep: int):
        self.last_error = ""  # why the last unreadable checkpoint failed to restore
        self.manager = ocp.CheckpointManager(
            directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
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
        self.manager.save(
            step, args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **saves), force=True
        )
        self.manager.wait_until_finished()

    def restore_latest(
        self, abstract: dict[str, nnx.State]
    ) -> tuple[dict[str, nnx.State], dict] | None:
        """The named items of the newest checkpoint that restores (only those asked
        for are read), and its metadata; broken ones are skipped with a warning.

        ``abstract`` maps item names to states of ``jax.ShapeDtypeStruct`` leaves; where
        they carry a ``sharding``, the arrays are restored onto it (required with
        several processes).
        """
        targets = {k: ocp.args.StandardRestore(_saveable_target(v)) for k, v in abstract.items()}
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), **targets)
                )
                items = {k: from_saveable(v, out[k]) for k, v in abstract.items()}
                return items, dict(out["meta"])
            except Exception as err:  # noqa: BLE001 - any failure means: try the previous
                self.last_error = f"step {step}: {type(err).__name__}: {str(err)[:200]}"
                warnings.warn(
                    f"checkpoint at step {step} in {self.manager.directory} is unreadable "
                    f"({type(err).__name__}: {str(err)[:200]}); falling back to an earlier one",
                    stacklevel=2,
                )
        return None

    def close(self) -> None:
        self.manager.close()
