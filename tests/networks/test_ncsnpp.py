"""DDPM++ / NCSN++ U-Nets: parameter counts of the CIFAR-10 configurations against the
published DDPM count and an independent layer-by-layer tally of score_sde's networks,
closed forms of the blocks at initialisation, conditioning, bf16, remat, and a few
training steps. Tiny 8x8 networks only, except the abstract (``nnx.eval_shape``) builds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import networks
import sde
from networks._ncsnpp import AttnBlock, BigGANResBlock, _Layers  # blocks: no public names

KEY = jax.random.key(0)
TINY = dict(
    image_size=8,
    nf=8,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    progressive_input="residual",
    dropout=0.0,
)
# One level (8x8, attention there), for the tests that compile gradients.
FLAT = dict(TINY, ch_mult=(1,), attn_resolutions=(8,), progressive_input="none")
APPLY = nnx.jit(lambda model, x, cond, labels: model(x, cond, labels=labels))


def tiny(**kw):
    return networks.NCSNpp(1, **{**TINY, "init_scale": 1.0, **kw}, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def conditional():
    return tiny(num_classes=3)


def images(n=4, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, 8, 8, 1))


# ---- parameter counts --------------------------------------------------------------


def _reference_count(nf, ch_mult, nrb, emb_in, *, progressive=False, ddpm=False, c=3):
    """Parameters of score_sde's CIFAR-10 networks tallied from their layer list
    (models/ncsnpp.py, layerspp.py; Ho et al.'s ddpm.py for ``ddpm=True``): 3x3
    convolutions and dense/1x1 layers with biases, GroupNorm scale and bias, attention
    = GroupNorm + four C x C dense layers. Independent of the module code."""

    def conv(i, o, k=3):
        return k * k * i * o + o

    def attn(ch):
        return 2 * ch + 4 * (ch * ch + ch)

    def block(i, o, resample=False):
        skip = i * o + o if (i != o or resample) else 0
        return 2 * i + conv(i, o) + (4 * nf * o + o) + 2 * o + conv(o, o) + skip

    total = emb_in * 4 * nf + 4 * nf + 16 * nf * nf + 4 * nf  # embedding MLP
    total += conv(c, nf)
    hs, ch, pyr = [nf], nf, c
    for level, m in enumerate(ch_mult):
        for _ in range(nrb):
            total += block(ch, nf * m) + (attn(nf * m) if level == 1 else 0)
            ch = nf * m
            hs.append(ch)
        if level < len(ch_mult) - 1:
            total += conv(ch, ch) if ddpm else block(ch, ch, resample=True)
            if progressive:
                total, pyr = total + conv(pyr, ch), ch
            hs.append(ch)
    total += 2 * block(ch, ch) + attn(ch)
    for level in reversed(range(len(ch_mult))):
        for _ in range(nrb + 1):
            total += block(ch + hs.pop(), nf * ch_mult[level])
            ch = nf * ch_mult[level]
            total += attn(ch) if (ddpm and level == 1) else 0
        total += attn(ch) if (not ddpm and level == 1) else 0
        if level > 0:
            total += conv(ch, ch) if ddpm else block(ch, ch, resample=True)
    return total + 2 * ch + conv(ch, c)


def test_cifar10_parameter_counts():
    def count(factory, **kw):
        return networks.count_params(nnx.eval_shape(lambda: factory(rngs=nnx.Rngs(0), **kw)))

    # Ho et al. 2020, appendix B: "Our CIFAR10 model has 35.7 million parameters".
    n_ddpm = count(networks.ddpm_cifar10)
    assert round(n_ddpm / 1e6, 1) == 35.7
    assert n_ddpm == _reference_count(128, (1, 2, 2, 2), 2, 128, ddpm=True)
    # score_sde's DDPM++ cont. (VP) and NCSN++ cont. (VE) configurations.
    n_ddpmpp = count(networks.ddpmpp_cifar10)
    n_ncsnpp = count(networks.ncsnpp_cifar10)
    assert n_ddpmpp == _reference_count(128, (1, 2, 2, 2), 4, 128) == 61_804_419
    assert n_ncsnpp == _reference_count(128, (1, 2, 2, 2), 4, 256, progressive=True)
    assert n_ncsnpp == 62_758_787
    # Class conditioning adds one row of 4 nf per class and the null class.
    assert count(networks.ddpmpp_cifar10, num_classes=10) == n_ddpmpp + 11 * 512


# ---- blocks in closed form ----------------------------------------------------------


def test_blocks_start_as_rescaled_skips():
    layers = _Layers(None, jnp.float32, nnx.Rngs(0))
    x = jax.random.normal(KEY, (2, 4, 4, 8))
    e = jax.random.normal(KEY, (2, 32))
    for rescale, factor in ((True, 1 / math.sqrt(2)), (False, 1.0)):
        block = BigGANResBlock(8, 8, 32, layers, skip_rescale=rescale, dropout=0.0)
        np.testing.assert_allclose(block(x, e), factor * x, rtol=1e-6)
        attn = AttnBlock(8, layers, skip_rescale=rescale)
        np.testing.assert_allclose(attn(x), factor * x, rtol=1e-6)
    # score_sde's init (init_scale=0): the whole network starts at exactly zero.
    net = tiny(num_classes=3, init_scale=0.0)  # the fixture's architecture: no new compile
    np.testing.assert_array_equal(APPLY(net, images(), jnp.full((4,), 0.5), None), 0.0)


def test_attention_is_permutation_equivariant():
    """No positional information inside attention: permuting pixels permutes outputs."""
    attn = AttnBlock(8, _Layers(None, jnp.float32, nnx.Rngs(0)), init_scale=1.0)
    x = jax.random.normal(KEY, (2, 4, 4, 8))
    perm = jax.random.permutation(jax.random.key(1), 16)

    def shuffle(a):
        return a.reshape(2, 16, 8)[:, perm].reshape(2, 4, 4, 8)

    y = attn(x)
    assert not np.allclose(y, x / math.sqrt(2), atol=1e-3)  # the attention path acts
    np.testing.assert_allclose(attn(shuffle(x)), shuffle(y), rtol=1e-5, atol=1e-6)


# ---- forward pass and conditioning --------------------------------------------------


def test_shape_time_and_class_conditioning(conditional):
    x, t = images(), jnp.full((4,), 0.3)
    labels = jnp.array([0, 1, 2, 0])
    out = APPLY(conditional, x, t, labels)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    # time dependence
    assert not np.allclose(out, APPLY(conditional, x, jnp.full((4,), 0.7), labels), atol=1e-4)
    # the label changes the output, example by example
    other = APPLY(conditional, x, t, jnp.array([1, 1, 2, 2]))
    changed = ~np.all(np.isclose(out, other, atol=1e-6), axis=(1, 2, 3))
    np.testing.assert_array_equal(changed, [True, False, False, True])
    # no labels = the null class, index num_classes
    np.testing.assert_array_equal(
        APPLY(conditional, x, t, None), APPLY(conditional, x, t, jnp.full((4,), 3))
    )
    with pytest.raises(Exception, match=r"labels must lie in \[0, 3\]"):
        APPLY(conditional, x, t, jnp.array([0, 1, 4, 0])).block_until_ready()


def test_bad_arguments(conditional):
    with pytest.raises(ValueError, match="x must have shape"):
        conditional(jnp.zeros((2, 16, 16, 1)), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"cond must be a scalar or have shape \[B\]=\[4\]"):
        conditional(images(), jnp.zeros(3))
    with pytest.raises(ValueError, match="num_classes=None"):
        networks.NCSNpp(1, **TINY, rngs=nnx.Rngs(0))(images(), jnp.zeros(4), labels=jnp.zeros(4))
    with pytest.raises(ValueError, match="attn_resolutions.*\\[8, 4\\].*\\[16\\]"):
        networks.NCSNpp(1, **{**TINY, "attn_resolutions": (16,)}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="image_size=6"):
        networks.NCSNpp(1, **{**TINY, "image_size": 6, "ch_mult": (1, 2, 2)}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="C=132"):
        networks.NCSNpp(1, **{**TINY, "nf": 132}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="resblock_type"):
        networks.NCSNpp(1, **TINY, resblock_type="resnet", rngs=nnx.Rngs(0))


def test_ddpm_variant_runs():
    net = tiny(resblock_type="ddpm", up_attention="block", embedding="sinusoidal")
    out = APPLY(net, images(), jnp.full((4,), 0.5), None)
    assert out.shape == (4, 8, 8, 1) and np.all(np.isfinite(out))


# ---- bf16 and remat -----------------------------------------------------------------


def test_bf16_compute_with_f32_params(conditional):
    x, t = images(), jnp.full((4,), 0.4)
    ref = APPLY(conditional, x, t, None)
    net = tiny(num_classes=3, dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(net, nnx.Param))
    assert params and all(p.dtype == jnp.float32 for p in params)
    out = APPLY(net, x, t, None)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per op): a few per cent
    # after ~30 layers, far from the output's own scale.
    rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    assert 0 < rel < 0.05


@pytest.mark.slow  # 18 s of compiling; default run past 12 min
def test_remat_same_values_and_gradients():
    x, t = images(), jnp.full((4,), 0.6)

    def loss_and_grad(model):
        model.train()
        return nnx.jit(nnx.value_and_grad(lambda m: jnp.mean(m(x, t) ** 2)))(model)

    # dropout on, in train mode: both models draw the same masks from the same streams
    v0, g0 = loss_and_grad(tiny(**{**FLAT, "dropout": 0.2}))
    v1, g1 = loss_and_grad(tiny(**{**FLAT, "dropout": 0.2}, remat=True))
    # every residual block (1 down, 2 middle, 2 up) is a checkpointed region
    for remat, count in ((False, 0), (True, 5)):
        graphdef, state = nnx.split(tiny(**FLAT, remat=remat))
        jaxpr = jax.make_jaxpr(lambda s, g=graphdef: nnx.merge(g, s)(x, t))(state)
        assert str(jaxpr).count("remat") == count
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)


# ---- training -----------------------------------------------------------------------


def _fixture_images(n, key):
    """+-1 bar images: vertical or horizontal stripes of random phase, 8x8x1."""
    k1, k2 = jax.random.split(key)
    i = jnp.arange(8)
    vertical = jnp.where((i[None, :] + jax.random.randint(k1, (n, 1), 0, 2)) % 2, 1.0, -1.0)
    imgs = jnp.broadcast_to(vertical[:, None, :], (n, 8, 8))
    flip = jax.random.bernoulli(k2, 0.5, (n, 1, 1))
    return jnp.where(flip, imgs.transpose(0, 2, 1), imgs)[..., None]


@pytest.mark.slow  # 21 s of compiling; default run past 12 min
def test_training_steps_reduce_dsm_loss():
    vp, param = sde.VPSDE(), networks.NoisePrediction()
    model = networks.NCSNpp(1, **{**FLAT, "nf": 16}, rngs=nnx.Rngs(0))
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)

    def loss_fn(model, x0, key):
        f = networks.score_fn(model, vp, param)
        return sde.dsm_loss(f, vp, x0, key, t_sampling="stratified").mean()

    @nnx.jit
    def step(model, optimizer, key):
        kx, kl = jax.random.split(key)
        loss, grads = nnx.value_and_grad(loss_fn)(model, _fixture_images(32, kx), kl)
        optimizer.update(model, grads)
        return loss

    eval_loss = nnx.jit(loss_fn)
    x_eval, k_eval = _fixture_images(256, jax.random.key(7)), jax.random.key(8)
    before = float(eval_loss(model, x_eval, k_eval))
    assert before == pytest.approx(0.5 * 64, rel=0.1)  # zero output: E ||z||^2 / 2
    for k in jax.random.split(jax.random.key(1), 40):
        step(model, optimizer, k)
    after = float(eval_loss(model, x_eval, k_eval))
    assert after < 0.2 * before  # measured: 32.3 -> 3.1


@pytest.mark.slow
def test_cifar10_full_size_training_step():
    """One forward/backward pass of each full CIFAR-10 configuration (batch 2)."""
    x = jax.random.uniform(KEY, (2, 32, 32, 3), minval=-1, maxval=1)
    t = jnp.array([0.2, 0.8])
    for factory in (networks.ddpmpp_cifar10, networks.ncsnpp_cifar10):
        model = factory(rngs=nnx.Rngs(0))
        model.train()
        value, grads = nnx.jit(nnx.value_and_grad(lambda m: jnp.mean((m(x, t) - x) ** 2)))(model)
        assert np.isfinite(value)
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
