"""Fault injection through the command line (issue 14): every bad input and fault a
user or a cluster can produce ends with exit status 2 (130 for an interrupt), one line
on stderr and no traceback, and the work dir holds exactly what it held before
(compared file by file: names and bytes), or the checkpoint it should.

The CLI runs in this process (``cli.main``): a subprocess would pay seconds of JAX
import per case. One tiny trained run (module fixture) is copied for each case that
needs a run; the validation cases fail before anything is built, so they cost
milliseconds. One real SIGTERM at a random moment runs in the default suite; ten
random-moment interrupts (real signals from outside), two concurrent ``train``
processes and what real processes print at exit are subprocesses, under ``-m slow``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from experiments import build, cli, training
from experiments import config as config_lib
from experiments.run import Run, abstract
from experiments.training import checkpoint
from experiments.training import step as step_lib
from experiments.training.checkpoint import Checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOTAL = 40  # steps: enough for a signal at a random moment to land mid-run
# the network and batch of test_training.py's reference run, TOTAL steps with a log line
# every 5 and a checkpoint every 10 (the last 3 kept)
TINY = [
    f"train.steps={TOTAL}",
    "train.batch_size=64",
    "train.warmup_steps=2",
    "train.log_every=5",
    "train.ckpt_every=10",
    "train.keep=3",
    "train.eval_every=0",
    "model.hidden=16",
    "model.depth=2",
    "model.embed_dim=8",
    "model.cond_dim=8",
    "data.n_val=64",
    "data.n_test=64",
    "eval.n_samples=64",
    "eval.n_likelihood=32",
    "eval.rtol=1e-3",
    "eval.atol=1e-3",
]

# ---------------------------------------------------------------------------- helpers


def snapshot(workdir: pathlib.Path) -> dict[str, bytes | None] | None:
    """Every path under ``workdir`` (but the lock file): a file's bytes, ``None`` for a
    directory; ``None`` for a work dir that does not exist."""
    if not workdir.exists():
        return None
    if workdir.is_file():
        return {".": workdir.read_bytes()}
    return {
        str(p.relative_to(workdir)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(workdir.rglob("*"))
        if p.name != ".lock"
    }


def scoresde(capsys, *argv) -> tuple[int | str, list[str], str]:
    """``(exit status, stderr lines, stderr)`` of ``scoresde ARGV`` run in this process;
    an exception that escapes the CLI is returned as ``"raised Name: message"``.
    train's start-up line (network, SDE, data, devices, start step) is not counted."""
    try:
        rc = cli.main([str(a) for a in argv])
    except Exception as err:  # noqa: BLE001 - the test reports what escaped
        rc = f"raised {type(err).__name__}: {str(err)[:300]}"
    err = capsys.readouterr().err
    lines = [
        ln
        for ln in err.strip().splitlines()
        if not (ln.startswith("scoresde train: ") and "parameters," in ln)
    ]
    return rc, lines, err


def train_argv(workdir, *overrides, extra=()) -> list:
    argv = ["train", "--config", "checkerboard", "--workdir", workdir, "--no-eval", "--quiet"]
    return [*argv, *extra, *TINY, *overrides]


def assert_refused(result, *expected: str, status: int = 2) -> None:
    """Exit ``status``, one line on stderr that contains each of ``expected``, no
    traceback."""
    rc, lines, err = result
    assert rc == status and len(lines) == 1, f"exit {rc}, stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]


@contextlib.contextmanager
def cli_warnings():
    """Warnings printed to stderr as the command line prints them (pytest would
    otherwise record them out of sight of capsys)."""

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(__import__("warnings").formatwarning(message, category, filename, lineno))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        old, warnings.showwarning = warnings.showwarning, show
        try:
            yield
        finally:
            warnings.showwarning = old


@contextlib.contextmanager
def read_only(path: pathlib.Path):
    """``path`` and everything under it read-only for this process, root included
    (``chattr +i`` where permission bits do not bind root); skips where neither works."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    if subprocess.run(["chattr", "-R", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("cannot make a directory read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(path)], check=True)


def saved_items(workdir: pathlib.Path, cfg: config_lib.Config) -> tuple[int, dict]:
    """The latest checkpoint's step and every leaf (weights and optimizer state)."""
    graphdef, state = step_lib.init(Run.create(cfg), build.optimizer(cfg.train)[0])
    ckpts = Checkpoints(workdir / "checkpoints", keep=10)
    items, meta = ckpts.restore_latest(step_lib.items(graphdef, abstract(state)))
    ckpts.close()
    out = {}
    for name, item in items.items():
        flat = jax.tree_util.tree_leaves_with_path(checkpoint.to_saveable(item))
        out.update({name + jax.tree_util.keystr(p): np.array(x) for p, x in flat})
    return int(meta["step"]), out


