"""Networks and parametrisations: shapes, what is trained, dropout modes, the
parametrisations against the exact Gaussian oracle, and ScoreFunction in a sampler."""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats
from flax import nnx

import networks
import samplers
import sde

KEY = jax.random.key(0)
SDES = {
    "vp": sde.VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": sde.SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ve": sde.VESDE(sigma_min=0.01, sigma_max=50.0),
}


def tiny_mlp(dropout=0.0, embedding="fourier", seed=0, cls=networks.MLPScoreNet):
    return cls(
        2,
        hidden=16,
        depth=2,
        embed_dim=8,
        embedding=embedding,
        dropout=dropout,
        rngs=nnx.Rngs(seed),
    )


def randomise_zero_kernels(model, seed=1):
    """Output layers (and the U-Net's second convolution per block) start at zero; give
    them random weights so that outputs depend on every input."""
    rng = np.random.default_rng(seed)  # numpy: no per-shape XLA compile
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and var.ndim >= 2 and not np.any(var[...]):
            var[...] = jnp.asarray(0.3 * rng.standard_normal(var.shape), dtype=var.dtype)


APPLY = nnx.jit(lambda model, x, cond: model(x, cond))  # one compile per architecture


# ---- shapes ------------------------------------------------------------------


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_mlp_shape_and_conditioning(embedding):
    model = tiny_mlp(embedding=embedding)
    x = jax.random.normal(KEY, (5, 2))
    out0 = model(x, jnp.full((5,), 0.3))
    assert out0.shape == (5, 2)
    np.testing.assert_array_equal(out0, 0.0)  # zero-initialised output layer
    randomise_zero_kernels(model)
    a, b = model(x, jnp.full((5,), 0.3)), model(x, jnp.full((5,), 0.7))
    assert a.shape == (5, 2) and np.all(np.isfinite(a))
    assert np.max(np.abs(a - b)) > 1e-3  # the condition reaches the output
    np.testing.assert_allclose(model(x, 0.3), a, rtol=1e-6)  # a scalar cond broadcasts


