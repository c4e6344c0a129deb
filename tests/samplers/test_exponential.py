"""Exponential integrators (DDIM, DPM-Solver++ 2M/3M/2S, UniPC, SDE-DPM-Solver++(2M))
against exact answers: Tweedie's denoiser, the closed-form flow of a point mass, the
exact probability-flow map of a single Gaussian (``MixtureOracle.flow``) for empirical
convergence orders, and, for the SDE solver, the exact law of its output on a Gaussian
(the scheme is affine there) for weak orders."""

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
SDES = {"vp": sde.VPSDE(), "subvp": sde.SubVPSDE(), "ve": sde.VESDE(), "rf": sde.RectifiedFlow()}
# Every solver here, by name; the evaluations per step are 1 but for 2S (2).
SOLVERS = {
    "ddim": samplers.DDIM,
    "2m": samplers.DPMSolverPP2M,
    "3m": samplers.DPMSolverPP3M,
    "3m-kdiffusion": lambda: samplers.DPMSolverPP3M(variant="kdiffusion"),
    "2s": samplers.DPMSolverPP2S,
    "unipc1": lambda: samplers.UniPC(order=1),
    "unipc2": lambda: samplers.UniPC(order=2),
    "unipc3": lambda: samplers.UniPC(order=3),
    "unipc1-bh1": lambda: samplers.UniPC(order=1, variant="bh1"),
    "unipc2-bh1": lambda: samplers.UniPC(order=2, variant="bh1"),
    "unip1": lambda: samplers.UniPC(order=1, corrector=False),
    "unip2": lambda: samplers.UniPC(order=2, corrector=False),
    "unip3": lambda: samplers.UniPC(order=3, corrector=False),
}
GAUSSIAN = helpers.correlated_gaussian()
MU = np.array([0.7, -1.2])


def _point_mass_score(forward, mu):
    """The exact score of p_t for p_0 = delta(mu): -(x - a mu) / s^2."""

    def score(x, t):
        a, s = forward.marginal(t)
        return -(x - a[:, None] * mu) / s[:, None] ** 2

    return score


# ---- stepping the solver by hand: one compile per (solver, SDE), any grid --------


@eqx.filter_jit
def _step(solver, term, t0, t1, y, state):
    y1, _, _, state, _ = solver.step(term, t0, t1, y, None, state, False)
    return y1, state


_TERMS = {}


def _term(name):
    """The term sample_ode builds for the Gaussian oracle (cached: one object, one
    compile)."""
    if name not in _TERMS:
        forward = SDES[name]
        oracle = sde.MixtureOracle(GAUSSIAN, forward)
        _TERMS[name] = diffrax.ODETerm(samplers.reverse_pf_drift(oracle.score, forward))
    return _TERMS[name]


def _stepped(solver_name, sde_name, ts, x):
    """The solver run over ``ts`` (T -> eps) in s = -t, exactly as diffeqsolve steps it."""
    solver, term = SOLVERS[solver_name]().bind_sde(SDES[sde_name]), _term(sde_name)
    s = -np.asarray(ts)
    state = solver.init(term, s[0], s[1], x, None)
    for s0, s1 in zip(s[:-1], s[1:], strict=True):
        x, state = _step(solver, term, s0, s1, x, state)
    return x


def _x_T(sde_name, n=16):
    return SDES[sde_name].prior_sample(jax.random.key(0), (n, 2))


# ---- the data prediction ---------------------------------------------------------


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t", [1e-3, 0.3, 0.9])
def test_data_prediction_is_tweedies_formula(name, t):
    """Inverting the PF field gives Tweedie's (x + s^2 score)/a, to float64 round-off,
    and so the oracle's posterior mean E[x_0 | x_t]."""
    with jax.enable_x64(True):
        forward = SDES[name]
        oracle = sde.MixtureOracle(GAUSSIAN, forward)
        x = oracle.sample(jax.random.key(1), 32, t)
        v = samplers.reverse_pf_drift(oracle.score, forward)(-jnp.float64(t), x, None)
        got = samplers.data_prediction(forward, v, x, jnp.float64(t))
        a, s = forward.marginal(jnp.float64(t))
        np.testing.assert_allclose(got, (x + s**2 * oracle.score(x, t)) / a, rtol=1e-10, atol=1e-10)
        # GAUSSIAN was built with x64 off, so its parameters are float32 (eigenvectors
        # orthogonal to ~1e-7) and its score and its denoiser agree to ~1e-7 |x| / a
        # (x ~ a + s in size; Tweedie cancels x against s^2 score), not to float64
        # round-off (test_samplers.py checks a mixture built under x64).
        np.testing.assert_allclose(got, oracle.denoiser(x, t), rtol=0, atol=1e-6 * (a + s) / a)


