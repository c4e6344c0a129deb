"""``networks.VelocityPrediction`` and ``networks.DataPrediction`` on every SDE, against
the exact oracle: the exact velocity (or posterior mean) as the network output gives the
exact score; and the flow-matching loss is the DSM loss under its weighting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import networks
import sde

SDES = {
    "vp": sde.VPSDE(),
    "subvp": sde.SubVPSDE(),
    "ve": sde.VESDE(),
    "edm": sde.EDMSDE(),
    "rf": sde.RectifiedFlow(),
}
MIX = sde.GaussianMixture.ring(4, radius=2.0, std=0.4, weights=[0.1, 0.2, 0.3, 0.4])


def _rates(forward, t):
    """(da/dt, ds/dt) by autodiff of the marginal, elementwise over t [B]."""
    da = jax.vmap(jax.grad(lambda u: forward.mean_coeff(u)))(t)
    ds = jax.vmap(jax.grad(lambda u: forward.std(u)))(t)
    return da, ds


def _times(forward):
    return jnp.array([0.05, 0.3, 0.6, 0.9]) * forward.T


@pytest.mark.parametrize("name", list(SDES))
def test_exact_velocity_and_posterior_mean_give_the_exact_score(name):
    forward = SDES[name]
    oracle = sde.MixtureOracle(MIX, forward)
    t = _times(forward)
    x = oracle.sample(jax.random.key(0), 4, 0.3 * forward.T) * 1.2
    a, s = forward.marginal(t)
    x0_hat = oracle.denoiser(x, t)
    z_hat = (x - a[:, None] * x0_hat) / s[:, None]
    da, ds = _rates(forward, t)
    velocity = da[:, None] * x0_hat + ds[:, None] * z_hat  # E[a' x0 + s' z | x_t]
    score = oracle.score(x, t)
    scale = np.abs(np.asarray(score)).max()
    v_score = networks.VelocityPrediction().to_score(forward, x, t, velocity)
    d_score = networks.DataPrediction().to_score(forward, x, t, x0_hat)
    np.testing.assert_allclose(v_score, score, rtol=2e-4, atol=2e-4 * scale)
    np.testing.assert_allclose(d_score, score, rtol=2e-4, atol=2e-4 * scale)


@pytest.mark.parametrize("name", list(SDES))
def test_flow_matching_loss_is_dsm_under_its_weighting(name):
    """For any network output F: 1/2 ||F - v||^2 with the conditional velocity
    v = a' x0 + s' z equals (g^2 / 2s)^2 times the noise-prediction DSM loss of the
    score VelocityPrediction reads from F."""
    forward = SDES[name]
    key = jax.random.key(1)
    x0 = MIX.sample(key, 4)
    z = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = _times(forward)
    out = jax.random.normal(jax.random.fold_in(key, 2), x0.shape)  # any network output

    def score_fn(x, tt):
        return networks.VelocityPrediction().to_score(forward, x, tt, out)

    dsm = sde.dsm_loss_at(score_fn, forward, x0, t, z, weighting="std2")
    da, ds = _rates(forward, t)
    v = da[:, None] * x0 + ds[:, None] * z
    fm = 0.5 * jnp.sum((out - v) ** 2, -1)
    weight = (forward.diffusion(t) ** 2 / (2 * forward.std(t))) ** 2
    np.testing.assert_allclose(fm, weight * dsm, rtol=2e-4)


def test_rectified_flow_velocity_is_noise_minus_data():
    """On x_t = (1 - t) x0 + t z the conditional velocity is z - x0 and the read-back
    noise estimate is x + (1 - t) F, exactly."""
    rf = SDES["rf"]
    x0, z = jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 0.25]])
    for t in (0.1, 0.5, 0.9):
        x = rf.perturb(x0, t, z)
        score = networks.VelocityPrediction().to_score(rf, x, t, z - x0)
        np.testing.assert_allclose(-score * t, z, rtol=1e-5, atol=1e-6)