def test_unet_shape_and_skip_structure():
    model = networks.SmallUNet(
        1, channels=(8, 16), num_res_blocks=1, embed_dim=8, num_groups=4, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(KEY, (3, 8, 8, 1))
    out = APPLY(model, x, jnp.array([0.1, 0.5, 0.9]))
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, 0.0)  # zero-initialised output convolution
    randomise_zero_kernels(model)
    a = APPLY(model, x, jnp.array([0.1, 0.5, 0.9]))
    b = APPLY(model, x, jnp.array([0.2, 0.5, 0.9]))
    assert a.shape == x.shape and np.all(np.isfinite(a))
    assert np.max(np.abs(a[0] - b[0])) > 1e-4  # sample 0 sees its own condition ...
    np.testing.assert_allclose(a[1:], b[1:], rtol=1e-5, atol=1e-6)  # ... and no other's
    with pytest.raises(ValueError, match="divisible"):
        model(jnp.zeros((1, 7, 8, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match="NHWC"):
        model(jnp.zeros((1, 8, 8, 3)), jnp.zeros(1))


def test_unet_three_levels_non_square_shapes():
    """Shape inference only (no compile): three levels, two blocks per level, 8x12."""

    def build_and_apply(x, cond):
        model = networks.SmallUNet(
            2,
            channels=(4, 8, 8),
            num_res_blocks=2,
            embed_dim=8,
            embedding="sinusoidal",
            num_groups=4,
            rngs=nnx.Rngs(1),
        )
        return model(x, cond)

    out = nnx.eval_shape(build_and_apply, jnp.ones((2, 8, 12, 2)), jnp.array([0.2, 0.4]))
    assert out.shape == (2, 8, 12, 2)


@pytest.mark.parametrize("mode, fan", [("fan_in", 3 * 3 * 32), ("fan_avg", 3 * 3 * 48)])
def test_initialiser_is_variance_scaling_uniform(mode, fan):
    """Kernels [kh, kw, in, out]: U(-L, L) with L = sqrt(3 / fan), fan as in jax/flax."""
    from networks._layers import variance_scaling_uniform  # private: no public name

    w = np.asarray(variance_scaling_uniform(1.0, mode)(jax.random.key(2), (3, 3, 32, 64)))
    assert w.shape == (3, 3, 32, 64)
    limit = math.sqrt(3.0 / fan)
    assert scipy.stats.kstest(w.ravel(), "uniform", args=(-limit, 2 * limit)).pvalue > 1e-3


# ---- embeddings --------------------------------------------------------------


def test_fourier_frequencies_are_not_trained():
    model = tiny_mlp()
    params = nnx.state(model, nnx.Param)
    freqs = nnx.state(model, networks.FourierFrequencies)
    assert len(jax.tree.leaves(freqs)) == 1
    assert not any("frequencies" in str(p) for p, _ in nnx.to_flat_state(params))
    freqs_before = model.embed.fourier.frequencies[...]
    dense_before = model.embed.dense0.kernel[...]
    opt = nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param)
    t = jnp.linspace(0.1, 0.9, 8)
    grads = nnx.grad(lambda m: jnp.sum(m.embed(t) ** 2))(model)
    assert not any("frequencies" in str(p) for p, _ in nnx.to_flat_state(grads))
    opt.update(model, grads)
    np.testing.assert_array_equal(model.embed.fourier.frequencies[...], freqs_before)
    assert np.max(np.abs(model.embed.dense0.kernel[...] - dense_before)) > 0  # trained


def test_fourier_projection_closed_form():
    proj = networks.GaussianFourierProjection(4096, scale=16.0, rngs=nnx.Rngs(3))
    w = np.asarray(proj.frequencies[...])
    # frequencies ~ N(0, 16^2)
    assert scipy.stats.kstest(w / 16.0, "norm").pvalue > 1e-3
    c = jnp.array([0.0, 0.25, -0.7])
    e = np.asarray(proj(c))
    assert e.shape == (3, 4096)
    np.testing.assert_allclose(e[:, :2048] ** 2 + e[:, 2048:] ** 2, 1.0, atol=1e-5)
    np.testing.assert_allclose(e[0], np.r_[np.zeros(2048), np.ones(2048)], atol=1e-6)
    # sin(2 pi c w) for c = 0.25: a quarter period of each frequency
    np.testing.assert_allclose(e[1, :2048], np.sin(0.5 * np.pi * w), atol=2e-4)


def test_sinusoidal_embedding_closed_form():
    c = jnp.array([0.0, 3.0, 500.0])
    e = np.asarray(networks.sinusoidal_embedding(c, 16, max_positions=10000))
    assert e.shape == (3, 16)
    np.testing.assert_allclose(e[:, 0], np.sin([0.0, 3.0, 500.0]), atol=1e-5)  # omega_0 = 1
    np.testing.assert_allclose(e[:, 8], np.cos([0.0, 3.0, 500.0]), atol=1e-5)
    np.testing.assert_allclose(e[:, 7], np.sin(np.array([0.0, 3.0, 500.0]) / 1e4), atol=1e-6)
    odd = networks.sinusoidal_embedding(c, 17)
    assert odd.shape == (3, 17)
    np.testing.assert_array_equal(odd[:, -1], 0.0)


# ---- dropout -----------------------------------------------------------------


def test_dropout_train_vs_eval_and_snapshot_leaves_model_alone():
    model = tiny_mlp(dropout=0.5)
    randomise_zero_kernels(model)
    x, t = jax.random.normal(KEY, (4, 2)), jnp.full((4,), 0.5)
    assert np.max(np.abs(model(x, t) - model(x, t))) > 1e-4  # train mode: fresh masks
    f = networks.ScoreFunction.from_module(model, SDES["vp"], networks.NoisePrediction())
    assert model.dropout.deterministic is False  # from_module did not switch the model
    np.testing.assert_array_equal(f(x, t), f(x, t))
    model.eval()
    np.testing.assert_array_equal(model(x, t), model(x, t))
    live = networks.score_fn(model, SDES["vp"], networks.NoisePrediction())
    np.testing.assert_allclose(f(x, t), live(x, t), rtol=1e-6)


def test_live_score_fn_advances_dropout_rng_under_jit():
    model = tiny_mlp(dropout=0.5)
    randomise_zero_kernels(model)
    x, t = jax.random.normal(KEY, (4, 2)), jnp.full((4,), 0.5)
    param = networks.NoisePrediction()

    @nnx.jit
    def loss_and_grad(model):
        def loss(model):
            return jnp.mean(networks.score_fn(model, SDES["vp"], param)(x, t) ** 2)

        return nnx.value_and_grad(loss)(model)

    (l1, g1), (l2, _) = loss_and_grad(model), loss_and_grad(model)
    assert abs(float(l1) - float(l2)) > 1e-6  # different dropout masks on each step
    assert float(jnp.max(jnp.abs(g1["out"]["kernel"][...]))) > 0


# ---- parametrisations against the exact oracle --------------------------------

MU = np.array([0.7, -0.4])
SIGMA = np.array([[0.5, 0.2], [0.2, 0.3]])
MIX = sde.GaussianMixture(weights=[1.0], means=[MU], covariances=[SIGMA])
TS = jnp.array([0.02, 0.1, 0.3, 0.6, 1.0])


def _gaussian_posterior(x, a, s):
    """Closed forms in float64 for x0 ~ N(MU, SIGMA), x_t = a x0 + s z, C = a^2 SIGMA + s^2 I:
    E[z | x_t] = s C^-1 (x - a MU), E[x0 | x_t] = MU + a SIGMA C^-1 (x - a MU)."""
    x, a, s = (np.asarray(v, dtype=np.float64) for v in (x, a, s))
    eps, den = [], []
    for xi, ai, si in zip(x, a, s, strict=True):
        r = np.linalg.solve(ai**2 * SIGMA + si**2 * np.eye(2), xi - ai * MU)
        eps.append(si * r)
        den.append(MU + ai * SIGMA @ r)
    return np.array(eps), np.array(den)


def _oracle_setup(name):
    s = SDES[name]
    oracle = sde.MixtureOracle(MIX, s)
    x = oracle.sample(jax.random.key(1), 5, t=TS)  # one point from p_t per time
    a, std = s.marginal(TS)
    eps, den = _gaussian_posterior(x, a, std)
    return s, oracle, x, a[:, None], std[:, None], eps, den


def _close(got, want):
    """Agreement to 1e-4 relative to each row's largest entry (scores reach ~1/s)."""
    got, want = np.asarray(got), np.asarray(want)
    err = np.max(np.abs(got - want), axis=-1) / np.max(np.abs(want), axis=-1)
    assert got.shape == want.shape and np.all(err < 1e-4), err


@pytest.mark.parametrize("name", list(SDES))
def test_noise_prediction_matches_oracle(name):
    s, oracle, x, a, std, eps_true, _ = _oracle_setup(name)
    param = networks.NoisePrediction()
    x_in, cond = param.inputs(s, x, TS)
    np.testing.assert_array_equal(x_in, x)
    np.testing.assert_array_equal(cond, TS)
    out = jnp.asarray(eps_true, dtype=jnp.float32)
    _close(param.to_score(s, x, TS, out), oracle.score(x, TS))


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("scale_by_std", [True, False])
def test_direct_score_matches_oracle(name, scale_by_std):
    s, oracle, x, a, std, eps_true, _ = _oracle_setup(name)
    score64 = -eps_true / np.asarray(std, np.float64)  # E[score target] = -E[z | x_t] / s
    out = -eps_true if scale_by_std else score64
    param = networks.DirectScore(scale_by_std=scale_by_std)
    _close(param.to_score(s, x, TS, jnp.asarray(out, jnp.float32)), oracle.score(x, TS))


@pytest.mark.parametrize("name", list(SDES))
def test_edm_denoiser_matches_oracle(name):
    s, oracle, x, a, std, _, d_true = _oracle_setup(name)
    param = networks.EDMDenoiser(sigma_data=0.5)
    sigma = np.asarray(std / a, np.float64)
    c_skip = 0.25 / (sigma**2 + 0.25)  # Karras et al. 2022, table 1, in float64
    c_out = sigma * 0.5 / np.sqrt(sigma**2 + 0.25)
    x_tilde = np.asarray(x, np.float64) / np.asarray(a, np.float64)
    f_star = (d_true - c_skip * x_tilde) / c_out  # D(F*) = E[x0 | x_t], no float32 rounding
    f_star = jnp.asarray(f_star, jnp.float32)
    _close(param.denoiser(s, x, TS, f_star), d_true)
    _close(param.to_score(s, x, TS, f_star), oracle.score(x, TS))
    x_in, cond = param.inputs(s, x, TS)
    np.testing.assert_allclose(x_in, x / a / jnp.sqrt(sigma**2 + 0.25), rtol=1e-5)
    np.testing.assert_allclose(cond, np.log(sigma[:, 0]) / 4, rtol=1e-5, atol=1e-6)


def test_edm_coefficient_identities():
    """Karras et al. 2022, appendix B.6: with Var[x0] = sigma_data^2 the network input
    and the effective training target both have unit variance."""
    sd = 0.5
    param = networks.EDMDenoiser(sigma_data=sd)
    sigma = jnp.logspace(-3, 2, 11)
    c_skip, c_out, c_in, _ = param.coefficients(sigma)
    var_x_tilde = sd**2 + sigma**2  # x_tilde = x0 + sigma z
    np.testing.assert_allclose(c_in**2 * var_x_tilde, 1.0, rtol=1e-5)
    var_target = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    np.testing.assert_allclose(var_target, 1.0, rtol=1e-4)
    # the same by Monte Carlo on data with std sigma_data
    rng = np.random.default_rng(5)
    x0 = sd * rng.standard_normal((20000, 11))
    x_tilde = x0 + np.asarray(sigma) * rng.standard_normal(x0.shape)
    np.testing.assert_allclose(jnp.var(c_in * x_tilde, axis=0), 1.0, rtol=0.05)
    np.testing.assert_allclose(jnp.var((x0 - c_skip * x_tilde) / c_out, axis=0), 1.0, rtol=0.05)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_to_score_turns_dsm_into_each_regression_loss(name):
    """w |s score + z|^2 is |F - z|^2 (noise prediction, w = 1), |F + z|^2 (direct
    score, w = 1) and |F - F*|^2 (EDM, w = (sigma^2 + sigma_d^2) / sigma_d^2), for any
    network output F."""
    s = SDES[name]
    k0, kz, kf = jax.random.split(jax.random.key(7), 3)
    x0, z, out = (jax.random.normal(k, (5, 2)) for k in (k0, kz, kf))
    x_t = s.perturb(x0, TS, z)
    a, std = (v[:, None] for v in s.marginal(TS))

    def weighted(param, w=1.0):
        score = param.to_score(s, x_t, TS, out)
        return w * jnp.sum((std * score + z) ** 2, -1)

    np.testing.assert_allclose(
        weighted(networks.NoisePrediction()), jnp.sum((out - z) ** 2, -1), rtol=1e-4
    )
    np.testing.assert_allclose(
        weighted(networks.DirectScore()), jnp.sum((out + z) ** 2, -1), rtol=1e-4
    )
    edm = networks.EDMDenoiser(0.5)
    sigma = (std / a)[:, 0]
    c_skip, c_out, _, _ = edm.coefficients(std / a)
    f_target = (x0 - c_skip * x_t / a) / c_out
    np.testing.assert_allclose(
        weighted(edm, (sigma**2 + 0.25) / 0.25), jnp.sum((out - f_target) ** 2, -1), rtol=1e-4
    )


# ---- ScoreFunction in a jitted sampler -----------------------------------------

TRACES = []


class CountingMLP(networks.MLPScoreNet):
    def __call__(self, x, cond):
        TRACES.append(1)  # Python side effect: runs once per trace, not per call
        return super().__call__(x, cond)


def test_score_function_in_sample_ode_does_not_recompile():
    model = tiny_mlp(dropout=0.2, cls=CountingMLP)
    randomise_zero_kernels(model)
    vp = SDES["vp"]
    param = networks.EDMDenoiser()
    f = networks.ScoreFunction.from_module(model, vp, param)

    def run(fn, seed):
        return samplers.sample_ode(
            score_fn=fn,
            sde=vp,
            shape=(6, 2),
            key=jax.random.key(seed),
            solver=diffrax.Euler(),
            steps=4,
        )

    x1, stats = run(f, 0)
    assert x1.shape == (6, 2) and np.all(np.isfinite(x1)) and int(stats["nfe"]) == 4
    n_traces = len(TRACES)
    assert n_traces > 0
    x2, _ = run(f, 1)
    assert len(TRACES) == n_traces  # a new key: no retrace
    assert np.max(np.abs(x1 - x2)) > 1e-3
    # new weights in a fresh snapshot of the same architecture: no retrace either
    model.out.kernel[...] = model.out.kernel[...] * 2.0
    x3, _ = run(networks.ScoreFunction.from_module(model, vp, param), 0)
    assert len(TRACES) == n_traces
    assert np.max(np.abs(x1 - x3)) > 1e-4
    # the first snapshot did not see the in-place update
    np.testing.assert_array_equal(run(f, 0)[0], x1)
    # the pure function agrees with the live eval-mode module, step by step (Euler in s=-t)
    model.out.kernel[...] = model.out.kernel[...] / 2.0
    model.eval()
    live = networks.score_fn(model, vp, param)
    x = vp.prior_sample(jax.random.key(0), (6, 2))
    grid = jnp.linspace(1.0, 1e-3, 5)
    for t0, t1 in zip(grid[:-1], grid[1:], strict=True):
        tb = jnp.full((6,), t0)
        drift = vp.drift(x, tb) - 0.5 * vp.diffusion(tb)[:, None] ** 2 * live(x, tb)
        x = x + (t1 - t0) * drift
    np.testing.assert_allclose(x1, x, rtol=1e-4, atol=1e-5)


# ---- argument checks -----------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda r: networks.MLPScoreNet(0, rngs=r), "dim"),
        (lambda r: networks.MLPScoreNet(2, hidden=0, rngs=r), "hidden"),
        (lambda r: networks.MLPScoreNet(2, depth=0, rngs=r), "depth"),
        (lambda r: networks.MLPScoreNet(2, embedding="learned", rngs=r), "embedding"),
        (lambda r: networks.MLPScoreNet(2, dropout=1.0, rngs=r), "dropout"),
        (lambda r: networks.MLPScoreNet(2, dropout=-0.1, rngs=r), "dropout"),
        (lambda r: networks.MLPScoreNet(2, embed_dim=1, rngs=r), "embed_dim"),
        (lambda r: networks.SmallUNet(1, channels=(12, 16), rngs=r), "channels"),
        (lambda r: networks.SmallUNet(1, channels=(), rngs=r), "channels"),
        (lambda r: networks.SmallUNet(0, rngs=r), "in_channels"),
        (lambda r: networks.SmallUNet(1, num_res_blocks=0, rngs=r), "num_res_blocks"),
        (lambda r: networks.GaussianFourierProjection(7, rngs=r), "even"),
        (lambda r: networks.GaussianFourierProjection(8, scale=0.0, rngs=r), "scale"),
        (lambda r: networks.EDMDenoiser(sigma_data=0.0), "sigma_data"),
        (lambda r: networks.EDMDenoiser(sigma_data=math.inf), "sigma_data"),
        (lambda r: networks.DirectScore(scale_by_std="yes"), "scale_by_std"),
    ],
)
def test_invalid_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build(nnx.Rngs(0))


