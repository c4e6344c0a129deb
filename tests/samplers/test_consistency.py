"""Consistency functions, multistep consistency sampling, the teacher's ODE step, and the
CD / ECT / PD objectives, against the exact probability-flow map of Gaussian data
(affine and known in closed form: ``sde.MixtureOracle.flow``)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import networks
import samplers
import sde

EPS = 1e-3
VP = sde.VPSDE(beta_min=0.1, beta_max=20.0)
GAUSS = sde.GaussianMixture(weights=[1.0], means=[[0.5, -1.0]], stds=0.3)
ORACLE = sde.MixtureOracle(GAUSS, VP)


def exact_flow(x, t_from, t_to):
    """The exact probability-flow map per example (times of shape [B])."""
    return jax.vmap(lambda xi, a, b: ORACLE.flow(xi[None], a, b)[0])(x, t_from, t_to)


def exact_consistency(x, t):
    return exact_flow(x, t, jnp.full_like(t, EPS))


@pytest.mark.parametrize(
    "param",
    [networks.NoisePrediction(), networks.VelocityPrediction(), networks.EDMDenoiser()],
    ids=["noise", "velocity", "edm"],
)
def test_boundary_condition_is_exact_for_any_weights(param):
    model = networks.MLPScoreNet(2, hidden=16, depth=2, rngs=nnx.Rngs(3))
    score = networks.ScoreFunction.from_module(model, VP, param)
    f = networks.ConsistencyFunction(score, VP, eps=EPS)
    x = 3.0 * jax.random.normal(jax.random.key(1), (16, 2))
    assert np.array_equal(np.asarray(f(x, jnp.full(16, EPS))), np.asarray(x))
    # away from the boundary the network matters
    assert not np.allclose(f(x, jnp.full(16, 0.5)), x, atol=1e-3)


def test_one_step_with_the_exact_consistency_function_is_the_flow_map():
    key = jax.random.key(0)
    x, stats = samplers.sample_consistency(
        consistency_fn=exact_consistency, sde=VP, shape=(512, 2), key=key, steps=1, eps=EPS
    )
    x_T = VP.prior_sample(jax.random.split(key)[0], (512, 2))
    np.testing.assert_allclose(x, ORACLE.flow(x_T, 1.0, EPS), atol=2e-5)
    assert int(stats["nfe"]) == 1 and bool(stats["finite"])


@pytest.mark.parametrize("steps", [2, 4])
def test_multistep_samples_follow_the_eps_marginal(steps):
    x, stats = samplers.sample_consistency(
        consistency_fn=exact_consistency, sde=VP, shape=(20000, 2), key=jax.random.key(5),
        steps=steps, eps=EPS,
    )  # fmt: skip
    a, s = VP.marginal(EPS)
    std = float(np.sqrt(a**2 * 0.3**2 + s**2))
    # 20,000 draws: mean to ~5 standard errors, std to ~2%
    np.testing.assert_allclose(x.mean(0), a * np.array([0.5, -1.0]), atol=5 * std / 141)
    np.testing.assert_allclose(x.std(0), std, rtol=0.02)
    assert int(stats["nfe"]) == steps


TRACES = []


def counting_score(x, t):
    TRACES.append(1)  # runs once per trace
    return ORACLE.score(x, t)


def test_sampler_arguments_and_no_recompilation():
    with pytest.raises(ValueError, match="exactly one of"):
        samplers.sample_consistency(sde=VP, shape=(4, 2), key=jax.random.key(0))
    kw = dict(score_fn=counting_score, sde=VP, shape=(8, 2), ts=jnp.array([1.0, 0.3, EPS]))
    x1, _ = samplers.sample_consistency(key=jax.random.key(0), **kw)
    n = len(TRACES)
    x2, _ = samplers.sample_consistency(key=jax.random.key(1), **kw)
    assert len(TRACES) == n and float(jnp.abs(x1 - x2).max()) > 1e-3


@pytest.mark.parametrize("solver", [diffrax.Heun(), samplers.DDIM()], ids=["heun", "ddim"])
def test_teacher_step_is_one_step_of_sample_ode(solver):
    """pf_ode_step with per-example times equals sample_ode's single step."""
    x = VP.prior_sample(jax.random.key(2), (4, 2))
    step = samplers.pf_ode_step(ORACLE.score, VP, solver)
    t0, t1 = jnp.array([1.0, 0.8, 0.5, 0.2]), jnp.array([0.7, 0.5, 0.1, 0.05])
    ours = step(x, t0, t1)
    for i in range(4):
        ref = _one_step(solver, x[i : i + 1], float(t0[i]), float(t1[i]))
        np.testing.assert_allclose(ours[i], ref[0], rtol=1e-5, atol=1e-6)


