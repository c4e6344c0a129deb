"""Samplers against exact answers: the Gaussian-mixture oracle and the exact
probability-flow map of a single Gaussian."""

import diffrax
import equinox as eqx
import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

WEIGHTS = helpers.RING_WEIGHTS
EPS = 1e-3

# The fixtures ``ring`` (four unequal-weight modes whose nearest-mode shares equal the
# weights) and ``gaussian`` (one correlated 2-D Gaussian) come from conftest.py.

SDES = {"vp": sde.VPSDE, "ve": sde.VESDE, "rf": sde.RectifiedFlow}
SAMPLERS = {
    "ode": lambda **kw: samplers.sample_ode(**kw),
    "sde": lambda **kw: samplers.sample_sde(steps=1000, **kw),
    "pc": lambda **kw: samplers.sample_pc(steps=1000, snr=0.16, **kw),
    # The few-step samplers. EDM-Heun: 15 Heun steps on its Karras grid (30 NFE). At 20
    # NFE it passes on VP (p = 0.035 at n = 20,000) and VE (p = 0.34), but on RF the MMD
    # test rejects it (p = 0.005, mode TV 0.001; the samples' spread is 19% too wide at
    # n = 5000): on any SDE the sampler is EDM's over that SDE's sigma range
    # (test_edm.py::test_heun_on_rf_is_edms_sampler), and RF's sigma(T) = T / (1 - T)
    # is 999 against VP's 152. EDMSDE from sigma_max = 80, 152 and 999 to 0.0105 at 20
    # NFE: p = 0.22, 0.10 and 0.005 (n = 5000); RectifiedFlow(t_max=0.99): p = 0.03.
    "edm": lambda **kw: samplers.sample_edm(steps=15, **kw),
    # UniPC (order 3) on 20 log-SNR steps (20 NFE). At 10 NFE on RF: mode TV 0.012 but
    # MMD p = 0.010 (VP 0.26, VE 0.48; RectifiedFlow(t_max=0.99) 0.065), the same cause.
    "unipc": lambda *, sde, eps, **kw: samplers.sample_ode(
        sde=sde, solver=samplers.UniPC(), ts=samplers.log_snr_grid(sde, 20, eps), **kw
    ),
}


def _check_against_exact(x, oracle, mixture, key):
    shares = helpers.mode_shares(x, mixture.means)
    tv = helpers.total_variation(shares, WEIGHTS)
    assert tv <= 0.025, f"mode shares {shares} vs weights {WEIGHTS}: TV {tv:.4f}"
    exact = oracle.sample(jax.random.fold_in(key, 1), 1500, EPS)
    _, p = helpers.mmd_test(x[:1500], exact, jax.random.fold_in(key, 2), 200)
    assert p > 0.01, f"MMD permutation test rejects exact samples: p={p:.3f}"


# Every SDE x sampler runs in the slow test below at n = 20,000; the default run keeps
# the VP and VE cases it had and adds RF with its adaptive ODE and its few-step UniPC.
FAST_CASES = [(p, s) for p in ("vp", "ve") for s in ("ode", "sde", "pc")]
FAST_CASES += [("rf", "ode"), ("rf", "unipc")]


@pytest.mark.parametrize("path, name", FAST_CASES, ids=["-".join(c) for c in FAST_CASES])
def test_mode_weights_and_mmd(path, name, ring):
    forward = SDES[path]()
    oracle = sde.MixtureOracle(ring, forward)
    key = jax.random.key(7)
    x, stats = SAMPLERS[name](score_fn=oracle.score, sde=forward, shape=(5000, 2), key=key, eps=EPS)
    assert x.shape == (5000, 2) and bool(jnp.all(jnp.isfinite(x)))
    assert int(stats["nfe"]) > 0
    _check_against_exact(x, oracle, ring, key)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("path", list(SDES))
