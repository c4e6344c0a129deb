"""``networks.DiT``: the paper's parameter counts, adaLN-Zero's exact zero at init, the
patch and position bookkeeping against a per-patch reference, conditioning on time and
labels, bf16 compute, and use through a parametrisation by a sampler."""

from __future__ import annotations

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import networks
import samplers
import sde

# Peebles & Xie 2023, Table 1 (ImageNet 256: 32x32x4 latents, learned variance, 1,000
# classes and the null class), in millions of trainable parameters. (The reference
# code's printed total also counts its frozen sin-cos positions, 256 tokens x width:
# 675,129,632 for XL/2, which is 674,834,720 + 256 * 1152.)
PAPER_MILLIONS = {"S/2": 33, "B/2": 130, "L/2": 458, "XL/2": 675}


@pytest.mark.parametrize("name", list(PAPER_MILLIONS))
def test_parameter_counts_match_the_paper(name):
    abstract = nnx.eval_shape(
        lambda: networks.dit(
            name, image_size=32, in_channels=4, out_channels=8, num_classes=1000,
            rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    count = networks.count_params(abstract)
    assert abs(count / 1e6 - PAPER_MILLIONS[name]) < 0.5, count


def test_uvit_s2_has_the_papers_size():
    """U-ViT-S/2 for CIFAR-10: 44M parameters (Bao et al. 2023, Table 1)."""
    abstract = nnx.eval_shape(lambda: networks.uvit_cifar10(rngs=nnx.Rngs(0)))
    assert abs(networks.count_params(abstract) / 1e6 - 44) < 1.0


TINY = dict(image_size=8, patch_size=2, width=16, depth=2, heads=2)


def _tiny(**kw):
    return networks.DiT(1, **{**TINY, **kw}, rngs=nnx.Rngs(0))


def _randomised(model, seed=1):
    """The model with every parameter redrawn (so the zero-initialised layers act)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [0.2 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, noisy), rest)


X = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
T = jnp.array([0.1, 0.5, 0.9])


@nnx.jit
def _forward(model, x, t, labels):
    return model(x, t, labels)


@pytest.mark.parametrize("conditioning", ["adaln", "tokens"])
def test_zero_at_init_then_time_labels_and_positions_all_matter(conditioning):
    """Untrained: exactly 0 (adaLN-Zero; U-ViT's zero final convolution). With every
    parameter redrawn, the output depends on the time, the label (and the null class)
    and where each patch is (a shifted image is not a shifted output)."""
    model = _tiny(conditioning=conditioning, num_classes=4)
    labels = jnp.array([0, 1, 2])
    out = model(X, T, labels)
    assert out.shape == X.shape and not np.any(np.asarray(out))
    model = _randomised(model)
    base = _forward(model, X, T, labels)
    assert np.all(np.isfinite(base))
    assert not np.allclose(base, _forward(model, X, T + 0.2, labels))
    assert not np.allclose(base, _forward(model, X, T, jnp.array([3, 3, 3])))
    assert not np.allclose(base, _forward(model, X, T, None))  # the null class
    rolled = _forward(model, jnp.roll(X, 2, axis=1), T, labels)
    assert not np.allclose(jnp.roll(base, 2, axis=1), rolled)


@pytest.mark.parametrize("conditioning", ["adaln", "tokens"])
def test_context_tokens_mask_and_pooled_vector(conditioning):
    """A context sequence (cross-attention, or U-ViT's extra tokens) and a pooled vector
    both change the output; a masked-out token does not; leaving them out runs."""
    model = _tiny(conditioning=conditioning, context_dim=6, pooled_dim=5)
    ctx = jax.random.normal(jax.random.key(1), (3, 4, 6))
    mask = jnp.array([[True, True, False, False]] * 3)
    pooled = jax.random.normal(jax.random.key(2), (3, 5))
    assert not np.any(np.asarray(model(X, T, context=ctx, context_mask=mask, pooled=pooled)))
    model = _randomised(model)
    run = nnx.jit(lambda m, c, k, p: m(X, T, context=c, context_mask=k, pooled=p))
    base = run(model, ctx, mask, pooled)
    assert not np.allclose(base, run(model, ctx.at[:, 0].add(1.0), mask, pooled))
    np.testing.assert_allclose(base, run(model, ctx.at[:, 3].add(1.0), mask, pooled), atol=1e-6)
    assert not np.allclose(base, run(model, ctx, mask, pooled + 1.0))
    assert np.all(np.isfinite(model(X, T)))  # no context, no pooled vector: the null condition
    with pytest.raises(ValueError, match=r"context must have shape \[B, L, 6\]"):
        model(X, T, context=ctx[..., :5])
    with pytest.raises(ValueError, match="pooled was given"):
        _tiny()(X, T, pooled=pooled)


def test_a_new_key_compiles_nothing():
    """A ScoreFunction snapshot of a DiT in a sampler: a second key (and new weights of
    the same shapes) reuse the compiled program."""
    vp, param = sde.VPSDE(), networks.NoisePrediction()
    score = networks.ScoreFunction.from_module(_randomised(_tiny()), vp, param)
    traced, traces = helpers.tracing_score(score)
    kw = dict(sde=vp, shape=(2, 8, 8, 1), solver=samplers.DPMSolverPP2M(), steps=2)
    samplers.sample_ode(score_fn=traced, key=jax.random.key(0), **kw)
    first = len(traces)
    samplers.sample_ode(score_fn=traced, key=jax.random.key(1), **kw)
    again = networks.ScoreFunction.from_module(_randomised(_tiny(), seed=5), vp, param)
    samplers.sample_ode(score_fn=type(traced)(again), key=jax.random.key(2), **kw)
    assert first > 0 and len(traces) == first


def test_patchify_and_unpatchify_are_inverse_and_per_patch():
    """With zero blocks and no modulation the network is an affine map of each patch on
    its own: a change inside one patch changes only that patch of the output."""
    model = _randomised(_tiny(depth=1))
    model.blocks[0].attn.proj.kernel.value = jnp.zeros_like(model.blocks[0].attn.proj.kernel)
    model.blocks[0].mlp.fc2.kernel.value = jnp.zeros_like(model.blocks[0].mlp.fc2.kernel)
    x2 = X.at[:, 2:4, 4:6].add(1.0)  # patch (1, 2)
    diff = np.abs(np.asarray(model(x2, T) - model(X, T)))
    assert diff[:, 2:4, 4:6].max() > 1e-3
    mask = np.ones_like(diff, bool)
    mask[:, 2:4, 4:6] = False
    assert diff[mask].max() == 0.0


def test_long_skips_are_used():
    model = _randomised(_tiny(long_skips=True, depth=3))
    assert [b.skip is not None for b in model.blocks] == [False, False, True]
    out = model(X, T)
    model.blocks[2].skip.kernel.value = jnp.zeros_like(model.blocks[2].skip.kernel)
    assert not np.allclose(out, model(X, T))


def test_bfloat16_compute_keeps_float32_parameters_and_output():
    f32 = _randomised(_tiny())
    graphdef, state = nnx.split(_tiny(dtype=jnp.bfloat16))
    bf16 = nnx.merge(graphdef, nnx.state(f32))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    a, b = f32(X, T), bf16(X, T)
    assert b.dtype == jnp.float32
    assert float(jnp.abs(a - b).max()) < 0.05 * float(jnp.abs(a).max())


@pytest.mark.slow  # ~20 s of compiling two DiT gradients
def test_remat_gives_the_same_gradients():
    model = _randomised(_tiny(depth=1))
    remat = nnx.merge(nnx.graphdef(_tiny(depth=1, remat=True)), nnx.state(model))

    def loss(m):
        return jnp.sum(m(X, T) ** 2)

    g1 = jax.tree.leaves(nnx.grad(loss)(model))
    g2 = jax.tree.leaves(nnx.grad(loss)(remat))
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(image_size=9), "divisible by patch_size"),
        (dict(width=18), "divisible by heads and by 4"),
        (dict(conditioning="film"), "conditioning"),
    ],
)
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**bad)


def test_bad_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\[B, 8, 8, 1\]"):
        _tiny()(jnp.zeros((2, 16, 16, 1)), jnp.zeros(2))
    with pytest.raises(ValueError, match="unknown|one of"):
        networks.dit("M/2", image_size=8, in_channels=1, num_classes=None, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "param", [networks.NoisePrediction(), networks.DirectScore(), networks.EDMDenoiser()]
)
def test_a_sampler_runs_on_it_through_every_parametrisation(param):
    model = _randomised(_tiny())
    forward = sde.VPSDE()
    score = networks.score_fn(model, forward, param)
    x, stats = samplers.sample_ode(
        score_fn=score,
        sde=forward,
        shape=(2, 8, 8, 1),
        key=jax.random.key(0),
        solver=samplers.DPMSolverPP2M(),
        steps=3,
    )
    assert x.shape == (2, 8, 8, 1) and np.all(np.isfinite(x)) and int(stats["nfe"]) == 3