# ---- exactness for a point mass --------------------------------------------------


@pytest.mark.parametrize("name", SDES)
def test_ddim_one_step_is_exact_for_a_point_mass(name):
    r"""With p_0 = delta(mu), x0_hat = mu everywhere, and the exact PF flow is
    x_t = a(t) mu + (s(t)/s(T)) (x_T - a(T) mu): one DDIM step from T to eps lands on it."""
    with jax.enable_x64(True):
        forward = SDES[name]
        key = jax.random.key(2)
        x, stats = samplers.sample_ode(
            score_fn=_point_mass_score(forward, MU),
            sde=forward,
            shape=(8, 2),
            key=key,
            solver=samplers.DDIM(),
            steps=1,
            eps=EPS,
        )
        x_T = forward.prior_sample(key, (8, 2))  # the draw sample_ode makes
        (a_T, a_e), (s_T, s_e) = forward.marginal(jnp.array([forward.T, EPS]))
        exact = a_e * MU + s_e / s_T * (x_T - a_T * MU)
        assert x.dtype == jnp.float64
        np.testing.assert_allclose(x, exact, rtol=1e-12, atol=1e-12 * forward.prior_std)
        assert int(stats["nfe"]) == int(stats["num_steps"]) == 1


@pytest.mark.parametrize(
    "solver", ["2m", "3m", "3m-kdiffusion", "unipc3", pytest.param("2s", marks=pytest.mark.slow)]
)
def test_multistep_is_exact_for_a_point_mass(solver):
    """x0_hat is constant in lambda, so every backward difference vanishes and the
    multistep solvers (and 2S, whose two data predictions agree) are exact on any
    grid, too."""
    with jax.enable_x64(True):
        forward = SDES["vp"]
        key = jax.random.key(3)
        ts = samplers.karras_grid(forward, 6, EPS)
        x, stats = samplers.sample_ode(
            score_fn=_point_mass_score(forward, MU),
            sde=forward,
            shape=(8, 2),
            key=key,
            solver=SOLVERS[solver](),
            ts=ts,
        )
        x_T = forward.prior_sample(key, (8, 2))
        t_end = jnp.float64(ts[-1])  # the grid's end point
        (a_T, a_e), (s_T, s_e) = forward.marginal(jnp.stack([jnp.float64(1.0), t_end]))
        exact = a_e * MU + s_e / s_T * (x_T - a_T * MU)
        np.testing.assert_allclose(x, exact, rtol=1e-11, atol=1e-11)
        assert int(stats["nfe"]) == 6 * samplers.evaluations_per_step(SOLVERS[solver]())[0]


# ---- sample_ode runs the same steps and counts its evaluations -------------------


@pytest.mark.parametrize(
    "solver,per_step",
    [("ddim", 1), ("2m", 1), ("3m", 1), ("3m-kdiffusion", 1), ("2s", 2), ("unipc3", 1)],
)
def test_sample_ode_matches_stepping_and_counts_evaluations(solver, per_step):
    """stats['nfe'] == the evaluations a host callback counts: one per step, two for
    2S (the intermediate point); UniPC's corrector reuses the next step's evaluation
    and its last step goes uncorrected. sample_ode takes the same steps as stepping the
    solver by hand."""
    oracle = sde.MixtureOracle(GAUSSIAN, SDES["vp"])
    counted, counter = helpers.counting_score(oracle.score)
    ts = samplers.log_snr_grid(SDES["vp"], 12, EPS)
    x, stats = samplers.sample_ode(
        score_fn=counted,
        sde=SDES["vp"],
        shape=(16, 2),
        key=jax.random.key(0),
        solver=SOLVERS[solver](),
        ts=ts,
    )
    assert int(stats["num_steps"]) == 12
    assert int(stats["nfe"]) == counter.after(x) == per_step * 12
    assert samplers.evaluations_per_step(SOLVERS[solver]()) == (per_step, 0)
    np.testing.assert_allclose(x, _stepped(solver, "vp", ts, _x_T("vp")), rtol=1e-5, atol=1e-6)


