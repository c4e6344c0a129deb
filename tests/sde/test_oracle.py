"""Tests for the Gaussian-mixture data distribution and its exact diffused oracle.

Truths: scipy's multivariate normal densities of the diffused components, closed forms in
numpy float64 (Song et al. 2021 kernels, Gaussian conditioning), JAX autodiff of the
oracle's own log-density, and sampling statistics (moments, chi-square) on fixed keys.
"""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import sde

# ---------------------------------------------------------------------------------------
# Independent truths
# ---------------------------------------------------------------------------------------

SDES = {
    "vp": (sde.VPSDE, dict(beta_min=0.1, beta_max=20.0)),
    "subvp": (sde.SubVPSDE, dict(beta_min=0.1, beta_max=20.0)),
    "ve": (sde.VESDE, dict(sigma_min=0.01, sigma_max=50.0)),
}
KINDS = list(SDES)


def make_sde(kind):
    cls, params = SDES[kind]
    return cls(**params)


def kernel_np(kind, t):
    """(a(t), s(t), f(t), g(t)^2) of Song et al. 2021 in numpy float64."""
    t = np.asarray(t, dtype=np.float64)
    params = SDES[kind][1]
    if kind == "ve":
        smin, smax = params["sigma_min"], params["sigma_max"]
        s = smin * (smax / smin) ** t
        return np.ones_like(t), s, np.zeros_like(t), s**2 * 2 * np.log(smax / smin)
    bmin, bmax = params["beta_min"], params["beta_max"]
    beta = bmin + t * (bmax - bmin)
    a = np.exp(-(t**2) * (bmax - bmin) / 4 - t * bmin / 2)
    one_minus_a2 = -np.expm1(-(t**2) * (bmax - bmin) / 2 - t * bmin)
    if kind == "vp":
        return a, np.sqrt(one_minus_a2), -0.5 * beta, beta
    return a, one_minus_a2, -0.5 * beta, beta * (1 - a**4)


class NumpyMixture:
    """The truth: weights, means and covariances as given, in float64."""

    def __init__(self, weights, means, covs):
        self.w = np.asarray(weights, dtype=np.float64)
        self.mu = np.asarray(means, dtype=np.float64)
        self.cov = np.asarray(covs, dtype=np.float64)

    def diffused(self, a, s):
        d = self.mu.shape[1]
        return a * self.mu, a**2 * self.cov + s**2 * np.eye(d)

    def log_prob(self, x, a=1.0, s=0.0):
        means, covs = self.diffused(a, s)
        comps = [
            stats.multivariate_normal(mean=m, cov=c).logpdf(x) + np.log(w)
            for m, c, w in zip(means, covs, self.w, strict=True)
        ]
        return logsumexp(np.stack(comps, axis=-1), axis=-1)

    def score(self, x, a, s):
        means, covs = self.diffused(a, s)
        logits = np.stack(
            [
                stats.multivariate_normal(mean=m, cov=c).logpdf(x) + np.log(w)
                for m, c, w in zip(means, covs, self.w, strict=True)
            ],
            axis=-1,
        )
        r = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
        g = np.stack(
            [-np.linalg.solve(c, (x - m).T).T for m, c in zip(means, covs, strict=True)], 1
        )
        return np.einsum("bk,bkd->bd", r, g)


def random_spd(rng, k, d, floor=0.3):
    a = rng.normal(size=(k, d, d))
    return a @ np.swapaxes(a, 1, 2) / d + floor * np.eye(d)


RING_WEIGHTS = [0.1, 0.2, 0.3, 0.4]


@pytest.fixture(scope="module")
def ring():
    """Unequal-weight isotropic 2-D mixture: 4 modes at angles 0, 90, 180, 270 degrees."""
    means = 3.0 * np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    truth = NumpyMixture(RING_WEIGHTS, means, np.broadcast_to(0.25 * np.eye(2), (4, 2, 2)))
    return sde.GaussianMixture.ring(4, radius=3.0, std=0.5, weights=RING_WEIGHTS), truth


