"""``sde.RectifiedFlow`` against closed forms: its coefficients in numpy float64, the
moment equations by autodiff, the flow-matching velocity of a Gaussian and the exact
flow map of one Gaussian. (Its likelihood is checked against the oracle with the other
SDEs' in tests/samplers/test_likelihood.py.)"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

TS = np.array([1e-3, 0.05, 0.3, 0.5, 0.8, 0.99])


def test_coefficients_match_the_closed_forms():
    rf = sde.RectifiedFlow()
    t = TS.astype(np.float64)
    np.testing.assert_allclose(rf.mean_coeff(t), 1 - t, rtol=1e-6)
    np.testing.assert_allclose(rf.std(t), t, rtol=1e-6)
    np.testing.assert_allclose(rf.drift_coeff(t), -1 / (1 - t), rtol=1e-6)
    np.testing.assert_allclose(rf.diffusion(t) ** 2, 2 * t / (1 - t), rtol=1e-5)
    np.testing.assert_allclose(rf.log_snr(t), np.log((1 - t) / t), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rf.log_snr_inverse(np.log((1 - t) / t)), t, rtol=1e-5)
    assert rf.T == rf.prior_std == 0.999


def test_moment_equations():
    """d log a / dt = f and d s^2 / dt = 2 f s^2 + g^2, by autodiff of the marginal."""
    rf = sde.RectifiedFlow()
    for t in TS:
        dlog_a = jax.grad(lambda u: rf.log_mean_coeff(u))(float(t))
        ds2 = jax.grad(lambda u: rf.std(u) ** 2)(float(t))
        f, g2 = rf.drift_coeff(t), rf.diffusion(t) ** 2
        np.testing.assert_allclose(dlog_a, f, rtol=1e-5)
        np.testing.assert_allclose(ds2, 2 * f * rf.std(t) ** 2 + g2, rtol=1e-4)


def test_probability_flow_drift_is_the_flow_matching_velocity():
    """For x_0 ~ N(mu, v I) the velocity E[z - x_0 | x_t] is linear in x_t; the
    probability-flow drift f x - g^2 score / 2 through the exact score equals it, up to
    the float32 cancellation of f = -1/(1 - t) and g^2 / 2 near the end time."""
    mu, v = np.array([1.5, -0.5]), 0.3
    rf = sde.RectifiedFlow()
    oracle = sde.MixtureOracle(sde.GaussianMixture([1.0], mu[None], stds=[v**0.5]), rf)
    x = np.random.default_rng(0).normal(size=(16, 2)) * 1.3
    for t in (*TS, rf.T):
        a, s = 1 - t, t
        r = (x - a * mu) / (a**2 * v + s**2)  # (x_t - E x_t) / Var x_t
        velocity = s * r - (mu + a * v * r)  # E[z | x_t] - E[x_0 | x_t]
        drift = rf.drift(jnp.asarray(x, jnp.float32), t) - 0.5 * rf.diffusion(t) ** 2 * (
            oracle.score(jnp.asarray(x, jnp.float32), t)
        )
        scale = 1.0 if t < 0.99 else 1 / (1 - t)  # the cancellation grows as 1 / (1 - t)
        np.testing.assert_allclose(drift, velocity, atol=2e-5 * scale, rtol=1e-5 * scale)


@pytest.mark.parametrize(
    "solver, steps, atol",
    [(diffrax.Tsit5(), None, 2e-5), (samplers.DPMSolverPP2M(), 200, 5e-3)],
    ids=["tsit5", "dpmpp2m"],
)
def test_ode_sampling_follows_the_exact_flow_map(solver, steps, atol):
    """sample_ode from x_T on the exact score of one correlated Gaussian lands where
    the oracle's exact (affine) flow map sends the same x_T: adaptive Tsit5 to its
    tolerance, DPM-Solver++(2M) to its discretisation error (about 2e-3 at 200 steps;
    VP with beta_max = 40 is 7x worse on the same problem)."""
    rf = sde.RectifiedFlow()
    mix = sde.GaussianMixture([1.0], [[2.0, -1.0]], covariances=[[[0.25, 0.05], [0.05, 0.04]]])
    oracle = sde.MixtureOracle(mix, rf)
    key, n, eps = jax.random.key(0), 64, 1e-3
    x, _ = samplers.sample_ode(
        score_fn=oracle.score,
        sde=rf,
        shape=(n, 2),
        key=key,
        solver=solver,
        steps=steps,
        eps=eps,
        rtol=1e-6,
        atol=1e-6,
    )
    x_T = rf.prior_sample(key, (n, 2))  # the sampler's own prior draw from the same key
    np.testing.assert_allclose(x, oracle.flow(x_T, rf.T, eps), atol=atol)


@pytest.mark.parametrize("t_max", [0.0, 1.0, 1.5, float("nan")])
def test_bad_end_time_is_refused(t_max):
    with pytest.raises(ValueError, match="t_max"):
        sde.RectifiedFlow(t_max=t_max)