def assert_same_items(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def metrics(workdir: pathlib.Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["steps_per_sec"]  # wall-clock
    return rows


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    """A tiny run trained by the CLI without interruption: config.json, metrics.jsonl,
    checkpoints 20, 30 and 40."""
    workdir = tmp_path_factory.mktemp("faults") / "run"
    first_line = _when_logging(workdir)
    assert cli.main([str(a) for a in train_argv(workdir)]) == 0
    # the loop's wall time from its first log line to its last (for the interrupts)
    (workdir.parent / "loop_seconds").write_text(str(_loop_seconds(workdir, first_line())))
    assert training.checkpoint_steps(workdir) == [20, 30, 40]
    return workdir


def _loop_seconds(workdir: pathlib.Path, first_line: float) -> float:
    """Seconds from the run's first log line (``time.monotonic()``) to its last."""
    last = (workdir / "metrics.jsonl").stat().st_mtime
    return last - (time.time() - (time.monotonic() - first_line))


def _when_logging(workdir: pathlib.Path):
    """A function that waits for the first line of ``workdir/metrics.jsonl`` (the run
    has compiled and is in its loop) and returns the time it appeared."""
    seen = []

    def watch():
        log, deadline = workdir / "metrics.jsonl", time.monotonic() + 300
        while not (log.exists() and log.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append(time.monotonic())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def when() -> float:
        thread.join()
        return seen[0]

    return when


@pytest.fixture(scope="module")
def reference(trained):
    """What an interrupted and resumed run must end with: the uninterrupted run's last
    checkpoint (every leaf) and its log; and how long its loop took from the first log
    line to the last (in this process)."""
    cfg = config_lib.load("checkerboard", TINY)
    seconds = float((trained.parent / "loop_seconds").read_text())
    return cfg, saved_items(trained, cfg), metrics(trained), seconds


# How the interrupted runs checkpoint: a checkpoint is ~100x a step here, so a random
# moment of the first mostly lands in a save, of the second always among the steps.
# Checkpointing does not change the trajectory: both end as the reference run.
VARIANTS = {"ckpt every 10": (), "no periodic ckpt": ("train.ckpt_every=1000",)}


@pytest.fixture
def run_dir(trained, tmp_path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(trained, tmp_path / "run"))


# ---------------------------------------------- bad values: refused before any write

BAD_OVERRIDES = {  # override: what the one line must name
    "eval.rtol=-1": "eval.rtol",
    "eval.atol=0": "eval.atol",
    "eval.s_churn=nan": "eval.s_churn",
    "eval.solver=shark": "eval.solver",  # an SDE-only solver for the probability-flow ODE
    "eval.solver=sde_dpmpp2m": "eval.solver",
    "eval.solver=euler": "eval.solver",  # no error estimate: the ODE's steps are adaptive
    "train.grad_clip=nan": "train.grad_clip",
    "train.seed=-1": "train.seed",
    "train.p_mean=nan": "train.p_mean",
    "train.lr=inf": "train.lr",
    "train.steps=0": "train.steps",
    "train.batch_size=-64": "train.batch_size",
    "train.ema_decay=1.5": "train.ema_decay",
    "sde.beta_min=30": "beta_min",  # beta_min > beta_max
    "sde.sigma_max=inf": "sde.sigma_max",
    "eval.n_samples=0": "eval.n_samples",
    "eval.steps=0": "eval.steps",
    "eval.sample_eps=2": "eval.sample_eps",
    "model.hidden=0": "model.mlp.hidden",
    "train.steps=ten": "train.steps",
    "train.lr": "key=value",  # no '='
    "trian.lr=1e-3": "unknown config key 'trian.lr'",
    "train.learning_rate=1e-3": "train.lr",  # the closest valid key
    "data.name=checkerbord": "checkerboard",
    "sde.name=vpp": "sde.name",
    "eval.solver=tsit": "tsit5",
    "eval.method=odee": "eval.method",
    "model.architecture=mlpp": "model.architecture",
    "train.optimizer=sgdd": "train.optimizer",
}


@pytest.mark.parametrize("override", list(BAD_OVERRIDES))
def test_a_bad_value_is_refused_before_the_workdir_is_created(tmp_path, capsys, override):
    workdir = tmp_path / "run"
    extra = ["sde.name=ve"] if override.startswith("sde.sigma") else []
    assert_refused(
        scoresde(capsys, *train_argv(workdir, *extra, override)), BAD_OVERRIDES[override]
    )
    assert not workdir.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--config", "checkerbord"], "did you mean checkerboard"),
        (["train", "--config", "no/such/file.py"], "does not exist"),
        (["trian"], "unknown command 'trian'"),
        (["experiment"], "name a study"),
        (["train"], "required"),  # a required argument
    ],
)
def test_unknown_names_and_missing_arguments_are_one_line(tmp_path, capsys, argv, expected):
    workdir = tmp_path / "run"
    if argv[0] == "train" and len(argv) > 1:
        argv = [*argv, "--workdir", workdir, *TINY]
    assert_refused(scoresde(capsys, *argv), expected)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["likelihood", "--n", "-5"], "--n"),
        (["likelihood", "--n", "0"], "--n"),
        (["likelihood", "--rtol", "0"], "--rtol"),
        (["likelihood", "--atol", "nan"], "--atol"),
        (["likelihood", "--split", "train"], "--split"),
        (["likelihood", "--solver", "tsit"], "tsit5"),
        (["likelihood", "--solver", "shark"], "shark"),
        (["sample", "--n", "0"], "--n"),
        (["sample", "--steps", "0"], "--steps"),
        (["sample", "--steps", "-3"], "--steps"),
        (["sample", "--seed", "-1"], "--seed"),
        (["sample", "--method", "odee"], "odee"),
        (["sample", "--solver", "eulr"], "euler"),
        (["sample", "--method", "edm", "--solver", "heun"], "--solver"),
        (["sample", "--steps", "4", "--grid", "karas"], "karras"),
        (["sample", "--grid", "log_snr"], "--steps"),
        (["sample", "--checkpoint", "7"], "no checkpoint at step 7"),
        (["train", "--fork-from", "nowhere"], "no config.json"),
    ],
)
def test_a_bad_command_line_number_or_name_leaves_the_run_as_it_was(
    run_dir, capsys, argv, expected
):
    before = snapshot(run_dir)
    assert_refused(scoresde(capsys, *argv, "--workdir", run_dir), expected)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------- work dirs


