"""Tests for the forward SDEs in :mod:`sde` against independent truths.

Every expected value here comes from a closed form of Song et al. 2021 written again in
numpy float64, from scipy, or from JAX autodiff of the library's own marginal (the moment
equations); none is a number produced by the code under test.
"""

from __future__ import annotations

import dataclasses
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sde

F32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7

# (kind, hyper-parameters): the defaults, the likelihood settings (beta_max = 40,
# sigma_max = 1000: a negligible prior mismatch), and edge cases (constant beta,
# beta_min = 0, a small sigma ratio).
CASES = [
    ("vp", dict(beta_min=0.1, beta_max=20.0)),
    ("vp", dict(beta_min=0.1, beta_max=40.0)),
    ("vp", dict(beta_min=2.0, beta_max=2.0)),
    ("vp", dict(beta_min=0.0, beta_max=10.0)),
    ("subvp", dict(beta_min=0.1, beta_max=20.0)),
    ("subvp", dict(beta_min=0.5, beta_max=8.0)),
    ("ve", dict(sigma_min=0.01, sigma_max=50.0)),
    ("ve", dict(sigma_min=0.002, sigma_max=1000.0)),
    ("ve", dict(sigma_min=0.5, sigma_max=2.0)),
]
CASE_IDS = [f"{k}-" + "-".join(f"{v:g}" for v in p.values()) for k, p in CASES]
DEFAULTS = [CASES[0], CASES[4], CASES[6]]
DEFAULT_IDS = ["vp", "subvp", "ve"]


def make(kind: str, params: dict) -> sde.AbstractSDE:
    cls = {"vp": sde.VPSDE, "subvp": sde.SubVPSDE, "ve": sde.VESDE}[kind]
    return cls(**params)


def closed_form(kind: str, params: dict, t) -> dict[str, np.ndarray]:
    """Song et al. 2021 in numpy float64: a(t), s(t), f(t), g(t)^2, lambda(t), prior std."""
    t = np.asarray(t, dtype=np.float64)
    if kind in ("vp", "subvp"):
        bmin, bmax = params["beta_min"], params["beta_max"]
        beta = bmin + t * (bmax - bmin)
        int_beta = bmin * t + 0.5 * (bmax - bmin) * t**2  # int_0^t beta
        a = np.exp(-(t**2) * (bmax - bmin) / 4 - t * bmin / 2)
        one_minus_a2 = -np.expm1(-int_beta)  # 1 - a^2, without cancellation at small t
        f = -0.5 * beta
        if kind == "vp":
            s, g2 = np.sqrt(one_minus_a2), beta
        else:
            s, g2 = one_minus_a2, beta * -np.expm1(-2.0 * int_beta)
        prior_std = 1.0
    else:
        smin, smax = params["sigma_min"], params["sigma_max"]
        a = np.ones_like(t)
        s = smin * (smax / smin) ** t
        f = np.zeros_like(t)
        g2 = (s * np.sqrt(2 * np.log(smax / smin))) ** 2
        prior_std = smax
    with np.errstate(divide="ignore"):
        lam = np.log(a) - np.log(s)
    return dict(a=a, s=s, f=f, g2=g2, lam=lam, prior_std=prior_std)


def dlam_dt(kind: str, params: dict, t) -> np.ndarray:
    """d lambda / dt in closed form (used only to size float32 tolerances)."""
    c = closed_form(kind, params, t)
    if kind == "vp":  # lambda = log a - log(1 - a^2) / 2
        return c["f"] / (1 - c["a"] ** 2)
    if kind == "subvp":  # lambda = log a - log(1 - a^2)
        return c["f"] * (1 + c["a"] ** 2) / (1 - c["a"] ** 2)
    return np.full_like(
        np.asarray(t, dtype=np.float64), -np.log(params["sigma_max"] / params["sigma_min"])
    )


