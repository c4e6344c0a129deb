"""Truncated-normal dequantisation (i-DODE) and the dequantisation bound, against closed forms.

Independent truths: scipy.stats (truncnorm, KS tests), numerical quadrature, exact bin
probabilities of factorised densities (products of normal-CDF differences), and the
closed-form Gaussian-mixture density pushed through the VP SDE.
"""

import math

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import samplers
import sde
from experiments.data import _dequantize as dq

RANGE = (-1.0, 1.0)
N_IMG = 256
W_IMG = 2.0 / 256  # bin width of 8-bit data in [-1, 1]


def _tn(seed, x_int, n_levels, data_range, sigma):
    return dq.truncated_normal_dequantize(
        np.random.default_rng(seed), x_int, n_levels, data_range, sigma=sigma
    )


def _bin(x_int, n_levels, data_range):
    lo, hi = data_range
    w = (hi - lo) / n_levels
    k = np.asarray(x_int, np.float64)
    return lo + w * k, lo + w * (k + 1), lo + w * (k + 0.5), w


# ---- the samples --------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [1e-9 * W_IMG, 1e-3, W_IMG / 2, 10 * W_IMG, 1e9 * W_IMG])
@pytest.mark.parametrize(("n_levels", "data_range"), [(N_IMG, RANGE), (5, (0.0, 3.0))])
def test_samples_lie_in_their_bins(sigma, n_levels, data_range):
    x = np.random.default_rng(1).integers(0, n_levels, size=(500, 3, 4))
    x[0] = 0
    x[1] = n_levels - 1  # the extreme bins
    y, log_q = _tn(2, x, n_levels, data_range, sigma)
    bottom, top, _, _ = _bin(x, n_levels, data_range)
    assert y.dtype == np.float64 and y.shape == x.shape and log_q.shape == (500,)
    assert np.all((y >= bottom) & (y < top))
    np.testing.assert_array_equal(dq.from_continuous(y, n_levels, data_range), x)
    assert np.all(np.isfinite(log_q))


@pytest.mark.parametrize("ratio", [1e3, 1e8])
def test_wide_sigma_is_uniform_in_the_bin(ratio):
    x = np.random.default_rng(3).integers(0, N_IMG, size=(4000, 2))
    y, log_q = _tn(4, x, N_IMG, RANGE, ratio * W_IMG)
    bottom, _, _, w = _bin(x, N_IMG, RANGE)
    u = ((y - bottom) / w).ravel()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # ... and its density is the uniform one, 1/w per coordinate
    np.testing.assert_allclose(log_q, dq.uniform_log_q(2, N_IMG, RANGE), atol=1e-6)


def test_narrow_sigma_is_gaussian():
    sigma = W_IMG / 40  # the bin edges are 20 standard deviations out
    x = np.random.default_rng(5).integers(0, N_IMG, size=(5000, 2))
    y, _ = _tn(6, x, N_IMG, RANGE, sigma)
    z = ((y - _bin(x, N_IMG, RANGE)[2]) / sigma).ravel()
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.std() - 1.0) < 4 * math.sqrt(0.5 / n)  # sd of the sample sd ~ 1/sqrt(2n)
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("tau", [0.3, 1.3, 3.0])
def test_noise_follows_scipy_truncnorm(tau):
    sigma = W_IMG / (2 * tau)
    x = np.random.default_rng(7).integers(0, N_IMG, size=(3000, 2))
    y, log_q = _tn(8, x, N_IMG, RANGE, sigma)
    centre = _bin(x, N_IMG, RANGE)[2]
    z = ((y - centre) / sigma).ravel()
    assert stats.kstest(z, stats.truncnorm(-tau, tau).cdf).pvalue > 1e-3
    truth = stats.truncnorm.logpdf(y, -tau, tau, loc=centre, scale=sigma).sum(axis=1)
    np.testing.assert_allclose(log_q, truth, rtol=0, atol=1e-9)
    # the evaluator agrees with the sampler at the samples
    log_q_eval = dq.truncated_normal_log_q(y, x, N_IMG, RANGE, sigma=sigma)
    np.testing.assert_allclose(log_q_eval, log_q, rtol=0, atol=1e-9)


