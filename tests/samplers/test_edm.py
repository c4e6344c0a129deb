"""EDM (Karras et al. 2022) against independent truths: the closed forms of the
sigma(t) = t SDE, the analytic optimal denoiser and minimum loss for Gaussian data, the
exact Gaussian-mixture oracle, the exact probability-flow map of a single Gaussian
(``MixtureOracle.flow``) for empirical orders, diffrax's Heun solver, and the published
NFE accounting (18 steps -> 35 evaluations)."""

from __future__ import annotations

import math

import diffrax
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

import networks
import samplers
import sde

EDM = sde.EDMSDE()
EPS = 2e-3  # EDM's sigma_min
SDES = {"edm": EDM, "vp": sde.VPSDE(), "ve": sde.VESDE()}
GAUSSIAN = helpers.correlated_gaussian()
RING_WEIGHTS = helpers.RING_WEIGHTS
RING = helpers.ring()  # unequal weights, modes 14 stds apart: shares equal the weights


# ---- the SDE ---------------------------------------------------------------------


def test_closed_forms_and_moment_equations():
    """a = 1, s = t, f = 0, g^2 = 2t, lambda = -log t; d log a/dt = f and
    d s^2/dt = 2 f s^2 + g^2 by autodiff of ``marginal`` (float64: exact formulas)."""
    with jax.enable_x64(True):
        edm = sde.EDMSDE(sigma_min=0.002, sigma_max=80.0)
        t = jnp.array([1e-3, 0.002, 0.5, 3.0, 41.0, 80.0])
        (a, s), (da, ds) = jax.jvp(edm.marginal, (t,), (jnp.ones_like(t),))
        np.testing.assert_array_equal(a, 1.0)
        np.testing.assert_allclose(s, np.asarray(t), rtol=1e-15)
        f, g = edm.drift_coeff(t), edm.diffusion(t)
        np.testing.assert_array_equal(f, 0.0)
        np.testing.assert_allclose(g**2, 2 * np.asarray(t), rtol=1e-14)
        np.testing.assert_allclose(da / a, f, atol=1e-15)
        np.testing.assert_allclose(2 * s * ds, 2 * f * s**2 + g**2, rtol=1e-13)
        np.testing.assert_allclose(edm.log_snr(t), -np.log(np.asarray(t)), rtol=1e-14)
        np.testing.assert_allclose(edm.log_snr_inverse(edm.log_snr(t)), t, rtol=1e-14)
    assert edm.T == 80.0 and edm.prior_std == 80.0 and sde.AbstractSDE.T == 1.0
    assert sde.EDMSDE(sigma_max=5.0).T == 5.0


def test_kernel_and_oracle_density():
    """The kernel x_t = x_0 + t z: the oracle's p_t is N(mu, Sigma + t^2 I) (scipy)."""
    oracle = sde.MixtureOracle(GAUSSIAN, EDM)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(32, 2)) * 4)
    cov = np.asarray(GAUSSIAN.covariances()[0], np.float64)
    for t in (0.002, 0.7, 25.0):
        truth = stats.multivariate_normal(np.asarray(GAUSSIAN.means[0]), cov + t**2 * np.eye(2))
        np.testing.assert_allclose(oracle.log_prob(x, t), truth.logpdf(np.asarray(x)), rtol=1e-5)
    x0, z = jnp.ones((4, 2)), jnp.full((4, 2), 2.0)
    np.testing.assert_allclose(EDM.perturb(x0, 3.0, z), 7.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma_min=0.0), "sigma_min=0.0"),
        (dict(sigma_min=-1.0), "sigma_min=-1.0"),
        (dict(sigma_max=math.inf), "sigma_max=inf"),
        (dict(sigma_min=5.0, sigma_max=1.0), "sigma_min=5.0, sigma_max=1.0"),
    ],
)
def test_sde_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sde.EDMSDE(**kwargs)


# ---- T = sigma_max != 1 through the library's samplers and likelihood ------------


