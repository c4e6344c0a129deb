"""Exponential integrators (DDIM, DPM-Solver++) against exact answers: Tweedie's
denoiser, the closed-form flow of a point mass, and the exact probability-flow map of
a single Gaussian (``MixtureOracle.flow``) for empirical convergence orders."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde
from samplers._common import reverse_pf_drift
from samplers._exponential import data_prediction

EPS = 1e-3
SDES = {"vp": sde.VPSDE(), "subvp": sde.SubVPSDE(), "ve": sde.VESDE()}
SOLVERS = {"ddim": samplers.DDIM, "2m": samplers.DPMSolverPP2M, "3m": samplers.DPMSolverPP3M}
GAUSSIAN = sde.GaussianMixture(
    weights=[1.0], means=[[1.0, -0.5]], covariances=[[[0.5, 0.2], [0.2, 0.3]]]
)
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
        _TERMS[name] = diffrax.ODETerm(reverse_pf_drift(oracle.score, forward))
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
        v = reverse_pf_drift(oracle.score, forward)(-jnp.float64(t), x, None)
        got = data_prediction(forward, v, x, jnp.float64(t))
        a, s = forward.marginal(jnp.float64(t))
        np.testing.assert_allclose(got, (x + s**2 * oracle.score(x, t)) / a, rtol=1e-10, atol=1e-10)
        # The oracle keeps its parameters in float32 (eigenvectors orthogonal to ~1e-7),
        # so its score and its denoiser agree to ~1e-7 |x| / a (x ~ a + s in size;
        # Tweedie cancels x against s^2 score), not to float64 round-off.
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
        (a_T, a_e), (s_T, s_e) = forward.marginal(jnp.array([1.0, EPS]))
        exact = a_e * MU + s_e / s_T * (x_T - a_T * MU)
        assert x.dtype == jnp.float64
        np.testing.assert_allclose(x, exact, rtol=1e-12, atol=1e-12 * forward.prior_std)
        assert int(stats["nfe"]) == int(stats["num_steps"]) == 1


@pytest.mark.parametrize("solver", ["2m", "3m"])
def test_multistep_is_exact_for_a_point_mass(solver):
    """x0_hat is constant in lambda, so every backward difference vanishes and the
    multistep solvers are exact on any grid, too."""
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
        t_end = jnp.float64(ts[-1])  # the float32 grid's end point
        (a_T, a_e), (s_T, s_e) = forward.marginal(jnp.stack([jnp.float64(1.0), t_end]))
        exact = a_e * MU + s_e / s_T * (x_T - a_T * MU)
        np.testing.assert_allclose(x, exact, rtol=1e-11, atol=1e-11)
        assert int(stats["nfe"]) == 6


# ---- sample_ode runs the same steps, one score evaluation each -------------------


class _Counter:
    evaluations = 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_ode_matches_stepping_and_counts_evaluations(solver):
    oracle = sde.MixtureOracle(GAUSSIAN, SDES["vp"])

    def counted(x, t):
        jax.debug.callback(lambda: setattr(_Counter, "evaluations", _Counter.evaluations + 1))
        return oracle.score(x, t)

    ts = samplers.log_snr_grid(SDES["vp"], 12, EPS)
    _Counter.evaluations = 0
    x, stats = samplers.sample_ode(
        score_fn=counted,
        sde=SDES["vp"],
        shape=(16, 2),
        key=jax.random.key(0),
        solver=SOLVERS[solver](),
        ts=ts,
    )
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(stats["nfe"]) == _Counter.evaluations == int(stats["num_steps"]) == 12
    np.testing.assert_allclose(x, _stepped(solver, "vp", ts, _x_T("vp")), rtol=1e-5, atol=1e-6)
    assert samplers.evaluations_per_step(SOLVERS[solver]()) == (1, 0)


# ---- empirical orders on the exact flow of a Gaussian ----------------------------

GRIDS = {
    "uniform": lambda fwd, n: samplers.uniform_grid(n, EPS),
    "quadratic": lambda fwd, n: samplers.quadratic_grid(n, EPS),
    "log_snr": lambda fwd, n: samplers.log_snr_grid(fwd, n, EPS),
    "karras": lambda fwd, n: samplers.karras_grid(fwd, n, EPS),
}


def _order(solver, name, grid, steps):
    """Least-squares slope of log(max error) against log(steps), and the errors."""
    forward = SDES[name]
    x_T = _x_T(name)
    exact = sde.MixtureOracle(GAUSSIAN, forward).flow(x_T, 1.0, EPS)
    errors = [
        float(jnp.max(jnp.abs(_stepped(solver, name, GRIDS[grid](forward, n), x_T) - exact)))
        for n in steps
    ]
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors


# Step ranges measured to sit past the pre-asymptotic regime and above the float32
# floor (~1e-6): the uniform-in-t grid takes large lambda steps near eps, so its
# asymptotics set in later.
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
]


@pytest.mark.parametrize(
    "solver,name,grid,steps,order", ORDER_CASES, ids=["-".join(c[:3]) for c in ORDER_CASES]
)
def test_global_order(solver, name, grid, steps, order):
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
    err = {k: float(jnp.max(jnp.abs(_stepped(k, "vp", ts, x_T) - exact))) for k in SOLVERS}
    assert err["3m"] < err["2m"] / 5 and err["2m"] < err["ddim"] / 5, err


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