def test_same_rng_seed_same_draws():
    x = np.arange(12).reshape(3, 4)
    a, la = _tn(9, x, 16, (0.0, 1.0), 0.01)
    b, lb = _tn(9, x, 16, (0.0, 1.0), 0.01)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)


# ---- the density --------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1 / 50, 1 / 2, 5.0, 1e4])
@pytest.mark.parametrize("level", [0, 100, 255])
def test_log_q_integrates_to_one_over_the_bin(ratio, level):
    sigma = ratio * W_IMG
    bottom, top, centre, _ = _bin(level, N_IMG, RANGE)
    k = np.array([[level]])

    def density(v):
        return math.exp(dq.truncated_normal_log_q(np.array([[v]]), k, N_IMG, RANGE, sigma=sigma)[0])

    mass, err = integrate.quad(density, bottom, top, points=[centre], epsabs=1e-13, limit=200)
    assert abs(mass - 1.0) < 1e-8, (mass, err)
    # zero density outside the (half-open) bin
    for v in (np.nextafter(bottom, -np.inf), top, top + 0.5 * W_IMG):
        assert (
            dq.truncated_normal_log_q(np.array([[v]]), k, N_IMG, RANGE, sigma=sigma)[0] == -np.inf
        )


@pytest.mark.parametrize("tau", [1e-6, 0.01, 1.0, 3.0, 10.0, 60.0])
def test_expected_log_q_is_minus_the_entropy(tau):
    sigma = W_IMG / (2 * tau)
    got = dq.truncated_normal_expected_log_q(3, N_IMG, RANGE, sigma=sigma)
    if tau < 1e-3:  # scipy's truncnorm loses digits here; the limit is uniform noise
        truth = dq.uniform_log_q(3, N_IMG, RANGE)
    else:
        truth = -3 * float(stats.truncnorm.entropy(-tau, tau, scale=sigma))
    assert abs(got - truth) < 1e-9 * max(1.0, abs(truth))
    # and it is what the sampler's log_q averages to
    x = np.random.default_rng(10).integers(0, N_IMG, size=(4000, 3))
    _, log_q = _tn(11, x, N_IMG, RANGE, sigma)
    assert abs(log_q.mean() - got) < 4 * log_q.std() / math.sqrt(len(log_q)) + 1e-9


# ---- the bound, against exact bin probabilities ---------------------------------------------


def _mc_mean(values):
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


def _gauss_log_p(y, mean, std):
    return stats.norm.logpdf(y, mean, std).sum(axis=1)


def _log_norm_mass(lo_z, hi_z):
    """log(Phi(hi_z) - Phi(lo_z)), elementwise, without cancellation in either tail."""
    flip = lo_z > 0  # upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = np.where(flip, -hi_z, lo_z), np.where(flip, -lo_z, hi_z)
    log_b = special.log_ndtr(b)
    return log_b + np.log1p(-np.exp(special.log_ndtr(a) - log_b))


def _gauss_log_prob_bins(x_int, n_levels, data_range, mean, std):
    bottom, top, _, _ = _bin(x_int, n_levels, data_range)
    return _log_norm_mass((bottom - mean) / std, (top - mean) / std).sum(axis=-1)


def _draws(x_row, n):
    return np.broadcast_to(np.asarray(x_row), (n, len(x_row))).copy()


@pytest.mark.parametrize(
    ("mean", "std"), [(0.1, 0.6), (-0.4, 0.05), (0.37, 0.01)], ids=["broad", "mid", "narrow"]
)
@pytest.mark.parametrize("sigma", ["uniform", 1e-3, 0.02, 1.0])
def test_bound_is_below_the_exact_log_prob(mean, std, sigma):
    n_levels, n = 32, 4000
    x = _draws([3, 9, 16, 20, 25], n)
    log_prob = _gauss_log_prob_bins(x[0], n_levels, RANGE, mean, std)
    rng = np.random.default_rng(12)
    if sigma == "uniform":
        y = dq.dequantize(rng, x, n_levels, RANGE).astype(np.float64)
        log_q = dq.uniform_log_q(5, n_levels, RANGE)
    else:
        y, log_q = dq.truncated_normal_dequantize(rng, x, n_levels, RANGE, sigma=sigma)
    bound, se = _mc_mean(dq.dequantized_log_prob_bound(_gauss_log_p(y, mean, std), log_q))
    assert bound <= log_prob + 4 * se + 1e-9, (bound, se, log_prob)


