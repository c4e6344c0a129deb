"""The continuous-time ELBO against exact log-densities: the Gaussian-mixture oracle's,
a standard Gaussian's closed form, and Gibbs' inequality for a wrong score."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_likelihood import MIXTURES, SDES

import samplers
import sde

EPS = 1e-5
N, N_T = 512, 8


def _bound(score_fn, forward, x, **kw):
    run = jax.jit(lambda x, k: samplers.elbo(score_fn=score_fn, sde=forward, x=x, key=k, **kw))
    return run(x, jax.random.key(1))


@pytest.mark.parametrize(
    "name, dim",
    [("vp", "2d"), ("subvp", "2d"), ("ve", "2d"), ("rf", "2d"), ("vp", "16d"), ("rf", "16d")],
)
def test_elbo_of_the_exact_score_is_tight(name, dim):
    """With the exact score and a matching prior the bound is log p_eps itself: the mean
    of logp_lower - log p_eps is 0 within 3 standard errors, and the per-point standard
    errors account for the spread of that difference (their RMS matches its std)."""
    forward, mixture = SDES[name](), MIXTURES[dim]()
    oracle = sde.MixtureOracle(mixture, forward)
    x = oracle.sample(jax.random.key(0), N, EPS)
    lower, stats = _bound(oracle.score, forward, x, n_t=N_T, eps=EPS)
    diff = np.asarray(lower, np.float64) - np.asarray(oracle.log_prob(x, EPS), np.float64)
    se = diff.std(ddof=1) / math.sqrt(N)
    assert abs(diff.mean()) < 3 * se, (diff.mean(), se)
    rms = float(np.sqrt(np.mean(np.asarray(stats["stderr"], np.float64) ** 2)))
    assert 0.75 < rms / diff.std() < 1.33, (rms, diff.std())
    assert int(stats["nfe"]) == 2 * N_T
    np.testing.assert_allclose(
        np.asarray(stats["prior"] + stats["divergence"] + stats["diffusion"]),
        np.asarray(lower),
        rtol=1e-6,
        atol=1e-4,
    )


def test_gaussian_reference_makes_the_bound_exact_and_deterministic():
    """For N(0, I) data under VP (a stationary law), the score -x is the Gaussian
    reference's with reference_std=1: no Monte Carlo part is left, and the bound is
    log N(x; 0, I) to quadrature precision. With another reference the estimate is
    random but still centred on it."""
    vp = sde.VPSDE(beta_max=40.0)
    x = jax.random.normal(jax.random.key(4), (N, 3))
    exact = -0.5 * np.sum(np.asarray(x, np.float64) ** 2, -1) - 1.5 * math.log(2 * math.pi)

    def score(y, t):
        return -y

    lower, stats = _bound(score, vp, x, n_t=N_T, eps=EPS, reference_std=1.0)
    np.testing.assert_allclose(np.asarray(lower), exact, atol=2e-4)
    np.testing.assert_allclose(np.asarray(stats["stderr"]), 0.0, atol=1e-4)  # float32
    lower, stats = _bound(score, vp, x, n_t=N_T, eps=EPS, reference_std=0.5)
    diff = np.asarray(lower, np.float64) - exact
    assert float(np.mean(stats["stderr"])) > 1e-3
    assert abs(diff.mean()) < 3 * diff.std(ddof=1) / math.sqrt(N)


def test_wrong_score_bound_lies_below_the_true_log_density():
    """E[logp_lower] <= E log p_SDE <= E log p_eps for x ~ p_eps (Gibbs): a score scaled
    by 0.7 falls clearly below."""
    forward, mixture = SDES["vp"](), MIXTURES["2d"]()
    oracle = sde.MixtureOracle(mixture, forward)
    x = oracle.sample(jax.random.key(5), N, EPS)
    lower, _ = _bound(lambda y, t: 0.7 * oracle.score(y, t), forward, x, n_t=N_T, eps=EPS)
    diff = np.asarray(lower, np.float64) - np.asarray(oracle.log_prob(x, EPS), np.float64)
    assert diff.mean() < -5 * diff.std(ddof=1) / math.sqrt(N), diff.mean()


@pytest.mark.slow  # 18 s; default run past 12 min
def test_elbo_counts_evaluations_and_refuses_bad_input():
    forward = sde.RectifiedFlow()
    rows = []

    def score(y, t):
        rows.append(y.shape[0])
        return -y

    x = jnp.ones((4, 2))
    with jax.disable_jit():
        _, stats = samplers.elbo(score_fn=score, sde=forward, x=x, key=jax.random.key(0), n_t=2)
    assert sum(rows) == 4 * int(stats["nfe"]) == 4 * 4
    kw = dict(score_fn=score, sde=forward, x=x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="n_t must be an integer >= 2.*n_t=1"):
        samplers.elbo(**kw, n_t=1)
    with pytest.raises(ValueError, match="eps=0"):
        samplers.elbo(**kw, eps=0.0)
    with pytest.raises(ValueError, match="reference_std"):
        samplers.elbo(**kw, reference_std=0.0)
    with pytest.raises(ValueError, match="method=.*'beta'"):
        samplers.elbo(**kw, t_sampling="beta")