# ---- empirical orders on the exact flow of a Gaussian ----------------------------

GRIDS = {
    "uniform": lambda fwd, n: samplers.uniform_grid(n, EPS, fwd.T),
    "quadratic": lambda fwd, n: samplers.quadratic_grid(n, EPS, fwd.T),
    "log_snr": lambda fwd, n: samplers.log_snr_grid(fwd, n, EPS),
    "karras": lambda fwd, n: samplers.karras_grid(fwd, n, EPS),
}


def _order(solver, name, grid, steps):
    """Least-squares slope of log(max error) against log(steps), and the errors."""
    forward = SDES[name]
    x_T = _x_T(name)
    exact = sde.MixtureOracle(GAUSSIAN, forward).flow(x_T, forward.T, EPS)
    errors = [
        float(jnp.max(jnp.abs(_stepped(solver, name, GRIDS[grid](forward, n), x_T) - exact)))
        for n in steps
    ]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors


# Global orders on the exact Gaussian flow (float32), on step ranges measured to sit
# past the pre-asymptotic regime and above the float32 floor (~1e-6): the uniform-in-t
# grid takes large lambda steps near eps, so its asymptotics set in later. Theory:
# DDIM 1, 2M and 2S 2, 3M 3; UniPC(order=p) with its corrector p + 1 (Zhao et al. 2023,
# Thm 3.1).
ORDER_CASES = [
    ("ddim", "vp", "uniform", (16, 32, 64, 128), 1),
    ("ddim", "vp", "log_snr", (16, 32, 64, 128), 1),
    ("ddim", "vp", "karras", (16, 32, 64, 128), 1),
    ("2m", "vp", "uniform", (32, 64, 128, 256), 2),
    ("2m", "vp", "log_snr", (16, 32, 64, 128), 2),
    ("2m", "vp", "karras", (16, 32, 64, 128), 2),
    ("2m", "subvp", "log_snr", (32, 64, 128, 256), 2),
    ("2m", "ve", "log_snr", (32, 64, 128, 256), 2),
    ("3m", "vp", "karras", (32, 64, 128), 3),
    ("3m", "vp", "quadratic", (32, 64, 128), 3),
    ("3m", "ve", "karras", (32, 64, 128), 3),
    # the k-diffusion variant: second order once asymptotic (measured 2.18 here, 1.99 on
    # Karras steps 64-512; 1.6-1.7 on Karras steps 32-256, still pre-asymptotic)
    ("3m-kdiffusion", "vp", "log_snr", (32, 64, 128, 256), 2),
    ("2s", "vp", "log_snr", (16, 32, 64, 128), 2),
    ("2s", "vp", "karras", (16, 32, 64, 128), 2),
    ("unipc2", "vp", "log_snr", (16, 32, 64, 128), 3),
    ("unipc2", "vp", "karras", (16, 32, 64, 128), 3),
    ("unipc3", "vp", "karras", (32, 64, 128), 4),
    ("unipc3", "vp", "quadratic", (32, 64, 128), 4),
    # RF (T = 0.999): its log-SNR range is the widest (13.8 against VP's 9.6), so the
    # multistep solvers need 32 steps to be asymptotic (measured slopes between
    # doublings from 8 steps: 2m-log_snr -0.07 1.61 1.92 1.98, unipc2-karras 0.51 2.84
    # 3.05 3.03; ddim-uniform 0.95 0.97 0.99 0.99)
    ("ddim", "rf", "uniform", (16, 32, 64, 128), 1),
    ("2m", "rf", "log_snr", (32, 64, 128), 2),
    ("unipc2", "rf", "karras", (32, 64, 128), 3),
]
SLOW_ORDER_CASES = [
    ("2s", "ve", "log_snr", (16, 32, 64, 128), 2),
    ("2s", "subvp", "karras", (16, 32, 64, 128), 2),
    ("unipc1", "vp", "log_snr", (16, 32, 64, 128), 2),
    ("unipc1", "vp", "karras", (16, 32, 64, 128), 2),
    ("unipc1-bh1", "vp", "karras", (16, 32, 64, 128), 2),
    ("unipc2", "ve", "log_snr", (16, 32, 64, 128), 3),
    ("unipc2", "vp", "quadratic", (16, 32, 64, 128), 3),
    ("unipc2-bh1", "vp", "log_snr", (16, 32, 64, 128), 3),
    ("unipc3", "ve", "karras", (32, 64, 128), 4),
    # RF, measured slopes between doublings from 8 steps: 3m-karras 3.16 3.31 3.43 3.09,
    # 2s-log_snr 1.70 1.86 1.94 1.97, unipc3-karras 2.63 4.89 3.48 4.01
    ("3m", "rf", "karras", (32, 64, 128), 3),
    ("2s", "rf", "log_snr", (16, 32, 64, 128), 2),
    ("unipc3", "rf", "karras", (32, 64, 128), 4),
]


