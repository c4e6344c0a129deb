"""Controllable generation against exact answers.

Truths, all computed here in float64 NumPy and independent of the sampler code:

- the exact conditional of a Gaussian mixture, ``p(x_U | x_K = y)``: again a mixture,
  with posterior weights ``r_k ~ w_k N(y; mu_kK, S_kKK)`` and the Gaussian conditional
  of each component;
- the exact law of the replacement scheme itself on a Gaussian: with Euler steps and a
  fresh draw of the known coordinates at every step, the unknown coordinates follow a
  linear Gaussian recursion (mean and covariance propagated step by step below), so
  the scheme's output distribution is known in closed form, bias included;
- for colorization, the same truths written with the test's own orthonormal colour basis
  (the library builds its basis differently; the scheme's law depends only on the grey
  direction);
- for guidance, equivalences (``w = 0`` is the conditional score, ``w = -1`` the
  unconditional one) and the class component's exact moments.
"""

import diffrax
import equinox as eqx
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

EPS = 1e-3


# ---------------------------------------------------------------------------------
# independent truths


def mixture_conditional(means, covs, weights, known, y):
    """Exact ``p(x_U | x_K = y)`` of a Gaussian mixture: ``(r, means_U, covs_U, U)``."""
    means, covs = np.asarray(means, np.float64), np.asarray(covs, np.float64)
    d = means.shape[1]
    k_idx = np.asarray(known)
    u_idx = np.setdiff1d(np.arange(d), k_idx)
    log_r, cond_means, cond_covs = [], [], []
    for mu, cov, w in zip(means, covs, weights, strict=True):
        s_kk = cov[np.ix_(k_idx, k_idx)]
        s_uk = cov[np.ix_(u_idx, k_idx)]
        gain = s_uk @ np.linalg.inv(s_kk)
        resid = y - mu[k_idx]
        _, logdet = np.linalg.slogdet(2 * np.pi * s_kk)
        log_r.append(np.log(w) - 0.5 * (resid @ np.linalg.solve(s_kk, resid) + logdet))
        cond_means.append(mu[u_idx] + gain @ resid)
        cond_covs.append(cov[np.ix_(u_idx, u_idx)] - gain @ s_uk.T)
    log_r = np.asarray(log_r)
    r = np.exp(log_r - log_r.max())
    return r / r.sum(), np.asarray(cond_means), np.asarray(cond_covs), u_idx


def replacement_law(mu, cov, known, y, forward, grid):
    """Exact law ``(mean, cov)`` of the unknown coordinates after Euler replacement
    imputation of ``N(mu, cov)`` on ``grid`` (T down to eps).

    State ``u`` (unknown), known part ``k_i = a_i y + s_i z_i`` with fresh ``z_i``.
    One Euler-Maruyama step of the reverse SDE in ``s = -t``, step ``h``:
    ``u' = u + h (-f u + g^2 S_U(u, k)) + g sqrt(h) xi`` with the Gaussian score
    ``S = -C^{-1}(x - a mu)``, ``C = a^2 cov + s^2 I``: linear in ``(u, k)``.
    """
    mu, cov = np.asarray(mu, np.float64), np.asarray(cov, np.float64)
    d = len(mu)
    k_idx = np.asarray(known)
    u_idx = np.setdiff1d(np.arange(d), k_idx)
    eye = np.eye(len(u_idx))
    mean = np.zeros(len(u_idx))
    var = forward.prior_std**2 * eye
    grid = np.asarray(grid, np.float64)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        h = t - t_next
        t32 = jnp.float32(t)
        a, s = float(forward.mean_coeff(t32)), float(forward.std(t32))
        f, g = float(forward.drift_coeff(t32)), float(forward.diffusion(t32))
        c_inv = np.linalg.inv(a * a * cov + s * s * np.eye(d))
        c_uu, c_uk = c_inv[np.ix_(u_idx, u_idx)], c_inv[np.ix_(u_idx, k_idx)]
        lin_u = (1 - h * f) * eye - h * g * g * c_uu
        lin_k = -h * g * g * c_uk
        const = h * g * g * (c_uu @ (a * mu[u_idx]) + c_uk @ (a * mu[k_idx]))
        mean = lin_u @ mean + lin_k @ (a * y) + const
        var = lin_u @ var @ lin_u.T + s * s * lin_k @ lin_k.T + g * g * h * eye
    return mean, var