def _one_step(solver, x, t0, t1):
    """One step of ``solver`` from t0 to t1 written with sample_ode's pieces."""
    term = diffrax.ODETerm(samplers.reverse_pf_drift(ORACLE.score, VP))
    s = solver.bind_sde(VP) if hasattr(solver, "bind_sde") else solver
    state = s.init(term, -t0, -t1, x, None)
    return s.step(term, -t0, -t1, x, None, state, made_jump=False)[0]


def test_cd_loss_is_zero_for_the_exact_pair_and_falls_with_the_teachers_steps():
    x0 = GAUSS.sample(jax.random.key(3), 512)
    key = jax.random.key(4)
    ts = samplers.karras_grid(VP, 17, EPS)[::-1]
    exact = sde.consistency_distillation_loss(
        exact_consistency, exact_flow, VP, x0, key, ts=ts, distance_kind="l2"
    )
    assert float(exact.max()) < 1e-10
    heun = samplers.pf_ode_step(ORACLE.score, VP, diffrax.Heun())
    losses = [
        float(
            sde.consistency_distillation_loss(
                exact_consistency,
                heun,
                VP,
                x0,
                key,
                ts=samplers.karras_grid(VP, n, EPS)[::-1],
                distance_kind="l2",
            ).mean()
        )  # fmt: skip
        for n in (3, 17, 79)
    ]
    # Heun's local error is O(h^3): each refinement divides the loss (a squared error) a lot
    assert losses[0] > 100 * losses[1] > 100 * 100 * losses[2]


def test_ect_pairs_follow_the_curriculum():
    kw = dict(total_steps=800, eps=EPS, stages=8, q=4.0, k=8.0, b=1.0)
    t, r, sig_t, sig_r = sde.ect_pair(VP, jax.random.key(0), 256, 0, **kw)
    a_min, s_min = VP.marginal(EPS)
    np.testing.assert_allclose(sig_r, s_min / a_min, rtol=1e-6)  # stage 0: denoising
    np.testing.assert_allclose(r, EPS)
    t, r, sig_t, sig_r = sde.ect_pair(VP, jax.random.key(0), 256, 250, **kw)  # stage 3
    want = np.maximum(s_min / a_min, sig_t - sig_t * 4.0**-3 * (1 + 8 * jax.nn.sigmoid(-sig_t)))
    np.testing.assert_allclose(sig_r, want, rtol=1e-6)
    a, s = VP.marginal(r)
    np.testing.assert_allclose(s / a, sig_r, rtol=2e-3)  # r is the time of sigma_r
    assert bool(jnp.all(r <= t))


def test_pd_student_converges_to_the_teachers_two_step_ddim_map():
    """A one-step student (data prediction affine in x at t = T, as the optimum is for
    Gaussian data) trained by PD's loss reproduces two exact-teacher DDIM steps."""
    ts = samplers.log_snr_grid(VP, 2, EPS)

    def teacher_x0(x, t):
        return ORACLE.denoiser(x, t)

    def student(params):
        return lambda x, t: params["w"] * x + params["b"]

    def loss(params, key):
        x0 = GAUSS.sample(key, 256)
        return sde.progressive_distillation_loss(
            student(params), teacher_x0, VP, x0, key, ts=ts
        ).mean()

    params = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    opt = optax.adam(3e-2)
    state = opt.init(params)

    @jax.jit
    def update(params, state, key):
        grads = jax.grad(loss)(params, key)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    for i in range(600):
        params, state = update(params, state, jax.random.key(i))
    x_T = VP.prior_sample(jax.random.key(9), (256, 2))
    two, _ = samplers.sample_ode(
        score_fn=ORACLE.score, sde=VP, shape=(256, 2), key=jax.random.key(9),
        solver=samplers.DDIM(), ts=ts,
    )  # fmt: skip
    T = jnp.full(256, 1.0)
    one = sde.ddim_step(VP, x_T, student(params)(x_T, T), T, jnp.full(256, EPS))
    assert float(jnp.abs(one - two).max()) < 0.01 * float(jnp.abs(two).mean())


def _linear_student(params, x, t):
    """A score affine in x with time-dependent coefficients (a small MLP of log sigma):
    the family the exact Gaussian score belongs to."""
    a, s = VP.marginal(t)
    h = jnp.tanh(jnp.log(s / a)[:, None] * params["w1"] + params["b1"])
    w, b = jnp.split(h @ params["w2"] + params["b2"], 2, axis=-1)
    return -(x - b) / (a[:, None] ** 2 * jnp.exp(w) + s[:, None] ** 2)