def test_matched_truncated_normal_bound_is_exact_and_uniform_gap_is_closed_form():
    # p = N(bin centre, sigma^2) per coordinate: its posterior on the bin *is* q, so
    # log p(y) - log q(y) = log P(k) for every draw. The uniform bound falls short by
    # KL(U || q) = -log w + log(sigma sqrt(2 pi) erf(tau/sqrt2)) + tau^2/6 per coordinate.
    n_levels, n, tau = 16, 4000, 2.5
    x = _draws([0, 5, 11, 15], n)
    _, _, centre, w = _bin(x[0], n_levels, RANGE)
    sigma = w / (2 * tau)
    log_prob = _gauss_log_prob_bins(x[0], n_levels, RANGE, centre, sigma)

    y, log_q = _tn(13, x, n_levels, RANGE, sigma)
    tn = dq.dequantized_log_prob_bound(_gauss_log_p(y, centre, sigma), log_q)
    np.testing.assert_allclose(tn, log_prob, rtol=0, atol=1e-9)

    u = dq.dequantize(np.random.default_rng(14), x, n_levels, RANGE).astype(np.float64)
    uni = dq.dequantized_log_prob_bound(
        _gauss_log_p(u, centre, sigma), dq.uniform_log_q(4, n_levels, RANGE)
    )
    gap = -math.log(w) + math.log(sigma * math.sqrt(2 * math.pi) * math.erf(tau / math.sqrt(2)))
    gap += tau**2 / 6
    mean, se = _mc_mean(uni)
    assert abs((log_prob - mean) - 4 * gap) < 4 * se


def _expected_bound_1d(log_p, log_q, bottom, top):
    """E_q[log p - log q] over one bin by quadrature (the exact expected bound)."""
    mid = 0.5 * (bottom + top)
    f = lambda v: math.exp(log_q(v)) * (log_p(v) - log_q(v))  # noqa: E731
    return integrate.quad(f, bottom, top, points=[mid], epsabs=1e-12, limit=200)[0]


def _compare_dequantisers(log_p_1d, x_row, n_levels, sigma, n=4000):
    """Per dequantiser: (MC mean of the bound, its standard error, the quadrature truth),
    for a factorised model with per-coordinate log-density ``log_p_1d`` (elementwise)."""
    x = _draws(x_row, n)
    bottom, top, centre, w = _bin(np.asarray(x_row), n_levels, RANGE)
    tau = w / (2 * sigma)

    def log_p(y):
        return log_p_1d(y).sum(axis=1)

    y, log_q = _tn(16, x, n_levels, RANGE, sigma)
    u = dq.dequantize(np.random.default_rng(17), x, n_levels, RANGE).astype(np.float64)
    mc = {
        "tn": _mc_mean(dq.dequantized_log_prob_bound(log_p(y), log_q)),
        "uniform": _mc_mean(
            dq.dequantized_log_prob_bound(log_p(u), dq.uniform_log_q(len(x_row), n_levels, RANGE))
        ),
    }
    truth = {"tn": 0.0, "uniform": 0.0}
    for lo_, hi_, c in zip(bottom, top, centre, strict=True):
        tn_q = stats.truncnorm(-tau, tau, loc=c, scale=sigma).logpdf
        truth["tn"] += _expected_bound_1d(log_p_1d, tn_q, lo_, hi_)
        truth["uniform"] += _expected_bound_1d(log_p_1d, lambda v: -math.log(w), lo_, hi_)
    for name in mc:
        mean, se = mc[name]
        assert abs(mean - truth[name]) < 4 * se + 1e-6, (name, mean, se, truth[name])
    return {name: (*mc[name], truth[name]) for name in mc}