# ---------------------------------------------------------------------------------------
# Moment equations (autodiff) and closed forms
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_moment_equations(kind, params):
    """d log a/dt = f and d s^2/dt = 2 f s^2 + g^2, differentiating ``marginal`` by jvp.

    Run in float64: both sides are exact formulas evaluated in a handful of flops whose
    condition numbers are O(1)-O(10^2) here, so they agree to ~1e-13; rtol=1e-9 leaves a
    10^4 margin yet any wrong factor or sign (an O(1) error) fails.
    """
    with jax.enable_x64(True):
        s_ = make(kind, params)
        t = jnp.array([1e-3, 0.05, 0.3, 0.62, 0.9, 1.0])
        (a, s), (da, ds) = jax.jvp(s_.marginal, (t,), (jnp.ones_like(t),))
        assert a.dtype == s.dtype == jnp.float64
        f, g = s_.drift_coeff(t), s_.diffusion(t)
        np.testing.assert_allclose(da / a, f, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(2 * s * ds, 2 * f * s**2 + g**2, rtol=1e-9, atol=1e-12)
        # The same through jax.grad of the scalar marginal, one t at a time.
        dlog_a = jax.vmap(jax.grad(lambda t: jnp.log(s_.marginal(t)[0])))(t)
        ds2 = jax.vmap(jax.grad(lambda t: s_.marginal(t)[1] ** 2))(t)
        np.testing.assert_allclose(dlog_a, f, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ds2, 2 * f * s**2 + g**2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("precision", ["f32", "f64"])
@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_closed_forms(kind, params, precision):
    """a, s, f, g^2, beta and the prior std against Song et al. 2021 in numpy float64.

    float64: agreement to 1e-12 (exact formulas, tiny condition numbers).
    float32: each quantity is exp/sqrt of an exponent of magnitude <= ~10, whose relative
    error is ~|exponent| * eps32 ~ 1e-6; rtol=1e-5 allows that with a margin of ~8.
    The atol only matters where the truth is 0 (s(0) for VP/sub-VP, f for VE).
    """
    rtol, atol = (1e-12, 1e-14) if precision == "f64" else (1e-5, 1e-7)
    t_np = np.array([0.0, 1e-4, 1e-3, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    c = closed_form(kind, params, t_np)
    with jax.enable_x64(precision == "f64"):
        s_ = make(kind, params)
        t = jnp.asarray(t_np)
        a, s = s_.marginal(t)
        np.testing.assert_allclose(a, c["a"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(s_.mean_coeff(t), c["a"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(s, c["s"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(s_.std(t), c["s"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(s_.drift_coeff(t), c["f"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(s_.diffusion(t) ** 2, c["g2"], rtol=rtol, atol=atol)
        if kind != "ve":
            np.testing.assert_allclose(s_.beta(t), -2 * c["f"], rtol=rtol, atol=atol)
    assert s_.prior_std == c["prior_std"]
    assert s_.T == 1.0


def test_subvp_variance_below_vp():
    """Song et al. 2021: the sub-VP variance is bounded by the VP one at every t."""
    t = np.linspace(0.0, 1.0, 101)
    c_vp = closed_form("vp", DEFAULTS[0][1], t)
    s_svp = sde.SubVPSDE().std(jnp.asarray(t))
    assert np.all(np.asarray(s_svp) ** 2 <= c_vp["s"] ** 2 * (1 + 1e-6) + 1e-12)


# ---------------------------------------------------------------------------------------
# Prior
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_prior_logp_matches_scipy(kind, params):
    """Summed over all non-batch axes of a [B, 3, 4] input; float32 => rtol 1e-5."""
    s_ = make(kind, params)
    std = closed_form(kind, params, 1.0)["prior_std"]
    x = (
        np.random.default_rng(0).normal(size=(5, 3, 4))
        * std
        * np.linspace(0.2, 3.0, 5)[:, None, None]
    )
    logp = s_.prior_logp(jnp.asarray(x, dtype=jnp.float32))
    assert logp.shape == (5,)
    expected = stats.norm.logpdf(x, scale=std).sum(axis=(1, 2))
    np.testing.assert_allclose(logp, expected, rtol=1e-5)


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_prior_sample_distribution(kind, params):
    """KS test of 48,000 prior draws against N(0, prior_std^2), fixed key.

    The negative control (scale off by 10%) shows the KS test has power at this size; the
    variance z-test (SE of the sample variance: std^2 sqrt(2/n), 0.65%) is sharper still.
    """
    s_ = make(kind, params)
    std = closed_form(kind, params, 1.0)["prior_std"]
    x = s_.prior_sample(jax.random.key(0), (4000, 3, 4))
    assert x.shape == (4000, 3, 4)
    assert jnp.issubdtype(x.dtype, jnp.floating)
    flat = np.asarray(x, dtype=np.float64).ravel()
    assert stats.kstest(flat, stats.norm(scale=std).cdf).pvalue > 1e-3
    assert stats.kstest(flat, stats.norm(scale=1.1 * std).cdf).pvalue < 1e-6
    z_var = (np.mean(flat**2) / std**2 - 1) / np.sqrt(2 / flat.size)
    assert abs(z_var) < 5


# ---------------------------------------------------------------------------------------
# Perturbation kernel
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_perturb_distribution_scalar_t(kind, params, t):
    """x_t for a fixed x0 is N(a x0, s^2), with a, s from numpy (KS, pooled coordinates)."""
    n = 4000
    x0_row = np.array([1.5, -0.7, 3.0])
    x0 = jnp.asarray(np.tile(x0_row, (n, 1)), dtype=jnp.float32)
    noise = jax.random.normal(jax.random.key(1), x0.shape)
    xt = np.asarray(make(kind, params).perturb(x0, t, noise), dtype=np.float64)
    assert xt.shape == (n, 3)
    c = closed_form(kind, params, t)
    z = (xt - c["a"] * x0_row) / c["s"]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_perturb_distribution_batched_t(kind, params):
    """Per-sample times t of shape [B] with x0 of shape [B, 2, 3]."""
    n = 3000
    t_np = np.linspace(1e-3, 1.0, n)
    x0_row = np.array([[2.0, -1.0, 0.5], [0.0, 4.0, -3.0]])
    x0 = jnp.asarray(np.broadcast_to(x0_row, (n, 2, 3)), dtype=jnp.float32)
    noise = jax.random.normal(jax.random.key(2), x0.shape)
    xt = np.asarray(make(kind, params).perturb(x0, jnp.asarray(t_np), noise), np.float64)
    c = closed_form(kind, params, t_np)
    z = (xt - c["a"][:, None, None] * x0_row) / c["s"][:, None, None]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3


# ---------------------------------------------------------------------------------------
# log-SNR
# ---------------------------------------------------------------------------------------

T_GRID = np.geomspace(1e-5, 1.0, 301)


@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_log_snr_closed_form(kind, params):
    """lambda(t) = log(a/s) from numpy.

    float32: log a and log s each carry an absolute error of a few eps32 * max(1, |.|);
    |log a|, |log s| <= ~12 here, so atol = 1e-5 (x 7 margin) plus rtol = 1e-6.
    """
    lam = make(kind, params).log_snr(jnp.asarray(T_GRID, dtype=jnp.float32))
    np.testing.assert_allclose(lam, closed_form(kind, params, T_GRID)["lam"], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_log_snr_inverse_roundtrip(kind, params):
    """log_snr_inverse(log_snr(t)) == t in float32 on a grid from 1e-5 to 1.

    Tolerance from conditioning: lambda(t) is stored with an absolute error of about
    eps32 * max(1, |lambda|), which moves the recovered time by that over |d lambda/dt|;
    the inverse adds a few ulps of t. Allow 8x both. (For VE at t = 1e-5 this is ~1e-7
    absolute, i.e. 1% relative: lambda(1e-5) and lambda(0) differ in the 6th digit, so no
    float32 implementation can do better; for VP/sub-VP it is ~1e-6 relative.)
    """
    s_ = make(kind, params)
    t = jnp.asarray(T_GRID, dtype=jnp.float32)
    t_back = np.asarray(s_.log_snr_inverse(s_.log_snr(t)), dtype=np.float64)
    lam = closed_form(kind, params, T_GRID)["lam"]
    tol = 8 * F32_EPS * (np.maximum(1.0, np.abs(lam)) / np.abs(dlam_dt(kind, params, T_GRID)))
    tol += 8 * F32_EPS * T_GRID
    err = np.abs(t_back - T_GRID)
    assert np.all(np.isfinite(t_back))
    assert np.all(err <= tol), (
        f"worst t={T_GRID[np.argmax(err / tol)]}, err/tol={np.max(err / tol)}"
    )


@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_log_snr_inverse_float64(kind, params):
    """The same round trip in float64, where rtol 1e-9 holds on the whole grid."""
    with jax.enable_x64(True):
        s_ = make(kind, params)
        t = jnp.asarray(T_GRID)
        np.testing.assert_allclose(s_.log_snr_inverse(s_.log_snr(t)), T_GRID, rtol=1e-9)
        # and from the other side: lambda(inverse(lam)) == lam for lam from numpy
        lam = closed_form(kind, params, T_GRID)["lam"]
        np.testing.assert_allclose(
            s_.log_snr(s_.log_snr_inverse(jnp.asarray(lam))), lam, rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("kind,params", CASES, ids=CASE_IDS)
def test_log_snr_strictly_decreasing(kind, params):
    s_ = make(kind, params)
    lam32 = np.asarray(s_.log_snr(jnp.asarray(T_GRID, dtype=jnp.float32)))
    assert np.all(np.diff(lam32) < 0)
    with jax.enable_x64(True):
        s_ = make(kind, params)
        t = jnp.linspace(1e-6, 1.0, 2001)
        assert np.all(np.diff(np.asarray(s_.log_snr(t))) < 0)
        assert np.all(np.asarray(jax.vmap(jax.grad(s_.log_snr))(t)) < 0)


# ---------------------------------------------------------------------------------------
# Shapes and broadcasting
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape", [(4, 2), (4, 3, 4, 4)], ids=["B2", "B344"])
@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_drift_broadcasting(kind, params, x_shape):
    s_ = make(kind, params)
    x_np = np.random.default_rng(3).normal(size=x_shape)
    x = jnp.asarray(x_np, dtype=jnp.float32)
    t_vec = np.array([0.1, 0.4, 0.7, 1.0])
    expand = (slice(None),) + (None,) * (len(x_shape) - 1)
    # scalar t
    out = s_.drift(x, 0.3)
    assert out.shape == x_shape
    np.testing.assert_allclose(
        out, closed_form(kind, params, 0.3)["f"] * x_np, rtol=1e-5, atol=1e-7
    )
    # t of shape [B]: row i scaled by f(t_i)
    out = s_.drift(x, jnp.asarray(t_vec))
    assert out.shape == x_shape
    f = closed_form(kind, params, t_vec)["f"]
    np.testing.assert_allclose(out, f[expand] * x_np, rtol=1e-5, atol=1e-7)
    # perturb broadcasts the same way, and g(t) has the shape of t
    out = s_.perturb(x, jnp.asarray(t_vec), x)
    c = closed_form(kind, params, t_vec)
    np.testing.assert_allclose(out, (c["a"] + c["s"])[expand] * x_np, rtol=1e-5, atol=1e-6)
    assert s_.diffusion(jnp.asarray(t_vec)).shape == (4,)
    assert s_.diffusion(0.5).shape == ()


def test_expand_time_shapes_and_errors():
    x = jnp.zeros((4, 3, 2))
    assert sde.expand_time(0.5, x).shape == ()
    assert sde.expand_time(jnp.ones(4), x).shape == (4, 1, 1)
    for bad in [jnp.ones(5), jnp.ones((4, 1)), jnp.ones((4, 3))]:
        with pytest.raises(ValueError, match=re.escape(str(bad.shape))):
            sde.expand_time(bad, x)
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        sde.VPSDE().drift(x, jnp.ones(5))


# ---------------------------------------------------------------------------------------
# Validation of hyper-parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ctor,kwargs,needles",
    [
        (sde.VPSDE, dict(beta_min=-1), ["beta_min=-1"]),
        (sde.VPSDE, dict(beta_min=5, beta_max=1), ["beta_min=5", "beta_max=1"]),
        (sde.VPSDE, dict(beta_max=float("nan")), ["beta_max=nan"]),
        (sde.VPSDE, dict(beta_max=float("inf")), ["beta_max=inf"]),
        (sde.VPSDE, dict(beta_min=0.0, beta_max=0.0), ["beta_max=0.0"]),
        (sde.VESDE, dict(sigma_min=0), ["sigma_min=0"]),
        (sde.VESDE, dict(sigma_min=10, sigma_max=1), ["sigma_min=10", "sigma_max=1"]),
        (sde.VESDE, dict(sigma_min=1, sigma_max=1), ["sigma_min=1", "sigma_max=1"]),
        (sde.VESDE, dict(sigma_max=float("nan")), ["sigma_max=nan"]),
        (sde.SubVPSDE, dict(beta_max=-3), ["beta_max=-3"]),
    ],
)
def test_bad_hyperparameters(ctor, kwargs, needles):
    with pytest.raises(ValueError) as info:
        ctor(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    "ctor,kwargs",
    [
        (sde.VPSDE, dict(beta_min=np.float32(0.1))),
        (sde.VESDE, dict(sigma_max=np.float32(50.0))),
    ],
    ids=["vp", "ve"],
)
def test_numpy_scalar_hyperparameters_accepted(ctor, kwargs):
    ctor(**kwargs)


# ---------------------------------------------------------------------------------------
# Pytrees
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_sde_is_immutable_pytree(kind, params):
    s_ = make(kind, params)
    # Hyper-parameters are either leaves or static metadata; nothing else is in the tree.
    leaves = jax.tree_util.tree_leaves(s_)
    assert all(float(v) in params.values() for v in leaves)
    # round trip through flatten/unflatten gives an equal, equally behaving object
    flat, treedef = jax.tree_util.tree_flatten(s_)
    s2 = jax.tree_util.tree_unflatten(treedef, flat)
    assert type(s2) is type(s_)
    np.testing.assert_array_equal(s2.marginal(0.3)[1], s_.marginal(0.3)[1])
    name = next(iter(params))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s_, name, 1.0)
    with pytest.raises(AttributeError):
        s_.new_attribute = 1.0
    assert getattr(s_, name) == params[name]


def _filter_jit_fn(s_, x, t):
    a, s = s_.marginal(t)
    return (
        s_.drift(x, t),
        s_.diffusion(t),
        a,
        s,
        s_.prior_logp(x),
        s_.log_snr_inverse(s_.log_snr(t)),
    )


_FILTER_JITTED = eqx.filter_jit(_filter_jit_fn)


@pytest.mark.parametrize("kind,params", DEFAULTS, ids=DEFAULT_IDS)
def test_sde_through_filter_jit(kind, params):
    s_ = make(kind, params)
    x = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    t = jnp.array([0.2, 0.5, 0.9])
    for got, want in zip(_FILTER_JITTED(s_, x, t), _filter_jit_fn(s_, x, t), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    c = closed_form(kind, params, np.asarray(t))
    np.testing.assert_allclose(_FILTER_JITTED(s_, x, t)[3], c["s"], rtol=1e-5)


_JITTED = jax.jit(_filter_jit_fn)


@pytest.mark.parametrize(
    "kind,params",
    [
        DEFAULTS[0],
        DEFAULTS[1],
        DEFAULTS[2],
    ],
    ids=DEFAULT_IDS,
)
def test_sde_through_plain_jit(kind, params):
    """A pytree argument of jax.jit has its float leaves traced; the SDE must cope
    (drift, diffusion, marginal, prior_logp, log_snr and its inverse)."""
    s_ = make(kind, params)
    x = jnp.linspace(-2.0, 2.0, 6).reshape(3, 2)
    t = jnp.array([0.2, 0.5, 0.9])
    for got, want in zip(_JITTED(s_, x, t), _filter_jit_fn(s_, x, t), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
