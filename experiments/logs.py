"""A run's training logs: ``metrics.jsonl``, TensorBoard events, ``loss.png``, and the
``scoresde plot`` command that redraws the figure.

During training process 0 appends one JSON object per logged step to
``WORKDIR/metrics.jsonl`` (``step``, ``loss``, ``grad_norm``, ``lr``, ``steps_per_sec``
and, at validation steps, ``val_nll``) and, with the optional ``tensorboardX`` package
(``pip install -e ".[tensorboard]"``), the same scalars under the same names as
TensorBoard events under ``WORKDIR/tb/`` (``tensorboard --logdir WORKDIR/tb``). Each
training session writes its own event file whose first event is a ``SessionLog.START``
at the session's first step (as tensorboardX's ``purge_step``): TensorBoard then drops
what a killed session logged after its last checkpoint, as
:func:`experiments.training.loop.train` drops those lines from ``metrics.jsonl``, so
both hold the same points. ``loss.png`` is redrawn at most
every :data:`REDRAW_SECONDS` of wall time and, if it was drawn, when the session ends.

This module imports neither JAX nor the training code, so ``scoresde plot DIR`` starts
in about a second on any run, even one still training::

    $ scoresde plot runs/checkerboard
    runs/checkerboard/loss.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import time
import warnings

from tqdm.auto import tqdm

METRICS = "metrics.jsonl"
FIGURE = "loss.png"
TB_DIR = "tb"  # TensorBoard event files, one per training session
SCALARS = ("loss", "grad_norm", "lr", "steps_per_sec", "val_nll")  # the logged series
REDRAW_SECONDS = 60.0  # at most one loss.png per minute while training (~0.3 s each)


def notice(message: str) -> None:
    """One line on stderr that leaves an open progress bar intact."""
    tqdm.write(message, file=sys.stderr)


def read_metrics(workdir: pathlib.Path) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``; a last line that a running session is
    still writing is skipped (``FileNotFoundError`` when there is no such file)."""
    path = pathlib.Path(workdir) / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a training run's directory")
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the line being written may be cut
                raise ValueError(f"{path}: line {i + 1} is not JSON: {line[:60]!r}") from None
    return rows


def plot(workdir: pathlib.Path, rows: list[dict] | None = None) -> pathlib.Path:
    """Draw ``workdir/loss.png`` from ``rows`` (default: ``metrics.jsonl``); returns it."""
    from experiments import plotting  # matplotlib: only when a figure is drawn

    workdir = pathlib.Path(workdir)
    rows = read_metrics(workdir) if rows is None else rows
    path = workdir / FIGURE
    plotting.loss_curve(rows, path, title=workdir.name)
    return path


class _TensorBoard:
    """The scalars of each record as events in a new file under ``logdir``, written
    synchronously with tensorboardX's ``EventsWriter``: its ``SummaryWriter`` queues
    events for a thread whose ``flush()`` does not wait for them, and which blocks the
    caller for good once that thread has died (say, of a full disk). Here a record is
    on disk when :meth:`write` returns, and a failed write raises ``OSError`` in the
    training loop, as one to ``metrics.jsonl`` does."""

    def __init__(self, logdir: pathlib.Path, start: int):
        try:
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto.event_pb2 import Event, SessionLog
            from tensorboardX.summary import scalar
        except ImportError:
            notice(
                f"scoresde train: tensorboardX is not installed, so no TensorBoard events "
                f"go to {logdir} (metrics.jsonl and loss.png are written as always); "
                'pip install -e ".[tensorboard]" or pip install tensorboardX adds them'
            )
            self.writer = None
            return
        self.event, self.scalar = Event, scalar
        logdir.mkdir(parents=True, exist_ok=True)
        # The start step in the name orders two sessions begun within the same second
        # (tensorboardX names files by the second and would reopen one with "wb").
        self.writer = EventsWriter(str(logdir / "events"), f".from{start:010d}.{os.getpid()}")
        # TensorBoard drops the events of earlier files from this step on (purge_step)
        start_log = SessionLog(status=SessionLog.START)
        self.writer.write_event(Event(wall_time=time.time(), step=start + 1, session_log=start_log))
        self.writer.flush()

    def write(self, record: dict) -> None:
        if self.writer is None:
            return
        now = time.time()
        for name in SCALARS:
            if name in record:
                summary = self.scalar(name, record[name])
                self.writer.write_event(
                    self.event(wall_time=now, step=record["step"], summary=summary)
                )
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunLog:
    """Process 0's log writer for one training session from step ``start``: appends each
    record to ``metrics.jsonl`` (whose lines past ``start`` the caller has dropped), to
    TensorBoard, and redraws ``loss.png`` every ``redraw_seconds`` (the first time that
    long after the start) and on close.
    A context manager; see the module docstring."""

    def __init__(
        self,
        workdir: pathlib.Path,
        start: int,
        redraw_seconds: float = REDRAW_SECONDS,
        tensorboard: bool = True,
    ):
        self.workdir, self.redraw_seconds = pathlib.Path(workdir), redraw_seconds
        self.rows = read_metrics(self.workdir) if (self.workdir / METRICS).exists() else []
        self.out = (self.workdir / METRICS).open("a")
        self.tb = _TensorBoard(self.workdir / TB_DIR, start) if tensorboard else None
        self.drawn, self.last_draw, self.draws = len(self.rows), time.monotonic(), 0

    def write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        self.rows.append(record)
        if self.tb is not None:
            self.tb.write(record)
        if time.monotonic() - self.last_draw >= self.redraw_seconds:
            self._draw()

    def _draw(self) -> None:
        if len(self.rows) > self.drawn:
            plot(self.workdir, self.rows)
        self.drawn, self.last_draw, self.draws = len(self.rows), time.monotonic(), self.draws + 1

    def close(self) -> None:
        """Close the files; redraw ``loss.png`` if this session drew it before (a
        session shorter than ``redraw_seconds`` leaves the figure to the report or to
        ``scoresde plot``, so short runs, tests among them, draw nothing here)."""
        try:
            self.out.close()
            if self.tb is not None:
                self.tb.close()
        finally:
            if self.draws:
                self._draw()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def tqdm_safe_warnings():
    """Print Python warnings with ``tqdm.write`` (on stderr) inside the block, so that a
    warning raised while a progress bar is open gets a line of its own and the bar is
    redrawn below it, instead of being cut in the middle."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        tqdm.write(text.rstrip("\n"), file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


# ---------------------------------------------------------------------- scoresde plot


def main(argv: list[str]) -> int:
    """``scoresde plot DIR [DIR ...]``: redraw each run's loss.png from its
    metrics.jsonl and print the paths written. Exit 2 with one line for a DIR that
    holds no metrics.jsonl."""
    p = argparse.ArgumentParser(
        prog="scoresde plot",
        description="Redraw loss.png (training loss, gradient norm, learning rate and, "
        "where logged, validation NLL) of a training run from its metrics.jsonl; works "
        "on a partial or still running run.",
    )
    p.add_argument("workdirs", nargs="+", type=pathlib.Path, metavar="DIR")
    args = p.parse_args(argv)
    for workdir in args.workdirs:
        try:
            rows = read_metrics(workdir)
            if not rows:
                raise ValueError(f"{workdir / METRICS} holds no record yet")
            print(plot(workdir, rows))
        except (OSError, ValueError) as err:
            print(f"scoresde plot: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