def test_truncated_normal_is_tighter_where_the_model_is_the_diffused_data():
    # p(y) = sum_j pi_j N(y; c_j, sigma^2) per coordinate: clean levels diffused to noise
    # sigma, i.e. the density of x_eps / a(eps) under the diffusion from the levels. Its
    # posterior on bin k is the own component cut to the bin (i-DODE's q) plus what the
    # neighbours leak in; uniform noise misses by about KL(U || q).
    n_levels, sigma = 8, (2.0 / 8) / 6  # tau = 3
    centres = _bin(np.arange(n_levels), n_levels, RANGE)[2]
    weights = np.random.default_rng(15).dirichlet(np.ones(n_levels))
    log_weights = np.log(weights)

    def log_p_1d(v):
        comp = stats.norm.logpdf(np.asarray(v)[..., None], centres, sigma)
        return special.logsumexp(comp + log_weights, axis=-1)

    x_row = [0, 3, 7]  # level 3 has a neighbour 38x heavier: the leakiest bin
    bottom, top, _, _ = _bin(np.asarray(x_row)[:, None], n_levels, RANGE)
    log_mass = _log_norm_mass((bottom - centres) / sigma, (top - centres) / sigma)
    log_prob = special.logsumexp(log_mass + log_weights, axis=-1).sum()

    got = _compare_dequantisers(log_p_1d, x_row, n_levels, sigma)
    (tn, tn_se, tn_truth), (uni, uni_se, uni_truth) = got["tn"], got["uniform"]
    assert tn_truth <= log_prob and uni_truth <= log_prob
    assert log_prob - tn_truth < 0.1 * (log_prob - uni_truth)  # theory: q ~ the posterior
    assert tn - uni > 20 * math.hypot(tn_se, uni_se)  # and the estimates see it


def test_uniform_is_tighter_where_the_model_is_flat_across_the_bin():
    # The converse: a broad Gaussian is nearly constant on a bin, so its posterior is ~
    # uniform and the truncated normal misses by ~KL(q || U) = 0.39 nats per coordinate.
    n_levels, mean, std = 32, 0.05, 0.8
    x_row = [10, 17, 22]
    log_prob = _gauss_log_prob_bins(np.asarray(x_row), n_levels, RANGE, mean, std)
    got = _compare_dequantisers(
        lambda v: stats.norm.logpdf(v, mean, std), x_row, n_levels, (2.0 / n_levels) / 6
    )
    (tn, tn_se, tn_truth), (uni, uni_se, uni_truth) = got["tn"], got["uniform"]
    assert tn_truth <= log_prob and uni_truth <= log_prob
    assert log_prob - uni_truth < 1e-3
    w, tau = 2.0 / n_levels, 3.0
    kl_q_u = math.log(w) - float(stats.truncnorm.entropy(-tau, tau, scale=w / (2 * tau)))
    assert abs((uni_truth - tn_truth) - 3 * kl_q_u) < 0.01
    assert uni - tn > 20 * math.hypot(tn_se, uni_se)


def test_importance_weighting_tightens_the_bound():
    n_levels, k, n = 32, 64, 300
    mean, std = 0.05, 0.8
    x_row = [10, 17, 22]
    log_prob = _gauss_log_prob_bins(np.asarray(x_row), n_levels, RANGE, mean, std)
    x = _draws(x_row, k * n)
    y, log_q = _tn(20, x, n_levels, RANGE, (2.0 / n_levels) / 6)
    log_p = _gauss_log_p(y, mean, std).reshape(k, n)
    log_q = log_q.reshape(k, n)
    one, _ = _mc_mean(dq.dequantized_log_prob_bound(log_p, log_q).ravel())
    iw, iw_se = _mc_mean(dq.dequantized_log_prob_bound(log_p, log_q, axis=0))
    assert iw <= log_prob + 4 * iw_se + 1e-9
    assert iw - one > 0.5 * (log_prob - one)  # closes more than half the gap
    # K = 1 is the plain bound
    np.testing.assert_allclose(
        dq.dequantized_log_prob_bound(log_p[:1], log_q[:1], axis=0), log_p[0] - log_q[0]
    )