def gaussian_conditional_at_eps(mu, cov, known, y, forward):
    """``p_eps(x_U | x_K(0) = y)``: the exact conditional pushed through the kernel."""
    _, m, c, _ = mixture_conditional([mu], [cov], [1.0], known, y)
    a, s = float(forward.mean_coeff(EPS)), float(forward.std(EPS))
    return a * m[0], a * a * c[0] + s * s * np.eye(len(m[0]))


def assert_moments(x, mean, cov, n_se=4.0, what=""):
    """Sample mean and covariance within ``n_se`` standard errors of ``(mean, cov)``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    err_mean = np.abs(x.mean(0) - mean)
    assert np.all(err_mean <= n_se * se_mean), (
        f"{what} mean {x.mean(0)} vs {mean}: errors / SE = {err_mean / se_mean}"
    )
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    err_cov = np.abs(np.cov(x.T) - cov)
    assert np.all(err_cov <= n_se * se_cov), (
        f"{what} cov {np.cov(x.T).ravel()} vs {cov.ravel()}: errors / SE = "
        f"{(err_cov / se_cov).ravel()}"
    )


# ---------------------------------------------------------------------------------
# inpainting

CORR_MU = np.array([0.5, -0.5, 1.0])
CORR_COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.2], [0.3, 0.2, 0.5]])


@pytest.mark.parametrize("make_sde", [sde.VPSDE, sde.VESDE], ids=["vp", "ve"])
def test_inpaint_gaussian_follows_the_exact_law_of_the_scheme(make_sde):
    # A correlated 3-D Gaussian, x_0 known. The samples must follow the scheme's exact
    # Gaussian law, step count included; that law is far from the exact conditional
    # (the replacement method's bias), which is recorded in docs/controllable.md.
    forward = make_sde()
    mix = sde.GaussianMixture(weights=[1.0], means=[CORR_MU], covariances=[CORR_COV])
    oracle = sde.MixtureOracle(mix, forward)
    n, steps, y = 4000, 50, 1.5
    x_known = jnp.zeros((n, 3)).at[:, 0].set(y)
    x, stats = samplers.sample_inpaint(
        score_fn=oracle.score,
        sde=forward,
        x_known=x_known,
        mask=jnp.array([True, False, False]),
        key=jax.random.key(3),
        steps=steps,
        eps=EPS,
    )
    assert int(stats["nfe"]) == steps
    x = np.asarray(x)
    assert np.all(x[:, 0] == np.float32(y)), "known coordinates must be kept exactly"
    grid = np.linspace(1.0, EPS, steps + 1)
    mean, cov = replacement_law(CORR_MU, CORR_COV, [0], np.array([y]), forward, grid)
    assert_moments(x[:, 1:], mean, cov, what="scheme law")
    exact_mean, _ = gaussian_conditional_at_eps(CORR_MU, CORR_COV, [0], np.array([y]), forward)
    assert np.abs(mean - exact_mean).max() > 0.05  # the method's bias is real (see docs)


def _identified_mixture():
    # 4-D: components 8 apart in the known coordinates (x0, x1), 2.8 apart in the
    # unknown ones (x2, x3), std 0.3, independent coordinates within a component.
    ang = 2 * np.pi * np.arange(4) / 4
    known = 8.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    unknown = 2.0 * np.stack([np.cos(ang + 0.5), np.sin(ang + 0.5)], 1)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    means = np.concatenate([known, unknown], 1)
    return weights, means, np.repeat(0.09 * np.eye(4)[None], 4, 0)


def test_inpaint_mixture_when_known_coordinates_identify_the_component():
    weights, means, covs = _identified_mixture()
    mix = sde.GaussianMixture(weights=weights, means=means, covariances=covs)
    forward = sde.VPSDE()
    oracle = sde.MixtureOracle(mix, forward)
    n, groups = 4000, 4
    offset = np.array([0.2, -0.1])
    ys = means[:, :2] + offset  # one observation near each component's known part
    x_known = np.zeros((n, 4), np.float32)
    x_known[:, :2] = np.repeat(ys, n // groups, axis=0)
    x, _ = samplers.sample_inpaint(
        score_fn=oracle.score,
        sde=forward,
        x_known=jnp.asarray(x_known),
        mask=jnp.array([1, 1, 0, 0]),
        key=jax.random.key(0),
        steps=200,
        eps=EPS,
    )
    x = np.asarray(x)
    np.testing.assert_array_equal(x[:, :2], x_known[:, :2])
    for c in range(groups):
        xs = x[c * n // groups : (c + 1) * n // groups, 2:]
        r, m, cv, _ = mixture_conditional(means, covs, weights, [0, 1], ys[c])
        assert r[c] > 1 - 1e-12  # the component is identified
        shares = helpers.mode_shares(xs, means[:, 2:])
        # the exact conditional N(m_c, 0.09 I) puts < 1e-6 of its mass nearer another mode
        assert shares[c] == 1.0, f"group {c}: nearest-mode shares {shares}"
        a, s = float(forward.mean_coeff(EPS)), float(forward.std(EPS))
        assert_moments(xs, a * m[c], a * a * cv[c] + s * s * np.eye(2), what=f"group {c}")


@pytest.mark.slow
def test_inpaint_ambiguous_mixture_is_biased_towards_the_prior_and_resampling_helps():
    # Two components that overlap in the known coordinate x0 (std 1, means -1 and 1) and
    # are far apart in the unknown x1 (means -3 and 3, std 0.3). Given x0 = 0.5 the exact
    # posterior weight of the second component is 0.731 (prior 0.5). Replacement
    # imputation lets x1 pick its mode while the noisy copy of x0 says little, and lands
    # near the prior: measured 0.527 (n = 10,000, 100 or 1000 steps); RePaint-style
    # resampling moves it to 0.569 (10 passes per step) and 0.591 (30 passes).
    cov = np.array([np.diag([1.0, 0.09])] * 2)
    means = np.array([[-1.0, -3.0], [1.0, 3.0]])
    mix = sde.GaussianMixture(weights=[0.5, 0.5], means=means, covariances=cov)
    forward = sde.VPSDE()
    oracle = sde.MixtureOracle(mix, forward)
    r, *_ = mixture_conditional(means, cov, [0.5, 0.5], [0], np.array([0.5]))
    n = 10_000
    common = dict(
        score_fn=oracle.score,
        sde=forward,
        x_known=jnp.full((n, 2), 0.5),
        mask=jnp.array([1, 0]),
        key=jax.random.key(0),
        steps=100,
    )
    share = {}
    for passes in (1, 10):
        x, _ = samplers.sample_inpaint(**common, resample=passes)
        share[passes] = float(np.mean(np.asarray(x)[:, 1] > 0))
    se = np.sqrt(r[1] * (1 - r[1]) / n)
    assert abs(r[1] - 0.7311) < 1e-3
    assert 0.5 < share[1] < r[1] - 30 * se, share  # biased, but uses the observation
    assert share[10] > share[1] + 5 * se, share  # resampling reduces the bias


@pytest.mark.slow
def test_resampling_removes_most_of_the_gaussian_bias():
    # The correlated Gaussian above: measured (n = 10,000, 100 steps) the unknown means
    # are (0.014, 1.199) with one pass, (0.269, 1.326) with 10; exact (0.300, 1.300).
    forward = sde.VPSDE()
    mix = sde.GaussianMixture(weights=[1.0], means=[CORR_MU], covariances=[CORR_COV])
    oracle = sde.MixtureOracle(mix, forward)
    exact_mean, _ = gaussian_conditional_at_eps(CORR_MU, CORR_COV, [0], np.array([1.5]), forward)
    errors = {}
    for passes in (1, 10):
        x, stats = samplers.sample_inpaint(
            score_fn=oracle.score,
            sde=forward,
            x_known=jnp.zeros((4000, 3)).at[:, 0].set(1.5),
            mask=jnp.array([1, 0, 0]),
            key=jax.random.key(1),
            steps=100,
            resample=passes,
        )
        assert int(stats["nfe"]) == 100 * passes
        errors[passes] = np.abs(np.asarray(x)[:, 1:].mean(0) - exact_mean).max()
    assert errors[10] < errors[1] / 3, errors


def _small_inpaint_score():
    forward = sde.VESDE()
    return sde.MixtureOracle(sde.GaussianMixture.ring(4, radius=3.0, std=0.3), forward).score


def _run_small_inpaint(solver, corrector_steps, resample, x_known, key=0, score_fn=None):
    forward = sde.VESDE()
    mask = jnp.array([[1, 0]] * 4 + [[0, 1]] * 4)
    x, stats = samplers.sample_inpaint(
        score_fn=_small_inpaint_score() if score_fn is None else score_fn,
        sde=forward,
        x_known=x_known,
        mask=mask,
        key=jax.random.key(key),
        solver=solver,
        steps=5,
        corrector_steps=corrector_steps,
        resample=resample,
        denoise=True,
    )
    assert bool(jnp.all(jnp.isfinite(x)))
    np.testing.assert_array_equal(jnp.where(mask == 1, x, 0), jnp.where(mask == 1, x_known, 0))
    return x, stats


def test_inpaint_with_corrector_resampling_and_a_levy_area_solver():
    # ShARK needs space-time Levy area; corrector, resampling and denoising all on:
    # known values kept exactly, evaluations counted (5 steps x 2 passes x (2 + 1), + 1)
    x_known = jax.random.normal(jax.random.key(5), (8, 2))
    score_fn, traces = helpers.tracing_score(_small_inpaint_score())
    x1, stats = _run_small_inpaint(diffrax.ShARK(), 1, 2, x_known, score_fn=score_fn)
    assert int(stats["nfe"]) == 5 * 2 * 3 + 1
    compiled = len(traces)
    # new observations and a new key: no recompilation
    x2, _ = _run_small_inpaint(diffrax.ShARK(), 1, 2, x_known + 1.0, key=1, score_fn=score_fn)
    assert compiled > 0 and len(traces) == compiled
    assert np.max(np.abs(x1 - x2)) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver, corrector_steps, resample, per_step",
    [(diffrax.Euler(), 1, 1, 2), (diffrax.Heun(), 0, 2, 4), (diffrax.SRA1(), 2, 1, 4)],
)
def test_inpaint_keeps_known_values_with_other_predictors(
    solver, corrector_steps, resample, per_step
):
    x_known = jax.random.normal(jax.random.key(5), (8, 2))
    _, stats = _run_small_inpaint(solver, corrector_steps, resample, x_known)
    assert int(stats["nfe"]) == 5 * per_step + 1


def test_inpaint_validates_its_inputs():
    forward = sde.VPSDE()
    oracle = sde.MixtureOracle(sde.GaussianMixture.ring(4), forward)
    ok = dict(score_fn=oracle.score, sde=forward, key=jax.random.key(0), steps=2)
    x = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="mask must broadcast"):
        samplers.sample_inpaint(**ok, x_known=x, mask=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="x_known must be a float array"):
        samplers.sample_inpaint(**ok, x_known=jnp.zeros((2,)), mask=jnp.ones((2,)))
    with pytest.raises(ValueError, match="resample must be an integer >= 1"):
        samplers.sample_inpaint(**ok, x_known=x, mask=jnp.ones((2,)), resample=0)
    with pytest.raises(ValueError, match="0/1"):
        samplers.sample_inpaint(**ok, x_known=x, mask=jnp.array([0.5, 1.0]))


def test_inpaint_corrector_object_equals_its_numbers():
    """corrector=LangevinCorrector(snr, n_steps) is snr=/corrector_steps=, as for
    sample_pc; giving both, or a corrector that is not Langevin, is refused."""
    forward = sde.VPSDE()
    oracle = sde.MixtureOracle(sde.GaussianMixture.ring(4), forward)
    ok = dict(
        score_fn=oracle.score,
        sde=forward,
        key=jax.random.key(0),
        steps=3,
        x_known=jnp.zeros((4, 2)),
        mask=jnp.array([1, 0]),
    )
    x_obj, st_obj = samplers.sample_inpaint(
        **ok, corrector=samplers.LangevinCorrector(snr=0.2, n_steps=2)
    )
    x_num, st_num = samplers.sample_inpaint(**ok, snr=0.2, corrector_steps=2)
    np.testing.assert_array_equal(np.asarray(x_obj), np.asarray(x_num))
    assert int(st_obj["nfe"]) == int(st_num["nfe"]) == 3 * 3
    x_none, st_none = samplers.sample_inpaint(**ok)
    x_zero, _ = samplers.sample_inpaint(**ok, corrector_steps=0)
    np.testing.assert_array_equal(np.asarray(x_none), np.asarray(x_zero))
    assert int(st_none["nfe"]) == 3
    with pytest.raises(ValueError, match="give either corrector= or snr="):
        samplers.sample_inpaint(**ok, corrector=samplers.LangevinCorrector(), snr=0.1)
    with pytest.raises(ValueError, match="corrector must be a samplers.AbstractCorrector"):
        samplers.sample_inpaint(**ok, corrector="langevin")

    class Still(samplers.AbstractCorrector):  # a corrector that is not Langevin
        score_evaluations = 0

        def __call__(self, score_fn, sde, x, t, h, key):
            return x

    with pytest.raises(ValueError, match="must be a samplers.LangevinCorrector or None"):
        samplers.sample_inpaint(**ok, corrector=Still())
    with pytest.raises(ValueError, match="n_steps must be an integer >= 0, got -1"):
        samplers.sample_inpaint(**ok, corrector_steps=-1)


# ---------------------------------------------------------------------------------
# colorization

# The test's own orthonormal colour basis (Helmert): grey direction first.
HELMERT = np.array(
    [
        np.ones(3) / np.sqrt(3),
        np.array([1.0, -1.0, 0.0]) / np.sqrt(2),
        np.array([1.0, 1.0, -2.0]) / np.sqrt(6),
    ]
)
PIXELS = 2  # a tiny "image": 2 x 1 pixels, 3 channels, NHWC


def _image_gaussian(correlated: bool):
    """``(mu, cov)`` of a 2-pixel RGB Gaussian on the flat NHWC layout (6-D)."""
    rng = np.random.default_rng(0)
    q = np.kron(np.eye(PIXELS), HELMERT)  # x -> (grey, c1, c2) per pixel
    a = rng.normal(size=(6, 6))
    cov_q = a @ a.T / 6 + 0.2 * np.eye(6)
    if not correlated:  # grey coordinates (0, 3) independent of the colour ones
        grey = np.isin(np.arange(6), [0, 3])
        cov_q = np.where(grey[:, None] == grey[None, :], cov_q, 0.0)
    mu = rng.normal(size=6) * 0.5
    return mu, q.T @ cov_q @ q


def _image_score(oracle):
    return lambda x, t: oracle.score(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def _colorize(mu, cov, forward, gray, n, steps, key):
    mix = sde.GaussianMixture(weights=[1.0], means=[mu], covariances=[cov])
    oracle = sde.MixtureOracle(mix, forward)
    return samplers.sample_colorize(
        score_fn=_image_score(oracle),
        sde=forward,
        gray=jnp.broadcast_to(jnp.asarray(gray, jnp.float32), (n, PIXELS, 1)),
        key=key,
        steps=steps,
        eps=EPS,
    )


def test_colour_transform_is_orthogonal_with_the_grey_direction_first():
    for luma in [(1 / 3, 1 / 3, 1 / 3), (0.299, 0.587, 0.114)]:
        m = np.asarray(samplers.colour_transform(luma), np.float64)
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(m[0], np.asarray(luma) / np.linalg.norm(luma), atol=1e-6)
    with pytest.raises(ValueError, match="luma"):
        samplers.colour_transform((0.0, 0.0, 0.0))


def test_colorize_decoupled_gaussian_matches_the_exact_conditional():
    # Grey independent of colour: the replacement method is exact here, so the output
    # must follow p(x | grey) = N(grey 1 + P mu, P cov P) per pixel, P = I - 11^T/3.
    mu, cov = _image_gaussian(correlated=False)
    forward = sde.VPSDE()
    gray = np.array([[0.7], [-0.4]])
    n = 4000
    x, _ = _colorize(mu, cov, forward, gray, n, steps=200, key=jax.random.key(2))
    assert x.shape == (n, PIXELS, 1, 3)
    np.testing.assert_allclose(np.asarray(x).mean(-1), np.broadcast_to(gray, (n, 2, 1)), atol=2e-6)
    proj = np.kron(np.eye(PIXELS), np.eye(3) - np.ones((3, 3)) / 3)
    a, s = float(forward.mean_coeff(EPS)), float(forward.std(EPS))
    mean = np.repeat(gray.ravel(), 3) + a * proj @ mu
    exact_cov = proj @ (a * a * cov + s * s * np.eye(6)) @ proj
    xs = np.asarray(x).reshape(n, 6)
    # the conditional is rank 4 (grey fixed): check the colour coordinates
    colour = np.kron(np.eye(PIXELS), HELMERT[1:])
    assert_moments(xs @ colour.T, colour @ mean, colour @ exact_cov @ colour.T, what="colour")
    np.testing.assert_allclose(xs.mean(0), mean, atol=4 * np.sqrt(exact_cov.diagonal().max() / n))


def test_colorize_correlated_gaussian_follows_the_exact_law_of_the_scheme():
    mu, cov = _image_gaussian(correlated=True)
    forward = sde.VESDE()
    gray = np.array([[0.7], [-0.4]])
    n, steps = 4000, 50
    x, _ = _colorize(mu, cov, forward, gray, n, steps=steps, key=jax.random.key(4))
    q = np.kron(np.eye(PIXELS), HELMERT)
    y = np.asarray(x).reshape(n, 6) @ q.T  # the test's basis: grey coordinates 0, 3
    np.testing.assert_allclose(y[:, [0, 3]], np.broadcast_to(np.sqrt(3) * gray.T, (n, 2)), 2e-6)
    grid = np.linspace(1.0, EPS, steps + 1)
    known_y = np.sqrt(3) * gray.ravel()
    mean, law_cov = replacement_law(q @ mu, q @ cov @ q.T, [0, 3], known_y, forward, grid)
    assert_moments(y[:, [1, 2, 4, 5]], mean, law_cov, what="colour (scheme law)")


# ---------------------------------------------------------------------------------
# classifier-free guidance


@eqx.filter_jit
def call(f, x, t):
    """``f(x, t)`` compiled: one small compile instead of many eager dispatches."""
    return f(x, t)


def _class_oracles(forward, mix):
    covs = np.asarray(mix.covariances())
    return [
        sde.MixtureOracle(
            sde.GaussianMixture(weights=[1.0], means=[mix.means[k]], covariances=[covs[k]]),
            forward,
        )
        for k in range(mix.num_components)
    ]


def test_guidance_zero_samples_the_class_and_minus_one_the_mixture():
    forward = sde.VPSDE()
    mix = sde.GaussianMixture.ring(4, radius=3.0, std=0.3, weights=[0.1, 0.2, 0.3, 0.4])
    uncond = sde.MixtureOracle(mix, forward)
    cls = 2
    cond = _class_oracles(forward, mix)[cls]
    kw = dict(sde=forward, shape=(2000, 2), key=jax.random.key(1), steps=200, eps=EPS)
    x, _ = samplers.sample_sde(
        score_fn=samplers.guided_score(cond.score, uncond.score, guidance=0.0), **kw
    )
    shares = helpers.mode_shares(x, mix.means)
    assert shares[cls] >= 0.99, shares
    a, s = float(forward.mean_coeff(EPS)), float(forward.std(EPS))
    mean = a * np.asarray(mix.means[cls])
    assert_moments(x, mean, (a * a * 0.09 + s * s) * np.eye(2), what="class 2")
    # equivalences: w = 0 is the conditional score, w = -1 (guidance_scale = 0) the
    # unconditional one
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
    t = jax.random.uniform(jax.random.key(1), (64,), minval=EPS)
    for f, g in [
        (samplers.guided_score(cond.score, uncond.score, guidance=0.0), cond.score),
        (samplers.guided_score(cond.score, uncond.score, guidance=-1.0), uncond.score),
        (samplers.guided_score(cond.score, uncond.score, guidance_scale=0.0), uncond.score),
        (samplers.guided_score(cond.score, uncond.score, guidance_scale=1.0), cond.score),
    ]:
        np.testing.assert_allclose(call(f, x, t), call(g, x, t), rtol=1e-6, atol=1e-6)


def test_labelled_guidance_equals_two_score_guidance():
    forward = sde.VESDE()
    mix = sde.GaussianMixture.ring(4, radius=3.0, std=0.3)
    uncond = sde.MixtureOracle(mix, forward)
    oracles = _class_oracles(forward, mix)
    null = 4

    def labelled(x, t, labels):
        scores = jnp.stack([o.score(x, t) for o in [*oracles, uncond]])  # [5, B, D]
        return jnp.take_along_axis(scores, labels[None, :, None], axis=0)[0]

    labels = jnp.array([0, 1, 2, 3] * 4)
    f = samplers.classifier_free_guidance(labelled, labels, null, guidance_scale=2.5)
    x = jax.random.normal(jax.random.key(0), (16, 2)) * 5
    t = jnp.full((16,), 0.3)
    direct = np.zeros((16, 2), np.float32)
    for c in range(4):
        rows = np.asarray(labels) == c
        g = samplers.guided_score(oracles[c].score, uncond.score, guidance=1.5)
        direct[rows] = call(g, x[rows], t[rows])
    np.testing.assert_allclose(call(f, x, t), direct, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="exactly one of guidance"):
        samplers.guided_score(oracles[0].score, uncond.score)
    with pytest.raises(ValueError, match="exactly one of guidance"):
        samplers.guided_score(oracles[0].score, uncond.score, guidance=1.0, guidance_scale=2.0)
    with pytest.raises(ValueError, match=">= -1"):
        samplers.guided_score(oracles[0].score, uncond.score, guidance=-2.0)
    with pytest.raises(ValueError, match="labels must be an integer"):
        samplers.classifier_free_guidance(labelled, jnp.ones((2, 2), jnp.int32), null, guidance=1)


def test_positive_guidance_concentrates_the_class():
    # Two overlapping classes N((-1, 0), 0.49 I) and N((1, 0), 0.49 I); guiding towards
    # the second. Measured (n = 20,000, 500 Euler steps, VP): w = 0, 0.5, 1, 3 give
    # mean x0 = 1.004, 1.189, 1.302, 1.533; std x0 = 0.702, 0.617, 0.584, 0.551;
    # share x0 > 0 = 0.924, 0.981, 0.995, 0.9999; x1 untouched (std 0.703).
    forward = sde.VPSDE()
    mix = sde.GaussianMixture(weights=[0.5, 0.5], means=[[-1.0, 0.0], [1.0, 0.0]], stds=0.7)
    uncond = sde.MixtureOracle(mix, forward)
    cond = _class_oracles(forward, mix)[1]
    n = 4000
    stats = {}
    cache = samplers.sample_sde.jitted._cached._cache_size
    for w in (0.0, 1.0, 3.0):
        f = samplers.guided_score(cond.score, uncond.score, guidance=w)
        x, _ = samplers.sample_sde(
            score_fn=f, sde=forward, shape=(n, 2), key=jax.random.key(0), steps=200
        )
        if w == 0.0:
            size = cache()
        assert cache() == size  # a new guidance weight does not recompile
        x = np.asarray(x)
        stats[w] = (x[:, 0].mean(), x[:, 0].std(), np.mean(x[:, 0] > 0), x[:, 1].std())
    se = 0.7 / np.sqrt(n)
    assert abs(stats[0.0][0] - 1.0) < 4 * se and abs(stats[0.0][1] - 0.7) < 4 * se / np.sqrt(2)
    means, stds, shares, perp = (np.array([stats[w][i] for w in (0.0, 1.0, 3.0)]) for i in range(4))
    assert np.all(np.diff(means) > 0.1) and np.all(np.diff(stds) < -0.02), stats
    assert np.all(np.diff(shares) > 0) and shares[-1] > 0.999, stats
    np.testing.assert_allclose(perp, 0.7, atol=4 * se / np.sqrt(2))