def test_probability_flow_and_grids_run_to_T():
    """sample_ode (adaptive, and Heun on a Karras grid from T = 80) lands on the exact
    flow of a Gaussian; the grids start at sde.T."""
    oracle = sde.MixtureOracle(GAUSSIAN, EDM)
    key = jax.random.key(0)
    x_T = EDM.prior_sample(key, (16, 2))
    exact = oracle.flow(x_T, EDM.T, EPS)
    x, _ = samplers.sample_ode(score_fn=oracle.score, sde=EDM, shape=(16, 2), key=key, eps=EPS)
    # rtol=atol=1e-5 per step; measured 2e-6 against the exact map.
    np.testing.assert_allclose(x, exact, atol=2e-5)
    for ts in (samplers.karras_grid(EDM, 8, EPS), samplers.log_snr_grid(EDM, 8, EPS)):
        assert float(ts[0]) == 80.0 and float(ts[-1]) == np.float32(EPS)
    with pytest.raises(ValueError, match="T=81"):
        samplers.karras_grid(EDM, 8, EPS, T=81)


def test_eps_is_checked_against_the_sdes_own_T():
    """0 < eps < sde.T with T = sigma_max = 80: eps = 2 is valid for EDMSDE in every
    sampler, the likelihood and the loss, and eps = 80 is refused naming the range."""
    oracle = sde.MixtureOracle(GAUSSIAN, EDM)
    kw = dict(score_fn=oracle.score, sde=EDM, shape=(4, 2), key=jax.random.key(0), eps=2.0)
    for sampler in (samplers.sample_ode, samplers.sample_sde, samplers.sample_pc):
        x, _ = sampler(steps=3, **kw)
        assert bool(jnp.all(jnp.isfinite(x)))
    x, _ = samplers.sample_edm(steps=3, **kw)
    assert bool(jnp.all(jnp.isfinite(x)))
    x0 = jnp.ones((4, 2))
    logp, _ = samplers.log_likelihood(
        score_fn=oracle.score, sde=EDM, x=x0, key=jax.random.key(0), eps=2.0, steps=3
    )
    assert bool(jnp.all(jnp.isfinite(logp)))
    loss = sde.dsm_loss(oracle.score, EDM, x0, jax.random.key(0), eps=2.0)
    assert bool(jnp.all(jnp.isfinite(loss)))
    refused = r"eps must lie in \(0, T\) = \(0, 80.0\), got eps=80.0"
    for sampler in (samplers.sample_ode, samplers.sample_sde, samplers.sample_pc):
        with pytest.raises(ValueError, match=refused):
            sampler(**{**kw, "eps": 80.0, "steps": 3})
    with pytest.raises(ValueError, match=refused):
        samplers.sample_edm(**{**kw, "eps": 80.0, "steps": 3})
    with pytest.raises(ValueError, match=refused):
        sde.dsm_loss(oracle.score, EDM, x0, jax.random.key(0), eps=80.0)


def test_log_likelihood_with_T_sigma_max():
    """log p_eps(x) from the PF ODE vs the oracle's closed form. sigma_max = 1000 makes
    the prior mismatch (~|mu| / sigma_max nats per point) negligible."""
    edm = sde.EDMSDE(sigma_max=1000.0)
    oracle = sde.MixtureOracle(GAUSSIAN, edm)
    x = GAUSSIAN.sample(jax.random.key(3), 32)
    logp, _ = samplers.log_likelihood(score_fn=oracle.score, sde=edm, x=x, key=jax.random.key(0))
    err = np.asarray(logp - oracle.log_prob(x, 1e-5)) / 2  # nats per dimension
    assert np.mean(np.abs(err)) <= 1e-3 and abs(np.mean(err)) <= 5e-4, err


# ---- the EDM loss ----------------------------------------------------------------

MU, C = np.array([0.3, -0.2]), 0.8  # Gaussian data N(MU, C^2 I)


def _gaussian_data(c):
    return sde.GaussianMixture(weights=[1.0], means=[MU], stds=c)