def test_mode_weights_and_mmd_20k(name, path, ring):
    """The acceptance setting: n = 20,000."""
    forward = SDES[path]()
    oracle = sde.MixtureOracle(ring, forward)
    key = jax.random.key(11)
    x, _ = SAMPLERS[name](score_fn=oracle.score, sde=forward, shape=(20000, 2), key=key, eps=EPS)
    _check_against_exact(x, oracle, ring, key)


def test_pc_without_corrector_is_the_reverse_sde(ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    kw = dict(score_fn=oracle.score, sde=vp, shape=(64, 2), key=jax.random.key(3), steps=50)
    x_sde, st_sde = samplers.sample_sde(**kw)
    x_pc, st_pc = samplers.sample_pc(corrector_steps=0, **kw)
    np.testing.assert_array_equal(np.asarray(x_sde), np.asarray(x_pc))
    assert int(st_sde["nfe"]) == int(st_pc["nfe"]) == 50
    x_none, st_none = samplers.sample_pc(corrector=None, **kw)
    np.testing.assert_array_equal(np.asarray(x_sde), np.asarray(x_none))
    assert int(st_none["nfe"]) == 50
    x_pc1, st_pc1 = samplers.sample_pc(corrector_steps=1, **kw)
    assert int(st_pc1["nfe"]) == 100
    assert not np.allclose(np.asarray(x_pc1), np.asarray(x_sde))


def test_pc_corrector_object_equals_its_numbers(ring):
    """corrector=LangevinCorrector(snr, n_steps) is snr=/corrector_steps= and, with the
    default numbers, the default; giving both forms is refused."""
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    kw = dict(score_fn=oracle.score, sde=vp, shape=(64, 2), key=jax.random.key(3), steps=20)
    x_obj, st_obj = samplers.sample_pc(
        corrector=samplers.LangevinCorrector(snr=0.2, n_steps=2), **kw
    )
    x_num, st_num = samplers.sample_pc(snr=0.2, corrector_steps=2, **kw)
    np.testing.assert_array_equal(np.asarray(x_obj), np.asarray(x_num))
    assert int(st_obj["nfe"]) == int(st_num["nfe"]) == 20 * 3
    x_default, _ = samplers.sample_pc(**kw)
    x_given, _ = samplers.sample_pc(corrector=samplers.LangevinCorrector(snr=0.16, n_steps=1), **kw)
    np.testing.assert_array_equal(np.asarray(x_default), np.asarray(x_given))
    with pytest.raises(ValueError, match="give either corrector= or snr=/corrector_steps="):
        samplers.sample_pc(corrector=samplers.LangevinCorrector(), snr=0.2, **kw)
    with pytest.raises(ValueError, match="corrector must be a samplers.AbstractCorrector"):
        samplers.sample_pc(corrector="langevin", **kw)


@eqx.filter_jit
def _ode_step(solver, term, s0, s1, y):
    """One step of a stateless diffrax solver, as diffeqsolve takes it (compiled once per
    solver and term, whatever the grid)."""
    return solver.step(term, s0, s1, y, None, None, False)[0]


# Theory, on the exact flow of a Gaussian: Euler 1, Heun and Midpoint 2, except
# Midpoint on RF, which is third order there: along each eigenvector of the covariance
# the flow is x = (1 - t) mu + y with y' = (q' / 2q) y, and RF's q = s^2 + a^2 c^2 =
# t^2 + (1 - t)^2 c^2 is quadratic in t, for which the h^3 term of the midpoint rule's
# local error vanishes identically (a series expansion in h shows it; Heun's does not).
# Measured in float64 on RF: Midpoint 2.91-3.00 from 4 to 1024 steps, Heun 1.9-2.0.
ODE_ORDER_CASES = [
    ("vp", "euler", 1),
    ("vp", "heun", 2),
    ("vp", "midpoint", 2),
    ("rf", "euler", 1),
    ("rf", "heun", 2),
    ("rf", "midpoint", 3),
]


@pytest.mark.parametrize(
    "path, solver, order", ODE_ORDER_CASES, ids=[f"{p}-{s}" for p, s, _ in ODE_ORDER_CASES]
)
def test_ode_convergence_order(path, solver, order, gaussian):
    """Global error at eps against the exact flow map of a single Gaussian, on 16, 32 and
    64 uniform steps from T (beyond 64, RF's Midpoint reaches the float32 floor). The
    steps are taken by hand with the solver's own ``step`` on sample_ode's vector field
    (one compilation per case instead of one per step count), and equal sample_ode's
    at 16 steps."""
    forward = SDES[path]()
    solver = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint}[solver]()
    oracle = sde.MixtureOracle(gaussian, forward)
    key, shape = jax.random.key(3), (256, 2)
    x_T = forward.prior_sample(key, shape)  # the draw sample_ode makes
    exact = oracle.flow(x_T, forward.T, EPS)
    term = diffrax.ODETerm(samplers.reverse_pf_drift(oracle.score, forward))
    steps, errors = [16, 32, 64], []
    for n in steps:
        x = x_T
        s_grid = -jnp.linspace(forward.T, EPS, n + 1)
        for s0, s1 in zip(s_grid[:-1], s_grid[1:], strict=True):
            x = _ode_step(solver, term, s0, s1, x)
        errors.append(float(jnp.max(jnp.abs(x - exact))))
        if n == steps[0]:
            x_ode, _ = samplers.sample_ode(
                score_fn=oracle.score,
                sde=forward,
                shape=shape,
                key=key,
                solver=solver,
                steps=n,
                eps=EPS,
            )
            # (float32 round-off: RF's -1/(1 - t) is -1000 at T, cancelled by the score)
            np.testing.assert_allclose(x_ode, x, rtol=0, atol=3e-5)
    assert abs(helpers.fitted_order(errors, steps) - order) <= 0.3, errors