@pytest.fixture(scope="module")
def full3d():
    """Full-covariance 3-D mixture, random SPD covariances from a fixed numpy seed."""
    rng = np.random.default_rng(0)
    weights, means, covs = [0.5, 0.3, 0.2], 2.0 * rng.normal(size=(3, 3)), random_spd(rng, 3, 3)
    mix = sde.GaussianMixture(weights=weights, means=means, covariances=covs)
    return mix, NumpyMixture(weights, means, covs)


@pytest.fixture(scope="module")
def gauss3d():
    """A single full-covariance 3-D Gaussian (condition number ~7)."""
    rng = np.random.default_rng(1)
    mu, cov = np.array([1.0, -2.0, 0.5]), random_spd(rng, 1, 3, floor=0.2)
    mix = sde.GaussianMixture(weights=[1.0], means=mu[None], covariances=cov)
    return mix, NumpyMixture([1.0], mu[None], cov)


@pytest.fixture(scope="module", params=["ring", "full3d"])
def mixture(request):
    return request.getfixturevalue(request.param)


def test_ring_layout(ring):
    """ring() puts mode k at angle 2 pi k / n on the circle, with weights in that order."""
    mix, truth = ring
    np.testing.assert_allclose(mix.means, truth.mu, atol=1e-6)
    np.testing.assert_allclose(mix.weights, RING_WEIGHTS, rtol=1e-6)
    np.testing.assert_allclose(mix.covariances(), truth.cov, rtol=1e-6, atol=1e-7)


def test_covariances_roundtrip(full3d):
    mix, truth = full3d
    np.testing.assert_allclose(mix.covariances(), truth.cov, rtol=1e-5, atol=1e-6)
    assert mix.num_components == 3 and mix.dim == 3