def _expected_min_loss(c, sigma_data, p_mean=-1.2, p_std=1.2, dim=2):
    r"""E_sigma[dim c^2 (s^2 + sd^2) / (sd^2 (s^2 + c^2))], ln s ~ N(p_mean, p_std^2),
    by 120-point Gauss-Hermite quadrature in float64."""
    z, w = np.polynomial.hermite_e.hermegauss(120)
    s2 = np.exp(2 * (p_mean + p_std * z))
    vals = dim * c**2 * (s2 + sigma_data**2) / (sigma_data**2 * (s2 + c**2))
    return float(np.sum(w * vals) / np.sqrt(2 * np.pi))


@pytest.mark.parametrize("name", SDES)
def test_loss_at_matches_the_analytic_denoiser(name):
    r"""Per example: lambda(sigma) ||D* - x0||^2 with D* = mu + c^2/(c^2+sigma^2)(x~ - mu),
    x~ = x0 + sigma z, written again in numpy; for every SDE through t(sigma)."""
    forward = SDES[name]
    oracle = sde.MixtureOracle(_gaussian_data(C), forward)
    rng = np.random.default_rng(1)
    x0 = MU + C * rng.normal(size=(64, 2))
    z = rng.normal(size=(64, 2))
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=64))
    got = sde.edm_loss_at(oracle.score, forward, jnp.asarray(x0), sigma, jnp.asarray(z))
    x_tilde = x0 + sigma[:, None] * z
    d_star = MU + C**2 / (C**2 + sigma[:, None] ** 2) * (x_tilde - MU)
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    want = lam * np.sum((d_star - x0) ** 2, -1)
    # float32 score and mapping sigma -> t -> sigma: ~1e-5 relative
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)


def test_loss_at_is_a_weighted_dsm_loss():
    """lambda ||D - x0||^2 = 2 (sigma^2 + sd^2)/sd^2 * (dsm 'std2' loss) for EDMSDE (t = sigma)."""
    oracle = sde.MixtureOracle(RING, EDM)
    x0 = RING.sample(jax.random.key(0), 32)
    z = jax.random.normal(jax.random.key(1), x0.shape)
    t = jnp.exp(jax.random.uniform(jax.random.key(2), (32,), minval=-5.0, maxval=4.0))
    wrong = lambda x, t: 0.9 * oracle.score(x, t)  # noqa: E731
    edm = sde.edm_loss_at(wrong, EDM, x0, t, z, sigma_data=0.7)
    dsm = sde.dsm_loss_at(wrong, EDM, x0, t, z)
    np.testing.assert_allclose(edm, 2 * (t**2 + 0.49) / 0.49 * dsm, rtol=1e-4)


@pytest.mark.parametrize("name", ["edm", "vp"])
@pytest.mark.parametrize("c", [0.5, 1.0])
def test_oracle_attains_the_minimum_and_a_wrong_score_does_not(name, c):
    """Monte Carlo over the log-normal sigma: the oracle's mean loss equals the analytic
    minimum (exactly dim = 2 when c = sigma_data) within 4 standard errors; a score for a
    mean shifted by delta pays E_sigma[lambda sigma^4 / (c^2 + sigma^2)^2] |delta|^2 more,
    which the paired difference (noise only through sigma) matches within 4 SE."""
    forward = SDES[name]
    data = _gaussian_data(c)
    shifted = sde.GaussianMixture(weights=[1.0], means=[MU + 0.4], stds=c)
    x0 = data.sample(jax.random.key(4), 20000)
    key = jax.random.key(5)  # same sigma and noise for both scores
    best = np.asarray(sde.edm_loss(sde.MixtureOracle(data, forward).score, forward, x0, key))
    worse = np.asarray(sde.edm_loss(sde.MixtureOracle(shifted, forward).score, forward, x0, key))
    truth = _expected_min_loss(c, 0.5)
    if c == 0.5:
        assert truth == pytest.approx(2.0, rel=1e-12)
    se = best.std() / np.sqrt(best.size)
    assert abs(best.mean() - truth) < 4 * se, (best.mean(), truth, se)
    zq, wq = np.polynomial.hermite_e.hermegauss(120)
    s2 = np.exp(2 * (-1.2 + 1.2 * zq))
    excess = np.sum(wq * (s2 + 0.25) * s2 / (0.25 * (s2 + c**2) ** 2)) / np.sqrt(2 * np.pi)
    excess *= 2 * 0.4**2  # |delta|^2
    diff = worse - best
    se_diff = diff.std() / np.sqrt(diff.size)
    assert diff.mean() > 10 * se_diff > 0
    assert abs(diff.mean() - excess) < 4 * se_diff, (diff.mean(), excess, se_diff)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(p_std=0.0), "p_std=0.0"), (dict(sigma_data=-1.0), "sigma_data=-1.0")],
)
def test_loss_bad_arguments(kwargs, match):
    oracle = sde.MixtureOracle(RING, EDM)
    with pytest.raises(ValueError, match=match):
        sde.edm_loss(oracle.score, EDM, jnp.ones((4, 2)), jax.random.key(0), **kwargs)


