"""Training runs end to end on a tiny config: resuming after SIGKILL ends at exactly the
parameters of an uninterrupted run, a non-finite loss stops before anything is saved,
a broken latest checkpoint falls back to the one before, a changed config is refused,
and evaluation writes its files.

One uninterrupted reference run (module fixture) records the in-memory state at every
checkpoint it saves; the other runs are compared against those records, leaf by leaf.
"""

import dataclasses
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import build, evaluation, training
from experiments import config as config_lib
from experiments.run import Run, abstract
from experiments.training import checkpoint
from experiments.training import step as step_lib
from experiments.training.checkpoint import Checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOTAL = 12
OVERRIDES = [
    f"train.steps={TOTAL}",
    "train.batch_size=64",
    "train.warmup_steps=2",
    "train.log_every=1",
    "train.ckpt_every=2",  # several saves after the first: time to kill the run mid-way
    "train.keep=3",
    "model.hidden=16",
    "model.depth=2",
    "model.embed_dim=8",
    "model.cond_dim=8",
    "data.n_val=64",
    "data.n_test=64",
    "eval.n_samples=64",
    "eval.rtol=1e-3",
    "eval.atol=1e-3",
]


def leaves(items: dict) -> dict[str, np.ndarray]:
    """Every leaf of checkpoint items (``weights``: model and EMA; ``optimizer``), as
    host arrays keyed by item and path."""
    out = {}
    for name, state in items.items():
        flat = jax.tree_util.tree_leaves_with_path(checkpoint.to_saveable(state))
        out.update({name + jax.tree_util.keystr(path): np.array(x) for path, x in flat})
    return out


