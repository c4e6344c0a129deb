"""Training logs (:mod:`experiments.logs`): TensorBoard events that TensorBoard's own
reader finds equal to ``metrics.jsonl`` across a resume, the rate-limited ``loss.png``,
the ``scoresde plot`` command, warnings that leave the progress bar intact, and the
default validation interval."""

import json
import pathlib
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from tqdm.auto import tqdm

from experiments import cli, evaluation, logs, training
from experiments import config as config_lib
from experiments._entry import main as entry_main
from experiments.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[2]
OVERRIDES = [
    "train.steps=8",
    "train.batch_size=32",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.ckpt_every=4",
    "model.hidden=16",
    "model.depth=1",
    "model.embed_dim=8",
    "model.cond_dim=8",
]


def tensorboard_scalars(logdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard itself loads ``logdir``."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(workdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """The same series from ``metrics.jsonl``, as float32 (TensorBoard's precision)."""
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    out = {}
    for name in logs.SCALARS:
        have = [(r["step"], float(np.float32(r[name]))) for r in rows if name in r]
        if have:
            out[name] = have
    return out


def test_events_hold_exactly_the_metrics_across_a_kill_and_resume(tmp_path):
    """A session killed after its checkpoint at step 4 logged steps 5-8 (every step);
    the resumed session logs every other step. TensorBoard must show the first
    session's steps 1-4 and the second's 6 and 8, and nothing of the dead 5 and 7:
    exactly metrics.jsonl (its START event purges them: TensorBoard's own purge of
    out-of-order steps would keep step 5). Also: --no-eval's report.md and loss.png."""
    pytest.importorskip("tensorboardX")
    workdir = tmp_path / "run"
    training.train(config_lib.load("checkerboard", OVERRIDES), workdir, progress=False)
    first = jsonl_scalars(workdir)
    assert [s for s, _ in first["loss"]] == list(range(1, 9))
    assert tensorboard_scalars(workdir / "tb") == first
    shutil.rmtree(workdir / "checkpoints" / "8")  # as if killed before this save

    resumed = config_lib.load("checkerboard", [*OVERRIDES, "train.log_every=2"])
    run, info = training.train(resumed, workdir, progress=False)
    expected = jsonl_scalars(workdir)
    assert [s for s, _ in expected["loss"]] == [1, 2, 3, 4, 6, 8]
    assert expected["lr"][:4] == first["lr"][:4]
    assert tensorboard_scalars(workdir / "tb") == expected
    assert len(list((workdir / "tb").glob("events.out.tfevents.*"))) == 2  # one a session

    text = evaluation.training_report(run, info)
    assert (workdir / "report.md").read_text() == text
    assert "![training loss](loss.png)" in text and "--no-eval" in text
    assert (workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


RECORDS = [
    {"step": 2, "loss": 1.5, "grad_norm": 3.0, "lr": 1e-4, "steps_per_sec": 10.0},
    {"step": 4, "loss": 1.0, "grad_norm": 2.0, "lr": 2e-4, "steps_per_sec": 12.0},
    {"step": 6, "loss": 0.8, "grad_norm": 1.0, "lr": 2e-4, "steps_per_sec": 11.0, "val_nll": 3.9},
]


def test_without_tensorboardx_one_notice_and_the_rest_as_always(tmp_path, monkeypatch, capsys):
    for name in ["tensorboardX", *(m for m in sys.modules if m.startswith("tensorboardX."))]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    with logs.RunLog(tmp_path, start=0) as log:
        for record in RECORDS:
            log.write(record)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorboardX is not installed" in err[0], err
    assert logs.read_metrics(tmp_path) == RECORDS
    assert not (tmp_path / "tb").exists()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_loss_png_is_redrawn_at_most_once_an_interval_and_at_the_end(tmp_path, monkeypatch):
    clock, drawn = Clock(), []
    monkeypatch.setattr(logs.time, "monotonic", clock)
    monkeypatch.setattr(logs, "plot", lambda workdir, rows: drawn.append(len(rows)))
    with logs.RunLog(tmp_path, start=0, redraw_seconds=60, tensorboard=False) as log:
        for t, record in zip([10, 61, 90], RECORDS, strict=True):
            clock.now = t
            log.write(record)
        assert drawn == [2]  # at 61 s, with the records so far; not again at 90 s
    assert drawn == [2, 3]  # the session drew, so it redraws at the end

    drawn.clear()  # a session shorter than the interval leaves it to the report
    with logs.RunLog(tmp_path, start=6, redraw_seconds=60, tensorboard=False) as log:
        log.write({**RECORDS[0], "step": 8})
    assert drawn == []


def write_metrics(workdir: pathlib.Path, tail: str = "") -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (workdir / "metrics.jsonl").write_text(lines + tail)


def test_plot_command_redraws_a_running_runs_figure(tmp_path, capsys):
    """A line still being written is skipped."""
    run_dir = tmp_path / "run"
    write_metrics(run_dir, tail='{"step": 8, "lo')
    assert entry_main(["plot", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "loss.png")
    import matplotlib.image

    assert matplotlib.image.imread(run_dir / "loss.png").shape[:2] == (560, 900)


@pytest.mark.parametrize(
    "how, main", [("missing", entry_main), ("missing", cli.main), ("empty", entry_main)]
)
def test_plot_command_refuses_a_dir_without_metrics_in_one_line(tmp_path, capsys, how, main):
    """Through the console script's entry and through cli.main, which lists it too."""
    run_dir = tmp_path / "run"
    if how == "empty":
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text("")
    assert main(["plot", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scoresde plot: ") and "metrics.jsonl" in err[0]
    assert not (run_dir / "loss.png").exists()


def test_plot_command_imports_no_jax():
    code = (
        "import sys; from experiments import _entry, logs, plotting; "
        "sys.exit(int(any(m == 'jax' or m.startswith('jax.') for m in sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_a_warning_inside_the_progress_bar_gets_its_own_line(capsys):
    bar = tqdm(total=3, file=sys.stderr, mininterval=0, ascii=True)
    with warnings.catch_warnings(), logs.tqdm_safe_warnings():
        warnings.simplefilter("always")
        bar.update(1)
        warnings.warn("something to say", UserWarning, stacklevel=1)
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.split("\n") if "UserWarning: something" in ln]
    shown = line.split("\r")[-1]  # what is left on the terminal line
    assert shown.startswith(__file__) and "UserWarning: something to say" in shown
    assert "it/s" not in shown and "|" not in shown
    assert err.rstrip().split("\r")[-1].startswith(" 67%")  # the bar is redrawn below


def test_validation_by_default_coarsely_and_never_in_a_run_shorter_than_that():
    checkerboard = config_lib.get_named("checkerboard").train
    due = [s for s in range(1, checkerboard.steps + 1) if loop.validation_due(checkerboard, s)]
    assert due == [12_000, 24_000, 36_000]
    tiny = config_lib.load("checkerboard", ["train.steps=300", "train.log_every=1"]).train
    assert not any(loop.validation_due(tiny, s) for s in range(1, 301))
    off = config_lib.load("checkerboard", ["train.eval_every=0"]).train
    assert not any(loop.validation_due(off, s) for s in range(1, off.steps + 1, 1000))
