"""The exact histogram base score (networks.HistogramResidual), against float64
quadrature of the convolution integral, scipy's truncated normal, and the
probability-flow likelihood of the zero network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import networks
import samplers
import sde


def _reference_log_mass(lo, hi):
    """log P(lo < Z < hi) in float64, by the tail the interval lies in."""
    out = np.empty_like(lo)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if a > 0:
            la, lb = stats.norm.logsf(a), stats.norm.logsf(b)
        elif b < 0:
            la, lb = stats.norm.logcdf(b), stats.norm.logcdf(a)
        else:
            out[i] = np.log(stats.norm.cdf(b) - stats.norm.cdf(a))
            continue
        out[i] = la + np.log(-np.expm1(lb - la))
    return out


def test_truncated_normal_stats_against_scipy_in_every_regime():
    rng = np.random.default_rng(0)
    # centres near 0 and far in both tails; half-widths from 1e-5 to 30
    c = np.concatenate([rng.normal(0, 2, 300), rng.uniform(-25, 25, 300)])
    h = 10 ** rng.uniform(-5, 1.5, 600) * np.maximum(1, np.abs(c))
    lo32, hi32 = np.float32(c - h), np.float32(c + h)
    lo, hi = lo32.astype(np.float64), hi32.astype(np.float64)  # the values actually used
    log_mass, mean = networks.truncated_normal_stats(lo32, hi32)
    np.testing.assert_allclose(log_mass, _reference_log_mass(lo, hi), atol=1e-3, rtol=1e-5)
    ref_mean = stats.truncnorm(lo, hi).mean()
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-3, atol=1e-4)
    # derivatives are finite everywhere, also where lo == hi after rounding
    grads = jax.grad(
        lambda a, b: sum(v.sum() for v in networks.truncated_normal_stats(a, b)), argnums=(0, 1)
    )(jnp.asarray(lo32), jnp.asarray(np.float32(lo32)))
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


def _quadrature(probs, lo, width, x, a, s):
    """(log p_t(x), score) of one coordinate by numerical integration over x0."""
    kernel = stats.norm(loc=0.0, scale=s)
    p = m = 0.0
    for k, pk in enumerate(probs):
        left, right = lo + k * width, lo + (k + 1) * width
        mid = np.clip(x / a, left, right)  # where the integrand peaks
        opts = dict(points=[mid], epsabs=0, epsrel=1e-11, limit=200)
        mass = integrate.quad(lambda y: kernel.pdf(x - a * y), left, right, **opts)[0]
        first = integrate.quad(lambda y: y * kernel.pdf(x - a * y), left, right, **opts)[0]
        p, m = p + pk / width * mass, m + pk / width * first
    return np.log(p), (a * m / p - x) / s**2  # Tweedie: (a E[x0 | x] - x) / s^2


@pytest.fixture(scope="module")
def histogram():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.full(4, 0.5), size=3) * 0.98 + 0.005  # 3 coords, 4 levels
    return probs / probs.sum(1, keepdims=True)


@pytest.mark.parametrize("t", [1e-5, 1e-3, 0.05, 0.5, 1.0])
def test_base_score_and_density_match_quadrature(histogram, t):
    forward = sde.VPSDE()
    param = networks.HistogramResidual.from_probs(histogram, data_range=(-1.0, 1.0))
    a, s = (float(v) for v in forward.marginal(jnp.float32(t)))
    # points inside the range, on bin edges, and outside it
    x = np.array([[-1.2, -0.5, 0.0], [-1.0, 0.37, 0.999], [0.49, 1.0, 1.3], [-0.02, 0.51, -0.7]])
    x = x * a + 0.3 * s * np.sin(np.arange(12)).reshape(4, 3)
    x = np.clip(x, -a - 8 * s, a + 8 * s).astype(np.float32)  # quadrature underflows further out
    got_score = np.asarray(param.base_score(forward, jnp.asarray(x), t))
    got_logp = np.asarray(param.base_log_density(forward, jnp.asarray(x), t))
    ref_logp = np.zeros(len(x))
    for i, row in enumerate(x.astype(np.float64)):
        for j, xi in enumerate(row):
            lp, score = _quadrature(histogram[j], -1.0, 0.5, xi, a, s)
            ref_logp[i] += lp
            scale = max(1.0, abs(score))
            assert abs(got_score[i, j] - score) <= 2e-3 * scale, (t, xi, got_score[i, j], score)
    np.testing.assert_allclose(got_logp, ref_logp, rtol=1e-4, atol=2e-3)


def test_zero_network_likelihood_is_the_blurred_histogram_product(histogram):
    """The probability-flow log-likelihood of the base alone (exact divergence through
    the base score) equals the closed-form density of the product at t = eps."""
    forward = sde.VPSDE(beta_max=40.0)  # a(T) = 5e-5: the N(0, I) prior is exact to ~1e-4
    param = networks.HistogramResidual.from_probs(histogram, data_range=(-1.0, 1.0))
    rng = np.random.default_rng(2)
    levels = np.stack([rng.choice(4, size=6, p=p) for p in histogram], axis=1)
    x = jnp.asarray(-1.0 + 0.5 * (levels + rng.uniform(size=levels.shape)), jnp.float32)

    def score(y, t):
        return param.to_score(forward, y, t, jnp.zeros_like(y))

    eps = 1e-3
    logp, _ = samplers.log_likelihood(
        score_fn=score, sde=forward, x=x, key=jax.random.key(0), eps=eps, rtol=1e-6, atol=1e-6
    )
    expected = param.base_log_density(forward, x, eps)
    np.testing.assert_allclose(logp, expected, atol=2e-3)
    # and at small eps it is the product of the histograms themselves (bins of width 0.5)
    exact = np.log(histogram[np.arange(3), levels] / 0.5).sum(1)
    np.testing.assert_allclose(logp, exact, atol=0.05)


def test_network_output_enters_as_the_inner_parametrisation(histogram):
    forward = sde.VESDE()
    inner = networks.EDMDenoiser(sigma_data=0.5)
    param = networks.HistogramResidual.from_probs(histogram, inner=inner)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    t = jnp.linspace(0.1, 1.0, 5)
    out = jax.random.normal(jax.random.key(1), x.shape)
    np.testing.assert_allclose(
        param.to_score(forward, x, t, out),
        inner.to_score(forward, x, t, out) + param.base_score(forward, x, t),
        rtol=1e-6,
    )
    assert param.inputs(forward, x, t)[1] is not None


def test_histogram_residual_bad_arguments(histogram):
    with pytest.raises(ValueError, match="rows summing to 1"):
        networks.HistogramResidual.from_probs(histogram * 2)
    with pytest.raises(ValueError, match="positive"):
        networks.HistogramResidual.from_probs(np.array([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="data_range"):
        networks.HistogramResidual.from_probs(histogram, data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="inner"):
        networks.HistogramResidual.from_probs(histogram, inner=networks.GaussianResidual())
    with pytest.raises(ValueError, match="finite"):
        networks.HistogramResidual(jnp.full((3, 4), -jnp.inf))
    param = networks.HistogramResidual.from_probs(histogram)
    with pytest.raises(ValueError, match="histograms have 3"):
        param.base_score(sde.VPSDE(), jnp.zeros((2, 5)), 0.5)


def test_base_score_far_outside_every_bin(histogram):
    """Where every bin's mass underflows, the nearest bin's truncated-normal mean."""
    forward = sde.VPSDE()
    param = networks.HistogramResidual.from_probs(histogram, data_range=(-1.0, 1.0))
    t = 1e-3
    a, s = (float(v) for v in forward.marginal(jnp.float32(t)))
    for x, edges in [(-a - 30 * s, (-1.0, -0.5)), (a + 40 * s, (0.5, 1.0))]:
        got = param.base_score(forward, jnp.full((1, 3), x, jnp.float32), t)
        lo_z, hi_z = (x - a * edges[1]) / s, (x - a * edges[0]) / s
        _, mean = networks.truncated_normal_stats(jnp.float32(lo_z), jnp.float32(hi_z))
        np.testing.assert_allclose(got, np.full((1, 3), -float(mean) / s), rtol=1e-3)


@pytest.mark.slow  # ~40 s of eager compiles; the histogram base's score and density tests stay
def test_closed_form_derivative_matches_differentiating_the_formula(histogram):
    """The custom JVP (diagonal, (Var - 1)/s^2) against autodiff of the same formula
    and against finite differences of the quadrature score; t-derivatives go through."""
    from networks._histogram import _score_and_slope  # private: the formula without its JVP

    forward = sde.VPSDE()
    param = networks.HistogramResidual.from_probs(histogram, data_range=(-1.0, 1.0))
    x = jnp.asarray([[-0.93, -0.5, 0.2], [0.49, 0.999, -1.01], [1.3, -1.6, 0.0]], jnp.float32)
    t = jnp.asarray([1e-3, 0.05, 0.6], jnp.float32)
    a, s = forward.marginal(t)
    probe = jnp.asarray(np.random.default_rng(3).normal(size=x.shape), jnp.float32)
    _, got = jax.jvp(lambda y: param.base_score(forward, y, t), (x,), (probe,))

    def plain(y):
        return _score_and_slope(param.lo, param.width, param.log_probs, y, a, s)[0]

    _, want = jax.jvp(plain, (x,), (probe,))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-3 * float(jnp.abs(want).max()))
    # reverse mode (what a Hutchinson likelihood takes) agrees with forward mode
    _, vjp = jax.vjp(lambda y: param.base_score(forward, y, t), x)
    np.testing.assert_allclose(vjp(probe)[0], got, rtol=1e-6)
    # finite differences of the float64 quadrature score, one coordinate
    xi, ti = float(x[1, 2]), float(t[1])
    ai, si = (float(v) for v in forward.marginal(jnp.float32(ti)))
    step = 1e-4
    up = _quadrature(histogram[2], -1.0, 0.5, xi + step, ai, si)[1]
    down = _quadrature(histogram[2], -1.0, 0.5, xi - step, ai, si)[1]
    np.testing.assert_allclose(got[1, 2] / probe[1, 2], (up - down) / (2 * step), rtol=1e-3)
    # a derivative in t is that of the formula (no closed form needed there)
    d_t = jax.grad(lambda tt: param.base_score(forward, x[:1], tt).sum())(jnp.float32(0.3))
    d_t_plain = jax.grad(
        lambda tt: _score_and_slope(
            param.lo, param.width, param.log_probs, x[:1], *(v[None] for v in forward.marginal(tt))
        )[0].sum()
    )(jnp.float32(0.3))
    np.testing.assert_allclose(d_t, d_t_plain, rtol=1e-5)