# ---- preconditioning -------------------------------------------------------------


class _IdealBackbone(nnx.Module):
    r"""Outputs F* = (D* - c_skip x~)/c_out for Gaussian data N(MU, C^2 I), recovering
    sigma = exp(4 c_noise) and x~ = x_in / c_in from its inputs. With
    D* = MU + C^2/(C^2 + sigma^2)(x~ - MU), expanded so that nothing cancels at small
    sigma: F* = (sigma sqrt(sigma^2 + sd^2)/sd) [MU + (C^2 - sd^2) x~/(sigma^2 + sd^2)]
    / (C^2 + sigma^2)."""

    def __init__(self, sigma_data):
        self.sigma_data = sigma_data

    def __call__(self, x_in, c_noise):
        sigma = jnp.exp(4 * c_noise)[:, None]
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        x_tilde = x_in * jnp.sqrt(total)
        bracket = MU + (C**2 - sd2) * x_tilde / total
        return sigma * jnp.sqrt(total) / self.sigma_data * bracket / (C**2 + sigma**2)


@pytest.mark.parametrize("name", SDES)
def test_precond_with_ideal_backbone_is_exact(name):
    """D(x~; sigma) equals the oracle's E[x0 | x_t], and the score built for the SDE
    equals the oracle's score (live closure and pure snapshot alike)."""
    forward = SDES[name]
    precond = networks.EDMPrecond(_IdealBackbone(0.5), sigma_data=0.5)
    oracle = sde.MixtureOracle(_gaussian_data(C), forward)
    t = jnp.array([0.01, 0.05, 0.2, 0.5, 0.9, 1.0] * 4)
    if name == "edm":
        t = t * 40.0
    x = oracle.sample(jax.random.key(0), t.shape[0], t)
    a, s = forward.marginal(t)
    np.testing.assert_allclose(
        precond(x / a[:, None], s / a), oracle.denoiser(x, t), rtol=1e-4, atol=1e-5
    )
    score = oracle.score(x, t)
    scale = np.max(np.abs(score), axis=1, keepdims=True)
    for fn in (precond.score_fn(forward), precond.score_function(forward)):
        np.testing.assert_allclose(fn(x, t) / scale, score / scale, atol=2e-4)


def test_precond_around_a_network_trains():
    """With the MLP's zero-initialised output, D = c_skip x; the EDM loss through the
    wrapper has non-zero gradients for the backbone's parameters."""
    backbone = networks.MLPScoreNet(2, hidden=16, depth=1, embed_dim=8, rngs=nnx.Rngs(0))
    precond = networks.EDMPrecond(backbone, sigma_data=0.5)
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(precond(x, 0.5), 0.25 / 0.5 * x, rtol=1e-6)
    x0 = RING.sample(jax.random.key(0), 16)

    def loss_fn(model):
        return sde.edm_loss(model.score_fn(EDM), EDM, x0, jax.random.key(1)).mean()

    grads = nnx.jit(nnx.grad(loss_fn))(precond)
    norm = sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads))
    assert np.isfinite(norm) and norm > 0
    with pytest.raises(ValueError, match="sigma_data=0"):
        networks.EDMPrecond(backbone, sigma_data=0)