def weights(saved: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``weights`` item of :func:`leaves` (what sampling and likelihoods restore)."""
    return {k: v for k, v in saved.items() if k.startswith("weights")}


def restored(workdir: pathlib.Path, prefer_best: bool = False) -> tuple[int, dict]:
    """The step and weight leaves that ``Run.restore`` gives."""
    run = Run.restore(workdir, prefer_best=prefer_best)
    return run.step, leaves({"weights": run.state})


def assert_same_state(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def checkpoint_steps(directory: pathlib.Path) -> list[int]:
    """Completed checkpoints on disk (orbax writes to a temporary name, then renames)."""
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def metrics(workdir: pathlib.Path) -> list[dict]:
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["steps_per_sec"]  # wall-clock: differs between runs
    return rows


def assert_steps_increasing(rows: list[dict], last: int) -> None:
    steps = [r["step"] for r in rows]
    assert all(np.diff(steps) > 0), steps
    assert steps[-1] == last


@dataclasses.dataclass
class Reference:
    cfg: config_lib.Config
    workdir: pathlib.Path
    info: dict
    saved: dict[int, dict[str, np.ndarray]]  # in-memory state at every save

    def copy(self, dst: pathlib.Path) -> pathlib.Path:
        shutil.copytree(self.workdir, dst)
        return dst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg = config_lib.load("checkerboard", OVERRIDES)
    workdir = tmp_path_factory.mktemp("reference") / "run"
    saved, save = {}, Checkpoints.save

    def recording_save(self, step, items, meta):
        saved[step] = leaves(items)
        save(self, step, items, meta)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Checkpoints, "save", recording_save)
        _, info = training.train(cfg, workdir, progress=False)
    assert sorted(saved) == list(range(2, TOTAL + 1, 2))
    return Reference(cfg, workdir, info, saved)


def test_reference_run_layout_and_exact_restore(reference):
    w = reference.workdir
    assert reference.info["resumed_from"] == 0 and reference.info["steps"] == TOTAL
    assert config_lib.read(w / "config.json") == reference.cfg
    assert checkpoint_steps(w / "checkpoints") == [TOTAL - 4, TOTAL - 2, TOTAL]  # keep=3
    rows = metrics(w)
    assert [r["step"] for r in rows] == list(range(1, TOTAL + 1))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    run = Run.restore(w, prefer_best=False)
    assert run.step == TOTAL and run.cfg == reference.cfg
    assert_same_state(leaves({"weights": run.state}), weights(reference.saved[TOTAL]))
    # training moved the parameters
    assert any(
        not np.array_equal(reference.saved[2][k], reference.saved[TOTAL][k])
        for k in reference.saved[TOTAL]
    )


def test_resume_after_sigkill_is_exact(reference, tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "experiments", "train", "--config", "checkerboard"]
    command += ["--workdir", str(workdir), "--no-eval", "--quiet", *OVERRIDES]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    with (tmp_path / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            deadline = time.monotonic() + 300
            # kill as soon as the first checkpoint is complete
            while not checkpoint_steps(workdir / "checkpoints") and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill:\n{log[-3000:]}"
    on_disk = checkpoint_steps(workdir / "checkpoints")
    assert on_disk and 0 < on_disk[-1] < TOTAL, on_disk  # the killed run had not finished
    resumed_at = on_disk[-1]
    # its config.json is the resolved config; its log may run past the checkpoint
    assert config_lib.read(workdir / "config.json") == reference.cfg

    _, info = training.train(reference.cfg, workdir, progress=False)
    assert info["resumed_from"] == resumed_at
    step, state = restored(workdir)
    assert step == TOTAL
    assert_same_state(state, weights(reference.saved[TOTAL]))
    rows = metrics(workdir)
    assert_steps_increasing(rows, TOTAL)
    assert rows == metrics(reference.workdir)  # same steps, losses, grad norms, lr


def test_nonfinite_loss_stops_before_saving(reference, tmp_path, monkeypatch):
    bad = 7  # 0-based index of the first poisoned batch: the 8th update diverges
    make_source = build.data_lib.make_source

    def poisoned_source(cfg):
        source = make_source(cfg)

        def train_batch(seed, step, batch_size):
            x = source.train_batch(seed, step, batch_size)
            return np.full_like(x, np.nan) if step >= bad else x

        return dataclasses.replace(source, train_batch=train_batch)

    monkeypatch.setattr(build.data_lib, "make_source", poisoned_source)
    workdir = tmp_path / "run"
    with pytest.raises(training.TrainingDiverged) as err:
        training.train(reference.cfg, workdir, progress=False)
    message = str(err.value)
    assert f"at step {bad + 1};" in message
    assert f"last good checkpoint (step {bad - 1})" in message
    assert "train.lr" in message  # says what to try
    on_disk = checkpoint_steps(workdir / "checkpoints")
    assert on_disk and on_disk[-1] == bad - 1 and all(s <= bad for s in on_disk), on_disk
    monkeypatch.undo()
    step, state = restored(workdir)
    assert step == bad - 1
    assert all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")
    assert_same_state(state, weights(reference.saved[bad - 1]))  # batches before `bad` are clean
    assert [r["step"] for r in metrics(workdir)] == list(range(1, bad + 1))


@pytest.mark.parametrize("how", ["garbage", "missing"])
def test_unreadable_latest_checkpoint_falls_back(reference, tmp_path, how):
    workdir = reference.copy(tmp_path / "run")
    state_dir = workdir / "checkpoints" / str(TOTAL) / "weights"
    if how == "missing":
        shutil.rmtree(state_dir)
    else:  # same sizes, random bytes
        rng = np.random.default_rng(0)
        for f in state_dir.rglob("*"):
            if f.is_file():
                f.write_bytes(rng.bytes(f.stat().st_size))
    graphdef, state = step_lib.init(
        Run.create(reference.cfg), build.optimizer(reference.cfg.train)[0]
    )
    ckpts = Checkpoints(workdir / "checkpoints", keep=3)
    with pytest.warns(UserWarning, match=f"checkpoint at step {TOTAL} .* unreadable"):
        items, meta = ckpts.restore_latest(step_lib.items(graphdef, abstract(state)))
    ckpts.close()
    assert meta["step"] == TOTAL - 2
    assert_same_state(leaves(items), reference.saved[TOTAL - 2])  # weights and optimizer
    with pytest.warns(UserWarning, match=f"step {TOTAL}"):
        step, state = restored(workdir)
    assert step == TOTAL - 2
    assert_same_state(state, weights(reference.saved[TOTAL - 2]))


def test_resume_past_unreadable_latest_checkpoint(reference, tmp_path):
    workdir = reference.copy(tmp_path / "run")
    shutil.rmtree(workdir / "checkpoints" / str(TOTAL) / "optimizer")
    with pytest.warns(UserWarning, match=f"step {TOTAL}"):
        _, info = training.train(reference.cfg, workdir, progress=False)
    assert info["resumed_from"] == TOTAL - 2
    step, state = restored(workdir)
    assert step == TOTAL
    assert_same_state(state, weights(reference.saved[TOTAL]))
    rows = metrics(workdir)
    assert_steps_increasing(rows, TOTAL)
    assert rows == metrics(reference.workdir)


def test_changed_config_is_refused(reference, tmp_path):
    workdir = reference.copy(tmp_path / "run")
    before = (workdir / "config.json").read_text()
    changed = config_lib.load("checkerboard", [*OVERRIDES, "train.lr=2e-3", "model.hidden=32"])
    with pytest.raises(config_lib.ConfigError) as err:
        training.train(changed, workdir, progress=False)
    message = str(err.value)
    assert "a different config (model.mlp.hidden, train.lr)" in message
    assert (workdir / "config.json").read_text() == before
    assert checkpoint_steps(workdir / "checkpoints") == [TOTAL - 4, TOTAL - 2, TOTAL]


def _tree(workdir: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``workdir`` (but the lock file) and its bytes."""
    return {
        str(f.relative_to(workdir)): f.read_bytes()
        for f in sorted(workdir.rglob("*"))
        if f.is_file() and f.name != ".lock"
    }


def _train_cli(workdir, *extra, overrides=OVERRIDES) -> int:
    from experiments import cli

    argv = ["train", "--config", "checkerboard", "--workdir", str(workdir), "--no-eval"]
    return cli.main([*argv, "--quiet", *extra, *overrides])


def _error_lines(capsys) -> list[str]:
    """stderr without train's start-up line (network, SDE, data, devices, start step)."""
    lines = capsys.readouterr().err.strip().splitlines()
    return [ln for ln in lines if not (ln.startswith("scoresde train: ") and "parameters," in ln)]


def _signal_at(monkeypatch, signum: int, at_step: int) -> None:
    """Send this process ``signum`` while the batch of ``at_step`` is being built."""
    from experiments.training import loop

    make = loop.global_batch

    def batch(run, step, sharding):
        if step == at_step:
            os.kill(os.getpid(), signum)
        return make(run, step, sharding)

    monkeypatch.setattr(loop, "global_batch", batch)


@pytest.mark.parametrize(
    "signum, at_step, log_every", [(signal.SIGINT, 2, 1), (signal.SIGTERM, 6, 4)]
)
def test_interrupt_saves_at_the_step_boundary_and_resumes_exactly(
    reference, tmp_path, monkeypatch, capsys, signum, at_step, log_every
):
    """SIGINT/SIGTERM: the step in flight completes, a checkpoint is saved there, the
    CLI exits 130 with one line; a resume ends bitwise identical to the uninterrupted
    run, and its log too (a logging window cut by the checkpoint is carried over)."""
    overrides = [*OVERRIDES, f"train.log_every={log_every}"]
    workdir = tmp_path / "run"
    _signal_at(monkeypatch, signum, at_step)
    assert _train_cli(workdir, overrides=overrides) == 130
    err = _error_lines(capsys)
    name = signal.Signals(signum).name
    assert len(err) == 1 and f"{name} at step {at_step + 1} of {TOTAL}" in err[0], err
    assert checkpoint_steps(workdir / "checkpoints")[-1] == at_step + 1
    monkeypatch.undo()
    cfg = config_lib.load("checkerboard", overrides)
    _, info = training.train(cfg, workdir, progress=False)
    assert info["resumed_from"] == at_step + 1
    step, state = restored(workdir)
    assert step == TOTAL
    assert_same_state(state, weights(reference.saved[TOTAL]))
    rows, every_step = metrics(workdir), metrics(reference.workdir)
    assert [r["step"] for r in rows] == list(range(log_every, TOTAL + 1, log_every))
    for r in rows:  # each record is the mean over its window of the per-step records
        window = every_step[r["step"] - log_every : r["step"]]
        assert r["loss"] == float(np.mean([w["loss"] for w in window]))
        assert r["grad_norm"] == float(np.mean([w["grad_norm"] for w in window]))


def test_a_second_train_on_a_held_workdir_is_refused(reference, tmp_path, capsys):
    workdir = reference.copy(tmp_path / "run")
    before = _tree(workdir)
    with training.guard.WorkdirLock(workdir):
        assert _train_cli(workdir) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and f"is in use by pid {os.getpid()}" in err[0], err
    assert _tree(workdir) == before


def test_unreadable_checkpoints_are_refused_and_restart_moves_the_run_aside(
    reference, tmp_path, capsys
):
    """No checkpoint restores (here: config.json deleted and the network changed): the
    run is refused with exit 2 and left as it was; --restart moves it aside and starts
    over."""
    workdir = reference.copy(tmp_path / "run")
    (workdir / "config.json").unlink()
    before = _tree(workdir)
    wider = [*OVERRIDES, "model.hidden=24"]
    assert _train_cli(workdir, overrides=wider) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "none of them restores into this config" in err[0], err
    assert "--restart" in err[0] and _tree(workdir) == before
    assert _train_cli(workdir, "--restart", overrides=wider) == 0
    (aside,) = workdir.glob("replaced-*")
    assert {
        k.split("/", 1)[1]: v for k, v in _tree(workdir).items() if k.startswith(aside.name)
    } == before
    assert config_lib.read(workdir / "config.json").model.mlp.hidden == 24
    assert checkpoint_steps(workdir / "checkpoints")[-1] == TOTAL


def test_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    assert _train_cli(path) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "is a file, not a directory" in err[0], err


@pytest.mark.parametrize("warmup, first_decay", [(True, 0.1), (False, 0.999)])
def test_ema_warmup_averages_from_the_first_steps(warmup, first_decay):
    """With train.ema_warmup the decay at step t is min(ema_decay, (1 + t)/(10 + t)):
    after one step the EMA is 0.1 x initial + 0.9 x updated weights (without: 0.999)."""
    from flax import nnx

    from experiments import distributed

    cfg = config_lib.load("checkerboard", [*OVERRIDES, f"train.ema_warmup={warmup}"])
    run = Run.create(cfg)
    graphdef, state = step_lib.init(run, build.optimizer(cfg.train)[0])
    mesh = distributed.mesh()
    step = step_lib.make_step(run, graphdef, distributed.state_shardings(state, mesh), mesh)
    before = jax.tree.leaves(nnx.state(nnx.merge(graphdef, state)[0], nnx.Param))
    batch = training.global_batch(run, 0, distributed.batch_sharded(mesh))
    model, _, ema = nnx.merge(graphdef, step(state, batch, np.int32(0))[0])
    after = jax.tree.leaves(nnx.state(model, nnx.Param))
    for e, b, a in zip(jax.tree.leaves(ema.params), before, after, strict=True):
        want = first_decay * np.asarray(b) + (1 - first_decay) * np.asarray(a)
        np.testing.assert_allclose(np.asarray(e), want, rtol=1e-6, atol=1e-7)


def test_raw_weights_run_scores_with_the_networks_own_weights(reference):
    run = Run.restore(reference.workdir)
    raw = run.with_weights("raw")
    x, t = jnp.linspace(-2, 2, 16).reshape(8, 2), jnp.full((8,), 0.4)
    np.testing.assert_array_equal(
        np.asarray(raw.score_function()(x, t)), np.asarray(run.score_function(False)(x, t))
    )
    assert raw.weights == "raw" and run.weights == "ema"
    assert not np.allclose(
        np.asarray(run.score_function()(x, t)), np.asarray(raw.score_function()(x, t))
    )
    with pytest.raises(ValueError, match="weights must be 'ema' or 'raw', got 'best'"):
        run.with_weights("best")


def test_extending_steps_continues_from_last_checkpoint(reference, tmp_path):
    workdir = reference.copy(tmp_path / "run")
    longer = config_lib.load("checkerboard", [*OVERRIDES, f"train.steps={TOTAL + 4}"])
    _, info = training.train(longer, workdir, progress=False)
    assert info["resumed_from"] == TOTAL and info["steps"] == TOTAL + 4
    # the cosine schedule keeps its horizon: config.json pins it to the old length
    kept = config_lib.apply_overrides(longer, [f"train.schedule_steps={TOTAL}"])
    assert config_lib.read(workdir / "config.json") == kept
    changes = [json.loads(ln) for ln in (workdir / "changes.jsonl").read_text().splitlines()]
    assert changes[0]["step"] == TOTAL and changes[0]["changes"] == {
        "train.steps": [TOTAL, TOTAL + 4],
        "train.schedule_steps": [0, TOTAL],
    }
    assert checkpoint_steps(workdir / "checkpoints") == [TOTAL, TOTAL + 2, TOTAL + 4]
    rows = metrics(workdir)
    assert_steps_increasing(rows, TOTAL + 4)
    assert rows[:TOTAL] == metrics(reference.workdir)  # history kept as it was
    step, state = restored(workdir)
    assert step == TOTAL + 4
    assert all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")
    assert any(not np.array_equal(state[k], reference.saved[TOTAL][k]) for k in state)


def _cosine_lr(cfg, step: int, horizon: int) -> float:
    """The learning rate after ``step`` steps of optax's warm-up cosine schedule with
    horizon ``horizon``, written out: linear warm-up, then a cosine from ``lr`` to
    ``0.01 lr`` over the remaining ``horizon - warmup`` steps, flat past the end."""
    lr, warm, floor = cfg.train.lr, cfg.train.warmup_steps, 0.01 * cfg.train.lr
    if step < warm:
        return lr * step / warm
    frac = min(step - warm, horizon - warm) / (horizon - warm)
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * frac))