def query_points(d, n=16, seed=5):
    """Points near the modes and far in the tails (where the logsumexp matters)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(0.5, 6.0, n)[:, None]


# ---------------------------------------------------------------------------------------
# Densities
# ---------------------------------------------------------------------------------------

# float32 tolerance for log-densities: parameters are stored in float32 (relative error
# ~6e-8) and the quadratic forms reach ~1e2 at the far query points, so the float32
# result carries an absolute error of ~1e-5; atol 1e-4 plus rtol 1e-5 of |log p| <= ~1e2.
LOGP_TOL = dict(rtol=1e-5, atol=1e-4)
T_LIST = [0.0, 0.01, 0.3, 0.7, 1.0]


def test_mixture_log_prob_matches_scipy(mixture):
    mix, truth = mixture
    x = query_points(mix.dim)
    logp = mix.log_prob(jnp.asarray(x, dtype=jnp.float32))
    assert logp.shape == (len(x),)
    np.testing.assert_allclose(logp, truth.log_prob(x), **LOGP_TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_log_prob_matches_scipy(mixture, kind):
    mix, truth = mixture
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = query_points(mix.dim)
    for t in T_LIST:
        a, s, *_ = kernel_np(kind, t)
        # evaluate where p_t has its mass too: the query points scaled like the data
        xt = a * x + s * query_points(mix.dim, seed=6)
        logp = oracle.log_prob(jnp.asarray(xt, dtype=jnp.float32), t)
        np.testing.assert_allclose(logp, truth.log_prob(xt, a, s), **LOGP_TOL, err_msg=f"t={t}")


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_log_prob_per_sample_time(full3d, kind):
    """t of shape [B]: row i is evaluated at its own time t_i."""
    mix, truth = full3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = query_points(3)
    t_vec = np.resize(T_LIST, len(x))
    logp = oracle.log_prob(jnp.asarray(x, dtype=jnp.float32), jnp.asarray(t_vec))
    expected = [
        np.atleast_1d(truth.log_prob(x[i : i + 1], *kernel_np(kind, t)[:2]))[0]
        for i, t in enumerate(t_vec)
    ]
    np.testing.assert_allclose(logp, expected, **LOGP_TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_score_matches_numpy(mixture, kind):
    """The float32 score against sum_k r_k (-C_k^{-1}(x - a mu_k)) in numpy float64.

    Scores reach |.| ~ 40 here (C = 0.25 I at t=0); float32 parameters and arithmetic
    give ~1e-6 relative error per component, responsibilities near 0.5 amplify the
    log-density error (~1e-5) into the mixture weights: atol = 1e-4 * max|score|.
    """
    mix, truth = mixture
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = query_points(mix.dim)
    for t in T_LIST:
        a, s, *_ = kernel_np(kind, t)
        xt = a * x + s * query_points(mix.dim, seed=6)
        expected = truth.score(xt, a, s)
        got = oracle.score(jnp.asarray(xt, dtype=jnp.float32), t)
        assert got.shape == xt.shape
        atol = 1e-4 * np.max(np.abs(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=atol, err_msg=f"t={t}")


# ---------------------------------------------------------------------------------------
# Score, divergence, denoiser: identities by autodiff (float64, so tolerances are tight).
# Run on the full-covariance mixture only (the isotropic ring is a special case of it; the
# ring's float32 score is checked against numpy above), to keep compiles to one per SDE.
# ---------------------------------------------------------------------------------------

T_IDENT = [0.01, 0.3, 0.7, 1.0]


def _identity_terms(oracle, x, ts, t_vec):
    """Library quantities and their autodiff counterparts at each t in ts (and at t_vec)."""

    def at(t):
        jac = jax.vmap(jax.jacfwd(lambda xi: oracle.score(xi[None], t)[0]))(x)
        return dict(
            score=oracle.score(x, t),
            grad=jax.grad(lambda x: oracle.log_prob(x, t).sum())(x),
            div=oracle.score_divergence(x, t),
            trace_jac=jnp.trace(jac, axis1=1, axis2=2),
            denoiser=oracle.denoiser(x, t),
        )

    out = jax.vmap(at)(ts)
    out["score_vec"] = oracle.score(x, t_vec)
    out["grad_vec"] = jax.grad(lambda x: oracle.log_prob(x, t_vec).sum())(x)
    return out


_identity_terms_jit = eqx.filter_jit(_identity_terms)
_IDENTITY_CACHE: dict = {}


def identity_terms(mix, kind):
    """Float64 evaluation (parameters stay as stored in float32), one compile per case."""
    key = (id(mix), kind)
    if key not in _IDENTITY_CACHE:
        with jax.enable_x64(True):
            oracle = sde.MixtureOracle(mix, make_sde(kind))
            x = jnp.asarray(query_points(mix.dim))
            t_vec = jnp.linspace(0.01, 1.0, len(x))
            out = _identity_terms_jit(oracle, x, jnp.asarray(T_IDENT), t_vec)
            assert out["score"].dtype == jnp.float64
            _IDENTITY_CACHE[key] = {k: np.asarray(v) for k, v in out.items()} | {"x": np.asarray(x)}
    return _IDENTITY_CACHE[key]


@pytest.mark.parametrize("kind", KINDS)
def test_score_is_grad_of_log_prob(full3d, kind):
    """Per-sample gradients: log_prob is a sum of independent rows, so grad of the sum.

    float64; the same stored parameters on both sides, exact identity => rtol 1e-9.
    """
    terms = identity_terms(full3d[0], kind)
    for i, t in enumerate(T_IDENT):
        grad = terms["grad"][i]
        atol = 1e-12 * np.abs(grad).max()
        np.testing.assert_allclose(terms["score"][i], grad, rtol=1e-9, atol=atol, err_msg=f"t={t}")
    # t of shape [B] gives each row the gradient at its own time
    np.testing.assert_allclose(terms["score_vec"], terms["grad_vec"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_score_divergence_is_trace_of_jacobian(full3d, kind):
    """float64. Not exact to 1e-9: the closed form uses tr C^{-1} = sum 1/v, true only for
    orthonormal eigenvectors, and the stored float32 ones are orthonormal to ~5e-8 (the
    Jacobian of the score sees U diag(1/v) U^T as it is). Hence rtol 1e-6 = 25 x that.
    """
    terms = identity_terms(full3d[0], kind)
    for i, t in enumerate(T_IDENT):
        expected = terms["trace_jac"][i]
        atol = 1e-6 * np.abs(expected).max()
        np.testing.assert_allclose(
            terms["div"][i], expected, rtol=1e-6, atol=atol, err_msg=f"t={t}"
        )


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_is_tweedie(full3d, kind):
    """denoiser == (x + s^2 score) / a, with a, s from numpy (float64).

    The denoiser is evaluated in the direct form sum_k r_k (mu_k + a Sigma_k C_k^-1 y_k),
    which equals Tweedie's form only as far as the stored float32 eigenvectors are
    orthonormal (~5e-8, see the divergence test); Tweedie's form then divides that
    discrepancy by a. Hence atol = 1e-6 |x| / a (25 x the orthonormality error).
    """
    terms = identity_terms(full3d[0], kind)
    for i, t in enumerate(T_IDENT):
        a, s, *_ = kernel_np(kind, t)
        expected = (terms["x"] + s**2 * terms["score"][i]) / a
        atol = 1e-6 * np.abs(terms["x"]).max() / a
        np.testing.assert_allclose(terms["denoiser"][i], expected, rtol=0, atol=atol)


def denoiser_closed_form(truth, a, s, x):
    """E[x0 | x_t = x] = mu + a Sigma C^{-1} (x - a mu) for p_0 = N(mu, Sigma), float64."""
    mu, cov = truth.mu[0], truth.cov[0]
    c = a**2 * cov + s**2 * np.eye(len(mu))
    return mu + a * np.linalg.solve(c, (x - a * mu).T).T @ cov  # Sigma, C symmetric


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_single_gaussian_closed_form(gauss3d, kind):
    """The float32 denoiser of one Gaussian against its closed form (numpy float64).

    At t <= 0.7 (a >= 0.085 for VP), float32 evaluation of the Tweedie form costs about
    eps32 * |x| / a <= 2e-5 (|x| <= 15); tolerance 1e-4. For VE a = 1, so t = 1 too.
    """
    mix, truth = gauss3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = query_points(3)
    for t in [0.01, 0.3, 0.7] + ([1.0] if kind == "ve" else []):
        a, s, *_ = kernel_np(kind, t)
        got = oracle.denoiser(jnp.asarray(x, dtype=jnp.float32), t)
        expected = denoiser_closed_form(truth, a, s, x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=f"t={t}")


def test_denoiser_accurate_at_large_t(gauss3d):
    """A well-conditioned float32 evaluation is good to ~1e-6 x |E| ~ 2; ask for 1e-4."""
    mix, truth = gauss3d
    vp = sde.VPSDE(beta_min=0.1, beta_max=40.0)
    oracle = sde.MixtureOracle(mix, vp)
    x = query_points(3)
    for t in [0.9, 1.0]:
        a = np.exp(-(t**2) * (40.0 - 0.1) / 4 - t * 0.1 / 2)
        got = oracle.denoiser(jnp.asarray(x, dtype=jnp.float32), t)
        expected = denoiser_closed_form(truth, a, np.sqrt(-np.expm1(2 * np.log(a))), x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=f"t={t}")


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

N_MOMENTS = 200_000


# Jitted (n static): one compile per mixture shape, faster to warm up than eager dispatch.
@eqx.filter_jit
def mixture_sample(mix, key, n):
    return mix.sample(key, n)


def assert_moments(x, mean, cov, n_se=5.0):
    """Sample mean and covariance within n_se standard errors of the truth.

    SE(mean_i) = sqrt(C_ii / n); SE(cov_ij) = sqrt((C_ii C_jj + C_ij^2) / n) (Gaussian).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    z_mean = (x.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    z_cov = (np.cov(x, rowvar=False) - cov) / se_cov
    assert np.max(np.abs(z_mean)) < n_se, f"mean z-scores {z_mean}"
    assert np.max(np.abs(z_cov)) < n_se, f"covariance z-scores {z_cov}"


def test_mixture_sample_moments(gauss3d):
    mix, truth = gauss3d
    x = mixture_sample(mix, jax.random.key(10), N_MOMENTS)
    assert x.shape == (N_MOMENTS, 3)
    assert_moments(x, truth.mu[0], truth.cov[0])


@pytest.mark.parametrize("kind,t", [("vp", 0.5), ("subvp", 0.7), ("ve", 0.3), ("vp", 1.0)])
def test_oracle_sample_moments(gauss3d, kind, t):
    mix, truth = gauss3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    a, s, *_ = kernel_np(kind, t)
    mean, cov = truth.diffused(a, s)
    x = oracle.sample(jax.random.key(11), N_MOMENTS, t)
    assert x.shape == (N_MOMENTS, 3)
    assert_moments(x, mean[0], cov[0])


def nearest_mode_counts(x, centres):
    d2 = ((np.asarray(x)[:, None, :] - centres[None]) ** 2).sum(-1)
    return np.bincount(d2.argmin(1), minlength=len(centres))


@pytest.fixture(scope="module")
def separated_ring():
    """Unequal weights, modes 14 apart with std 0.3: assignment by nearest mode is exact."""
    mix = sde.GaussianMixture.ring(4, radius=10.0, std=0.3, weights=RING_WEIGHTS)
    return mix, np.asarray(mix.means, dtype=np.float64)


@pytest.mark.parametrize("kind,t", [(None, 0.0), ("vp", 0.1), ("subvp", 0.1), ("ve", 0.1)])
def test_component_shares(separated_ring, kind, t):
    """Chi-square test of the mode counts of 20,000 samples against the weights.

    The negative control (uniform weights) shows the test has power at this size.
    """
    mix, means = separated_ring
    n = 20_000
    if kind is None:
        x, centres = mixture_sample(mix, jax.random.key(12), n), means
    else:
        x = sde.MixtureOracle(mix, make_sde(kind)).sample(jax.random.key(13), n, t)
        centres = kernel_np(kind, t)[0] * means
    counts = nearest_mode_counts(x, centres)
    assert counts.sum() == n
    assert stats.chisquare(counts, n * np.asarray(RING_WEIGHTS)).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(4, n / 4)).pvalue < 1e-6


