"""The GAN baseline and the vs-gan experiment: a run is a pure function of its seed, the
scanned training loop equals the plain step, a GAN moves towards a known data mean, the
mode-coverage metric gives its closed-form values, and the experiment writes its report."""

import json

import jax
import numpy as np
import pytest

import sde
from experiments import gan, vs_gan
from experiments.data import DataSource, mixture_dataset

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
        cfg = gan.replace(cfg, b1=0.0, b2=0.9)
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


def test_experiment_end_to_end_tiny(tmp_path):
    vs_gan.run(TINY, tmp_path, log=lambda *_: None)
    check_outputs(tmp_path, TINY)


@pytest.mark.slow
def test_quick_experiment_from_the_command_line(tmp_path):
    """``scoresde experiment vs-gan --quick``: all three data sets (~1-2 min on 2 cores)."""
    from experiments import cli

    assert cli.main(["experiment", "vs-gan", "--quick", "--workdir", str(tmp_path)]) == 0
    check_outputs(tmp_path, vs_gan.QUICK)
