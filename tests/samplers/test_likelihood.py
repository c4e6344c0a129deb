"""Log-likelihoods through the probability-flow ODE against the closed form."""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

EPS = 1e-5


def _mixture_16d():
    rng = np.random.default_rng(0)
    k, d = 5, 16
    means = rng.normal(size=(k, d))
    means *= 3.0 / np.linalg.norm(means, axis=1, keepdims=True)
    a = rng.normal(size=(k, d, d)) / math.sqrt(d)
    covs = 0.3 * (a @ np.swapaxes(a, 1, 2)) + 0.05 * np.eye(d)
    return sde.GaussianMixture(weights=[0.1, 0.15, 0.2, 0.25, 0.3], means=means, covariances=covs)


MIXTURES = {
    "2d": lambda: sde.GaussianMixture.ring(4, radius=2.0, std=0.4, weights=[0.1, 0.2, 0.3, 0.4]),
    "16d": _mixture_16d,
}
# Hyper-parameters whose prior p_T matches N(0, prior_std^2 I) to a negligible
# mismatch (beta_max = 40: a(1) ~ 5e-5; sigma_max = 1000 against data of scale ~3).
SDES = {
    "vp": lambda: sde.VPSDE(beta_max=40.0),
    "subvp": lambda: sde.SubVPSDE(beta_max=40.0),
    "ve": lambda: sde.VESDE(sigma_max=1000.0),
    "rf": lambda: sde.RectifiedFlow(),  # T = 0.999: a mismatch of ~5e-7 |x0|^2 nats
}


@pytest.mark.parametrize("dim", ["2d", "16d"])
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
def test_exact_likelihood_matches_closed_form(name, dim):
    forward, mixture = SDES[name](), MIXTURES[dim]()
    oracle = sde.MixtureOracle(mixture, forward)
    n = 64
    x = oracle.sample(jax.random.key(0), n, EPS)
    logp, stats = samplers.log_likelihood(
        score_fn=oracle.score,
        sde=forward,
        x=x,
        key=jax.random.key(1),
        solver=diffrax.Tsit5(),
        rtol=1e-5,
        atol=1e-5,
        eps=EPS,
        divergence="exact",
    )
    err = (np.asarray(logp, np.float64) - np.asarray(oracle.log_prob(x, EPS))) / mixture.dim
    assert np.mean(np.abs(err)) <= 1e-3, f"mean |error| per dim {np.mean(np.abs(err)):.2e}"
    assert abs(np.mean(err)) <= 5e-4, f"mean error per dim {np.mean(err):.2e}"
    assert int(stats["nfe"]) > 0