def test_adaptive_ode_reaches_tolerance(gaussian):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(gaussian, vp)
    key, shape = jax.random.key(4), (256, 2)
    exact = oracle.flow(vp.prior_sample(key, shape), 1.0, EPS)
    for solver in (diffrax.Tsit5(), diffrax.Dopri5()):
        x, _ = samplers.sample_ode(
            score_fn=oracle.score, sde=vp, shape=shape, key=key, solver=solver, eps=EPS
        )
        assert float(jnp.max(jnp.abs(x - exact))) < 1e-3


def test_ts_grid_equals_steps(ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    kw = dict(score_fn=oracle.score, sde=vp, shape=(32, 2), key=jax.random.key(0))
    x_steps, _ = samplers.sample_ode(solver=diffrax.Heun(), steps=20, eps=EPS, **kw)
    x_ts, st = samplers.sample_ode(solver=diffrax.Heun(), ts=jnp.linspace(1.0, EPS, 21), **kw)
    np.testing.assert_allclose(np.asarray(x_ts), np.asarray(x_steps), rtol=0, atol=1e-6)
    assert int(st["nfe"]) == 40


@pytest.mark.parametrize(
    "solver, steps",
    [
        (diffrax.Euler(), 200),
        (diffrax.Heun(), 200),
        (diffrax.ShARK(), 200),
        (diffrax.SRA1(), 200),
        (diffrax.SEA(), 400),
    ],
    ids=["euler", "heun", "shark", "sra1", "sea"],
)
def test_sde_solvers_in_reverse_time(solver, steps, gaussian):
    """Every exposed SDE solver reproduces p_eps of a Gaussian (mean and covariance).

    The reverse process runs T -> eps; diffrax 0.7.2's ShARK/SRA1/SEA are wrong for
    t0 > t1 (issue #598), which the samplers avoid by integrating in s = -t.
    """
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(gaussian, vp)
    n = 20000
    x, _ = samplers.sample_sde(
        score_fn=oracle.score,
        sde=vp,
        shape=(n, 2),
        key=jax.random.key(5),
        solver=solver,
        steps=steps,
        eps=EPS,
    )
    a, s = (float(v) for v in vp.marginal(EPS))
    cov = a**2 * np.asarray(gaussian.covariances()[0]) + s**2 * np.eye(2)
    x = np.asarray(x, np.float64)
    mean_err = (x.mean(0) - a * np.array([1.0, -0.5])) / np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(mean_err) < 5), mean_err
    rel = (np.cov(x.T) - cov) / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.max(np.abs(rel)) < 0.04, rel  # 4 standard errors of a variance at n=20k


