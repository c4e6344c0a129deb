"""``scoresde distill`` end to end on a tiny teacher: every method trains, writes a
student work dir that ``scoresde sample --steps N`` samples, and resumes from a
checkpoint at exactly the weights of an uninterrupted run (progressive distillation
across a stage boundary too); bad requests are one line and exit status 2."""

import json
import shutil

import jax
import numpy as np
import pytest

from experiments import build, cli, training
from experiments import config as config_lib
from experiments.run import Run
from experiments.training import checkpoint
from tests.helpers import tiny_run

METHODS = ("cd", "ect", "pd", "meanflow")
STUDENT = [
    "train.steps=8",
    "train.batch_size=32",
    "train.log_every=1",
    "train.ckpt_every=2",
    "train.keep=10",
    "eval.n_samples=16",
    "eval.batch_size=16",
    "distill.steps_n=4",
    "distill.pd_start=4",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cfg = config_lib.load("checkerboard", tiny_run(4, extra={"eval.n_samples": 16}))
    workdir = tmp_path_factory.mktemp("teacher") / "run"
    training.train(cfg, workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def students(teacher, tmp_path_factory):
    """One uninterrupted student per method: work dir and its final weights."""
    out = {}
    for method in METHODS:
        workdir = tmp_path_factory.mktemp(method) / "student"
        argv = ["distill", "--method", method, "--teacher", str(teacher), "--workdir"]
        assert cli.main([*argv, str(workdir), "--quiet", *STUDENT]) == 0
        out[method] = (workdir, _weights(workdir))
    return out


def _weights(workdir) -> dict[str, np.ndarray]:
    state = Run.restore(workdir, checkpoint="latest").state
    flat = jax.tree_util.tree_leaves_with_path(checkpoint.to_saveable(state))
    return {jax.tree_util.keystr(p): np.array(x) for p, x in flat}


@pytest.mark.parametrize("method", METHODS)
def test_student_work_dir_samples_with_its_method(students, method, capsys):
    workdir, _ = students[method]
    cfg = config_lib.read(workdir / "config.json")
    assert cfg.distill.method == method and cfg.train.eval_every == 0
    # the end of the run sampled at distill.sample_steps = (1, 2); the latest copy is 2
    saved = np.load(workdir / "samples.npz", allow_pickle=False)["samples"]
    assert saved.shape == (16, 2) and np.all(np.isfinite(saved))
    info = json.loads((workdir / "samples.json").read_text())
    assert info["nfe"] == 2 and info["steps"] == 2
    capsys.readouterr()
    assert cli.main(["sample", "--workdir", str(workdir), "--steps", "3", "--n", "8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nfe"] == 3 and info["n"] == 8
    assert np.load(workdir / "samples.npz")["samples"].shape == (8, 2)


def test_students_start_from_the_teacher_and_move(students, teacher):
    t_state = _weights(teacher)
    for method, (_, final) in students.items():
        if method == "meanflow":  # a fresh RF network with the interval embedding
            assert final.keys() > t_state.keys() and any("interval" in k for k in final)
            s_cfg = config_lib.read(students[method][0] / "config.json")
            t_cfg = config_lib.read(teacher / "config.json")
            vp, rf = build.sde(t_cfg.sde), build.sde(s_cfg.sde)
            assert s_cfg.model.parametrisation == "velocity" and s_cfg.sde.name == "rf"
            for t_vp, t_rf in [(vp.T, rf.T), (t_cfg.eval.sample_eps, s_cfg.eval.sample_eps)]:
                assert float(rf.log_snr(t_rf)) == pytest.approx(float(vp.log_snr(t_vp)), abs=1e-4)
        else:
            assert final.keys() == t_state.keys(), method
        assert any(not np.array_equal(final[k], t_state[k]) for k in t_state), method


@pytest.mark.parametrize(
    ("method", "resume_at", "drop_stage"),
    [("cd", 2, False), ("meanflow", 4, False), ("pd", 2, False), ("pd", 6, False), ("pd", 4, True)],
    ids=["cd-at-2", "meanflow-at-4", "pd-stage0", "pd-stage1", "pd-boundary-stage-lost"],
)
def test_resume_ends_at_the_uninterrupted_weights(
    students, teacher, tmp_path, method, resume_at, drop_stage
):
    """A run killed after its checkpoint at ``resume_at`` (later checkpoints and log lines
    gone, as after SIGKILL) and resumed ends bitwise where the uninterrupted one did; for
    PD also across the stage boundary, with the next stage's teacher lost or kept."""
    source, final = students[method]
    workdir = tmp_path / "student"
    shutil.copytree(source, workdir)
    for step in checkpoint.checkpoint_steps(workdir):
        if step > resume_at:
            shutil.rmtree(workdir / "checkpoints" / str(step))
    if drop_stage:
        shutil.rmtree(workdir / "stages" / "1")
    elif method == "pd" and resume_at < 4:
        shutil.rmtree(workdir / "stages")
    argv = ["distill", "--workdir", str(workdir), "--quiet", "--no-eval"]
    assert cli.main(argv) == 0
    again = _weights(workdir)
    assert again.keys() == final.keys()
    for k in final:
        np.testing.assert_array_equal(again[k], final[k], err_msg=k)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "cd"], "distils a teacher: give --teacher DIR"),
        (["--method", "ect"], "needs --config NAME_OR_FILE"),
        (["--method", "cd", "--teacher", "/nonexistent/t"], "has no config.json"),
        (["--method", "cd", "--teacher", "TEACHER", "distill.steps_n=1"], "steps_n must be"),
        (["--method", "pd", "--teacher", "TEACHER", "distill.pd_start=6"], "power of 2"),
        (["--method", "ect", "--teacher", "TEACHER", "distill.distance=l1"], "distance must"),
        (
            ["--method", "meanflow", "--teacher", "TEACHER", "distill.meanflow_path=ve"],
            "meanflow_path must be one of rf, teacher",
        ),
        (
            ["--method", "cd", "--teacher", "TEACHER", "distill.output_weighting=x"],
            "output_weighting must be one of edm, none",
        ),
    ],
)
def test_bad_requests_are_one_line(teacher, tmp_path, capsys, argv, message):
    argv = [str(teacher) if a == "TEACHER" else a for a in argv]
    code = cli.main(["distill", "--workdir", str(tmp_path / "s"), *argv, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_a_student_is_resumed_with_its_own_method_only(students, capsys):
    workdir, _ = students["cd"]
    code = cli.main(["distill", "--workdir", str(workdir), "--method", "ect", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "holds a cd student" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("method", ["meanflow", "ect"])
def test_meanflow_and_consistency_training_train_from_data(tmp_path, method, capsys):
    """With ``--teacher`` omitted the student starts from a fresh network of the config
    and learns from the data alone (the conditional velocity / ECT's pairs)."""
    workdir = tmp_path / "student"
    argv = ["distill", "--method", method, "--config", "checkerboard", "--workdir"]
    overrides = tiny_run(4, extra={"eval.n_samples": 16, "eval.batch_size": 16})
    assert cli.main([*argv, str(workdir), "--quiet", *overrides]) == 0
    cfg = config_lib.read(workdir / "config.json")
    assert cfg.distill.method == method and not cfg.distill.teacher
    saved = np.load(workdir / "samples.npz", allow_pickle=False)["samples"]
    assert saved.shape == (16, 2) and np.all(np.isfinite(saved))


def test_support_share_counts_the_board_squares_exactly():
    from experiments.studies.distill_table import support_share

    # cell (i, j) = floor(x / 2) is on the board when i + j is even, inside [-4, 4)^2
    on = np.array([[-3.0, -3.0], [1.0, 1.0], [-1.0, 3.0], [3.9, -0.1]])
    off = np.array([[-3.0, -1.0], [1.0, -1.0], [4.0, 0.5], [0.5, -4.5]])
    assert support_share(on) == (1.0, 0.0) and support_share(off) == (0.0, 0.0)
    share, se = support_share(np.concatenate([on, off[:2]]))
    assert share == pytest.approx(4 / 6) and se == pytest.approx(np.sqrt(4 / 6 * 2 / 6 / 6))


def test_distill_table_samples_students_as_sample_does(students, teacher, tmp_path, capsys):
    cd, _ = students["cd"]
    argv = ["experiment", "distill-table", "--teacher", str(teacher), "--students", str(cd)]
    assert cli.main([*argv, "--steps", "1", "2", "--n", "16", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "distill_table.json").read_text())
    assert [(r["method"], r["steps"], r["nfe"]) for r in rows[1:]] == [("cd", 1, 1), ("cd", 2, 2)]
    assert rows[0]["method"] == "teacher" and all(0 <= r["support_share"] <= 1 for r in rows)
    assert rows[1]["distill_seconds"] > 0
    text = (tmp_path / "distill_table.md").read_text()
    assert "| student | cd |" in text and "| run | teacher |" in text