# ---- bits per dimension ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_levels", "data_range"), [(256, (-1.0, 1.0)), (256, (0.0, 1.0)), (17, (2, 5))]
)
def test_uniform_bits_per_dim_match_samplers(n_levels, data_range):
    dim = 784
    log_p = np.array([-2000.0, 150.0, 3.5])
    ours = dq.dequantized_bits_per_dim(log_p, dq.uniform_log_q(dim, n_levels, data_range), dim=dim)
    theirs = samplers.bits_per_dim(
        log_p, dim=dim, n_levels=n_levels, data_range=data_range[1] - data_range[0]
    )
    np.testing.assert_allclose(ours, np.asarray(theirs, np.float64), rtol=1e-6)
    # the score_sde offsets: 7 bits for 8-bit data in [-1, 1], 8 in [0, 1]
    if n_levels == 256:
        offset = 7.0 if data_range == (-1.0, 1.0) else 8.0
        zero = dq.dequantized_bits_per_dim(0.0, dq.uniform_log_q(dim, 256, data_range), dim=dim)
        assert abs(zero - offset) < 1e-12


def test_bits_per_dim_is_minus_the_bound_in_bits():
    log_p, log_q = np.array([[1.0, -3.0], [0.5, 2.0]]), np.array([[0.0, 1.0], [2.0, -1.0]])
    bound = dq.dequantized_log_prob_bound(log_p, log_q, axis=0)
    bpd = dq.dequantized_bits_per_dim(log_p, log_q, dim=4, axis=0)
    np.testing.assert_allclose(bpd, -bound / (4 * math.log(2.0)))
    np.testing.assert_allclose(bound, special.logsumexp(log_p - log_q, axis=0) - math.log(2))


# ---- wiring to the probability-flow ODE --------------------------------------------------


def test_truncated_normal_sigma_is_s_over_a():
    vp = sde.VPSDE()
    for eps in (1e-5, 1e-3, 0.1):
        a, s = vp.marginal(eps)
        assert dq.truncated_normal_sigma(vp, eps) == pytest.approx(float(s) / float(a), rel=1e-6)
    # the library's likelihood_eps = 1e-5: sigma ~ 1e-3, a quarter of an 8-bit bin
    assert dq.truncated_normal_sigma(vp, 1e-5) == pytest.approx(math.sqrt(1e-5 * 0.1), rel=1e-3)


def test_ode_likelihood_of_the_scaled_point_gives_the_density_of_y():
    # Data: a mixture on the bin centres with small spread; VP SDE; the exact score. At
    # t = eps the marginal is sum_j pi_j N(a c_j, a^2 v + s^2); the density of y = x_eps / a
    # is then sum_j pi_j N(c_j, v + sigma^2) with sigma = s / a, whatever eps is. A large eps
    # makes a(eps) = 0.973 and the log-Jacobian D log a = -0.055 matter. beta_max = 40: a
    # negligible prior mismatch (as in test_likelihood.py).
    vp, eps, n_levels, v_std = sde.VPSDE(beta_max=40.0), 0.05, 4, 0.05
    centres = _bin(np.arange(n_levels), n_levels, RANGE)[2]
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    pair_w = np.outer(weights, weights).ravel()
    oracle = sde.MixtureOracle(sde.GaussianMixture(weights=pair_w, means=grid, stds=v_std), vp)

    sigma = dq.truncated_normal_sigma(vp, eps)
    x_int = np.array([[0, 3], [1, 2], [2, 2], [3, 0]])
    y, _ = _tn(21, x_int, n_levels, RANGE, sigma)
    x_eps, log_det = dq.to_ode_start(y, vp, eps)
    logp, _ = samplers.log_likelihood(
        score_fn=oracle.score,
        sde=vp,
        x=jnp.asarray(x_eps, jnp.float32),
        key=jax.random.key(0),
        eps=eps,
    )
    log_p_y = np.asarray(logp, np.float64) + log_det

    std_y = math.sqrt(v_std**2 + sigma**2)
    comp = stats.norm.logpdf(y[..., None], centres, std_y) + np.log(weights)
    truth = special.logsumexp(comp, axis=-1).sum(axis=1)
    assert abs(log_det) > 0.05  # a dropped Jacobian (or unscaled y) would show below
    np.testing.assert_allclose(log_p_y, truth, rtol=0, atol=2e-4)


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf"), True, [0.1, 0.2], "x"])
def test_bad_sigma_raises(sigma):
    x = np.zeros((2, 3), np.int64)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        _tn(0, x, 8, RANGE, sigma)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        dq.truncated_normal_log_q(np.zeros((2, 3)), x, 8, RANGE, sigma=sigma)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        dq.truncated_normal_expected_log_q(3, 8, RANGE, sigma=sigma)