@pytest.mark.parametrize(
    "solver,name,grid,steps,order", ORDER_CASES, ids=["-".join(c[:3]) for c in ORDER_CASES]
)
def test_global_order(solver, name, grid, steps, order):
    slope, errors = _order(solver, name, grid, steps)
    assert abs(slope - order) <= 0.3, f"slope {slope:.2f}, errors {errors}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,name,grid,steps,order",
    SLOW_ORDER_CASES,
    ids=["-".join(c[:3]) for c in SLOW_ORDER_CASES],
)
def test_global_order_more_cases(solver, name, grid, steps, order):
    slope, errors = _order(solver, name, grid, steps)
    assert abs(slope - order) <= 0.3, f"slope {slope:.2f}, errors {errors}"


def test_3m_is_at_least_third_order_on_the_log_snr_grid():
    # On a grid uniform in lambda the leading error constant is small for this flow:
    # the measured slope is ~4 before the float32 floor, never below 3.
    slope, errors = _order("3m", "vp", "log_snr", (16, 32, 64))
    assert slope >= 2.7, f"slope {slope:.2f}, errors {errors}"


def test_higher_order_pays_off_at_equal_evaluations():
    """On the log-SNR grid at 32 steps: each order gains over 5x in error."""
    forward = SDES["vp"]
    x_T = _x_T("vp")
    exact = sde.MixtureOracle(GAUSSIAN, forward).flow(x_T, 1.0, EPS)
    ts = samplers.log_snr_grid(forward, 32, EPS)
    err = {
        k: float(jnp.max(jnp.abs(_stepped(k, "vp", ts, x_T) - exact))) for k in ("ddim", "2m", "3m")
    }
    assert err["3m"] < err["2m"] / 5 and err["2m"] < err["ddim"] / 5, err


# ---- DPM-Solver++(3M): the Taylor-consistent update and k-diffusion's -------------


