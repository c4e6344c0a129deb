"""The GAN baseline and the vs-gan study: a run is a pure function of its seed, the
scanned training loop equals the plain step, a GAN moves towards a known data mean, the
mode-coverage metric gives its closed-form values, the study writes its report, its
results round-trip through results.json, and bad flags are refused with the value.
Also the oracle study: every SDE it offers runs, and an unknown one is refused up front."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

import sde
from experiments import build
from experiments.data import DataSource, mixture_dataset
from experiments.studies import oracle, vs_gan
from experiments.studies.vs_gan import gan, report, results, runs, tasks

MEAN = np.array([3.0, -2.0])
STD = 0.5


def gaussian_source() -> DataSource:
    """A single 2-D Gaussian N(MEAN, STD^2 I), batches a pure function of (seed, step)."""

    def train_batch(seed, step, batch_size):
        rng = np.random.default_rng([seed, 1, step])
        return (MEAN + STD * rng.standard_normal((batch_size, 2))).astype(np.float32)

    return DataSource("gauss", (2,), train_batch, val=None, test=None)


def tiny(**changes) -> gan.GANConfig:
    base = dict(latent_dim=2, hidden=16, depth=2, batch_size=32, steps=20, chunk=10, log_every=5)
    return gan.GANConfig(**{**base, **changes})


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.parametrize("loss", gan.LOSSES)
def test_training_is_a_function_of_the_seed(loss):
    source = gaussian_source()
    a = gan.train(tiny(loss=loss, seed=3), source)
    b = gan.train(tiny(loss=loss, seed=3), source)
    c = gan.train(tiny(loss=loss, seed=4), source)
    for x, y in zip(leaves(a.state), leaves(b.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.history == b.history
    assert any(
        not np.array_equal(x, y) for x, y in zip(leaves(a.state), leaves(c.state), strict=True)
    )
    assert a.history["step"] == [5, 10, 15, 20]
    assert all(np.isfinite(a.history["d_loss"] + a.history["g_loss"]))


def test_scanned_training_equals_the_plain_step():
    """gan.train (chunks of lax.scan) and make_step called step by step: same parameters."""
    cfg, source = tiny(loss="r1", seed=1), gaussian_source()
    run = gan.train(cfg, source)
    graphdef, state = gan.init(cfg, 2)
    step = gan.make_step(graphdef, cfg)
    for i in range(cfg.steps):
        state, _ = step(state, source.train_batch(cfg.seed, i, cfg.batch_size), i)
    for x, y in zip(leaves(run.state), leaves(state), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", gan.LOSSES)
def test_generator_moves_to_the_data_mean(loss):
    """On one Gaussian, 400 steps bring the generator's mean from near the origin to within
    a quarter of its initial distance of the true mean (an independent truth)."""
    cfg = tiny(loss=loss, steps=400, chunk=200, batch_size=128, hidden=32, lr=2e-3, seed=0)
    if loss == "wgan-gp":
        cfg = dataclasses.replace(cfg, b1=0.0, b2=0.9)
    key = jax.random.key(11)
    graphdef, state = gan.init(cfg, 2)
    before = np.asarray(gan.sample(graphdef, state, key, 4000)).mean(0)
    run = gan.train(cfg, gaussian_source())
    after = np.asarray(gan.sample(run.graphdef, run.state, key, 4000)).mean(0)
    d0, d1 = np.linalg.norm(before - MEAN), np.linalg.norm(after - MEAN)
    assert d0 > 2.0  # the test means something: the generator starts far from the data
    assert d1 < 0.25 * d0, (before, after)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="loss=.hinge."):
        gan.GANConfig(loss="hinge")
    with pytest.raises(ValueError, match="lr=0"):
        gan.GANConfig(lr=0.0)
    with pytest.raises(ValueError, match="steps=0"):
        gan.GANConfig(steps=0)


def test_mixture_quality_closed_forms():
    """Exact samples hit every mode with a small TV; samples from one mode only hit that
    mode, and their TV is 1 - w_k exactly; non-finite samples count as misses."""
    mix = sde.GaussianMixture.ring(8, radius=4.0, std=0.25, weights=np.array(vs_gan.RING_WEIGHTS))
    test = mixture_dataset(mix, 500, 1)
    exact = vs_gan.mixture_quality(mixture_dataset(mix, 20000, 2), mix, test)
    assert exact["hit"] == 8 and exact["tv"] < 0.02
    assert abs(exact["high_quality"] - (1 - np.exp(-4.5))) < 0.005  # P(chi2_2 <= 9)
    one = np.asarray(mix.means)[2] + 0.25 * np.random.default_rng(3).standard_normal((1000, 2))
    q = vs_gan.mixture_quality(one, mix, test)
    assert q["hit"] == 1
    assert q["tv"] == pytest.approx(1 - vs_gan.RING_WEIGHTS[2], abs=1e-6)
    broken = np.full((100, 2), np.nan)
    q = vs_gan.mixture_quality(broken, mix, test)
    assert q["hit"] == 0 and q["finite"] == 0 and q["tv"] == pytest.approx(1.0)


TINY = vs_gan.Settings(
    datasets=("ring",),
    seeds=(0,),
    lrs=(1e-3,),
    gan_losses=("ns",),
    steps_2d=60,
    n_eval_2d=200,
    n_nll_2d=50,
    euler_steps=50,
    fast_steps=(10,),
    tol=1e-3,
    repeats=1,
    ema_decay=0.9,
    chunk=30,
    log_every=20,
)


def check_outputs(workdir, settings):
    results = json.loads((workdir / "results.json").read_text())
    assert {"settings", "datasets", "wall_seconds", "cpu_seconds"} <= results.keys()
    for name in settings.datasets:
        res = results["datasets"][name]
        assert {"truth", "reference", "runs", "summary", "sampling_cost"} <= res.keys()
        n_runs = len(settings.seeds) * len(settings.lrs) * (1 + len(settings.gan_losses))
        assert len(res["runs"]) == n_runs
        nfe = [c["nfe_per_sample"] for c in res["sampling_cost"]]
        assert nfe[0] == 1 and settings.euler_steps in nfe and settings.fast_steps[-1] in nfe
        assert all(r["nll"] is None for r in res["runs"] if r["family"] != "diffusion")
        assert all(np.isfinite(r["nll"]["nll_nats"]) for r in res["runs"] if r["nll"])
        assert all(r["step_ms"] > 0 for r in res["runs"])
        assert (workdir / f"samples_{name}.png").stat().st_size > 0
        assert (workdir / f"loss_{name}.png").stat().st_size > 0
    report = (workdir / "report.md").read_text()
    assert "## Where the GAN does well" in report and "no likelihood" in report


@pytest.mark.slow  # ~30-50 s on 2 cores; its tasks, runs and report are tested one by one
def test_experiment_end_to_end_tiny(tmp_path):
    vs_gan.run(TINY, tmp_path, log=lambda *_: None)
    check_outputs(tmp_path, TINY)
    # results.json holds typed rows: read back, they give the same report
    saved = json.loads((tmp_path / "results.json").read_text())
    typed = results.StudyResults.from_json(saved)
    assert typed.to_json() == saved
    res = typed.datasets["ring"]
    assert [(e.family, e.sampler) for e in res.summary][-1] == ("GAN", "generator")
    assert all(e.nll_nats is not None for e in res.summary if e.entry.is_diffusion)
    # the NLL came through evaluation.likelihood, which wrote its file per run
    assert len(list((tmp_path / "likelihood").glob("ring_*/likelihood.json"))) == 1
    report.write_report(typed, tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == (tmp_path / "report.md").read_text()


@pytest.mark.slow  # ~18 s: trains a digits score model
def test_score_nll_keeps_the_per_example_log_jacobian(tmp_path):
    """The NLL goes through evaluation.likelihood, which adds ``DataSource.log_jacobian``:
    a per-example log-Jacobian (``log_det_fn``, as Gaussianization has) of +1.5 nats
    lowers every NLL by exactly 1.5 (the study's own NLL used to read ``log_det`` only)."""
    task = tasks.make_task("ring", TINY)
    run = tasks.score_run(task, 1e-3, 0)
    plain = runs.score_nll(task, run, tmp_path / "plain")
    source = dataclasses.replace(run.source, log_det_fn=lambda u: np.full(len(u), 1.5))
    mapped = runs.score_nll(task, run.replace(source=source), tmp_path / "mapped")
    assert plain["n"] == mapped["n"] == TINY.n_nll_2d
    assert mapped["nll_nats"] == pytest.approx(plain["nll_nats"] - 1.5, abs=1e-9)
    assert json.loads((tmp_path / "mapped" / "likelihood.json").read_text())["n"] == TINY.n_nll_2d


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--datasets", "ring,moons"], "moons"),
        (["--gan-losses", "hinge"], "hinge"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--lrs", "1e-3,fast"], "fast"),
        (["--lrs=0,1e-3"], "lrs > 0"),
        (["--steps-2d", "0"], "--steps-2d must be >= 1, got 0"),
    ],
)
def test_bad_flags_raise_with_the_value(argv, needle, tmp_path):
    with pytest.raises(ValueError, match=re.escape(needle)):
        vs_gan.main(["vs-gan", "--quick", "--workdir", str(tmp_path), *argv])
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_flags_give_the_settings():
    args = vs_gan.parser().parse_args(["vs-gan", "--quick", "--seeds", "2", "--lrs", "1e-4,2e-3"])
    s = vs_gan.settings_from(args)
    assert s.seeds == (0, 1) and s.lrs == (1e-4, 2e-3) and s.steps_2d == vs_gan.QUICK.steps_2d


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) for n in build.SDES],  # edm: 28 s
)
def test_oracle_runs_on_every_sde(name, tmp_path, capsys):
    """``scoresde oracle --sde NAME`` for every SDE it offers (edm raised KeyError after
    the samplers had run): every sampler, both divergences, the files. The default run
    checks edm; the others share its code path (``-m slow`` runs them)."""
    assert (
        oracle.main(["--sde", name, "--n", "64", "--steps", "8", "--workdir", str(tmp_path)]) == 0
    )
    out = json.loads((tmp_path / "oracle.json").read_text())
    assert len(out["samplers"]) == len(build.SAMPLERS)
    assert set(build.DIVERGENCES) <= out["likelihood"].keys()
    assert out["likelihood"]["sde_hyper"]
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_oracle_refuses_an_unknown_sde_up_front(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        oracle.main(["--sde", "no-such-sde", "--workdir", str(tmp_path / "w")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert all(name in err for name in build.SDES), err
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_quick_experiment_from_the_command_line(tmp_path):
    """``scoresde experiment vs-gan --quick``: all three data sets (a few min on 2 cores)."""
    from experiments import cli

    assert cli.main(["experiment", "vs-gan", "--quick", "--workdir", str(tmp_path)]) == 0
    check_outputs(tmp_path, vs_gan.QUICK)


@pytest.mark.slow  # ~20 s each: trains a tiny run and solves six ODEs
@pytest.mark.parametrize("kind", ["rf", "edm"])
def test_path_change_study_matches_the_runs_own_ode(kind, tmp_path):
    """A run sampled on the rectified-flow and EDM paths through sde.PathChange gives its
    own ODE's samples (within the solver's own error) and its log-densities (after the
    exact log-Jacobian)."""
    from experiments import config as config_lib
    from experiments import training
    from experiments.studies import path_change

    cfg = config_lib.load(
        "checkerboard",
        [
            *("train.steps=3", "train.warmup_steps=1", "train.lr=1e-2", "train.batch_size=64"),
            *("model.hidden=16", "model.depth=2"),
        ],
    )
    run, _ = training.train(cfg, tmp_path / "run", progress=False)
    out = path_change.compare(run, kind, n=64, n_lik=16, rtol=1e-5, eps=1e-3, seed=0)
    assert out["prior_scale_mismatch"] < 1e-4
    assert out["samples_mean_l2"] <= 3 * out["solver_error_mean_l2"] + 1e-4, out
    assert out["tight_samples_mean_l2"] <= out["samples_mean_l2"] + 1e-6, out
    assert out["nll_gap_max_abs"] < 1e-2, out  # at rtol 1e-5 (1e-4 left ~1e-2 of solver error)


def test_objectives_study_cells_are_valid_configs():
    from experiments import config as config_lib
    from experiments.studies import objectives

    args = objectives.parser().parse_args(["--steps", "10", "--n", "50"])
    for dataset in objectives.DATASETS:
        for t_sampling in objectives.TIME_SAMPLINGS:
            for param in objectives.PARAMETRISATIONS:
                overrides = objectives._cell_overrides(args, dataset, t_sampling, param)
                cfg = config_lib.load(dataset, overrides)
                assert (cfg.train.t_sampling, cfg.model.parametrisation) == (t_sampling, param)
                assert cfg.train.weighting == objectives.MATCHED_LOSS[param]
                assert cfg.sde.name == "rf" and cfg.train.steps == 10


def test_experiment_without_a_name_lists_the_studies_instead_of_running_one(capsys):
    from experiments import cli

    assert cli.main(["experiment"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(name in err[0] for name in cli.STUDIES), err
    assert cli.main(["experiment", "vs-ga"]) == 2
    assert "unknown study 'vs-ga'" in capsys.readouterr().err