@pytest.mark.parametrize(
    ("x_int", "n_levels", "data_range", "match"),
    [
        (np.zeros((2, 2)), 1, RANGE, "n_levels must be an integer >= 2"),
        (np.zeros((2, 2)), 8.0, RANGE, "n_levels must be an integer >= 2"),
        (np.zeros((2, 2)), 8, (1.0, -1.0), "data_range must have hi > lo"),
        (np.zeros((2, 2)), 8, 2.0, "data_range must be a pair"),
        (np.array([[0, 8]]), 8, RANGE, r"integer levels in 0\.\.7"),
        (np.array([[-1, 3]]), 8, RANGE, r"integer levels in 0\.\.7"),
        (np.array([[0.5, 3]]), 8, RANGE, "not all integers"),
        (np.array([[np.nan, 3]]), 8, RANGE, "not all integers"),
        (np.int64(3), 8, RANGE, "batch axis"),
    ],
)
def test_bad_levels_raise(x_int, n_levels, data_range, match):
    with pytest.raises(ValueError, match=match):
        _tn(0, x_int, n_levels, data_range, 0.1)


def test_other_bad_inputs_raise():
    vp = sde.VPSDE()
    with pytest.raises(TypeError, match="np.random.Generator"):
        dq.truncated_normal_dequantize(jax.random.key(0), np.zeros((1, 1), int), 8, sigma=0.1)
    with pytest.raises(ValueError, match="same shape"):
        dq.truncated_normal_log_q(np.zeros((2, 3)), np.zeros((2, 2), int), 8, sigma=0.1)
    for dim in (0, 2.5, True):
        with pytest.raises(ValueError, match="dim must be an integer >= 1"):
            dq.uniform_log_q(dim, 8, RANGE)
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        dq.dequantized_bits_per_dim(0.0, 0.0, dim=0)
    for eps in (0.0, 1.0, -1e-5, float("nan"), "a"):
        with pytest.raises(ValueError, match=r"eps must be a number in \(0, T=1.0\)"):
            dq.truncated_normal_sigma(vp, eps)
        with pytest.raises(ValueError, match=r"eps must be a number in \(0, T=1.0\)"):
            dq.to_ode_start(np.zeros((1, 2)), vp, eps)


def test_likelihood_command_with_truncated_normal_noise(tmp_path):
    """eval.dequantization=truncated_normal runs end to end on an image model of raw
    pixels, and refuses runs whose model sees transformed pixels."""
    from experiments import config as config_lib
    from experiments import evaluation, training

    small = helpers.tiny_run(2, extra={"eval.batch_size": 16})
    raw = ["data.whiten=none", "model.gaussian_base=false"]
    cfg = config_lib.load("digits", [*small, *raw, "eval.dequantization=truncated_normal"])
    run, _ = training.train(cfg, tmp_path / "raw", progress=False)
    out = evaluation.likelihood(run, n=16, progress=False)
    assert np.isfinite(out["bits_per_dim"]) and out["dequantization"].startswith("truncated")
    white = config_lib.load("digits", [*small, "eval.dequantization=truncated_normal"])
    run, _ = training.train(white, tmp_path / "white", progress=False)
    with pytest.raises(ValueError, match="needs a model of the images themselves"):
        evaluation.likelihood(run, n=16, progress=False)


def test_training_batches_on_bin_centres():
    """data.dequantize_train=false: training batches are the bin centres of exactly the
    batch's images (the i-DODE protocol: the diffusion's own noise dequantises)."""
    from experiments.config import DataConfig
    from experiments.data import batch_indices, load_digits, make_source, to_continuous

    src = make_source(DataConfig(name="digits", dequantize_train=False))
    images = load_digits("train_minus_val")[0]
    for step in (0, 5):
        idx = batch_indices(len(images), 16, 2, step)
        np.testing.assert_array_equal(
            src.train_batch(2, step, 16), to_continuous(images[idx], 17, (-1.0, 1.0))
        )