@pytest.mark.parametrize(
    "solver",
    # SPaRK's adaptive steps on the virtual Brownian tree cost ~30 s on 2 cores
    [  # heun: 19 s, in -m slow since the default run passed 12 min
        pytest.param(diffrax.Heun(), marks=pytest.mark.slow),
        pytest.param(diffrax.SPaRK(), marks=pytest.mark.slow),
    ],
    ids=["heun", "spark"],
)
def test_adaptive_sde(solver, gaussian):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(gaussian, vp)
    n = 4000
    x, stats = samplers.sample_sde(
        score_fn=oracle.score,
        sde=vp,
        shape=(n, 2),
        key=jax.random.key(6),
        solver=solver,
        rtol=1e-2,
        atol=1e-2,
        eps=EPS,
    )
    assert int(stats["num_steps"]) > 10
    a, s = (float(v) for v in vp.marginal(EPS))
    cov = a**2 * np.asarray(gaussian.covariances()[0]) + s**2 * np.eye(2)
    rel = (np.cov(np.asarray(x, np.float64).T) - cov) / np.sqrt(
        np.outer(np.diag(cov), np.diag(cov))
    )
    assert np.max(np.abs(rel)) < 0.1, rel  # 4.5 standard errors at n=4000


def test_denoise_is_tweedie(ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    kw = dict(score_fn=oracle.score, sde=vp, shape=(64, 2), key=jax.random.key(0), steps=10)
    x, st = samplers.sample_ode(eps=0.05, **kw)
    x_den, st_den = samplers.sample_ode(eps=0.05, denoise=True, **kw)
    np.testing.assert_allclose(np.asarray(x_den), np.asarray(oracle.denoiser(x, 0.05)), atol=1e-5)
    assert int(st_den["nfe"]) == int(st["nfe"]) + 1


@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: samplers.sample_ode(**kw),
        lambda **kw: samplers.sample_ode(solver=diffrax.Heun(), rtol=1e-3, atol=1e-3, **kw),
        lambda **kw: samplers.sample_ode(solver=diffrax.Bosh3(), per_sample=True, **kw),
        lambda **kw: samplers.sample_ode(solver=diffrax.Midpoint(), steps=7, **kw),
        lambda **kw: samplers.sample_sde(steps=9, **kw),
        lambda **kw: samplers.sample_sde(solver=diffrax.ShARK(), steps=9, **kw),
        lambda **kw: samplers.sample_sde(solver=diffrax.SPaRK(), rtol=1e-2, atol=1e-2, **kw),
        lambda **kw: samplers.sample_pc(steps=9, corrector_steps=2, denoise=True, **kw),
        lambda **kw: samplers.sample_pc(solver=diffrax.ShARK(), steps=9, **kw),
        lambda **kw: samplers.sample_pc(
            steps=9, corrector=samplers.LangevinCorrector(n_steps=3), **kw
        ),
        lambda **kw: samplers.sample_pc(solver=diffrax.Heun(), steps=9, corrector=None, **kw),
        lambda score_fn, sde, shape, key: samplers.log_likelihood(
            score_fn=score_fn, sde=sde, x=jnp.ones(shape), key=key
        ),
        lambda score_fn, sde, shape, key: samplers.log_likelihood(
            score_fn=score_fn,
            sde=sde,
            x=jnp.ones(shape),
            key=key,
            divergence="hutchinson",
            n_probes=3,
            solver=diffrax.Dopri5(),
        ),
    ],
    ids=[
        "ode-tsit5-adaptive",
        "ode-heun-adaptive",
        "ode-bosh3-per-sample",
        "ode-midpoint-fixed",
        "sde-euler",
        "sde-shark",
        "sde-spark-adaptive",
        "pc-denoise",
        "pc-shark",
        "pc-corrector-object",
        "pc-heun-no-corrector",
        "likelihood-exact",
        "likelihood-hutchinson",
    ],
)
def test_nfe_counts_actual_score_evaluations(call, ring):
    """stats['nfe'] equals the evaluations counted by a host callback at run time."""
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    counted, counter = helpers.counting_score(oracle.score)
    out, stats = call(score_fn=counted, sde=vp, shape=(6, 2), key=jax.random.key(1))
    assert int(stats["nfe"]) == counter.after(out)