def _distil_gaussian(n_points: int, steps: int, weighting: str = "uniform"):
    """CD from Heun steps of the exact score; the student's 1-step map's RMS error
    against the exact flow map from T, before and after training."""
    gauss = sde.GaussianMixture(weights=[1.0], means=[[0.5]], stds=0.3)
    oracle = sde.MixtureOracle(gauss, VP)
    teacher = samplers.pf_ode_step(oracle.score, VP, diffrax.Heun())
    ts = samplers.karras_grid(VP, n_points - 1, EPS)[::-1]
    k = jax.random.split(jax.random.key(0), 2)
    params = {
        "w1": jax.random.normal(k[0], (1, 16)), "b1": jnp.zeros(16),
        "w2": 0.1 * jax.random.normal(k[1], (16, 2)), "b2": jnp.zeros(2),
    }  # fmt: skip

    def f(params):
        return networks.consistency_function(
            lambda x, t: _linear_student(params, x, t), VP, EPS, sigma_data=0.3
        )

    def loss(params, key):
        x0 = gauss.sample(key, 256)
        return sde.consistency_distillation_loss(
            f(params),
            teacher,
            VP,
            x0,
            jax.random.fold_in(key, 1),
            ts=ts,
            distance_kind="l2",
            weighting=weighting,
        ).mean()

    opt = optax.adam(optax.cosine_decay_schedule(1e-2, steps, 0.01))
    state = opt.init(params)

    @jax.jit
    def update(params, state, key):
        updates, state = opt.update(jax.grad(loss)(params, key), state)
        return optax.apply_updates(params, updates), state

    x_T = VP.prior_sample(jax.random.key(9), (2048, 1))
    T = jnp.ones(2048)
    exact = oracle.flow(x_T, 1.0, EPS)

    def error(params):
        return float(jnp.sqrt(jnp.mean((f(params)(x_T, T) - exact) ** 2)))

    before = error(params)
    for i in range(steps):
        params, state = update(params, state, jax.random.key(i))
    return before, error(params)


@pytest.mark.slow  # ~35 s: three distillations
def test_cd_with_the_exact_teacher_converges_to_the_exact_flow_map():
    """Gaussian data: the distilled 1-step map's error against the closed-form flow map
    falls with training, and is smaller with a finer teacher grid (Heun's error)."""
    before, coarse = _distil_gaussian(3, 1500)
    _, fine = _distil_gaussian(18, 1500)
    assert coarse < 0.5 * before and fine < 0.5 * coarse, (before, coarse, fine)
    # iCT's weighting of the chain's small-noise links: 4x closer at the same steps
    _, weighted = _distil_gaussian(18, 1500, weighting="ict")
    assert weighted < 0.5 * fine, (fine, weighted)


@pytest.mark.parametrize(
    "forward", [VP, sde.VESDE(sigma_min=0.01, sigma_max=50.0)], ids=["vp", "ve"]
)
def test_output_scale_is_each_parametrisations_slope_against_edms(forward):
    """d x0_hat / d out over EDM's c_out, against the closed forms: noise prediction
    x0_hat = (x - s eps)/a has slope sigma, so sqrt(sigma^2 + sd^2)/sd; data prediction
    slope 1, so 1/c_out; EDM's own network 1."""
    t = jnp.array([EPS, 0.1, 0.5, 1.0])
    a, s = forward.marginal(t)
    sigma, sd = s / a, 0.5
    c_out = sigma * sd / jnp.sqrt(sigma**2 + sd**2)
    expect = {
        networks.NoisePrediction(): jnp.sqrt(sigma**2 + sd**2) / sd,
        networks.DataPrediction(): 1 / c_out,
        networks.EDMDenoiser(sigma_data=sd): jnp.ones_like(t),
    }
    for param, want in expect.items():
        got = networks.output_scale(forward, param, sd)(t)
        np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=type(param).__name__)


def test_pf_ode_step_maps_labels_with_their_examples():
    """A class-conditional teacher's step: each row moves under its own label's score,
    as the same step of that label alone."""

    def score(x, t, labels):
        return -(x - labels[:, None].astype(x.dtype))

    x = jax.random.normal(jax.random.key(0), (6, 2))
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    t_from, t_to = jnp.full(6, 0.6), jnp.full(6, 0.5)
    got = samplers.pf_ode_step(score, VP, diffrax.Heun())(x, t_from, t_to, labels)
    for c in range(3):
        alone = samplers.pf_ode_step(
            lambda y, t, c=c: score(y, t, jnp.full(y.shape[:1], c)), VP, diffrax.Heun()
        )(x, t_from, t_to)
        rows = np.asarray(labels) == c
        np.testing.assert_allclose(got[rows], alone[rows], rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[0], got[1])