def _multistep_3m_reference(variant, denoiser, ts, x):
    r"""DPM-Solver++(3M) for a process with a = 1 and sigma = t (EDM's), written
    again in float64 from the update x_{i+1} = (t_{i+1}/t_i) x_i + phi_1 m_0
    + phi_2 D_1 + phi_3 D_2 in lambda = -log t, with D_2 = c (D_{1,0} - D_{1,1})/(r_0 + r_1):
    c = 2 ("taylor", second step 2M's phi_1 (m_0 + (m_0 - m_1)/(2r))) or c = 1
    ("kdiffusion", second step phi_2 (m_0 - m_1)/r)."""
    ms, lams = [], []
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        m0, lam0 = denoiser(x, t0), -np.log(t0)
        h = -np.log(t1) - lam0
        phi1 = -np.expm1(-h)
        phi2 = 1.0 - phi1 / h
        phi3 = 0.5 - phi2 / h
        x_next = t1 / t0 * x + phi1 * m0
        if len(ms) >= 2:
            r0, r1 = (lam0 - lams[-1]) / h, (lams[-1] - lams[-2]) / h
            d1_0, d1_1 = (m0 - ms[-1]) / r0, (ms[-1] - ms[-2]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (2.0 if variant == "taylor" else 1.0) * (d1_0 - d1_1) / (r0 + r1)
            x_next = x_next + phi2 * d1 + phi3 * d2
        elif ms:
            r = (lam0 - lams[-1]) / h
            if variant == "taylor":
                x_next = x_next + phi1 * (m0 - ms[-1]) / (2 * r)
            else:
                x_next = x_next + phi2 * (m0 - ms[-1]) / r
        ms.append(m0)
        lams.append(lam0)
        x = x_next
    return x


@pytest.mark.parametrize("variant", ["taylor", "kdiffusion"])
def test_3m_variants_are_their_formulas(variant):
    """On EDM's process (a = 1, sigma = t: k-diffusion's setting) and a Karras grid,
    sample_ode with DPMSolverPP3M(variant=...) equals the update written out by hand
    in float64; the default is the Taylor variant, bit for bit."""
    with jax.enable_x64(True):
        edm = sde.EDMSDE()
        mix = helpers.ring()  # built under x64: float64 parameters
        oracle = sde.MixtureOracle(mix, edm)
        ts = samplers.karras_grid(edm, 10, 2e-3)
        key, shape = jax.random.key(0), (16, 2)
        kw = dict(score_fn=oracle.score, sde=edm, shape=shape, key=key, ts=ts)
        x, _ = samplers.sample_ode(solver=samplers.DPMSolverPP3M(variant=variant), **kw)

        def denoiser(x, t):
            return np.asarray(oracle.denoiser(jnp.asarray(x), t))

        x_T = np.asarray(edm.prior_sample(key, shape))
        want = _multistep_3m_reference(variant, denoiser, np.asarray(ts), x_T)
        np.testing.assert_allclose(x, want, rtol=0, atol=1e-9)
    if variant == "taylor":  # the default, in float32 too
        oracle = sde.MixtureOracle(GAUSSIAN, SDES["vp"])
        kw = dict(score_fn=oracle.score, sde=SDES["vp"], shape=shape, key=key)
        kw["ts"] = samplers.log_snr_grid(SDES["vp"], 10, EPS)
        with_default, _ = samplers.sample_ode(solver=samplers.DPMSolverPP3M(), **kw)
        named, _ = samplers.sample_ode(solver=samplers.DPMSolverPP3M(variant="taylor"), **kw)
        np.testing.assert_array_equal(with_default, named)


def test_3m_kdiffusion_is_more_accurate_on_few_karras_steps():
    """The halved second-derivative term costs order (2 against 3) but, on this flow and
    Karras grids, not accuracy at 5-40 steps (measured errors: 0.86 vs 1.16 at 5 steps,
    1.7e-3 vs 2.9e-3 at 40); on the log-SNR grid the Taylor variant is the better one
    from 10 steps (7.7e-2 vs 5.9e-2 at 10, 2.0e-3 vs 2.5e-4 at 40)."""
    forward = SDES["vp"]
    x_T = _x_T("vp")
    exact = sde.MixtureOracle(GAUSSIAN, forward).flow(x_T, 1.0, EPS)
    for n in (5, 10, 20, 40):
        ts = samplers.karras_grid(forward, n, EPS)
        err = {
            k: float(jnp.max(jnp.abs(_stepped(k, "vp", ts, x_T) - exact)))
            for k in ("3m", "3m-kdiffusion")
        }
        assert err["3m-kdiffusion"] <= err["3m"], (n, err)
    ts = samplers.log_snr_grid(forward, 40, EPS)
    err = {
        k: float(jnp.max(jnp.abs(_stepped(k, "vp", ts, x_T) - exact)))
        for k in ("3m", "3m-kdiffusion")
    }
    assert err["3m"] < err["3m-kdiffusion"] / 5, err


# ---- refusals --------------------------------------------------------------------


def test_adaptive_steps_are_refused():
    oracle = sde.MixtureOracle(GAUSSIAN, SDES["vp"])
    with pytest.raises(ValueError, match=r"DPMSolverPP2M\(\) has no error estimate.*steps=N"):
        samplers.sample_ode(
            score_fn=oracle.score,
            sde=SDES["vp"],
            shape=(4, 2),
            key=jax.random.key(0),
            solver=samplers.DPMSolverPP2M(),
        )


def test_unbound_solver_is_refused():
    term = _term("vp")
    y0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"DDIM\(\) needs the forward SDE.*bind_sde"):
        diffrax.diffeqsolve(
            term,
            samplers.DDIM(),
            t0=-1.0,
            t1=-EPS,
            dt0=0.1,
            y0=y0,
            adjoint=diffrax.ForwardMode(),
        )
    with pytest.raises(ValueError, match="needs an sde.AbstractSDE"):
        samplers.DDIM().bind_sde("vp")


