"""Step grids against their definitions, with the log-SNR written out independently in
float64 NumPy (closed forms of docs/maths.md §1-2, not the library's ``log_snr``)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

EPS = 1e-3


def _log_a(forward, t):
    t = np.asarray(t, dtype=np.float64)
    if isinstance(forward, sde.VESDE):
        return np.zeros_like(t)
    d = forward.beta_max - forward.beta_min
    return -0.25 * t**2 * d - 0.5 * t * forward.beta_min


def _log_snr(forward, t):
    """lambda = log a - log s in float64, from the closed-form schedules."""
    t = np.asarray(t, dtype=np.float64)
    la = _log_a(forward, t)
    if isinstance(forward, sde.VESDE):
        sigma = forward.sigma_min * (forward.sigma_max / forward.sigma_min) ** t
        return -np.log(sigma)
    if isinstance(forward, sde.SubVPSDE):
        return la - np.log(-np.expm1(2 * la))
    return la - 0.5 * np.log(-np.expm1(2 * la))


SDES = {"vp": sde.VPSDE(), "subvp": sde.SubVPSDE(), "ve": sde.VESDE()}
GRIDS = {
    "uniform": lambda fwd, n, eps, T: samplers.uniform_grid(n, eps, T),
    "quadratic": lambda fwd, n, eps, T: samplers.quadratic_grid(n, eps, T),
    "log_snr": lambda fwd, n, eps, T: samplers.log_snr_grid(fwd, n, eps, T),
    "karras": lambda fwd, n, eps, T: samplers.karras_grid(fwd, n, eps, T),
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("n", [1, 2, 37])
@pytest.mark.parametrize("eps,T", [(EPS, 1.0), (1e-5, 0.8)])
def test_shape_ends_and_monotone(grid, name, n, eps, T):
    ts = GRIDS[grid](SDES[name], n, eps, T)
    assert ts.shape == (n + 1,) and ts.dtype == jnp.float32
    assert ts[0] == np.float32(T) and ts[-1] == np.float32(eps)
    assert np.all(np.diff(np.asarray(ts)) < 0), ts


@pytest.mark.parametrize("n", [1, 10, 200])
def test_uniform_and_quadratic_definitions(n):
    u = np.linspace(0.0, 1.0, n + 1)
    np.testing.assert_allclose(samplers.uniform_grid(n, EPS), 1.0 + u * (EPS - 1.0), rtol=1e-6)
    root = 1.0 + u * (np.sqrt(EPS) - 1.0)
    ts = np.asarray(samplers.quadratic_grid(n, EPS), dtype=np.float64)
    np.testing.assert_allclose(ts, root**2, rtol=2e-6)
    # uniform in sqrt(t): constant differences, steps shrinking towards eps
    np.testing.assert_allclose(np.diff(np.sqrt(ts)), (np.sqrt(EPS) - 1.0) / n, rtol=1e-3)


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("n", [4, 50])
def test_log_snr_grid_has_constant_lambda_steps(name, n):
    forward = SDES[name]
    lam = _log_snr(forward, np.asarray(samplers.log_snr_grid(forward, n, EPS)))
    h = (_log_snr(forward, EPS) - _log_snr(forward, 1.0)) / n
    assert h > 0
    np.testing.assert_allclose(np.diff(lam), h, rtol=1e-4, atol=1e-5)


def test_log_snr_grid_is_uniform_for_ve():
    # lambda = -log sigma(t) is affine in t for VE
    ve = sde.VESDE(sigma_min=0.02, sigma_max=80.0)
    np.testing.assert_allclose(
        samplers.log_snr_grid(ve, 16, EPS), samplers.uniform_grid(16, EPS), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("rho", [1.0, 3.0, 7.0])
def test_karras_grid_is_uniform_in_sigma_to_the_one_over_rho(name, rho):
    forward, n = SDES[name], 18
    ts = np.asarray(samplers.karras_grid(forward, n, EPS, rho=rho))
    sigma = np.exp(-_log_snr(forward, ts))  # sigma = s / a
    root = sigma ** (1.0 / rho)
    root_max, root_min = np.exp(-_log_snr(forward, np.array([1.0, EPS])) / rho)
    np.testing.assert_allclose(
        root, root_max + np.linspace(0, 1, n + 1) * (root_min - root_max), rtol=1e-4
    )


def test_karras_grid_tends_to_log_snr_grid_for_large_rho():
    vp = SDES["vp"]
    lam_k = _log_snr(vp, np.asarray(samplers.karras_grid(vp, 12, EPS, rho=1e4)))
    lam_l = _log_snr(vp, np.asarray(samplers.log_snr_grid(vp, 12, EPS)))
    np.testing.assert_allclose(lam_k, lam_l, atol=5e-3)


def test_grid_under_jit_with_traced_eps():
    vp = SDES["vp"]
    f = jax.jit(lambda eps: samplers.log_snr_grid(vp, 8, eps))
    np.testing.assert_allclose(f(EPS), samplers.log_snr_grid(vp, 8, EPS), rtol=1e-6)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: samplers.uniform_grid(0), "n=0"),
        (lambda: samplers.uniform_grid(2.0), "n=2.0"),
        (lambda: samplers.quadratic_grid(True), "n=True"),
        (lambda: samplers.uniform_grid(4, eps=0.0), "eps=0.0"),
        (lambda: samplers.quadratic_grid(4, eps=1.0), "eps=1.0"),
        (lambda: samplers.uniform_grid(4, eps=0.5, T=0.4), "eps=0.5"),
        (lambda: samplers.log_snr_grid(SDES["vp"], 4, T=1.5), "T=1.5"),
        (lambda: samplers.karras_grid(SDES["ve"], 4, rho=0.0), "rho=0.0"),
        (lambda: samplers.karras_grid(SDES["ve"], -3), "n=-3"),
    ],
)
def test_bad_arguments_name_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _tracking_error(oracle, forward, solver, ts, key, n):
    """RMS distance per coordinate between ``solver`` on ``ts`` and the exact
    probability-flow solution (Tsit5, 1e-7) from the same prior draws."""
    common = dict(score_fn=oracle.score, sde=forward, shape=(n, 2), key=key, eps=EPS)
    x, stats = samplers.sample_ode(**common, solver=solver, ts=ts)
    x_ref, _ = samplers.sample_ode(**common, solver=diffrax.Tsit5(), rtol=1e-7, atol=1e-7)
    return float(jnp.sqrt(jnp.mean((x - x_ref) ** 2))), int(stats["nfe"])


def test_optimize_grid_is_a_grid_and_beats_its_start_on_held_out_draws():
    # 2-D, two unequal modes: the fit is on key 0, the check on key 1.
    vp = sde.VPSDE()
    mix = sde.GaussianMixture(
        weights=np.array([0.7, 0.3]), means=np.array([[2.0, 0.0], [-2.0, 1.0]]), stds=0.5
    )
    oracle = sde.MixtureOracle(mix, vp)
    solver, n = samplers.DPMSolverPP2M(), 4
    ts = samplers.optimize_grid(
        oracle.score,
        vp,
        solver,
        n,
        key=jax.random.key(0),
        shape=(64, 2),
        warm_draws=None,
        maxfev=60,
    )
    assert ts.shape == (n + 1,) and ts.dtype == jnp.float32
    assert ts[0] == np.float32(vp.T) and ts[-1] == np.float32(EPS)
    assert np.all(np.diff(np.asarray(ts)) < 0), ts
    start = samplers.log_snr_grid(vp, n, EPS)
    for key, n_draws in [(jax.random.key(0), 64), (jax.random.key(1), 64)]:
        tuned, nfe = _tracking_error(oracle, vp, solver, ts, key, n_draws)
        base, _ = _tracking_error(oracle, vp, solver, start, key, n_draws)
        assert nfe == n and tuned <= base, (tuned, base)


def test_optimize_grid_rejects_bad_arguments():
    vp = sde.VPSDE()
    kw = dict(key=jax.random.key(0), shape=(8, 2))
    with pytest.raises(ValueError, match="warm_draws"):
        samplers.optimize_grid(None, vp, None, 3, warm_draws=0, **kw)
    with pytest.raises(ValueError, match="maxfev"):
        samplers.optimize_grid(None, vp, None, 3, maxfev=0, **kw)
    with pytest.raises(ValueError, match="init"):
        samplers.optimize_grid(None, vp, None, 3, init=jnp.ones(3), **kw)
