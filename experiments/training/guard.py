"""What keeps a run from being lost or clobbered: a lock on its work dir, interrupts
that end at a step boundary with a checkpoint, and moving an old run aside.

- :class:`WorkdirLock`: ``train`` holds an exclusive ``flock`` on ``WORKDIR/.lock``
  for its whole life; a second ``train`` on the same directory is refused with the
  holder's pid and host. The kernel drops the lock when the holder dies, however it
  dies, so a killed run never leaves a stale lock behind.
- :class:`Interrupts`: the first SIGINT (Ctrl-C) or SIGTERM (what SLURM sends before
  preemption, ``--signal=TERM@60`` gives a minute's notice) asks the loop to stop at
  the next step boundary; it saves a checkpoint there and ``train`` raises
  :class:`TrainingInterrupted` (the CLI prints one line and exits 130). A second
  SIGINT interrupts at once (checkpoints are written atomically, so that is safe too).
- :func:`move_aside`: ``train --restart`` moves a run's files into
  ``WORKDIR/replaced-<UTC time>/`` instead of deleting them.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import socket
import threading

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no refusal
    fcntl = None

# What a run writes into its work dir (train --restart moves these aside).
RUN_FILES = (
    "checkpoints",
    "best",
    "config.json",
    "metrics.jsonl",
    "tb",  # TensorBoard events (experiments.logs)
    "loss.png",
    "report.md",
    "progress",
    "samples.npz",
    "samples.png",
    "samples.json",
    "likelihood.json",
    "elbo.json",
    "likelihood_val.json",
    "elbo_val.json",
    "samples",  # every evaluation's own files (experiments.evaluation.outputs)
    "likelihood",
    "elbo",
    "changes.jsonl",  # what each resume changed (experiments.training.resume)
    "fork.json",
    "train.json",
)


class RunLocked(RuntimeError):
    """Another process holds the work dir."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped training at a step boundary, after a checkpoint."""


class WorkdirLock:
    """An exclusive advisory lock on ``workdir/.lock`` (created if needed)."""

    def __init__(self, workdir: pathlib.Path):
        self.path = pathlib.Path(workdir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is in use by {holder}; wait for it to finish or stop "
                "it, or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Interrupts:
    """While active, the first SIGINT/SIGTERM is recorded (:attr:`signal_name`) instead
    of raising; a second SIGINT raises ``KeyboardInterrupt`` as usual. Only the main
    thread can install handlers; elsewhere this records nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal_name: str | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def move_aside(workdir: pathlib.Path) -> pathlib.Path | None:
    """Move a run's files (:data:`RUN_FILES`) into ``workdir/replaced-<UTC time>/``;
    returns that directory, or ``None`` when there was nothing to move."""
    workdir = pathlib.Path(workdir)
    present = [workdir / name for name in RUN_FILES if (workdir / name).exists()]
    if not present:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = workdir / f"replaced-{stamp}"
    target.mkdir()
    for path in present:
        path.rename(target / path.name)
    return target