def test_exact_divergence_matches_closed_form():
    for dim in ("2d", "16d"):
        mixture = MIXTURES[dim]()
        oracle = sde.MixtureOracle(mixture, sde.VPSDE())
        x = oracle.sample(jax.random.key(2), 32, 0.3)
        _, div = samplers.exact_divergence(lambda y, o=oracle: o.score(y, 0.3), x, chunk=5)
        np.testing.assert_allclose(div, oracle.score_divergence(x, 0.3), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 16 s (exact one stays); default run past 12 min
def test_hutchinson_divergence_is_unbiased():
    """Averaged over many probes the estimate converges to the exact trace."""
    oracle = sde.MixtureOracle(MIXTURES["16d"](), sde.VPSDE())
    x = oracle.sample(jax.random.key(3), 8, 0.2)
    fn = lambda y: oracle.score(y, 0.2)  # noqa: E731
    exact = oracle.score_divergence(x, 0.2)
    for draw in (jax.random.rademacher, jax.random.normal):
        probes = draw(jax.random.key(4), (4000, *x.shape), dtype=jnp.float32)
        per_probe = jax.vmap(lambda p: samplers.hutchinson_divergence(fn, x, p[None])[1])(probes)
        mean, se = per_probe.mean(0), per_probe.std(0) / math.sqrt(probes.shape[0])
        assert np.all(np.abs(mean - exact) < 4 * se + 1e-4), (mean - exact) / se


def test_hutchinson_likelihood_is_unbiased():
    """Mean error within 3 standard errors of zero over 256 points (one probe each)."""
    forward = sde.VPSDE(beta_max=40.0)
    oracle = sde.MixtureOracle(MIXTURES["2d"](), forward)
    x = oracle.sample(jax.random.key(5), 256, EPS)
    logp, _ = samplers.log_likelihood(
        score_fn=oracle.score,
        sde=forward,
        x=x,
        key=jax.random.key(6),
        eps=EPS,
        divergence="hutchinson",
        n_probes=1,
    )
    err = np.asarray(logp, np.float64) - np.asarray(oracle.log_prob(x, EPS))
    se = err.std(ddof=1) / math.sqrt(len(err))
    assert abs(err.mean()) < 3 * se, (err.mean(), se)
    assert err.std() > 1e-3  # a single probe is noisy: it is an estimate, not the exact trace


def test_per_sample_and_batch_step_control_agree():
    forward = sde.VPSDE(beta_max=40.0)
    oracle = sde.MixtureOracle(MIXTURES["2d"](), forward)
    x = oracle.sample(jax.random.key(7), 16, EPS)
    kw = dict(score_fn=oracle.score, sde=forward, x=x, key=jax.random.key(0), eps=EPS)
    batch, st_batch = samplers.log_likelihood(**kw)
    alone, st_alone = samplers.log_likelihood(per_sample=True, **kw)
    exact = oracle.log_prob(x, EPS)
    np.testing.assert_allclose(batch, exact, atol=2e-3)
    np.testing.assert_allclose(alone, exact, atol=2e-3)
    assert st_alone["nfe_per_sample"].shape == (16,)
    assert int(st_alone["nfe"]) == int(st_alone["nfe_per_sample"].max())


def test_fixed_grid_likelihood_converges():
    forward = sde.VPSDE(beta_max=40.0)
    oracle = sde.MixtureOracle(MIXTURES["2d"](), forward)
    x = oracle.sample(jax.random.key(8), 32, 1e-3)
    exact = np.asarray(oracle.log_prob(x, 1e-3))
    errors = []
    for steps in (16, 64):
        logp, st = samplers.log_likelihood(
            score_fn=oracle.score,
            sde=forward,
            x=x,
            key=jax.random.key(0),
            eps=1e-3,
            solver=diffrax.Heun(),
            steps=steps,
        )
        assert int(st["nfe"]) == 2 * steps
        errors.append(np.abs(np.asarray(logp) - exact).mean())
    assert errors[1] < errors[0] / 4  # second order: ~16x smaller in theory


def test_bits_per_dim_closed_forms():
    d = 784
    # A density uniform over the data range gives log2(n_levels) bits per dimension.
    for n_levels, lo, hi in ((256, 0.0, 1.0), (256, -1.0, 1.0), (17, 0.0, 16.0)):
        logp = -d * math.log(hi - lo)
        bpd = samplers.bits_per_dim(logp, dim=d, n_levels=n_levels, data_range=hi - lo)
        assert float(bpd) == pytest.approx(math.log2(n_levels), rel=1e-6)
    # score_sde's convention for data in [-1, 1]: bpd = -logp / (D ln 2) + 7.
    logp = jnp.array([-1000.0, -2000.0])
    expected = -np.asarray(logp) / (d * math.log(2)) + 7
    np.testing.assert_allclose(samplers.bits_per_dim(logp, dim=d, data_range=2.0), expected)
    with pytest.raises(ValueError, match="n_levels=1"):
        samplers.bits_per_dim(logp, dim=d, n_levels=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(divergence="trace"), "divergence='trace'"),
        (dict(probe="uniform", divergence="hutchinson"), "probe='uniform'"),
        (dict(n_probes=0, divergence="hutchinson"), "n_probes=0"),
        (dict(eps=0.0), "eps=0.0"),
        (dict(atol=2.0), "atol=2.0"),
    ],
)
def test_bad_input_raises(kwargs, match):
    forward = sde.VPSDE()
    oracle = sde.MixtureOracle(MIXTURES["2d"](), forward)
    with pytest.raises(ValueError, match=match):
        samplers.log_likelihood(
            score_fn=oracle.score, sde=forward, x=jnp.ones((2, 2)), key=jax.random.key(0), **kwargs
        )