def test_binding_replaces_the_sde_and_keeps_the_solver():
    bound = samplers.DPMSolverPP3M(sde=SDES["ve"]).bind_sde(SDES["vp"])
    assert isinstance(bound, samplers.DPMSolverPP3M) and bound.sde is SDES["vp"]
    assert bound.order(None) == 3 and samplers.DDIM().order(None) == 1
    kdiff = samplers.DPMSolverPP3M(variant="kdiffusion").bind_sde(SDES["vp"])
    assert kdiff.variant == "kdiffusion" and kdiff.order(None) == 2
    bound = samplers.UniPC(order=3, variant="bh1", corrector=False).bind_sde(SDES["ve"])
    assert isinstance(bound, samplers.UniPC) and bound.sde is SDES["ve"]
    assert (bound.predictor_order, bound.variant, bound.corrector) == (3, "bh1", False)
    assert bound.order(None) == 3 and samplers.UniPC(order=3).order(None) == 4
    assert samplers.DPMSolverPP2S(r=0.3).bind_sde(SDES["vp"]).r == 0.3
    assert samplers.DPMSolverPP2S().order(None) == 2


def test_bad_solver_settings_raise():
    for kwargs, match in [
        (dict(order=4), r"order must be 1, 2 or 3, got order=4"),
        (dict(order=True), r"order must be 1, 2 or 3"),
        (dict(variant="bh3"), r"variant must be 'bh1' or 'bh2', got variant='bh3'"),
        (dict(corrector=1), r"corrector must be True or False"),
    ]:
        with pytest.raises(ValueError, match=match):
            samplers.UniPC(**kwargs)
    for r in (0.0, 1.5, -0.5):
        with pytest.raises(ValueError, match=r"r must be a number in \(0, 1\]"):
            samplers.DPMSolverPP2S(r=r)
    with pytest.raises(
        ValueError, match="variant must be 'taylor' or 'kdiffusion', got variant='k'"
    ):
        samplers.DPMSolverPP3M(variant="k")


# ---- UniPC: the predictor alone, and what the corrector changes -----------------


@pytest.mark.parametrize(
    "unip,reference", [("unip1", "ddim"), ("unip2", "2m"), ("unip3", "3m")], ids=["1", "2", "3"]
)
def test_unipc_predictor_alone_is_dpm_solver_pp(unip, reference):
    """Two derivations, one scheme: UniP-1 is DDIM, UniP-2 with B(h) = 1 - e^{-h} is
    DPM-Solver++(2M), and UniP-3 (order conditions solved exactly) is DPM-Solver++(3M),
    on a grid with unequal steps in lambda."""
    ts = samplers.karras_grid(SDES["vp"], 8, EPS)
    x_T = _x_T("vp")
    got, want = _stepped(unip, "vp", ts, x_T), _stepped(reference, "vp", ts, x_T)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_corrector_and_the_variant_change_the_result():
    ts = samplers.karras_grid(SDES["vp"], 8, EPS)
    x_T = _x_T("vp")
    unipc2, unip2 = _stepped("unipc2", "vp", ts, x_T), _stepped("unip2", "vp", ts, x_T)
    bh1 = _stepped("unipc2-bh1", "vp", ts, x_T)
    assert float(jnp.max(jnp.abs(unipc2 - unip2))) > 1e-3
    assert float(jnp.max(jnp.abs(unipc2 - bh1))) > 1e-3


# ---- SDE-DPM-Solver++(2M) --------------------------------------------------------

# A diagonal covariance: the oracle's eigenvectors are then exact, so in float64 its
# score is exact to round-off (the correlated GAUSSIAN's are orthogonal to ~1e-7).
DIAG_COV = np.diag([0.5, 0.25])
DIAG_GAUSSIAN = sde.GaussianMixture(weights=[1.0], means=[[1.0, -0.5]], covariances=[DIAG_COV])


class _GivenIncrements(diffrax.AbstractBrownianPath):
    """A "Brownian path" whose every increment is the array ``w``: stepping by hand
    with chosen noise."""

    w: jax.Array
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    @property
    def t0(self):
        return -1.0

    @property
    def t1(self):
        return 0.0

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        return self.w