# ---- the samplers ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, nfe",
    [
        (dict(steps=17, denoise=True, eps=EPS), 35),  # EDM, CIFAR-10: 18 levels, 35 NFE
        (dict(steps=18), 36),
        (dict(steps=4, denoise=True, s_churn=10.0, s_tmin=0.05, s_tmax=50.0), 9),
        (dict(steps=0, denoise=True), 1),
        (dict(steps=5, denoise=True, solver=diffrax.Euler()), 6),
        (dict(steps=6, solver=diffrax.Euler()), 6),
        (dict(ts=samplers.karras_grid(EDM, 7, EPS), denoise=True), 15),
    ],
    ids=["heun-17-denoise", "heun-18", "churn-4", "one-step", "euler-5-denoise", "euler-6", "ts-8"],
)
def test_nfe_counted_at_run_time(kwargs, nfe):
    """N steps cost 2N evaluations with Heun, N with Euler, one more with denoise."""
    oracle = sde.MixtureOracle(RING, EDM)
    counted, counter = helpers.counting_score(oracle.score)
    x, stats = samplers.sample_edm(
        score_fn=counted, sde=EDM, shape=(4, 2), key=jax.random.key(0), **kwargs
    )
    assert int(stats["nfe"]) == counter.after(x) == nfe


def test_steps_is_the_karras_grid_then_zero():
    """steps=N is ts=karras_grid(sde, N, eps); denoise adds the Euler step to sigma = 0,
    which is Tweedie's denoiser at the last level."""
    oracle = sde.MixtureOracle(RING, EDM)
    kw = dict(score_fn=oracle.score, sde=EDM, shape=(32, 2), key=jax.random.key(0))
    x, _ = samplers.sample_edm(steps=9, eps=EPS, denoise=True, **kw)
    ts = samplers.karras_grid(EDM, 9, EPS)
    x_ts, _ = samplers.sample_edm(ts=ts, denoise=True, **kw)
    np.testing.assert_allclose(x, x_ts, rtol=1e-6, atol=1e-6)  # grid built in or out of jit
    x_last, _ = samplers.sample_edm(ts=ts, **kw)
    np.testing.assert_allclose(x, oracle.denoiser(x_last, ts[-1]), rtol=1e-5, atol=1e-5)
    x_steps, _ = samplers.sample_edm(steps=9, eps=EPS, **kw)
    np.testing.assert_allclose(x_steps, x_last, rtol=1e-6, atol=1e-6)


def test_deterministic_heun_is_diffrax_heun_for_edm():
    """For EDMSDE (t = sigma, a = 1) Algorithm 1 without the last step is the explicit
    trapezoidal rule on dx/dt = -t score, i.e. diffrax.Heun on the same grid."""
    oracle = sde.MixtureOracle(GAUSSIAN, EDM)
    key = jax.random.key(0)
    ts = samplers.karras_grid(EDM, 16, EPS)
    x, st = samplers.sample_edm(
        score_fn=oracle.score, sde=EDM, shape=(16, 2), key=key, ts=ts, denoise=False
    )
    x_ode, st_ode = samplers.sample_ode(
        score_fn=oracle.score,
        sde=EDM,
        shape=(16, 2),
        key=key,  # without churn sample_edm draws its prior from the key, as sample_ode
        solver=diffrax.Heun(),
        ts=ts,
    )
    np.testing.assert_allclose(x, x_ode, rtol=1e-5, atol=1e-5)
    assert int(st["nfe"]) == int(st_ode["nfe"]) == 32  # denoise=False: 2 per step