# ---------------------------------------------------------------------------------------
# Exact probability-flow map (single Gaussian)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_flow_identity_and_composition(gauss3d, kind):
    """flow(x, t, t) == x and flow(flow(x, t1, t2), t2, t3) == flow(x, t1, t3).

    float32: a handful of 3x3 products and one sqrt ratio => a few eps32 relative to
    the magnitude of the output; rtol 1e-5 with atol 1e-5 * max|output|.
    """
    mix, _ = gauss3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = jnp.asarray(query_points(3), dtype=jnp.float32)
    for t in [0.0, 0.3, 1.0]:
        np.testing.assert_allclose(oracle.flow(x, t, t), x, rtol=1e-5, atol=1e-5 * np.abs(x).max())
    for t1, t2, t3 in [(0.1, 0.6, 0.9), (0.9, 0.2, 0.5), (0.0, 1.0, 0.4), (0.7, 0.05, 0.0)]:
        a1, s1, *_ = kernel_np(kind, t1)
        x1 = a1 * x + s1 * jnp.asarray(query_points(3, seed=7), dtype=jnp.float32)
        direct = oracle.flow(x1, t1, t3)
        composed = oracle.flow(oracle.flow(x1, t1, t2), t2, t3)
        atol = 1e-5 * float(jnp.abs(direct).max())
        np.testing.assert_allclose(composed, direct, rtol=1e-5, atol=atol, err_msg=f"{t1, t2, t3}")