_SDE_TERMS = {}


def _sde_law(score_name, score_fn, forward, solver, ts, mean_T, cov_T, max_steps=128):
    r"""The exact mean and covariance of a fixed-step SDE solver's output for
    x_T ~ N(mean_T, cov_T) when the score is affine in x: the output is then an affine
    function of x_T and of the standard normal increments z_1..z_n, so it is found by
    running the scheme on a batch: row 0 gets x_T = mean_T and no noise, rows 1-2 the
    columns of chol(cov_T), row 3 + 2i + d the unit noise e_d at step i.
    Cov = sum over rows of (row - row 0)(row - row 0)^T. The batch has a fixed size
    (``max_steps``) so that one compilation serves every grid."""
    dim, n = 2, len(ts) - 1
    rows = 1 + dim + max_steps * dim
    if score_name not in _SDE_TERMS:
        # the sampler's terms, built once per score (each step swaps in its increments,
        # so that _step compiles once)
        placeholder = _GivenIncrements(jnp.zeros((rows, dim)))
        _SDE_TERMS[score_name] = samplers.reverse_sde_terms(score_fn, forward, placeholder)
    base = _SDE_TERMS[score_name]
    x = np.tile(np.asarray(mean_T, np.float64), (rows, 1))
    x[1 : 1 + dim] += np.linalg.cholesky(cov_T).T
    x = jnp.asarray(x)
    s = -np.asarray(ts, np.float64)
    solver = solver.bind_sde(forward) if hasattr(solver, "bind_sde") else solver
    state = None
    for i, (s0, s1) in enumerate(zip(s[:-1], s[1:], strict=True)):
        z = np.zeros((rows, dim))
        z[1 + dim + i * dim + np.arange(dim), np.arange(dim)] = 1.0
        w = jnp.asarray(np.sqrt(s1 - s0) * z)
        terms = eqx.tree_at(lambda t: t.terms[1].path.w, base, w)
        if state is None:
            state = solver.init(terms, s0, s1, x, None)
        x, state = _step(solver, terms, s0, s1, x, state)
    assert n <= max_steps
    cols = x[1:] - x[0]
    return x[0], cols.T @ cols


def _exact_marginal(forward, mixture_cov, mu, t):
    a, s = forward.marginal(jnp.float64(t))
    return a * jnp.asarray(mu), a**2 * jnp.asarray(mixture_cov) + s**2 * jnp.eye(2)


