r"""Processes of a multi-host run: joining them, telling them apart, and failing fast.

Several processes (hosts) join with :func:`initialize` (``jax.distributed``): each
then sees every device in ``jax.devices()`` but holds data only for its own
(``jax.local_devices()``). Process 0 (:func:`is_main`) writes files and logs.

Failure handling. ``jax.distributed`` runs a heartbeat between every process and the
coordinator (process 0): when a process stops sending heartbeats for
``heartbeat_timeout`` seconds, the coordination service reports it to all the others,
which terminate with "Terminating process because the JAX distributed service detected
fatal errors ... another task died". A survivor blocked in a CPU (gloo) collective with
a dead peer gets a ``JaxRuntimeError`` at once (connection reset). :func:`exit_on_peer_failure`
turns either into a one-line message and exit status :data:`EXIT_PEER_FAILED`, without
waiting for the shutdown barrier. A process that is alive but stuck (heartbeats still
flowing) is caught by the optional :class:`Watchdog`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator

import jax
from jax.experimental import multihost_utils

EXIT_PEER_FAILED = 3  # exit status when another process died or a collective failed
EXIT_STUCK = 4  # exit status when the watchdog fired


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def detect_cluster() -> str | None:
    """The multi-process launcher this process runs under, or ``None``.

    * ``"slurm"``: started by ``srun`` in a step of more than one task
      (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_PROCID``, ``SLURM_LOCALID``
      set and ``SLURM_NTASKS > 1``); an ``sbatch`` script itself is not a step;
    * ``"openmpi"``: started by ``mpirun``/``mpiexec`` with more than one rank;
    * ``"env"``: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` (> 1) and
      ``JAX_PROCESS_ID`` set by hand or by another launcher.

    Cloud TPU pods and Kubernetes are detected by JAX itself once asked to
    (``scoresde train --distributed on``): that needs a metadata query, so it is not
    attempted unasked.
    """
    env = os.environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and (_int_env("SLURM_NTASKS") or 1) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and (_int_env("OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "openmpi"
    if env.get("JAX_COORDINATOR_ADDRESS") and (_int_env("JAX_NUM_PROCESSES") or 1) > 1:
        if _int_env("JAX_PROCESS_ID") is not None:
            return "env"
    return None


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator_address must be HOST:PORT with a port in 1..65535 (the address of "
            f"process 0), got coordinator_address={address!r}"
        )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
    heartbeat_timeout: int = 100,
    initialization_timeout: int = 300,
) -> bool:
    """Join the processes of a multi-host run (``jax.distributed.initialize``).

    Call it first, before any JAX computation. ``mode``:

    * ``"auto"`` (default): with ``coordinator_address``, ``num_processes`` and
      ``process_id`` all given, use them; with none given, initialise only if
      :func:`detect_cluster` finds a launcher (then JAX fills in the values), else stay
      a single process;
    * ``"on"``: always initialise, letting JAX detect whatever is not given (Cloud TPU
      pods, SLURM, Open MPI, Kubernetes);
    * ``"off"``: single process, whatever the environment says.

    ``heartbeat_timeout`` (seconds) is how long a silent process is given before every
    other process is told it died and terminates. Returns ``True`` when the run is
    multi-process. CPU processes use gloo collectives (TCP).
    """
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"mode must be 'auto', 'on' or 'off', got mode={mode!r}")
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if mode == "off":
        return False
    if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
        missing = ", ".join(k for k, v in given.items() if v is None)
        raise ValueError(
            f"give coordinator_address, num_processes and process_id together (or none, to "
            f"detect them from the cluster environment); missing: {missing}"
        )
    timeouts = {
        "heartbeat_timeout": heartbeat_timeout,
        "initialization_timeout": initialization_timeout,
    }
    for name, value in timeouts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer number of seconds >= 1, got {value!r}")
    if coordinator_address is not None:
        _check_address(coordinator_address)
        if isinstance(num_processes, bool) or not isinstance(num_processes, int):
            raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
        if num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got num_processes={num_processes}")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be an integer in [0, {num_processes - 1}], got "
                f"process_id={process_id!r}"
            )
        if num_processes == 1:
            return False
    elif mode == "auto" and detect_cluster() is None:
        return False
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
        initialization_timeout=initialization_timeout,
    )
    return jax.process_count() > 1


def is_main() -> bool:
    """Process 0: the one that writes files, logs metrics and shows progress bars."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def describe() -> str:
    """``process i of n, k local / m global devices (platform)``."""
    return (
        f"process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global "
        f"{jax.devices()[0].platform} devices"
    )


@contextlib.contextmanager
def exit_on_peer_failure(what: str) -> Iterator[None]:
    """In a multi-process run, turn a failed collective into a clear message and
    :data:`EXIT_PEER_FAILED`, and any other error into its traceback and status 1, at
    once: no wait in the shutdown barrier for a process that is gone, and no process
    left blocked in a collective with this one. A single process re-raises as usual."""
    try:
        yield
    except Exception as err:
        if jax.process_count() == 1:
            raise
        if isinstance(err, jax.errors.JaxRuntimeError):
            message = (
                "a collective operation failed, most likely because another process died "
                f"or lost its network (see its log). Error: {str(err).splitlines()[0][:300]}"
            )
            code = EXIT_PEER_FAILED
        else:  # this process failed: say so, and do not wait for the others
            traceback.print_exc()
            message = f"{type(err).__name__}: {err}; exiting (the other processes will stop)"
            code = 1
        print(f"{what}: {describe()}: {message}", file=sys.stderr, flush=True)
        os._exit(code)


class Watchdog:
    """Exit with :data:`EXIT_STUCK` and a message if :meth:`beat` is not called for
    ``timeout`` seconds: the fallback for a process that is alive but stuck (its
    heartbeats still flow, so ``jax.distributed`` cannot tell). Arm it after the first
    step (compilation can take long). ``timeout=None`` disables it."""

    def __init__(self, timeout: float | None, what: str):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got timeout={timeout!r}")
        self.timeout, self.what = timeout, what
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = None

    def beat(self) -> None:
        self._last = time.monotonic()
        if self.timeout is not None and self._thread is None:
            self._who = describe()  # now: the watching thread must not call into JAX
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                print(
                    f"{self.what}: {self._who}: no progress for {idle:.1f} s (timeout "
                    f"{self.timeout:g} s); another process is probably stuck or dead. "
                    "Exiting.",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(EXIT_STUCK)

    def stop(self) -> None:
        self._stop.set()