@pytest.mark.parametrize("command", ["train", "sample", "likelihood"])
def test_a_workdir_that_is_a_file(tmp_path, capsys, command):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    argv = train_argv(path) if command == "train" else [command, "--workdir", path]
    assert_refused(scoresde(capsys, *argv), str(path))
    assert path.read_text() == "x"


@pytest.mark.parametrize("command", ["sample", "likelihood"])
def test_a_workdir_without_a_run(tmp_path, capsys, command):
    workdir = tmp_path / "nothing"
    assert_refused(scoresde(capsys, command, "--workdir", workdir), "config.json")
    assert not workdir.exists()


@pytest.mark.parametrize("command", ["train", "sample", "likelihood"])
def test_a_truncated_config_json(run_dir, capsys, command):
    path = run_dir / "config.json"
    path.write_bytes(path.read_bytes()[:100])
    before = snapshot(run_dir)
    argv = train_argv(run_dir) if command == "train" else [command, "--workdir", run_dir]
    assert_refused(scoresde(capsys, *argv), "config.json")
    assert snapshot(run_dir) == before


def _spoil_every_checkpoint(workdir: pathlib.Path, how: str) -> None:
    rng = np.random.default_rng(0)
    for step_dir in (workdir / "checkpoints").iterdir():
        weights = step_dir / "weights"
        if how == "missing":
            shutil.rmtree(weights)
            continue
        for f in weights.rglob("*"):  # same sizes, random bytes
            if f.is_file():
                f.write_bytes(rng.bytes(f.stat().st_size))