GRIDS = {
    "karras": lambda fwd, n: samplers.karras_grid(fwd, n, EPS),  # EDM's grid, rho = 7
    "log_snr": lambda fwd, n: samplers.log_snr_grid(fwd, n, EPS),
    "quadratic": lambda fwd, n: samplers.quadratic_grid(n, EPS, fwd.T),
}
# Step ranges past the pre-asymptotic regime (measured slopes 2.0-2.1 from 16 steps;
# the quadratic grid in t = sigma from 80 needs 32). Measured slopes between successive
# doublings, 16 -> 256 steps: edm-karras 2.09 2.05 2.02 2.01, edm-log_snr 2.13 2.06 2.03
# 2.01, vp-karras 2.10 2.05 2.02 2.01, ve-log_snr 2.10 2.05 2.02 2.01, edm-quadratic
# (32 ->) 2.01 2.01 2.01.
ORDER_CASES = [
    ("edm", "karras", (16, 32, 64)),
    ("edm", "log_snr", (16, 32, 64)),
    ("vp", "karras", (16, 32, 64)),
    pytest.param("edm", "quadratic", (32, 64, 128, 256), marks=pytest.mark.slow),
    pytest.param("ve", "log_snr", (16, 32, 64, 128), marks=pytest.mark.slow),
    pytest.param("rf", "karras", (16, 32, 64), marks=pytest.mark.slow),
]
ORDER_IDS = ["edm-karras", "edm-log_snr", "vp-karras", "edm-quadratic", "ve-log_snr", "rf-karras"]
ORDER_SDES = {**SDES, "rf": sde.RectifiedFlow()}


