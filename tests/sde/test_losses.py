r"""Denoising score-matching losses against closed forms.

Data are Gaussian, :math:`x_0 \sim N(\mu, \sigma_0^2 I)` in ``D`` dimensions, so
:math:`p_t = N(a\mu, v I)` with :math:`v = a^2\sigma_0^2 + s^2` and the optimal score is
the oracle's :math:`-(x_t - a\mu)/v`. Writing :math:`x_t - a\mu = a\sigma_0\xi + s z`
(:math:`\xi, z` independent standard normals),

.. math::
    s\,\nabla\log p_t + z = (1 - s^2/v)\, z - (s a \sigma_0 / v)\, \xi,
    \qquad
    E\|s\,\nabla\log p_t + z\|^2 = D\Big[\Big(\frac{a^2\sigma_0^2}{v}\Big)^2
        + \frac{s^2 a^2 \sigma_0^2}{v^2}\Big] = D\,\frac{a^2\sigma_0^2}{v}
    = D\,(1 - s^2/v).

For any other score :math:`\hat s`, the cross term
:math:`E[(s\nabla\log p_t + z)\cdot s(\hat s - \nabla\log p_t)]` vanishes (because
:math:`E[z \mid x_t] = -s \nabla\log p_t`), so the excess loss is
:math:`\tfrac12 E\|s(\hat s - \nabla\log p_t)\|^2`; for
:math:`\hat s = c\,\nabla\log p_t + b` (``b`` constant) this is
:math:`\tfrac12 s^2 [(c - 1)^2 D / v + \|b\|^2]` since :math:`E\|\nabla\log p_t\|^2 =
D/v` and :math:`E\nabla\log p_t = 0`.

The SDE schedules used for the reference integrals are written again here in NumPy,
independently of the library.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import sde

MU = np.array([0.5, -1.0])
SIGMA0 = 0.7
D = MU.size
SDES = {
    "vp": sde.VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": sde.SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ve": sde.VESDE(sigma_min=0.01, sigma_max=50.0),
}
# A deliberately wrong score: c * optimal + b.
BAD_C, BAD_B = 0.8, np.array([0.3, -0.2])
# One batch size for every Monte-Carlo check, so that eager ops compile once.
N_MC = 200_000


# ---- independent NumPy schedules: (a^2, s^2, g^2) at t ---------------------------------


def ref_schedule(name: str, t):
    """``(a^2, s^2, g^2)`` at ``t`` (a float or a float64 array)."""
    if name in ("vp", "subvp"):
        bmin, bmax = 0.1, 20.0
        a2 = np.exp(-0.5 * t**2 * (bmax - bmin) - t * bmin)
        beta = bmin + t * (bmax - bmin)
        if name == "vp":
            return a2, 1.0 - a2, beta
        return a2, (1.0 - a2) ** 2, beta * (1.0 - a2**2)
    smin, smax = 0.01, 50.0
    s2 = (smin * (smax / smin) ** t) ** 2
    return np.ones_like(s2), s2, s2 * 2.0 * math.log(smax / smin)


def ref_log_snr(name: str, t):
    a2, s2, _ = ref_schedule(name, t)
    return 0.5 * np.log(a2 / s2)


def expected_sq_residual(name: str, t: float, c: float = 1.0, b=np.zeros(D)) -> float:
    """``E||s * score_hat(x_t, t) + z||^2`` for score_hat = c * optimal + b."""
    a2, s2, _ = ref_schedule(name, t)
    v = a2 * SIGMA0**2 + s2
    return D * a2 * SIGMA0**2 / v + s2 * ((c - 1.0) ** 2 * D / v + float(b @ b))


def likelihood_integral(name: str, eps: float, c: float = 1.0, b=np.zeros(D)) -> float:
    """``int_eps^T 0.5 g^2/s^2 E||s score + z||^2 dt``, integrated in log t."""

    def integrand(u):
        t = math.exp(u)
        _, s2, g2 = ref_schedule(name, t)
        return 0.5 * g2 / s2 * expected_sq_residual(name, t, c, b) * t

    val, err = scipy.integrate.quad(integrand, math.log(eps), 0.0, limit=200, epsabs=1e-10)
    assert err < 1e-6 * abs(val)
    return val


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixture():
    return sde.GaussianMixture(weights=[1.0], means=[MU.tolist()], stds=SIGMA0)


@pytest.fixture(scope="module")
def x0_big(mixture):
    return mixture.sample(jax.random.PRNGKey(11), N_MC)


def bad_score(oracle):
    b = jnp.asarray(BAD_B, jnp.float32)
    return lambda x, t: BAD_C * oracle.score(x, t) + b


def mean_and_se(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return v.mean(), v.std(ddof=1) / math.sqrt(v.size)


# ---- the log-SNR identity --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SDES))
def test_g2_over_s2_is_minus_twice_dlogsnr_dt(name):
    """d lambda/dt = f - (2 f s^2 + g^2) / (2 s^2) = -g^2 / (2 s^2) for a linear SDE."""
    s = SDES[name]
    ts = jnp.array([0.01, 0.1, 0.3, 0.5, 0.8, 1.0])
    dlam = jax.jit(jax.vmap(jax.grad(s.log_snr)))(ts)
    ratio = s.diffusion(ts) ** 2 / s.std(ts) ** 2
    np.testing.assert_allclose(np.asarray(-2.0 * dlam), np.asarray(ratio), rtol=2e-5)


# ---- std2 weighting at a fixed t -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SDES))
def test_std2_loss_of_optimal_score_at_fixed_t(name, mixture, x0_big):
    """At the optimum, E[0.5 ||s score + z||^2] = 0.5 D (1 - s^2/v), v = a^2 sigma0^2 + s^2
    (derived in the module docstring: the residual is (1 - s^2/v) z - (s a sigma0/v) xi)."""
    s = SDES[name]
    oracle = sde.MixtureOracle(mixture, s)
    x0 = x0_big
    for i, t in enumerate([0.05, 0.3, 0.7]):
        z = jax.random.normal(jax.random.PRNGKey(100 + i), x0.shape)
        tt = jnp.full((x0.shape[0],), t)
        ell = sde.dsm_loss_at(oracle.score, s, x0, tt, z, weighting="std2")
        assert ell.shape == (x0.shape[0],)
        a2, s2, _ = ref_schedule(name, t)
        want = 0.5 * D * (1.0 - s2 / (a2 * SIGMA0**2 + s2))
        m, se = mean_and_se(ell)
        assert abs(m - want) < 4 * se, (t, m, want, se)


@pytest.mark.parametrize("name, t", [("vp", 0.3), ("ve", 0.7)])  # times where s^2 ~ v / 2
def test_std2_suboptimal_score_excess_is_closed_form(name, t, mixture, x0_big):
    """A wrong score costs exactly 0.5 E||s (score_bad - score_opt)||^2 more (paired noise)."""
    s = SDES[name]
    oracle = sde.MixtureOracle(mixture, s)
    x0 = x0_big
    z = jax.random.normal(jax.random.PRNGKey(7), x0.shape)
    tt = jnp.full((x0.shape[0],), t)
    a2, s2, _ = ref_schedule(name, t)
    v = a2 * SIGMA0**2 + s2
    opt = sde.dsm_loss_at(oracle.score, s, x0, tt, z)
    cases = [
        (lambda x, t: 0.9 * oracle.score(x, t), 0.5 * s2 * 0.01 * D / v),
        (bad_score(oracle), 0.5 * s2 * ((BAD_C - 1) ** 2 * D / v + BAD_B @ BAD_B)),
    ]
    for score_bad, excess in cases:
        bad = sde.dsm_loss_at(score_bad, s, x0, tt, z)
        m, se = mean_and_se(np.asarray(bad, np.float64) - np.asarray(opt, np.float64))
        assert excess > 0 and m > 4 * se  # strictly worse, significantly
        assert abs(m - excess) < 4 * se, (m, excess, se)
        # and the bad loss itself against minimum + excess
        mb, seb = mean_and_se(bad)
        assert abs(mb - (0.5 * D * a2 * SIGMA0**2 / v + excess)) < 4 * seb


# ---- full estimators against time integrals -------------------------------------------


@pytest.mark.parametrize("method", ["uniform", "stratified", "antithetic"])
def test_std2_estimator_is_time_average(method, mixture, x0_big):
    """std2: E[loss] = (1/(T - eps)) int_eps^T 0.5 D a^2 sigma0^2 / v dt, for each sampler."""
    name, eps = "vp", 1e-3
    s = SDES[name]
    oracle = sde.MixtureOracle(mixture, s)
    x0 = x0_big
    ell = sde.dsm_loss(oracle.score, s, x0, jax.random.PRNGKey(3), t_sampling=method, eps=eps)
    val, _ = scipy.integrate.quad(lambda t: 0.5 * expected_sq_residual(name, t), eps, 1.0)
    m, se = mean_and_se(ell)
    assert abs(m - val / (1.0 - eps)) < 4 * se, (m, val, se)


@pytest.mark.parametrize("name", sorted(SDES))
@pytest.mark.parametrize("which", ["optimal", "wrong"])
def test_likelihood_estimators_match_integral(name, which, mixture, x0_big):
    """Every time sampler estimates int_eps^T 0.5 g^2/s^2 E||s score + z||^2 dt (quad)."""
    eps = 1e-3
    s = SDES[name]
    oracle = sde.MixtureOracle(mixture, s)
    score_fn = oracle.score if which == "optimal" else bad_score(oracle)
    c, b = (1.0, np.zeros(D)) if which == "optimal" else (BAD_C, BAD_B)
    want = likelihood_integral(name, eps, c, b)
    stats = {}
    for i, method in enumerate(["uniform", "importance", "stratified", "antithetic"]):
        ell = sde.dsm_loss(
            score_fn,
            s,
            x0_big,
            jax.random.PRNGKey(20 + i),
            weighting="likelihood",
            t_sampling=method,
            eps=eps,
        )
        m, se = mean_and_se(ell)
        assert abs(m - want) < 4 * se, (method, m, want, se)
        stats[method] = (m, se)
    (mu, su), (mi, si) = stats["uniform"], stats["importance"]
    assert abs(mu - mi) < 4 * math.hypot(su, si)
    if name == "vp":
        assert si < 0.5 * su  # importance sampling removes the 1/t spike
    if name == "ve":  # lambda is linear in t: the two samplers coincide in law
        assert 0.8 < si / su < 1.25


# ---- time samplers ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SDES))
def test_importance_times_follow_log_snr_and_weight_is_constant(name):
    """t has CDF (lambda(eps) - lambda(t)) / Delta lambda; weight * (T-eps) g^2/s^2 = 2 Delta."""
    s, eps, n = SDES[name], 1e-4, N_MC
    t, w = sde.sample_time(jax.random.PRNGKey(5), n, sde=s, eps=eps, method="importance")
    t, w = np.asarray(t, np.float64), np.asarray(w, np.float64)
    assert t.min() >= eps and t.max() <= 1.0
    lam_eps, lam_T = ref_log_snr(name, eps), ref_log_snr(name, 1.0)
    # CDF of t is (lambda(eps) - lambda(t)) / (lambda(eps) - lambda(T))
    u = (lam_eps - ref_log_snr(name, t)) / (lam_eps - lam_T)
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3
    # (T - eps) * weight * g^2 / s^2 = 2 * (lambda(eps) - lambda(T)) for every sample
    _, s2, g2 = ref_schedule(name, t)
    g2_s2 = g2 / s2
    np.testing.assert_allclose((1 - eps) * w * g2_s2, 2 * (lam_eps - lam_T), rtol=1e-3)


def test_uniform_times():
    eps = 1e-3
    t, w = sde.sample_time(jax.random.PRNGKey(0), N_MC, sde=SDES["vp"], eps=eps)
    t = np.asarray(t, np.float64)
    assert t.min() >= eps and t.max() <= 1.0 and np.all(np.asarray(w) == 1)
    assert scipy.stats.kstest((t - eps) / (1 - eps), "uniform").pvalue > 1e-3


def test_stratified_times_cover_each_stratum_once():
    eps, b = 1e-2, 64
    t, w = sde.sample_time(jax.random.PRNGKey(1), b, sde=SDES["vp"], eps=eps, method="stratified")
    t = np.asarray(t, np.float64)
    strata = np.floor((t - eps) / (1 - eps) * b).astype(int)
    np.testing.assert_array_equal(np.sort(strata), np.arange(b))
    assert not np.all(np.diff(t) > 0)  # permuted, not handed out in order
    assert np.all(np.asarray(w) == 1)


def test_antithetic_pairs_sum_to_eps_plus_T():
    eps, b = 1e-2, 64
    t, w = sde.sample_time(jax.random.PRNGKey(2), b, sde=SDES["ve"], eps=eps, method="antithetic")
    t = np.asarray(t, np.float64)
    np.testing.assert_allclose(t[: b // 2] + t[b // 2 :], eps + 1.0, atol=1e-6)
    assert t.min() >= eps and t.max() <= 1.0 and np.all(np.asarray(w) == 1)


# ---- shapes, jit, errors ---------------------------------------------------------------


def test_sums_over_all_non_batch_axes_and_jits():
    s = SDES["vp"]

    def score_fn(x, t):  # elementwise in x, so a reshape commutes with it
        return -x / (1.0 + t.reshape(t.shape + (1,) * (x.ndim - 1)))

    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 2, 3))
    key = jax.random.PRNGKey(1)
    kw = dict(weighting="likelihood", t_sampling="stratified")

    @jax.jit  # one compile holds both shapes
    def both(x, k):
        return sde.dsm_loss(score_fn, s, x, k, **kw), sde.dsm_loss(
            score_fn, s, x.reshape(8, 6), k, **kw
        )

    img, flat = both(x0, key)
    assert img.shape == (8,)
    np.testing.assert_allclose(np.asarray(img), np.asarray(flat), rtol=1e-6)


def _call_loss(**kw):
    x0 = jnp.zeros((4, 2))
    return sde.dsm_loss(lambda x, t: x, SDES["vp"], x0, jax.random.PRNGKey(0), **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"weighting": "l2"}, "weighting=.*'l2'"),
        ({"t_sampling": "sobol"}, "t_sampling=.*'sobol'"),
        ({"eps": 0.0}, "eps=0.0"),
        ({"eps": 1.0}, "eps=1.0"),
        ({"eps": -1e-3}, "eps=-0.001"),
        ({"eps": float("nan")}, "eps=nan"),
        ({"t_sampling": "importance"}, "weighting='std2'"),
        ({"t_sampling": "importance", "weighting": "std2"}, "likelihood"),
    ],
)
def test_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        _call_loss(**kw)


def test_bad_sample_time_arguments_raise():
    k, vp = jax.random.PRNGKey(0), SDES["vp"]
    with pytest.raises(ValueError, match="method=.*'halton'"):
        sde.sample_time(k, 4, sde=vp, method="halton")
    with pytest.raises(ValueError, match="even batch, got batch=5"):
        sde.sample_time(k, 5, sde=vp, method="antithetic")
    with pytest.raises(ValueError, match="batch=0"):
        sde.sample_time(k, 0, sde=vp)
    with pytest.raises(ValueError, match="eps=2"):
        sde.sample_time(k, 4, sde=vp, eps=2)
    with pytest.raises(ValueError, match="weighting=.*'l2'"):
        sde.dsm_loss_at(
            lambda x, t: x, vp, jnp.zeros((2, 2)), jnp.ones(2), jnp.zeros((2, 2)), weighting="l2"
        )


# ---- densities over the log-SNR (logit-normal, log-normal) and other weightings ----------

RF = sde.RectifiedFlow()


def rf_schedule(t):
    """``(a^2, s^2, g^2)`` of the rectified-flow path, written again in NumPy."""
    return (1 - t) ** 2, t**2, 2 * t / (1 - t)


def factor(weighting: str, a2, s2, g2):
    """The factor on 0.5 ||s score + z||^2 of each weighting, in NumPy."""
    return {"std2": 1.0, "velocity": g2**2 / (4 * s2), "data": s2 / a2}[weighting]


def test_logit_normal_times_on_rf_are_sd3s_and_lognormal_sigmas_are_edms():
    """On RF, logit(t) ~ N(0.5, 0.8^2) (SD3's definition in t); on EDM (t = sigma),
    ln t ~ N(-1.2, 1.2^2) truncated to [ln eps, ln 80] (EDM's definition in sigma)."""
    n, eps = 50_000, 1e-5
    method = sde.logit_normal(0.5, 0.8)
    t, _ = sde.sample_time(jax.random.PRNGKey(8), n, sde=RF, eps=eps, method=method)
    logit = np.log(np.asarray(t, np.float64) / (1 - np.asarray(t, np.float64)))
    assert scipy.stats.kstest(logit, scipy.stats.norm(0.5, 0.8).cdf).pvalue > 1e-3
    edm, eps_edm = sde.EDMSDE(), 0.002
    t, _ = sde.sample_time(jax.random.PRNGKey(9), n, sde=edm, eps=eps_edm, method="lognormal")
    lo, hi = (np.log(eps_edm) + 1.2) / 1.2, (np.log(80.0) + 1.2) / 1.2
    law = scipy.stats.truncnorm(lo, hi, loc=-1.2, scale=1.2)
    assert scipy.stats.kstest(np.log(np.asarray(t, np.float64)), law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("weighting", ["std2", "velocity", "data"])
def test_logit_normal_losses_on_rf_match_sd3_integral(weighting, mixture, x0_big):
    """E[loss] under logit-normal times equals the t-integral with SD3's density
    phi(logit t) / (t (1 - t)) (NumPy), and Kingma & Gao's lambda-integral with
    sde.loss_weight; "velocity" is the flow-matching loss 0.5||v - (z - x0)||^2."""
    eps = 1e-3
    oracle = sde.MixtureOracle(mixture, RF)
    ell = sde.dsm_loss(
        oracle.score,
        RF,
        x0_big,
        jax.random.PRNGKey(4),
        weighting=weighting,
        t_sampling="logit_normal",
        eps=eps,
    )

    def sq_residual(t):  # E||s score + z||^2 at the optimum
        a2, s2, _ = rf_schedule(t)
        return D * a2 * SIGMA0**2 / (a2 * SIGMA0**2 + s2)

    def in_t(t):
        a2, s2, g2 = rf_schedule(t)
        logit = math.log(t / (1 - t))
        density = scipy.stats.norm.pdf(logit) / (t * (1 - t))
        return density * 0.5 * factor(weighting, a2, s2, g2) * sq_residual(t)

    mass = scipy.stats.norm.cdf(math.log(RF.T / (1 - RF.T))) - scipy.stats.norm.cdf(
        math.log(eps / (1 - eps))
    )
    want, _ = scipy.integrate.quad(in_t, eps, RF.T, limit=200, points=[0.5])
    want /= mass
    m, se = mean_and_se(ell)
    assert abs(m - want) < 4 * se, (m, want, se)

    def in_lam(lam):  # Kingma & Gao: E[loss] = int w(lambda) E||eps_hat - eps||^2 dlambda
        w = sde.loss_weight(lam, sde=RF, eps=eps, weighting=weighting, t_sampling="logit_normal")
        return float(w) * sq_residual(1 / (1 + math.exp(lam)))  # t(lambda) on RF

    lam_T, lam_eps = math.log((1 - RF.T) / RF.T), math.log((1 - eps) / eps)
    via_w, _ = scipy.integrate.quad(in_lam, lam_T, lam_eps, limit=200, points=[0.0])
    assert via_w == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_normal_log_snr_samplers_keep_the_likelihood_integral(name, mixture, x0_big):
    """Any sampler's weight keeps the likelihood weighting unbiased for its integral,
    and loss_weight is 1 for it (the ELBO weighting of Kingma & Gao)."""
    eps = 1e-3
    s = SDES[name]
    oracle = sde.MixtureOracle(mixture, s)
    want = likelihood_integral(name, eps)
    for i, method in enumerate(["logit_normal", "lognormal"]):
        ell = sde.dsm_loss(
            oracle.score,
            s,
            x0_big,
            jax.random.PRNGKey(40 + i),
            weighting="likelihood",
            t_sampling=method,
            eps=eps,
        )
        m, se = mean_and_se(ell)
        assert abs(m - want) < 4 * se, (method, m, want, se)
    w = sde.loss_weight(jnp.linspace(-3, 3, 7), sde=s, eps=eps, weighting="likelihood")
    np.testing.assert_array_equal(np.asarray(w), 1.0)


def test_uniform_time_density_over_log_snr_integrates_to_one():
    """p(lambda) of uniform-in-t is 2 s^2 / ((T - eps) g^2) at t(lambda); on each SDE it
    integrates to 1 over [lambda(T), lambda(eps)], as the truncated normals do."""
    eps = 1e-3
    for forward in [SDES["vp"], SDES["ve"], RF]:
        lam_T, lam_eps = (float(forward.log_snr(v)) for v in (forward.T, eps))
        for density in [sde.UniformTime(), sde.lognormal(), sde.logit_normal(1.0, 2.0)]:
            lam = np.linspace(lam_T, lam_eps, 20_001)  # one call; Simpson's rule
            p = np.exp(np.asarray(density.log_prob(jnp.asarray(lam), sde=forward, eps=eps)))
            total = scipy.integrate.simpson(p, x=lam)
            assert total == pytest.approx(1.0, abs=2e-4), (forward, density)


def test_time_sampling_objects_and_bad_parameters():
    t1, w1 = sde.sample_time(jax.random.PRNGKey(1), 64, sde=RF, method="stratified")
    t2, w2 = sde.sample_time(
        jax.random.PRNGKey(1), 64, sde=RF, method=sde.UniformTime(scheme="stratified")
    )
    np.testing.assert_array_equal(np.asarray(t1), np.asarray(t2))
    t3, _ = sde.sample_time(
        jax.random.PRNGKey(1), 64, sde=RF, method=sde.logit_normal(scheme="stratified")
    )
    u = scipy.stats.norm.cdf(np.log(np.asarray(t3, np.float64) / (1 - np.asarray(t3))))
    np.testing.assert_array_equal(np.sort(np.floor(u * 64).astype(int)), np.arange(64))
    with pytest.raises(ValueError, match="std=0"):
        sde.logit_normal(0.0, 0.0)
    with pytest.raises(ValueError, match="p_mean=nan"):
        sde.lognormal(float("nan"))
    with pytest.raises(ValueError, match="scheme=.*'sobol'"):
        sde.UniformTime(scheme="sobol")
    with pytest.raises(ValueError, match="t_sampling=.*'beta'"):
        sde.loss_weight(0.0, sde=RF, t_sampling="beta")
