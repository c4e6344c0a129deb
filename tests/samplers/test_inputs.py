"""Every sampler's input checks and non-finite reports (samplers/_inputs.py): bad
arguments are named, a non-finite score is reported as such (with its time),
``stats["finite"]`` is False exactly when the output holds a NaN, and numpy integers
count as integers.

Cheap by design: the bad arguments raise before anything compiles, and the other
tests run the configurations other test files already compile (a NaN score is the
same oracle with NaN means: the same pytree, so the same compiled program). Only
the poisoned-interval ODE solve, a tiny EDM program and one ELBO compile their own."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import samplers
import sde

VP = sde.VPSDE()
EDM = sde.EDMSDE()
KEY = jax.random.key(0)


def nan_oracle(oracle):
    """``oracle`` with NaN means: a score that is NaN everywhere, in the same pytree."""
    return eqx.tree_at(lambda o: o.mixture.means, oracle, oracle.mixture.means * jnp.nan)


class Poisoned(eqx.Module):
    """``oracle``'s score, NaN for the samples in ``rows`` at times ``lo < t < hi`` (traced
    leaves: one compile serves every interval)."""

    oracle: sde.MixtureOracle
    lo: jax.Array
    hi: jax.Array
    rows: jax.Array

    def __call__(self, x, t):
        rows = jnp.tile(self.rows, x.shape[0] // self.rows.shape[0])  # elbo's pairs: 2B
        bad = (t > self.lo) & (t < self.hi) & rows
        return jnp.where(bad[:, None], jnp.nan, self.oracle.score(x, t))


def poisoned(oracle, lo=0.0, hi=0.0, rows=64):
    rows = jnp.ones(rows, bool) if isinstance(rows, int) else jnp.asarray(rows)
    return Poisoned(oracle, jnp.asarray(lo), jnp.asarray(hi), rows)


@pytest.fixture(scope="module")
def edm_oracle(gaussian):
    return sde.MixtureOracle(gaussian, EDM)


@eqx.filter_jit
def _elbo(score_fn, x):
    """The bound with a numpy integer ``n_t`` (known while tracing); one compile for
    the tests below."""
    return samplers.elbo(score_fn=score_fn, sde=EDM, x=x, key=KEY, n_t=np.int64(2), eps=2.0)


# ---- arguments are checked and named, before anything compiles --------------------

_S = dict(sde=VP, shape=(8, 2), key=KEY, score_fn=lambda x, t: -x)
_X = dict(sde=VP, key=KEY, score_fn=lambda x, t: -x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: samplers.sample_ode(**_S, eps=jnp.asarray(1.5)), r"eps=Array\(1.5"),
        (lambda: samplers.sample_sde(**_S, eps=np.float64(-1)), r"eps=np.float64\(-1"),
        (lambda: samplers.sample_edm(**_S, eps=jnp.asarray(1.5)), r"eps=Array\(1.5"),
        (
            lambda: samplers.sample_ode(**_S, ts=jnp.array([1.0, jnp.nan, 0.1])),
            r"ts must hold finite times, got ts\[1\]=",
        ),
        (
            lambda: samplers.sample_pc(**_S, ts=np.array([1.0, 0.1, np.inf])),
            r"ts must hold finite times, got ts\[2\]=",
        ),
        (
            lambda: samplers.log_likelihood(**_X, x=jnp.ones((8, 2)), ts=jnp.array([1.0, 0.1])),
            "ts must be strictly monotone.*running up",
        ),
        (lambda: samplers.sample_ode(**{**_S, "shape": (8,)}), r"shape=\(8,\)"),
        (lambda: samplers.sample_sde(**_S, steps=True), "steps=True"),
        (lambda: samplers.sample_edm(**_S, steps=np.float64(3)), r"steps=np.float64\(3"),
        (lambda: samplers.sample_pc(**_S, steps=4, corrector_steps=1.0), "corrector_steps=1.0"),
        (
            lambda: samplers.log_likelihood(**_X, x=jnp.ones((8, 2), int)),
            "x must be a float array .* dtype int",
        ),
        (lambda: samplers.elbo(**_X, x=jnp.ones(8)), r"x must be a float array .* shape \(8,\)"),
        (
            lambda: samplers.sample_ode(**{**_S, "score_fn": lambda x, t: x[:, :1]}, steps=2),
            r"score_fn\(x, t\) must return .* shape \(8, 2\), got shape \(8, 1\)",
        ),
        (
            lambda: samplers.sample_edm(**{**_S, "score_fn": lambda x, t: t}, steps=2),
            r"score_fn\(x, t\) must return .* got shape \(8,\)",
        ),
        (lambda: samplers.sample_sde(**_S, steps=2, check_finite=1), "check_finite=1"),
    ],
    ids=[
        "eps-array",
        "eps-numpy",
        "edm-eps",
        "ts-nan",
        "pc-ts-inf",
        "likelihood-ts-direction",
        "shape-1d",
        "steps-bool",
        "edm-steps-float",
        "pc-corrector-steps-float",
        "x-int",
        "elbo-x-1d",
        "score-shape",
        "edm-score-shape",
        "check-finite-not-bool",
    ],
)
def test_bad_argument_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_traced_eps_ts_and_x_are_checked_once_at_entry(edm_oracle):
    """Under an outer jit the values are unknown in Python: eqx.error_if names them."""
    kw = dict(score_fn=edm_oracle.score, sde=EDM, shape=(4, 2), key=KEY, solver=diffrax.Euler())

    @eqx.filter_jit
    def run(eps, ts):  # a traced eps is checked where it is used: with steps, not ts
        return samplers.sample_edm(**kw, ts=ts), samplers.sample_edm(**kw, steps=1, eps=eps)

    good = jnp.array([80.0, 10.0, 2.0])
    (_, stats), (_, stats_eps) = run(jnp.asarray(2.0), good)
    assert bool(stats["finite"]) and bool(stats_eps["finite"])
    with pytest.raises(eqx.EquinoxRuntimeError, match="eps must lie in"):
        run(jnp.asarray(80.0), good)
    with pytest.raises(eqx.EquinoxRuntimeError, match="ts must be finite"):
        run(jnp.asarray(2.0), good.at[1].set(jnp.nan))
    with pytest.raises(eqx.EquinoxRuntimeError, match="ts must be finite"):
        run(jnp.asarray(2.0), good.at[1].set(1.0))  # not monotone
    x = jnp.ones((4, 2))
    with pytest.raises(eqx.EquinoxRuntimeError, match="x must be finite"):
        _elbo(edm_oracle.score, x.at[2, 1].set(jnp.inf))
    with pytest.raises(eqx.EquinoxRuntimeError, match="x must be finite"):  # eagerly too
        samplers.elbo(score_fn=edm_oracle.score, sde=EDM, x=x.at[0, 0].set(jnp.nan), key=KEY)


# ---- a non-finite score stops an adaptive solve, with its time ---------------------


def test_adaptive_ode_names_where_the_score_is_not_finite(ring):
    oracle = sde.MixtureOracle(ring, VP)
    kw = dict(sde=VP, shape=(64, 2), key=KEY, rtol=1e-3, atol=1e-3)
    x, stats = samplers.sample_ode(score_fn=poisoned(oracle), **kw)
    assert bool(stats["finite"]) and np.all(np.isfinite(np.asarray(x)))
    # NaN for t < 0.3: the reverse-time solve meets it at t = 0.3
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite value .* near t=0.3 "):
        samplers.sample_ode(score_fn=poisoned(oracle, 0.0, 0.3), **kw)
    # one NaN row among 64, below t = 0.62 only
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite value .* near t=0.62 "):
        samplers.sample_ode(score_fn=poisoned(oracle, 0.0, 0.62, jnp.arange(64) == 5), **kw)


def test_adaptive_sde_and_likelihood_report_a_nan_score(gaussian):
    """NaN everywhere: the reverse-time SDE meets it at t = T = 1, the likelihood's
    forward solve at t = eps = 1e-5 (the configurations of test_adaptive_sde and
    test_edm.py::test_log_likelihood_with_T_sigma_max)."""
    bad = nan_oracle(sde.MixtureOracle(gaussian, VP))
    with pytest.raises(eqx.EquinoxRuntimeError, match="sample_sde: .* non-finite .* near t=1 "):
        samplers.sample_sde(
            score_fn=bad.score,
            sde=VP,
            shape=(4000, 2),
            key=KEY,
            solver=diffrax.Heun(),
            rtol=1e-2,
            atol=1e-2,
            eps=1e-3,
        )
    edm = sde.EDMSDE(sigma_max=1000.0)
    bad = nan_oracle(sde.MixtureOracle(gaussian, edm))
    x = jnp.ones((32, 2))
    with pytest.raises(eqx.EquinoxRuntimeError, match="log_likelihood: .* near t=1e-05 "):
        samplers.log_likelihood(score_fn=bad.score, sde=edm, x=x, key=KEY)


# ---- stats["finite"] and check_finite; numpy integers as counts --------------------

# The calls of test_edm.py::test_eps_is_checked_against_the_sdes_own_T.
FIXED = {
    "ode": lambda **kw: samplers.sample_ode(shape=(4, 2), **kw),
    "sde": lambda **kw: samplers.sample_sde(shape=(4, 2), **kw),
    "pc": lambda **kw: samplers.sample_pc(shape=(4, 2), **kw),
    "edm": lambda **kw: samplers.sample_edm(shape=(4, 2), **kw),
    "likelihood": lambda **kw: samplers.log_likelihood(x=jnp.ones((4, 2)), **kw),
}


@pytest.mark.parametrize("name", list(FIXED))
def test_finite_stat_and_numpy_integer_steps(name, edm_oracle):
    """stats['finite'] is False exactly when the output holds a NaN; np.int64 steps
    are the int steps (the same output, from the same compiled program)."""
    call = FIXED[name]
    kw = dict(sde=EDM, key=KEY, eps=2.0)
    out, stats = call(score_fn=edm_oracle.score, steps=3, **kw)
    out64, stats64 = call(score_fn=edm_oracle.score, steps=np.int64(3), **kw)
    np.testing.assert_array_equal(np.asarray(out64), np.asarray(out))
    assert int(stats64["nfe"]) == int(stats["nfe"])
    assert np.all(np.isfinite(np.asarray(out))) and bool(stats["finite"]) is True
    bad, bad_stats = call(score_fn=nan_oracle(edm_oracle).score, steps=np.int32(3), **kw)
    assert np.any(np.isnan(np.asarray(bad))) and bool(bad_stats["finite"]) is False


def test_check_finite_raises_and_elbo_reports(edm_oracle):
    kw = dict(sde=EDM, shape=(4, 2), key=KEY, eps=2.0, steps=3, check_finite=True)
    x, stats = samplers.sample_edm(score_fn=edm_oracle.score, **kw)
    assert bool(stats["finite"]) and np.all(np.isfinite(np.asarray(x)))
    with pytest.raises(eqx.EquinoxRuntimeError, match="sample_edm returned non-finite values"):
        samplers.sample_edm(score_fn=nan_oracle(edm_oracle).score, **kw)
    x = jnp.ones((4, 2))
    lower, stats = _elbo(edm_oracle.score, x)
    assert bool(stats["finite"]) and np.all(np.isfinite(np.asarray(lower)))
    lower, stats = _elbo(nan_oracle(edm_oracle).score, x)
    assert not bool(stats["finite"]) and np.all(np.isnan(np.asarray(lower)))