def _flow_and_velocity(oracle, x, t0, t):
    xt, dxt = jax.jvp(lambda t: oracle.flow(x, t0, t), (t,), (jnp.ones_like(t),))
    return xt, dxt, oracle.score(xt, t)


_flow_and_velocity_jit = eqx.filter_jit(_flow_and_velocity)


@pytest.mark.parametrize("kind", KINDS)
def test_flow_solves_probability_flow_ode(gauss3d, kind):
    """d/dt flow(x, t0, t) == f(t) x_t - g(t)^2 / 2 * score(x_t, t), by jvp in t (float64).

    f, g from numpy; the score twice: the closed form -C^{-1}(x - a mu) from the float64
    parameters, and oracle.score. At large t the two terms (|f x| ~ 10 |x|) nearly cancel,
    so the error scale is their size, not |rhs|: the oracle stores Sigma in float32 and
    uses its eigenvectors as if orthonormal (true to ~5e-8), so allow 1e-6 of the terms.
    """
    mix, truth = gauss3d
    mu, cov = truth.mu[0], truth.cov[0]
    with jax.enable_x64(True):
        oracle = sde.MixtureOracle(mix, make_sde(kind))
        for t0 in [0.0, 0.2, 0.8]:
            a0, s0, *_ = kernel_np(kind, t0)
            x = jnp.asarray(a0 * query_points(3) + s0 * query_points(3, seed=8))
            for t in [0.05, 0.4, 0.95]:
                xt, dxt, score = map(
                    np.asarray, _flow_and_velocity_jit(oracle, x, jnp.float64(t0), jnp.float64(t))
                )
                a, s, f, g2 = kernel_np(kind, t)
                c = a**2 * cov + s**2 * np.eye(3)
                score_np = -np.linalg.solve(c, (xt - a * mu).T).T
                for sc in (score_np, score):
                    terms = np.abs(f * xt) + np.abs(0.5 * g2 * sc)
                    rhs = f * xt - 0.5 * g2 * sc
                    np.testing.assert_allclose(
                        dxt, rhs, rtol=1e-6, atol=1e-6 * terms.max(), err_msg=f"{t0}->{t}"
                    )