@pytest.mark.parametrize("stretch", [False, True])
def test_extending_keeps_the_schedule_unless_stretched(reference, tmp_path, capsys, stretch):
    """train.steps 12 -> 16 keeps the cosine's 12-step horizon (the new steps train at
    its floor) and says so; train.schedule_steps=16 given too stretches it instead."""
    workdir = reference.copy(tmp_path / "run")
    extra = ["train.steps=16", *(["train.schedule_steps=16"] if stretch else [])]
    assert _train_cli(workdir, overrides=[*OVERRIDES, *extra]) == 0
    start = [ln for ln in capsys.readouterr().err.splitlines() if "resuming from step" in ln]
    assert len(start) == 1 and ("12-step horizon" in start[0]) != stretch, start
    rows = {r["step"]: r["lr"] for r in metrics(workdir)}
    horizon = 16 if stretch else TOTAL
    for step in range(1, 17):  # the first 12 steps were taken on the 12-step schedule
        want = _cosine_lr(reference.cfg, step, horizon if step > TOTAL else TOTAL)
        assert rows[step] == pytest.approx(want, rel=1e-5)
    assert config_lib.read(workdir / "config.json").train.schedule_steps == horizon


def test_resume_from_the_runs_own_config_may_change_bookkeeping(reference, tmp_path, capsys):
    """``train --workdir DIR`` with no --config resumes from DIR/config.json; logging
    and eval.* may change (recorded in changes.jsonl); the network may not."""
    from experiments import cli

    workdir = reference.copy(tmp_path / "run")
    base = ["train", "--workdir", str(workdir), "--no-eval", "--quiet"]
    assert cli.main([*base, "model.hidden=32"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "model.mlp.hidden" in err[0] and "--fork-from" in err[0], err
    changes = ["train.steps=16", "train.log_every=2", "eval.rtol=1e-4"]
    assert cli.main([*base, *changes]) == 0
    saved = config_lib.read(workdir / "config.json")
    assert (saved.train.steps, saved.train.log_every, saved.eval.rtol) == (16, 2, 1e-4)
    (line,) = [json.loads(ln) for ln in (workdir / "changes.jsonl").read_text().splitlines()]
    assert line["step"] == TOTAL and line["changes"] == {
        "train.steps": [TOTAL, 16],
        "train.schedule_steps": [0, TOTAL],
        "train.log_every": [1, 2],
        "eval.rtol": [1e-3, 1e-4],
    }
    assert [r["step"] for r in metrics(workdir)] == [*range(1, TOTAL + 1), 14, 16]


def test_fork_continues_exactly_and_records_its_source(reference, tmp_path, capsys):
    """A fork that changes nothing ends bitwise where its source did (batches and keys
    are functions of the step); its source is left as it was; one that changes the
    network is refused before anything is written."""
    from experiments import cli

    before = _tree(reference.workdir)
    fork = tmp_path / "fork"
    argv = ["train", "--workdir", str(fork), "--no-eval", "--quiet"]
    assert cli.main([*argv, "--fork-from", f"{reference.workdir}:{TOTAL - 4}"]) == 0
    _, state = restored(fork)
    assert_same_state(state, weights(reference.saved[TOTAL]))
    info = json.loads((fork / "fork.json").read_text())
    assert info["step"] == TOTAL - 4 and info["changes"] == {}
    assert pathlib.Path(info["from"]) == reference.workdir.absolute()
    assert metrics(fork) == metrics(reference.workdir)[TOTAL - 4 :]
    assert _tree(reference.workdir) == before
    capsys.readouterr()
    other = tmp_path / "other"
    bad = ["train", "--workdir", str(other), "--fork-from", str(reference.workdir)]
    assert cli.main([*bad, "model.hidden=32"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "cannot change model.mlp.hidden" in err[0], err
    assert not other.exists()


def test_short_runs_are_warned_about_an_ema_that_still_holds_the_initial_weights():
    from experiments.training import step as steps

    plain = config_lib.load("checkerboard", ["train.steps=300", "train.ema_warmup=false"])
    assert steps.initial_share(plain.train) == pytest.approx(0.999**300, rel=1e-9)
    assert "leaves 74% of the initial weights" in steps.short_run_warning(plain.train)
    warm = config_lib.load("checkerboard", ["train.steps=300"])
    assert steps.initial_share(warm.train) < 1e-12  # prod (1 + t) / (10 + t) ~ 9! / 300^9
    assert steps.short_run_warning(warm.train) is None


def test_each_evaluation_keeps_its_own_files_and_the_latest_at_the_top(reference, tmp_path):
    """Two sample calls keep two named sets of files, the top-level samples.* are the
    latest's; a validation likelihood never lands in likelihood.json; --checkpoint
    picks the step; an unwritable work dir fails before any computing."""
    workdir = reference.copy(tmp_path / "run")
    # the settings of the test above: its compiled sampler and likelihood are reused
    first = evaluation.sample(Run.restore(workdir), n=64, steps=4, method="ode", progress=False)
    early = Run.restore(workdir, checkpoint=TOTAL - 2)
    assert (early.step, early.checkpoint) == (TOTAL - 2, "step")
    second = evaluation.sample(early, n=64, steps=4, method="ode", seed=1, progress=False)
    assert first["file"] != second["file"] and second["checkpoint_step"] == TOTAL - 2
    assert second["file"].startswith(f"samples/step{TOTAL - 2}_ema_ode_tsit5_uniform4_")
    kept = sorted(p.name for p in (workdir / "samples").iterdir())
    assert len(kept) == 6  # .npz, .png, .json of each
    with (
        np.load(workdir / "samples.npz") as top,
        np.load(workdir / second["file"].replace(".json", ".npz")) as mine,
    ):
        np.testing.assert_array_equal(top["samples"], mine["samples"])
    assert json.loads((workdir / "samples.json").read_text()) == second

    run = Run.restore(workdir)
    test = evaluation.likelihood(run, n=64, steps=3, solver="heun", progress=False)
    val = evaluation.likelihood(run, split="val", n=64, steps=3, solver="heun", progress=False)
    assert json.loads((workdir / "likelihood.json").read_text()) == test
    assert json.loads((workdir / "likelihood_val.json").read_text()) == val
    assert test["settings"]["steps"] == 3 and test["settings"]["rtol"] is None
    assert test["nfe"] == 6 and test["file"] != val["file"]  # Heun: 2 evaluations a step
    text = evaluation.rebuild_report(run)  # from train.json and the latest results
    assert (workdir / "report.md").read_text() == text
    assert f"(checkpoint step {TOTAL - 2}, seed 1)" in text and "heun, 3 steps" in text
    assert f"{test['nll_nats']:.4f}" in text and f"{val['nll_nats']:.4f}" not in text

    with pytest.raises(ValueError, match="checkpoint must be 'best', 'latest' or a step"):
        Run.restore(workdir, checkpoint=-1)
    with pytest.raises(FileNotFoundError, match="no best/ checkpoint"):
        Run.restore(workdir, checkpoint="best")
    shutil.rmtree(workdir / "likelihood")
    (workdir / "likelihood").write_text("in the way")  # cannot become a folder
    with pytest.raises(PermissionError, match="nothing was computed"):
        evaluation.likelihood(Run.restore(workdir), n=16, progress=False)


def test_grids_default_to_log_snr_for_the_exponential_integrators(reference):
    import samplers
    from experiments.evaluation.sample import sampler_kwargs

    run = Run.restore(reference.workdir)
    eval_cfg, sde = run.cfg.eval, run.sde
    _, kw, _ = sampler_kwargs(eval_cfg, "ode", "dpmpp2m", 10, sde=sde)
    np.testing.assert_array_equal(kw["ts"], samplers.log_snr_grid(sde, 10, eval_cfg.sample_eps))
    _, kw, _ = sampler_kwargs(eval_cfg, "ode", "euler", 10, sde=sde)
    assert kw["steps"] == 10 and "ts" not in kw  # the sampler's own uniform grid
    _, kw, _ = sampler_kwargs(eval_cfg, "sde", None, 6, sde=sde, grid="karras", eps=0.01)
    np.testing.assert_array_equal(kw["ts"], samplers.karras_grid(sde, 6, 0.01))
    _, kw, _ = sampler_kwargs(eval_cfg, "edm", None, 6, sde=sde, denoise=False)
    assert kw["steps"] == 6 and kw["denoise"] is False
    with pytest.raises(ValueError, match="give --steps N"):
        sampler_kwargs(eval_cfg, "ode", None, None, sde=sde, grid="log_snr")


def test_evaluation_writes_samples_likelihood_and_report(reference, tmp_path):
    workdir = reference.copy(tmp_path / "run")
    run = Run.restore(workdir)
    s = evaluation.sample(run, n=64, steps=4, method="ode", progress=False)
    assert s["checkpoint_step"] == TOTAL and s["n"] == 64 and s["method"] == "ode"
    assert s["nfe"] > 0
    with np.load(workdir / "samples.npz") as f:
        x = f["samples"]
    assert x.shape == (64, 2) and np.all(np.isfinite(x))
    assert (workdir / "samples.png").stat().st_size > 0
    assert json.loads((workdir / "samples.json").read_text())["n"] == 64

    lik = evaluation.likelihood(run, n=64, progress=False)
    assert lik == json.loads((workdir / "likelihood.json").read_text())
    assert lik["n"] == 64 and lik["split"] == "test" and lik["checkpoint_step"] == TOTAL
    for key in ("nll_nats", "nll_nats_stderr", "nfe"):
        assert math.isfinite(lik[key])
    assert lik["nfe"] > 0 and lik["nll_nats_stderr"] >= 0
    settings = lik["settings"]  # the eval settings come from config.json
    assert (settings["rtol"], settings["atol"]) == (1e-3, 1e-3)
    assert settings["solver"] == "tsit5" and settings["divergence"] == "exact"
    assert lik["entropy_nats"] == pytest.approx(math.log(32), abs=1e-12)
    assert lik["kl_nats"] == pytest.approx(lik["nll_nats"] - math.log(32), abs=1e-12)
    assert "bits_per_dim" not in lik  # continuous data

    bound = evaluation.elbo(run, n=64, n_t=4, progress=False)
    assert bound == json.loads((workdir / "elbo.json").read_text())
    assert bound["n"] == 64 and bound["nfe"] == 8 and bound["checkpoint_step"] == TOTAL
    assert math.isfinite(bound["nll_nats"]) and bound["mc_stderr_nats_rms"] > 0
    assert bound["ode"]["nll_nats"] == lik["nll_nats"]  # the ODE figure beside it

    text = evaluation.report(run, reference.info, s, lik)
    assert (workdir / "report.md").read_text() == text
    assert f"{lik['nll_nats']:.4f}" in text and "KL = NLL - H" in text
    assert (workdir / "loss.png").exists()


def test_periodic_validation_keeps_the_best_and_writes_snapshots(tmp_path):
    """eval_every logs a validation NLL, saves sample snapshots and keeps the best
    checkpoint, which is what evaluation then loads."""
    cfg = config_lib.load(
        "checkerboard", [*OVERRIDES, "train.steps=8", "train.eval_every=4", "train.n_eval_val=32"]
    )
    workdir = tmp_path / "run"
    trained, info = training.train(cfg, workdir, progress=False)
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["val_nll"] for r in rows if "val_nll" in r}
    assert sorted(val) == [4, 8] and all(math.isfinite(v) for v in val.values())
    assert info["best_val_nll"] == pytest.approx(min(val.values()))
    assert (workdir / "progress" / "samples_4.png").exists()
    assert (workdir / "progress" / "samples_8.png").exists()
    best_step = min(val, key=val.get)
    run = Run.restore(workdir)  # prefers the best checkpoint
    assert run.step == best_step
    # training hands evaluation the same weights
    assert trained.step == best_step and trained.checkpoint == run.checkpoint == "best"
    assert_same_state(leaves({"weights": trained.state}), leaves({"weights": run.state}))
    # the best checkpoint's validation NLL is reproducible from its restored state
    assert evaluation.validation_nll(run, 32) == pytest.approx(val[best_step], abs=1e-4)


@pytest.mark.slow  # 16 s; default run past 12 min
def test_digits_mlp_run_reports_bits_per_dim(tmp_path):
    """Images through an MLP: flattened for the network, shown as images, and scored in
    bits/dim with the 17-level dequantisation offset."""
    cfg = config_lib.load(
        "digits",
        [
            "train.steps=4",
            "train.batch_size=32",
            "train.log_every=2",
            "train.ckpt_every=2",
            "train.eval_every=2",
            "train.n_eval_val=16",
            "model.hidden=16",
            "model.depth=1",
            "model.embed_dim=8",
            "model.cond_dim=8",
            "eval.rtol=1e-3",
            "eval.atol=1e-3",
            "eval.n_samples=16",
            "eval.batch_size=16",
        ],
    )
    workdir = tmp_path / "digits"
    run, _ = training.train(cfg, workdir, progress=False)
    assert (workdir / "progress" / "samples_2.png").exists()
    info = evaluation.sample(run, n=16, steps=4, progress=False)
    assert np.load(workdir / "samples.npz")["samples"].shape == (16, 64) and info["nfe"] > 0
    lik = evaluation.likelihood(run, n=16, progress=False)
    expected = lik["nll_nats"] / (64 * math.log(2)) + math.log2(17 / 2)  # data in [-1, 1]
    assert lik["bits_per_dim"] == pytest.approx(expected, rel=1e-6)
    assert "entropy_nats" not in lik


def test_edm_config_trains_with_the_edm_loss_and_samples_with_heun(tmp_path):
    """sde.name=edm + train.loss=edm: the logged first loss is sde.edm_loss of the
    initial model on the first batch; sampling uses EDM's Heun: N steps and the last
    step to sigma = 0 (2N + 1 evaluations)."""
    import jax.numpy as jnp
    from flax import nnx

    import networks
    import sde as sde_lib

    cfg = config_lib.load(
        "checkerboard_edm",
        [*OVERRIDES, "train.steps=2", "train.ckpt_every=2", "eval.n_likelihood=32"],
    )
    setup = Run.create(cfg)
    assert isinstance(setup.sde, sde_lib.EDMSDE) and setup.sde.T == 80.0
    model, _ = nnx.merge(setup.graphdef, setup.state)
    batch = jnp.asarray(setup.source.train_batch(cfg.train.seed, 0, cfg.train.batch_size))
    key = jax.random.fold_in(jax.random.key(cfg.train.seed), 0)
    expected = sde_lib.edm_loss(
        networks.score_fn(model, setup.sde, setup.param),
        setup.sde,
        batch,
        key,
        p_mean=cfg.train.p_mean,
        p_std=cfg.train.p_std,
        sigma_data=cfg.model.sigma_data,
    ).mean()
    workdir = tmp_path / "edm"
    run, _ = training.train(setup, workdir, progress=False)
    first = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["loss"] == pytest.approx(float(expected), rel=1e-5)
    info = evaluation.sample(run, n=16, steps=2, progress=False)
    assert info["nfe"] == 5 and info["solver"].startswith("edm")
    lik = evaluation.likelihood(run, n=16, progress=False)
    assert math.isfinite(lik["nll_nats"]) and lik["settings"]["eps"] == 0.002


def test_edm_config_errors_name_the_range():
    with pytest.raises(config_lib.ConfigError, match=r"\(0, T\) = \(0, 80\)"):
        config_lib.load("checkerboard_edm", ["eval.sample_eps=90.0"])
    with pytest.raises(config_lib.ConfigError, match="sde.sigma_min"):
        config_lib.load("checkerboard_edm", ["sde.sigma_min=100.0"])
    with pytest.raises(config_lib.ConfigError, match="eval.s_churn"):
        config_lib.load("checkerboard_edm", ["eval.s_churn=-1.0"])


def test_inpaint_command_keeps_known_pixels_and_refuses_whitened_runs(tmp_path):
    small = [
        "train.steps=2",
        "train.batch_size=32",
        "train.log_every=1",
        "train.ckpt_every=2",
        "train.eval_every=0",
        "model.hidden=16",
        "model.depth=1",
        "model.embed_dim=8",
        "model.cond_dim=8",
    ]
    raw = config_lib.load("digits", [*small, "data.whiten=none", "model.gaussian_base=false"])
    run, _ = training.train(raw, tmp_path / "raw", progress=False)
    mask = evaluation.inpaint_mask("left", (8, 8, 1))
    assert mask[:, :4].all() and not mask[:, 4:].any()
    info = evaluation.inpaint(run, mask="center", n=2, fills=2, steps=3)
    assert info["known_pixels_kept_exactly"] and info["nfe"] == 4  # 3 steps + denoiser
    saved = np.load(tmp_path / "raw" / "inpaint.npz")
    keep = saved["mask"].reshape(-1).astype(bool)
    np.testing.assert_array_equal(saved["samples"][:, keep], saved["known"][:, keep])
    assert (tmp_path / "raw" / "inpaint.png").exists()
    with pytest.raises(ValueError, match="random:P needs P in"):
        evaluation.inpaint_mask("random:2", (8, 8, 1))
    white = config_lib.load("digits", small)
    run, _ = training.train(white, tmp_path / "white", progress=False)
    with pytest.raises(ValueError, match="whitened data"):
        evaluation.inpaint(run, n=2, steps=3)


def _write_cifar_fixture(directory: pathlib.Path, n_per_file: int = 4) -> None:
    """Tiny files in the CIFAR-10 binary format: 1 label byte + 3072 channel-major bytes."""
    from experiments import data

    rng = np.random.default_rng(0)
    for names in data.CIFAR10_FILES.values():
        for name in names:
            labels = rng.integers(0, 10, n_per_file, dtype=np.uint8)
            pixels = rng.integers(0, 256, (n_per_file, 3 * 32 * 32), dtype=np.uint8)
            (directory / name).write_bytes(np.concatenate([labels[:, None], pixels], 1).tobytes())


# image configs on fixture files: two steps of 4, one likelihood batch of 2
_TWO_STEPS_ONE_LIKELIHOOD_BATCH = [
    "train.steps=2",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.log_every=1",
    "train.ckpt_every=2",
    "eval.n_likelihood=2",
    "eval.batch_size=2",
]


@pytest.mark.slow  # 50-90 s of compiling on 2 cores; the networks are checked in
# tests/networks/test_ncsnpp.py and the configs' loading in test_image_configs_load_and_build
@pytest.mark.parametrize("name", ["cifar10_ddpmpp", "cifar10_ncsnpp", "cifar10_dit"])
def test_cifar10_configs_train_and_score_a_likelihood_batch_on_fixture_data(tmp_path, name):
    """The reference configs build (with a shrunk network: the full 62M-parameter nets
    are counted in tests/networks/test_ncsnpp.py), train a few steps and score bits/dim."""
    _write_cifar_fixture(tmp_path)
    cfg = config_lib.load(
        name,
        [
            f"data.directory={tmp_path}",
            "data.val_fraction=0.2",
            *(
                ["model.dit.width=16", "model.dit.depth=1", "model.dit.heads=2"]
                if name.endswith("dit")
                else [
                    "model.ncsnpp.nf=8",
                    "model.ncsnpp.ch_mult=1,2",
                    "model.ncsnpp.num_res_blocks=1",
                ]
            ),
            *_TWO_STEPS_ONE_LIKELIHOOD_BATCH,
            "eval.dequant_repeats=1",
            "eval.rtol=1e-2",
            "eval.atol=1e-2",
        ],
    )
    assert cfg.model.architecture in ("ddpmpp", "ncsnpp", "dit") and cfg.data.random_flip
    workdir = tmp_path / "run"
    run, _ = training.train(cfg, workdir, progress=False)
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    lik = evaluation.likelihood(run, n=2, progress=False)
    expected = lik["nll_nats"] / (3072 * math.log(2)) + math.log2(256 / 2)
    assert lik["bits_per_dim"] == pytest.approx(expected, rel=1e-6)


def _write_mnist_fixture(directory: pathlib.Path, n: dict[str, int]) -> None:
    """Tiny IDX files: nearly binary 28x28 'images' (a random blob on 0), random labels."""
    import struct

    rng = np.random.default_rng(0)
    for prefix, count in n.items():
        images = np.where(rng.random((count, 28, 28)) < 0.2, 255, 0).astype(np.uint8)
        images[:, ::7, ::7] = rng.integers(0, 256, (count, 4, 4))  # some grey levels
        labels = rng.integers(0, 10, count).astype(np.uint8)
        for stem, arr in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim)
            head += struct.pack(f">{arr.ndim}I", *arr.shape)
            (directory / f"{prefix}-{stem}").write_bytes(head + arr.tobytes())


@pytest.mark.parametrize(
    "name",
    [
        "cifar10_ddpmpp",
        "cifar10_ncsnpp",
        "cifar10_dit",
        "mnist",
        "mnist_mlp",
        "mnist_rf",
        "mnist_dit",
    ],
)
def test_image_configs_load_and_build(name):
    """Each image config validates and builds its full network (abstractly: shapes only)
    for its data's shape; the fixture runs below train them end to end in -m slow."""
    from flax import nnx

    import networks

    cfg = config_lib.load(name)
    shape = (28, 28, 1) if name.startswith("mnist") else (32, 32, 3)
    if cfg.model.architecture == "mlp":
        shape = (784,)
    model = nnx.eval_shape(lambda: build.model(cfg.model, shape, 0))
    assert networks.count_params(model) > 10_000
    out = jax.eval_shape(lambda m: m(jnp.zeros((2, *shape)), jnp.ones(2)), model)
    assert out.shape == (2, *shape)


@pytest.mark.slow  # ~60 s of compiling on 2 cores; its parts (U-Net labels, histogram
# base, guided sampling) have their own tests in the default run
@pytest.mark.parametrize("name", ["mnist", "mnist_dit"])
def test_mnist_config_trains_samples_and_scores_on_fixture_data(tmp_path, name):
    """The ``mnist`` config (U-Net + histogram base, class-conditional) and its DiT
    twin end to end on tiny fixture files, with a shrunk network: steps, bits/dim,
    guided samples."""
    _write_mnist_fixture(tmp_path, {"train": 24, "t10k": 4})
    shrink = (
        ["model.dit.width=16", "model.dit.depth=1", "model.dit.heads=2"]
        if name == "mnist_dit"
        else ["model.channels=8,8,8"]
    )
    cfg = config_lib.load(
        name,
        [
            f"data.directory={tmp_path}",
            "data.val_fraction=0.25",
            *shrink,
            *_TWO_STEPS_ONE_LIKELIHOOD_BATCH,
        ],
    )
    assert cfg.model.histogram_base and cfg.model.num_classes == 10
    workdir = tmp_path / "run"
    run, _ = training.train(cfg, workdir, progress=False)
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    lik = evaluation.likelihood(run, n=2, progress=False)
    assert math.isfinite(lik["bits_per_dim"]) and lik["bits_per_dim"] < 8
    # two training steps barely move the zero-initialised network off the base
    assert lik["histogram_base_alone"]["bits_per_dim"] == pytest.approx(
        lik["bits_per_dim"], abs=0.05
    )
    evaluation.sample(run, n=10, steps=4, method="sde", labels="all", guidance=1.0)
    samples = np.load(workdir / "samples.npz")["samples"]
    assert samples.shape[0] == 10 and np.isfinite(samples).all()


def test_histogram_base_config_errors():
    with pytest.raises(config_lib.ConfigError, match="needs image data"):
        config_lib.load("checkerboard", ["model.histogram_base=true"])
    for bad in ("data.gaussianize=true", "data.whiten=pca", "model.gaussian_base=true"):
        with pytest.raises(config_lib.ConfigError, match="histogram_base"):
            config_lib.load("mnist", [bad])