@pytest.mark.parametrize("name,grid,steps", ORDER_CASES, ids=ORDER_IDS)
def test_heun_global_order_is_two(name, grid, steps):
    """Least-squares slope of log(max error at eps) against log(steps) on the exact
    probability-flow map of a single Gaussian; VP and VE run in the scaled variable."""
    forward = ORDER_SDES[name]
    oracle = sde.MixtureOracle(GAUSSIAN, forward)
    key = jax.random.key(0)
    exact = oracle.flow(forward.prior_sample(key, (16, 2)), forward.T, EPS)
    errors = []
    for n in steps:
        x, _ = samplers.sample_edm(
            score_fn=oracle.score,
            sde=forward,
            shape=(16, 2),
            key=key,
            ts=GRIDS[grid](forward, n),
            denoise=False,
        )
        errors.append(float(jnp.max(jnp.abs(x - exact))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - 2.0) <= 0.3, f"slope {slope:.2f}, errors {errors}"


def test_heun_on_rf_is_edms_sampler():
    r"""On any linear SDE the sampler steps the scaled variable x / a in sigma = s / a, so
    on RF it is EDM's sampler on EDMSDE(sigma_max = T / (1 - T) = 999) ending at
    sigma(eps) = eps / (1 - eps), with the same prior draw (x_T / a(T) = 999 z): the
    states agree up to the factor a(eps) = 1 - eps, to float32 round-off (measured
    6e-5 on |x| <= 5). So what RF's samples need in steps is EDM's need on the sigma
    range [1e-3, 999] (VP's is [0.0105, 152])."""
    rf = sde.RectifiedFlow()
    edm = sde.EDMSDE(sigma_max=rf.T / (1 - rf.T))
    eps, key, shape = 1e-3, jax.random.key(7), (64, 2)
    x_rf, st_rf = samplers.sample_edm(
        score_fn=sde.MixtureOracle(RING, rf).score, sde=rf, shape=shape, key=key, eps=eps, steps=10
    )
    x_edm, st_edm = samplers.sample_edm(
        score_fn=sde.MixtureOracle(RING, edm).score,
        sde=edm,
        shape=shape,
        key=key,
        eps=eps / (1 - eps),
        steps=10,
    )
    np.testing.assert_allclose(x_rf / (1 - eps), x_edm, rtol=0, atol=2e-4)
    assert int(st_rf["nfe"]) == int(st_edm["nfe"]) == 20


def test_stochastic_sampler_matches_the_mixture():
    """Algorithm 2 with churn on every level (gamma = S_churn/N = 0.078, N = 128 levels)
    and the exact score: mode shares, within-mode means and variances of x_0 match the
    mixture within 4 standard errors (n = 8000). At 128 levels the bias of the
    within-mode variance was measured at +0.5% and +0.7% (n = 200,000), below its 1.6%
    standard error here. Churn switched off by its range gives the deterministic
    sampler."""
    oracle = sde.MixtureOracle(RING, EDM)
    n, steps = 8000, 127
    kw = dict(
        score_fn=oracle.score,
        sde=EDM,
        shape=(n, 2),
        key=jax.random.key(1),
        steps=steps,
        eps=EPS,
        denoise=True,
    )
    x, stats_ = samplers.sample_edm(s_churn=10.0, **kw)
    assert int(stats_["nfe"]) == 2 * steps + 1
    x_det, _ = samplers.sample_edm(**kw)
    assert float(jnp.max(jnp.abs(x - x_det))) > 0.1  # the churn noise did act
    # No level inside [S_tmin, S_tmax]: gamma = 0 everywhere, the deterministic sampler.
    x_off, _ = samplers.sample_edm(s_churn=10.0, s_tmin=100.0, s_tmax=200.0, **kw)
    np.testing.assert_allclose(x_off, x_det, rtol=1e-6, atol=1e-6)
    x = np.asarray(x)
    mode = np.argmin(np.sum((x[:, None] - np.asarray(RING.means)[None]) ** 2, -1), 1)
    shares = np.bincount(mode, minlength=4) / n
    se = np.sqrt(RING_WEIGHTS * (1 - RING_WEIGHTS) / n)
    assert np.all(np.abs(shares - RING_WEIGHTS) < 4 * se), (shares, se)
    resid = x - np.asarray(RING.means)[mode]
    var = 0.3**2
    np.testing.assert_array_less(np.abs(resid.mean(0)), 4 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(resid.var(0) / var - 1), 4 * np.sqrt(2 / n))


def test_second_key_compiles_nothing():
    score_fn, traces = helpers.tracing_score(sde.MixtureOracle(RING, EDM).score)
    kw = dict(score_fn=score_fn, sde=EDM, shape=(8, 2), steps=6, s_churn=5.0)
    samplers.sample_edm(key=jax.random.key(0), **kw)
    n = len(traces)
    samplers.sample_edm(key=jax.random.key(1), **kw)
    assert n > 0 and len(traces) == n


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps=0"),
        (dict(steps=2.5), "steps=2.5"),
        (dict(steps=4, ts=jnp.linspace(80.0, 1.0, 5)), "both"),
        (dict(eps=0.0), "eps=0.0"),
        (dict(eps=90.0), r"eps=90.0"),
        (dict(s_churn=-1.0), "s_churn=-1.0"),
        (dict(s_tmin=-0.1), "s_tmin=-0.1"),
        (dict(s_tmin=2.0, s_tmax=1.0), "s_tmax=1.0"),
        (dict(s_noise=math.nan), "s_noise=nan"),
        (dict(rho=0.0), "rho=0.0"),
        (dict(solver=diffrax.Tsit5()), r"solver=Tsit5\(\)"),
        (dict(solver=diffrax.HalfSolver(diffrax.Heun())), r"solver=HalfSolver\(\)"),
        (dict(denoise="yes"), "denoise='yes'"),
        (dict(sde=sde.GaussianMixture.ring(2)), "sde must be"),
    ],
)
def test_sampler_bad_arguments(kwargs, match):
    oracle = sde.MixtureOracle(RING, EDM)
    kw = dict(score_fn=oracle.score, sde=EDM, shape=(4, 2), key=jax.random.key(0))
    with pytest.raises(ValueError, match=match):
        samplers.sample_edm(**{**kw, **kwargs})
