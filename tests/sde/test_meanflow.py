"""MeanFlow against the exact average velocity of Gaussian data (whose probability-flow
map is affine and known: ``sde.MixtureOracle.flow``), and interval-time networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import networks
import samplers
import sde

EPS = 1e-3
GAUSS = sde.GaussianMixture(weights=[1.0], means=[[0.5, -1.0]], stds=0.3)
PATHS = {"rf": sde.RectifiedFlow(), "vp": sde.VPSDE()}


def exact_u(oracle):
    """u*(x, r, t) = (x - flow(x, t -> r)) / (t - r) per example, and the velocity
    itself at r = t."""
    v = sde.pf_velocity(oracle.score, oracle.sde)

    def one(x, r, t):
        equal = jnp.abs(t - r) < 1e-6
        d = jnp.where(equal, 1.0, t - r)
        jump = (x - oracle.flow(x[None], t, jnp.where(equal, t - 1e-3, r))[0]) / d
        return jnp.where(equal, v(x[None], t[None])[0], jump)

    return lambda x, r, t: jax.vmap(one)(x, r, t)


@pytest.mark.parametrize("path", PATHS)
def test_meanflow_identity_holds_for_the_exact_average_velocity(path):
    forward = PATHS[path]
    oracle = sde.MixtureOracle(GAUSS, forward)
    u = exact_u(oracle)
    v = sde.pf_velocity(oracle.score, forward)
    x = oracle.sample(jax.random.key(0), 64, t=0.6)
    t, r = jnp.full(64, 0.6), jnp.linspace(0.05, 0.5, 64)
    vx = v(x, t)
    u_val, du = jax.jvp(u, (x, r, t), (vx, jnp.zeros_like(r), jnp.ones_like(t)))
    np.testing.assert_allclose(u_val, vx - (t - r)[:, None] * du, rtol=2e-3, atol=2e-4)


def test_loss_is_zero_for_the_exact_pair_and_positive_otherwise():
    forward = PATHS["rf"]
    oracle = sde.MixtureOracle(GAUSS, forward)
    x0 = GAUSS.sample(jax.random.key(1), 256)
    v = sde.pf_velocity(oracle.score, forward)
    loss = sde.meanflow_loss(exact_u(oracle), forward, x0, jax.random.key(2), velocity_fn=v,
                             p_equal=0.25, eps=0.05)  # fmt: skip
    assert float(loss.max()) < 1e-4
    wrong = sde.meanflow_loss(lambda x, r, t: 0.9 * exact_u(oracle)(x, r, t), forward, x0,
                              jax.random.key(2), velocity_fn=v, p_equal=0.25, eps=0.05)  # fmt: skip
    assert float(wrong.mean()) > 100 * float(loss.mean()) + 1e-3
    with pytest.raises(ValueError, match="p_equal"):
        sde.meanflow_loss(exact_u(oracle), forward, x0, jax.random.key(2), p_equal=1.5)


@pytest.mark.parametrize("steps", [1, 2])
def test_sampling_with_the_exact_average_velocity_is_the_flow_map(steps):
    forward = PATHS["vp"]
    oracle = sde.MixtureOracle(GAUSS, forward)
    key = jax.random.key(3)
    x, stats = samplers.sample_meanflow(mean_flow=exact_u(oracle), sde=forward, shape=(256, 2),
                                        key=key, steps=steps, eps=EPS)  # fmt: skip
    want = oracle.flow(forward.prior_sample(key, (256, 2)), 1.0, EPS)
    np.testing.assert_allclose(x, want, atol=5e-4)
    assert int(stats["nfe"]) == steps and bool(stats["finite"])


TINY = {
    "mlp": lambda it: networks.MLPScoreNet(2, hidden=16, depth=1, embed_dim=8, interval_time=it,
                                           rngs=nnx.Rngs(0)),
    "unet": lambda it: networks.SmallUNet(1, channels=(8,), embed_dim=8, interval_time=it,
                                          rngs=nnx.Rngs(0)),
    "dit": lambda it: networks.DiT(1, image_size=8, patch_size=2, width=32, depth=1, heads=2,
                                   embed_dim=8, interval_time=it, rngs=nnx.Rngs(0)),
}  # fmt: skip


def _randomise(model):
    for i, (path, _) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.Param))):
        leaf = model
        for p in path:
            leaf = leaf[p] if isinstance(p, int) else getattr(leaf, p)
        leaf[...] = 0.1 * jax.random.normal(jax.random.key(i), leaf[...].shape)


@pytest.mark.parametrize("arch", TINY)
def test_interval_network_starts_as_its_one_time_self(arch):
    one, two = TINY[arch](False), TINY[arch](True)
    _randomise(one)  # zero-initialised outputs would make the check empty
    flat_one = dict(nnx.to_flat_state(nnx.state(one)))
    flat_two = dict(nnx.to_flat_state(nnx.state(two)))
    assert set(flat_one) <= set(flat_two) and len(flat_two) > len(flat_one)
    for path, v in flat_one.items():  # the teacher's weights copied in, leaf by leaf
        flat_two[path] = v
    nnx.update(two, nnx.from_flat_state(flat_two))
    shape = (3, 2) if arch == "mlp" else (3, 8, 8, 1)
    x = jax.random.normal(jax.random.key(4), shape)
    t = jnp.array([0.2, 0.5, 0.9])
    ref = one(x, t)
    for h in (0.0, 0.3):
        out = two(x, jnp.stack([t, jnp.full(3, h)], -1))
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    two.embed.interval.kernel[...] = jnp.ones_like(two.embed.interval.kernel[...])
    a = two(x, jnp.stack([t, jnp.zeros(3)], -1))
    b = two(x, jnp.stack([t, jnp.full(3, 0.3)], -1))
    assert float(jnp.abs(a - b).max()) > 1e-6  # (exactly 0 while the layer is zero)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        two(x, t)