def _affine_part(oracle, y, t0, t1):
    """flow(y) and its Jacobian (the flow of one Gaussian is affine)."""
    flow = lambda y: oracle.flow(y[None], t0, t1)[0]  # noqa: E731
    return flow(y), jax.jacfwd(flow)(y)


_affine_part_jit = eqx.filter_jit(_affine_part)


@pytest.mark.parametrize("kind,t0,t1", [("vp", 0.2, 0.9), ("subvp", 0.9, 0.1), ("ve", 0.0, 0.6)])
def test_flow_pushes_marginals(gauss3d, kind, t0, t1):
    """Samples of p_t0 pushed by the flow are samples of p_t1 (moments, 5 SE), and, since
    the map is affine, exactly: flow(a0 mu) = a1 mu and J C0 J^T = C1 (float64)."""
    mix, truth = gauss3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    (a0, s0, *_), (a1, s1, *_) = kernel_np(kind, t0), kernel_np(kind, t1)
    (m0,), (c0,) = truth.diffused(a0, s0)
    (m1,), (c1,) = truth.diffused(a1, s1)
    x = oracle.sample(jax.random.key(14), N_MOMENTS, t0)
    assert_moments(oracle.flow(x, t0, t1), m1, c1)
    with jax.enable_x64(True):
        oracle = sde.MixtureOracle(mix, make_sde(kind))
        y, jac = map(np.asarray, _affine_part_jit(oracle, jnp.asarray(m0), t0, t1))
    np.testing.assert_allclose(y, m1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jac @ c0 @ jac.T, c1, rtol=1e-5, atol=1e-6 * np.abs(c1).max())