@pytest.mark.parametrize("forward", [sde.VPSDE(), sde.SubVPSDE(), sde.VESDE()], ids=str)
@pytest.mark.parametrize("data_std", [1.0, 0.4])
def test_gaussian_residual_base_is_the_exact_gaussian_score(forward, data_std):
    # a zero network output leaves the exact score of N(0, data_std^2 I) data
    oracle = sde.MixtureOracle(
        sde.GaussianMixture(weights=[1.0], means=[[0.0, 0.0, 0.0]], stds=data_std), forward
    )
    param = networks.GaussianResidual(networks.NoisePrediction(), data_std=data_std)
    x = jax.random.normal(jax.random.key(0), (6, 3)) * 2.0
    t = jnp.linspace(0.01, 1.0, 6)
    got = param.to_score(forward, x, t, jnp.zeros_like(x))
    np.testing.assert_allclose(got, oracle.score(x, t), rtol=1e-5, atol=1e-6)
    # and the network's output enters exactly as in the inner parametrisation
    out = jax.random.normal(jax.random.key(1), x.shape)
    inner = networks.NoisePrediction().to_score(forward, x, t, out)
    np.testing.assert_allclose(got + inner, param.to_score(forward, x, t, out), rtol=1e-5)
    assert param.inputs(forward, x, t)[0] is x


def test_gaussian_residual_bad_arguments():
    with pytest.raises(ValueError, match="data_std"):
        networks.GaussianResidual(networks.NoisePrediction(), data_std=0.0)
    with pytest.raises(ValueError, match="inner"):
        networks.GaussianResidual(networks.GaussianResidual())