@pytest.mark.parametrize("how", ["garbage", "missing"])
@pytest.mark.parametrize("command", ["train", "sample", "likelihood"])
def test_unreadable_checkpoints_are_refused_in_one_line(run_dir, capsys, how, command):
    """Every checkpoint unreadable: train must not start over (which would replace the
    run); sample and likelihood must not fall back to the initial weights. One line,
    with the reason, even though each checkpoint failed on its own."""
    _spoil_every_checkpoint(run_dir, how)
    before = snapshot(run_dir)
    argv = train_argv(run_dir) if command == "train" else [command, "--workdir", run_dir]
    with cli_warnings():
        result = scoresde(capsys, *argv)
    assert_refused(result, "checkpoint")
    if command == "train":
        assert "--restart" in result[1][0]
    assert snapshot(run_dir) == before


def test_config_json_deleted_and_a_different_network_is_refused(run_dir, capsys):
    (run_dir / "config.json").unlink()
    before = snapshot(run_dir)
    with cli_warnings():
        result = scoresde(capsys, *train_argv(run_dir, "model.hidden=24"))
    assert_refused(result, "none of them restores into this config", "--restart")
    assert snapshot(run_dir) == before


def test_a_changed_config_is_refused(run_dir, capsys):
    before = snapshot(run_dir)
    result = scoresde(capsys, *train_argv(run_dir, "model.hidden=24", "train.lr=3e-3"))
    assert_refused(result, "model.mlp.hidden", "train.lr")
    assert snapshot(run_dir) == before


def test_a_second_train_on_a_locked_workdir_is_refused(run_dir, capsys):
    before = snapshot(run_dir)
    with training.guard.WorkdirLock(run_dir):
        result = scoresde(capsys, *train_argv(run_dir, f"train.steps={TOTAL + 10}"))
    assert_refused(result, f"in use by pid {os.getpid()}")
    assert snapshot(run_dir) == before


def test_train_steps_below_the_checkpoint_is_refused(run_dir, capsys):
    before = snapshot(run_dir)
    result = scoresde(capsys, *train_argv(run_dir, "train.steps=20"))
    assert_refused(result, "train.steps=20", f"step {TOTAL}")
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------------------- read-only


def test_train_in_a_read_only_workdir(run_dir, capsys):
    before = snapshot(run_dir)
    with read_only(run_dir):
        result = scoresde(capsys, *train_argv(run_dir, f"train.steps={TOTAL + 10}"))
    assert_refused(result, str(run_dir))
    assert snapshot(run_dir) == before


def test_train_under_a_read_only_parent(tmp_path, capsys):
    parent = tmp_path / "parent"
    parent.mkdir()
    with read_only(parent):
        result = scoresde(capsys, *train_argv(parent / "run"))
    assert_refused(result, str(parent))
    assert not (parent / "run").exists()


@pytest.mark.parametrize("command", ["sample", "likelihood"])
def test_sample_and_likelihood_on_a_read_only_run_fail_before_computing(
    run_dir, capsys, monkeypatch, command
):
    import networks

    calls, call = [], networks.ScoreFunction.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)  # traced or run: the evaluation has started computing
        return call(self, *args, **kwargs)

    monkeypatch.setattr(networks.ScoreFunction, "__call__", counted)
    before = snapshot(run_dir)
    with read_only(run_dir):
        result = scoresde(capsys, command, "--workdir", run_dir)
    assert_refused(result, str(run_dir))
    assert snapshot(run_dir) == before
    assert not calls, "the score was evaluated before the read-only work dir was refused"


# ---------------------------------------------------------------------------- disk full