def test_flow_rejects_mixture():
    mix = sde.GaussianMixture(weights=[0.5, 0.5], means=[[0.0, 0.0], [1.0, 1.0]], stds=0.5)
    oracle = sde.MixtureOracle(mix, sde.VPSDE())
    with pytest.raises(ValueError, match="2 components"):
        oracle.flow(jnp.zeros((1, 2)), 0.1, 0.5)


# ---------------------------------------------------------------------------------------
# Pytree and jit
# ---------------------------------------------------------------------------------------


@eqx.filter_jit
def _jit_score(oracle, x, t):
    return oracle.score(x, t)


@pytest.mark.parametrize("kind", KINDS)
def test_oracle_through_filter_jit(full3d, kind):
    mix, _ = full3d
    oracle = sde.MixtureOracle(mix, make_sde(kind))
    x = jnp.asarray(query_points(3), dtype=jnp.float32)
    t = jnp.full((len(x),), 0.4)
    np.testing.assert_allclose(_jit_score(oracle, x, t), oracle.score(x, t), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------

I2 = np.eye(2)


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(weights=[0.5, 0.6], stds=1.0), ["0.6", "1.1"]),
        (dict(weights=[1.5, -0.5], stds=1.0), ["-0.5"]),
        (dict(weights=[0.5, 0.5], covariances=[[[1.0, 2.0], [2.0, 1.0]], I2]), ["-1"]),
        (dict(weights=[0.5, 0.5], covariances=[[[1.0, 0.5], [0.0, 1.0]], I2]), ["symmetric"]),
        (dict(weights=[0.5, 0.5], means=[1.0, 2.0], stds=1.0), ["(2,)"]),
        (dict(weights=[0.2, 0.3, 0.5], stds=1.0), ["(3,)"]),
        (dict(weights=[0.5, 0.5], covariances=np.stack([I2] * 3)), ["(3, 2, 2)"]),
        (dict(weights=[0.5, 0.5], covariances=np.stack([I2] * 2), stds=1.0), ["exactly one"]),
        (dict(weights=[0.5, 0.5]), ["exactly one"]),
        (dict(weights=[0.5, 0.5], stds=[0.5, -0.1]), ["-0.1"]),
        (dict(weights=[0.5, 0.5], stds=float("nan")), ["nan"]),
    ],
    ids=[
        "sum",
        "negative",
        "not-pd",
        "not-symmetric",
        "means-1d",
        "weights-shape",
        "cov-shape",
        "both",
        "neither",
        "negative-std",
        "nan-std",
    ],
)
def test_bad_mixture_raises(kwargs, needles):
    kwargs.setdefault("means", [[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError) as info:
        sde.GaussianMixture(**kwargs)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        pytest.param(
            dict(weights=[0.5, 0.5], stds=[0.5, 0.5, 0.5]),
            "stds",
            id="stds-shape",
        ),
        pytest.param(
            dict(weights=[float("nan"), 0.5], stds=1.0),
            "nan",
            id="nan-weight",
        ),
        pytest.param(
            dict(weights=[0.5, 0.5], means=[[0.0, 0.0], [float("nan"), 1.0]], stds=1.0),
            "nan",
            id="nan-mean",
        ),
        pytest.param(
            dict(weights=[0.5, 0.5], covariances=[I2, [[np.inf, 0.0], [0.0, 1.0]]]),
            "inf",
            id="inf-cov",
        ),
    ],
)
def test_bad_mixture_raises_for_non_finite_and_shape(kwargs, needle):
    kwargs.setdefault("means", [[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=re.escape(needle)):
        sde.GaussianMixture(**kwargs)