@pytest.mark.slow  # 16 s; default run past 12 min
def test_second_key_compiles_nothing(ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    score_fn, traces = helpers.tracing_score(oracle.score)
    for fn in (samplers.sample_ode, samplers.sample_sde, samplers.sample_pc):
        kw = {} if fn is samplers.sample_ode else {"steps": 20}
        fn(score_fn=score_fn, sde=vp, shape=(8, 2), key=jax.random.key(0), **kw)
        n = len(traces)
        fn(score_fn=score_fn, sde=vp, shape=(8, 2), key=jax.random.key(1), **kw)
        assert len(traces) == n, f"{fn.__name__} retraced for a new key"
    x = jnp.ones((4, 2))
    samplers.log_likelihood(score_fn=score_fn, sde=vp, x=x, key=jax.random.key(0))
    n = len(traces)
    samplers.log_likelihood(score_fn=score_fn, sde=vp, x=x + 1, key=jax.random.key(1))
    assert len(traces) == n


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps=0"),
        (dict(steps=2.5), "steps=2.5"),
        (dict(steps=10, ts=jnp.linspace(1, 0.01, 5)), "both"),
        (dict(eps=0.0), "eps=0.0"),
        (dict(eps=1.5), "eps=1.5"),
        (dict(rtol=-1e-3), "rtol=-0.001"),
        (dict(ts=jnp.ones((2, 2))), "shape"),
    ],
)
def test_bad_input_raises(kwargs, match, ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    with pytest.raises(ValueError, match=match):
        samplers.sample_ode(
            score_fn=oracle.score, sde=vp, shape=(4, 2), key=jax.random.key(0), **kwargs
        )


def test_bad_grid_and_solver_raise(ring):
    vp = sde.VPSDE()
    oracle = sde.MixtureOracle(ring, vp)
    kw = dict(score_fn=oracle.score, sde=vp, shape=(4, 2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="Euler"):
        samplers.sample_sde(solver=diffrax.Euler(), **kw)  # adaptive needs an error estimate
    with pytest.raises(Exception, match="strictly monotone"):
        samplers.sample_ode(ts=jnp.array([1.0, 0.5, 0.7, 0.01]), **kw)
    with pytest.raises(ValueError, match="snr=-1"):
        samplers.sample_pc(snr=-1.0, steps=5, **kw)


def test_grid_brownian_path_increments():
    """Each grid step's increment is N(0, dt) (Levy area N(0, dt/12)), independent across
    steps, and the same step always returns the same draw."""
    from scipy import stats

    grid = jnp.array([-1.0, -0.7, -0.2, -0.05, -1e-3])
    path = samplers.GridBrownianPath((4000,), jax.random.key(0), grid, diffrax.SpaceTimeLevyArea)
    draws = []
    for i in range(4):
        t0, t1 = grid[i], grid[i + 1]
        out = path.evaluate(t0, t1, use_levy=True)
        np.testing.assert_array_equal(out.W, path.evaluate(t0, t1))  # deterministic
        dt = float(t1 - t0)
        assert stats.kstest(np.asarray(out.W) / np.sqrt(dt), "norm").pvalue > 1e-3
        assert stats.kstest(np.asarray(out.H) / np.sqrt(dt / 12), "norm").pvalue > 1e-3
        draws.append(np.asarray(out.W) / np.sqrt(dt))
    corr = np.corrcoef(np.stack(draws))
    assert np.max(np.abs(corr - np.eye(4))) < 4 / np.sqrt(4000)  # independent steps


@pytest.mark.slow  # ~20 s: every sampler recompiled in float64
def test_float64_end_to_end():
    """Under x64 the time grid, the Brownian increments and a mixture built there are
    float64: sample_ode (Heun) and sample_sde (Euler-Maruyama) on a float64 grid that
    float32 cannot hold equal the same schemes stepped by hand in float64, and the
    16-D oracle's denoiser equals Tweedie's (x + s^2 score)/a, to float64 round-off.
    (With the grid cast to float32 the samplers moved by 4e-7 to 5e-6; with float32
    mixture parameters denoiser and Tweedie disagreed by up to 6e-6.)"""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        means = rng.normal(size=(5, 16))
        mix = sde.GaussianMixture(weights=[0.1, 0.15, 0.2, 0.25, 0.3], means=means, stds=0.7)
        assert mix.means.dtype == mix.eigvecs.dtype == jnp.float64
        vp = sde.VPSDE()
        oracle = sde.MixtureOracle(mix, vp)

        t = jnp.linspace(0.05, 0.95, 64)
        x = oracle.sample(jax.random.key(0), 64, t)
        a, s = (v[:, None] for v in vp.marginal(t))
        tweedie = (x + s**2 * oracle.score(x, t)) / a
        np.testing.assert_allclose(oracle.denoiser(x, t), tweedie, rtol=0, atol=1e-11 / a.min())

        ts = np.geomspace(1.0, EPS, 8)  # 7 steps, not float32 numbers
        key, shape = jax.random.key(1), (32, 16)
        drift = samplers.reverse_pf_drift(oracle.score, vp)
        s_grid = -jnp.asarray(ts)

        x_ode, _ = samplers.sample_ode(
            score_fn=oracle.score, sde=vp, shape=shape, key=key, solver=diffrax.Heun(), ts=ts
        )
        y = vp.prior_sample(key, shape)  # the draw sample_ode makes
        for s0, s1 in zip(s_grid[:-1], s_grid[1:], strict=True):
            k1 = drift(s0, y, None)
            k2 = drift(s1, y + (s1 - s0) * k1, None)
            y = y + (s1 - s0) * (0.5 * k1 + 0.5 * k2)
        assert x_ode.dtype == jnp.float64
        np.testing.assert_allclose(x_ode, y, rtol=0, atol=1e-12)

        x_sde, _ = samplers.sample_sde(score_fn=oracle.score, sde=vp, shape=shape, key=key, ts=ts)
        prior_key, path_key, _ = jax.random.split(key, 3)  # sample_sde's key split
        path = samplers.GridBrownianPath(shape, path_key, s_grid)
        terms = samplers.reverse_sde_terms(oracle.score, vp, path)
        y = vp.prior_sample(prior_key, shape)
        for s0, s1 in zip(s_grid[:-1], s_grid[1:], strict=True):
            dw = path.evaluate(s0, s1)
            assert dw.dtype == jnp.float64
            y = y + terms.terms[0].vf(s0, y, None) * (s1 - s0) + vp.diffusion(-s0) * dw
        assert x_sde.dtype == jnp.float64
        np.testing.assert_allclose(x_sde, y, rtol=0, atol=1e-12)