@contextlib.contextmanager
def small_disk(path: pathlib.Path, kib: int):
    """A ``kib``-KiB tmpfs mounted at ``path`` (root only; skips elsewhere)."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize(  # no room for config.json (-m slow: 2-3 s); none for a checkpoint
    "free_kib", [pytest.param(4, marks=pytest.mark.slow), 64]
)
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_a_resumable_run(
    tmp_path, capsys, caplog, free_kib
):
    """No space left: one line naming the path, no half-written config.json or
    checkpoint under a step's name; once there is room the same command trains to the
    end."""
    with small_disk(tmp_path / "disk", 2048) as disk:  # room for the run's 3 checkpoints
        filler = disk / "filler"
        filler.write_bytes(b"\0" * ((2048 - free_kib) * 1024))
        workdir = disk / "run"
        result = scoresde(capsys, *train_argv(workdir))
        assert_refused(result, "No space left on device", str(workdir))
        gc.collect()  # orbax's abandoned writes report themselves (absl, asyncio) till collected
        leftovers = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not leftovers, leftovers[0].getMessage()[:500]
        assert training.checkpoint_steps(workdir) == []
        config = workdir / "config.json"
        assert not config.exists() or config_lib.read(config) == config_lib.load(
            "checkerboard", TINY
        )
        filler.unlink()
        assert scoresde(capsys, *train_argv(workdir))[0] == 0
        assert training.checkpoint_steps(workdir) == [20, 30, 40]


# ---------------------------------------------------------------------------- interrupts


def _interrupt_when_training(workdir: pathlib.Path, signum: int, delay: float, send):
    """A thread that waits for the run's first log line (compiled, in the loop), then
    ``delay`` seconds more, and calls ``send(signum)`` (``Popen.send_signal``: nothing
    once the process has ended)."""
    first_line = _when_logging(workdir)

    def go():
        first_line()
        time.sleep(delay)
        send(signum)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _check_resumes_exactly(reference, workdir, capsys, result, name, extra=()) -> int:
    """The interrupted run exited 130 with one line after a checkpoint at a step
    boundary; resumed, it ends bitwise identical to the uninterrupted run (weights,
    optimizer state and log). Returns the step it stopped at."""
    cfg, (last, items), rows, _ = reference
    rc, lines, err = result
    assert rc == 130 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert name in lines[0] and "checkpoint saved" in lines[0], lines[0]
    at = int(lines[0].split(" at step ")[1].split()[0])
    assert 0 < at < TOTAL and training.checkpoint_steps(workdir)[-1] == at
    assert scoresde(capsys, *train_argv(workdir, *extra))[0] == 0
    step, resumed = saved_items(workdir, cfg)
    assert step == last == TOTAL
    assert_same_items(resumed, items)
    assert metrics(workdir) == rows
    return at


# SIGINT by a real signal is in -m slow (~4 s here; at a fixed step it is in
# test_training.py); SIGTERM, what a cluster sends before preemption, in the default run
@pytest.mark.parametrize(
    "signum", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM]
)
def test_a_real_signal_at_a_random_moment_saves_and_resumes_exactly(
    reference, tmp_path, capsys, signum
):
    """A real signal (from another thread, at a random time once the loop runs) stops
    at the next step boundary with a checkpoint; a resume ends bitwise identical to the
    uninterrupted run (weights, optimizer state and log)."""
    delay = random.Random(signum).uniform(0, 0.8 * reference[-1])
    old = signal.signal(signum, lambda *a: None)  # a signal that lands late is harmless
    to_self = functools.partial(os.kill, os.getpid())
    try:
        for attempt in range(3):  # a machine faster than the reference run's: sooner
            workdir = tmp_path / f"run{attempt}"
            thread = _interrupt_when_training(workdir, signum, delay / 2**attempt, to_self)
            result = scoresde(capsys, *train_argv(workdir))
            thread.join()
            if result[0] != 0:
                break
    finally:
        signal.signal(signum, old)
    _check_resumes_exactly(reference, workdir, capsys, result, signal.Signals(signum).name)


def _subprocess_env() -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _train_process(workdir, *overrides, stderr) -> subprocess.Popen:
    command = [sys.executable, "-m", "experiments", *map(str, train_argv(workdir, *overrides))]
    return subprocess.Popen(
        command, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT
    )


@pytest.mark.slow  # 10 subprocesses of JAX start-up and 10 resumes: ~3 min on 2 cores
def test_sigint_and_sigterm_at_random_moments_of_ten_runs(reference, tmp_path, capsys):
    """Ten runs in their own processes, each sent SIGINT or SIGTERM from outside at a
    random moment of its training loop (seeded; the moments and the steps they stopped
    at are printed), half of them checkpointing every 10 steps, half only when told
    (:data:`VARIANTS`); each exits 130 with one line after a checkpoint, and its resume
    (in this process) ends bitwise identical to the uninterrupted run."""
    seconds = {}  # each variant's loop in a process of its own, uninterrupted
    for variant, extra in VARIANTS.items():
        workdir = tmp_path / variant.replace(" ", "_")
        first_line = _when_logging(workdir)
        assert _train_process(workdir, *extra, stderr=subprocess.DEVNULL).wait(300) == 0
        seconds[variant] = _loop_seconds(workdir, first_line())
    with capsys.disabled():
        print(f"\nloop seconds from the first log line to the last: {seconds}")
    rng = random.Random(14)
    for i in range(10):
        signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
        variant = list(VARIANTS)[i // 2 % 2]
        delay = rng.uniform(0, 0.9 * seconds[variant])
        extra = VARIANTS[variant]
        for attempt in range(3):  # the run ended before the signal: send it sooner
            workdir = tmp_path / f"run{i}.{attempt}"
            with (tmp_path / f"stderr{i}.{attempt}.txt").open("w+") as stderr:
                proc = _train_process(workdir, *extra, stderr=stderr)
                thread = _interrupt_when_training(workdir, signum, delay, proc.send_signal)
                rc = proc.wait(timeout=300)
                thread.join()
                stderr.seek(0)
                err = stderr.read()
            if rc != 0:
                break
            with capsys.disabled():
                print(f"run {i}: ended before the signal {delay * 1e3:.0f} ms in")
            delay /= 2
        lines = [ln for ln in err.strip().splitlines() if "parameters," not in ln]
        name = signal.Signals(signum).name
        result = (rc, lines, err)
        at = _check_resumes_exactly(reference, workdir, capsys, result, name, extra)
        with capsys.disabled():  # shown with -s
            print(
                f"run {i}: {name}, {variant}, {delay * 1e3:.0f} ms after the first log line: "
                f"stopped at step {at}, resumed to {TOTAL}: identical"
            )


@pytest.mark.slow  # two processes of JAX start-up side by side: ~20 s on 2 cores
def test_two_concurrent_trains_on_one_workdir(tmp_path):
    """Both start at once: whichever takes the lock trains to the end with a clean log
    (each logged step once, in order); the other is refused with one line naming the
    holder's pid, before writing anything."""
    workdir, steps = tmp_path / "run", 400
    overrides = [f"train.steps={steps}", "train.ckpt_every=100", "train.log_every=10"]
    files = [(tmp_path / f"stderr{i}.txt").open("w+") for i in range(2)]
    procs = [_train_process(workdir, *overrides, stderr=f) for f in files]
    codes = [p.wait(timeout=600) for p in procs]
    errs = []
    for f in files:
        f.seek(0)
        errs.append(f.read())
        f.close()
    assert sorted(codes) == [0, 2], (codes, errs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    lines = [ln for ln in errs[loser].strip().splitlines() if "parameters," not in ln]
    assert len(lines) == 1 and f"in use by pid {procs[winner].pid}" in lines[0], errs[loser]
    steps_logged = [json.loads(ln)["step"] for ln in (workdir / "metrics.jsonl").open()]
    assert steps_logged == list(range(10, steps + 1, 10))
    assert training.checkpoint_steps(workdir)[-1] == steps


@pytest.mark.slow  # two processes of JAX start-up: ~20 s on 2 cores
@pytest.mark.parametrize("fault", ["full disk", "another network"])
def test_a_real_process_prints_one_line_to_the_end(trained, tmp_path, fault):
    """What the in-process tests cannot see: what a failed save or restore leaves for
    exit time (orbax's abandoned reads and writes, printed with their tracebacks at
    garbage collection and at interpreter exit). A real process prints one line."""
    with contextlib.ExitStack() as stack:
        if fault == "full disk":
            disk = stack.enter_context(small_disk(tmp_path / "disk", 2048))
            (disk / "filler").write_bytes(b"\0" * (1984 * 1024))
            workdir, overrides = disk / "run", ()
        else:
            workdir = pathlib.Path(shutil.copytree(trained, tmp_path / "run"))
            (workdir / "config.json").unlink()
            overrides = ("model.hidden=24",)
        with (tmp_path / "stderr.txt").open("w+") as stderr:
            rc = _train_process(workdir, *overrides, stderr=stderr).wait(timeout=300)
            stderr.seek(0)
            err = stderr.read()
    lines = [ln for ln in err.strip().splitlines() if "parameters," not in ln]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