def test_sde_dpmpp2m_is_exact_in_law_for_a_point_mass():
    """With p_0 = delta(mu) the data prediction is constant and the scheme integrates
    the reverse SDE exactly: from x_T ~ p_T = N(a_T mu, s_T^2 I), any grid lands on
    p_eps = N(a_eps mu, s_eps^2 I), to float64 round-off."""
    with jax.enable_x64(True):
        forward = SDES["vp"]
        ts = samplers.karras_grid(forward, 3, EPS)
        mean_T, cov_T = _exact_marginal(forward, np.zeros((2, 2)), MU, ts[0])
        mean, cov = _sde_law(
            "point-vp",
            _point_mass_score(forward, MU),
            forward,
            samplers.SDEDPMSolverPP2M(),
            ts,
            mean_T,
            cov_T,
            max_steps=3,
        )
        want_mean, want_cov = _exact_marginal(forward, np.zeros((2, 2)), MU, ts[-1])
        np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(cov, want_cov, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize(
    "solver,grid,order",
    [("sde2m", "log_snr", 2), ("sde2m", "karras", 2), ("euler", "log_snr", 1)],
    ids=["sde2m-log_snr", "sde2m-karras", "euler-log_snr"],
)
def test_sde_weak_order_on_a_gaussian(solver, grid, order):
    """The exact law of the output, started from the exact p_T: SDE-DPM-Solver++(2M)
    gets the mean exactly (the data prediction at the mean path is the constant mu) and
    the covariance with weak order 2 (measured 1.9-2.0 between 32 and 256 steps, 1.5
    below 32). Euler-Maruyama's order 1 checks the method of measurement."""
    with jax.enable_x64(True):
        forward = SDES["vp"]
        oracle = sde.MixtureOracle(DIAG_GAUSSIAN, forward)
        make = {"sde2m": samplers.SDEDPMSolverPP2M, "euler": diffrax.Euler}[solver]
        mu = np.array([1.0, -0.5])
        steps, errors = (32, 64, 128), []
        for n in steps:
            ts = GRIDS[grid](forward, n)
            mean_T, cov_T = _exact_marginal(forward, DIAG_COV, mu, ts[0])
            mean, cov = _sde_law("gauss-vp", oracle.score, forward, make(), ts, mean_T, cov_T)
            want_mean, want_cov = _exact_marginal(forward, DIAG_COV, mu, ts[-1])
            if solver == "sde2m":
                np.testing.assert_allclose(mean, want_mean, rtol=1e-12, atol=1e-12)
            errors.append(float(jnp.max(jnp.abs(cov - want_cov)) / jnp.max(jnp.diag(want_cov))))
        slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
        assert abs(slope - order) <= 0.3, f"slope {slope:.2f}, errors {errors}"


def test_sample_sde_draws_the_law_of_the_scheme():
    """Through sample_sde (its prior draw, its GridBrownianPath noise, bind_sde),
    2^17 samples at 50 log-SNR steps have the mean and covariance that the exact law of
    the scheme (from the N(0, I) prior) predicts, to 4 Monte Carlo standard errors;
    one score evaluation per step, counted at run time."""
    forward = SDES["vp"]
    oracle = sde.MixtureOracle(DIAG_GAUSSIAN, forward)
    ts = samplers.log_snr_grid(forward, 50, EPS)

    counted, counter = helpers.counting_score(oracle.score)
    n = 2**17
    x, stats = samplers.sample_sde(
        score_fn=counted,
        sde=forward,
        shape=(n, 2),
        key=jax.random.key(5),
        solver=samplers.SDEDPMSolverPP2M(),
        ts=ts,
    )
    assert int(stats["nfe"]) == counter.after(x) == int(stats["num_steps"]) == 50
    with jax.enable_x64(True):
        mean, cov = _sde_law(
            "gauss-vp",
            sde.MixtureOracle(DIAG_GAUSSIAN, forward).score,
            forward,
            samplers.SDEDPMSolverPP2M(),
            ts,
            np.zeros(2),
            np.eye(2) * forward.prior_std**2,
        )
    mean, cov = np.asarray(mean), np.asarray(cov)
    x = np.asarray(x, np.float64)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) <= 4 * se_mean), (x.mean(0), mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) <= 4 * se_cov), (np.cov(x.T), cov)


@pytest.mark.parametrize(
    "make_sde", [sde.VPSDE, pytest.param(sde.VESDE, marks=pytest.mark.slow)], ids=["vp", "ve"]
)
def test_sde_dpmpp2m_mode_weights_on_a_ring(make_sde):
    """50 steps (50 NFE) on an unequal-weight ring (modes 14 stds apart, so that the
    nearest-mode shares are the weights): every share within 4 binomial standard
    errors of its weight."""
    forward = make_sde()
    ring = helpers.ring()
    oracle = sde.MixtureOracle(ring, forward)
    n = 5000
    x, stats = samplers.sample_sde(
        score_fn=oracle.score,
        sde=forward,
        shape=(n, 2),
        key=jax.random.key(7),
        solver=samplers.SDEDPMSolverPP2M(),
        ts=samplers.log_snr_grid(forward, 50, EPS),
    )
    assert int(stats["nfe"]) == 50 and bool(jnp.all(jnp.isfinite(x)))
    shares, w = helpers.mode_shares(x, ring.means), helpers.RING_WEIGHTS
    assert np.all(np.abs(shares - w) <= 4 * np.sqrt(w * (1 - w) / n)), shares


def test_sde_solver_refusals():
    oracle = sde.MixtureOracle(GAUSSIAN, SDES["vp"])
    kw = dict(score_fn=oracle.score, sde=SDES["vp"], shape=(4, 2), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"adaptive steps need a solver with an error estimate"):
        samplers.sample_sde(solver=samplers.SDEDPMSolverPP2M(), **kw)
    with pytest.raises(ValueError, match=r"SDEDPMSolverPP2M\(\) needs the forward SDE.*sample_sde"):
        samplers.SDEDPMSolverPP2M().init(None, -1.0, -0.5, jnp.ones((4, 2)), None)
