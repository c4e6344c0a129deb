r"""DDPM++ and NCSN++ score U-Nets (Song et al. 2021, ICLR, appendix H), in Flax NNX.

Both are configurations of one U-Net, :class:`NCSNpp`, built from:

* **residual blocks** (BigGAN style; Brock et al. 2019): with :math:`e` the condition
  embedding,

  .. math::
      h &= \mathrm{Conv}_3(\mathrm{R}(\mathrm{SiLU}(\mathrm{GN}(x))))
           + W_e\, \mathrm{SiLU}(e), \\
      h &= \mathrm{Conv}_3^{0}(\mathrm{Dropout}(\mathrm{SiLU}(\mathrm{GN}(h)))), \qquad
      y = \big(\mathrm{skip}(\mathrm{R}(x)) + h\big) / \sqrt 2,

  where :math:`\mathrm{R}` is the identity, a 2x2 average pool (down) or a
  nearest-neighbour x2 (up), ``skip`` a 1x1 convolution when the channels change or the
  block resamples (else the identity), and :math:`\mathrm{Conv}^{0}` starts at
  ``init_scale`` times DDPM's initialisation (zero by default), so every block starts as
  a rescaled skip. The :math:`1/\sqrt2` is ``skip_rescale``.
* **self-attention** (single head, over all pixels, as in DDPM) at the resolutions in
  ``attn_resolutions``, with the same zero-initialised output projection and rescaling.
* a **condition embedding**: random Fourier features (NCSN++; scale 16) or DDPM's
  sinusoidal embedding (DDPM++), then a two-layer SiLU MLP of width ``4 nf``; with
  ``num_classes`` a learned label embedding (``num_classes + 1`` rows, the last the
  *null* class for classifier-free guidance; Ho & Salimans 2022) is added to it.

The layout follows score_sde's ``ncsnpp`` model: ``num_res_blocks`` blocks per level on
the way down (attention after each block at an attention resolution) and a resampling
block between levels, every activation kept; a middle of block, attention, block;
``num_res_blocks + 1`` blocks per level on the way up, each fed the concatenation of
the current activation and one kept activation, attention once per level, and a
resampling block between levels; then GroupNorm, SiLU and a 3x3 convolution.
GroupNorm uses ``min(C // 4, 32)`` groups.

Differences from score_sde (stated in :func:`ncsnpp_cifar10`): no FIR (StyleGAN-2)
resampling filters -- resampling is a 2x2 average / nearest neighbour (FIR kernels are
fixed, so this changes no parameter count); of the progressive-growing paths only the
"residual" input pyramid (the one NCSN++ uses) is implemented, with stride-2
convolutions in place of FIR-filtered ones (same parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from ._checks import check_choice, check_int, check_positive, check_rate
from ._embedding import (
    EMBEDDINGS,
    ConditionEmbedding,
    LabelEmbedding,
    broadcast_conds,
)
from ._layers import avg_pool2, ddpm_init, ddpm_uniform, nearest_up2, variance_scaling_uniform

RESBLOCK_TYPES = ("biggan", "ddpm")
PROGRESSIVE_INPUTS = ("none", "residual")
UP_ATTENTION = ("level", "block")
_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _num_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: ``min(channels // 4, 32)`` (score_sde's rule)."""
    groups = min(channels // 4, 32)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm needs min(C // 4, 32) groups to divide the C channels, got C={channels} "
            f"(groups={groups}); use channel counts (nf * ch_mult and their up-path sums) "
            "that are multiples of 4 below 128 and of 32 from 128 on"
        )
    return groups


class _KeySource:
    """Initialisation keys ``fold_in(key, i)``, ``i = 0, 1, ...`` (a Python counter),
    with the one method nnx layers call on their ``rngs``: ``params()``.

    With ``nnx.Rngs`` every one of the ~600 parameter draws of the CIFAR-10 nets updates
    an ``RngCount`` variable, and under tracing (``nnx.eval_shape``, ``nnx.jit``) each
    update builds an error message by walking the whole trace so far (flax 0.12 / jax
    0.10), which is quadratic: ``nnx.eval_shape`` of DDPM++ took 42 s here, 6 s with
    one draw from ``rngs`` per network and a Python counter after that.
    """

    def __init__(self, key: Array):
        self.key = key
        self.count = 0

    def params(self) -> Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count - 1)


class _Layers:
    """Layer factory carrying the compute dtype, parameter dtype and the keys;
    ``rngs`` itself is kept for dropout."""

    def __init__(self, dtype, param_dtype, rngs: nnx.Rngs):
        self.kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=_KeySource(rngs.params()))
        self.rngs = rngs

    def conv(self, i, o, k=3, stride=1, init=ddpm_uniform) -> nnx.Conv:
        return nnx.Conv(i, o, (k, k), strides=stride, kernel_init=init, **self.kw)

    def dense(self, i, o, init=ddpm_uniform) -> nnx.Linear:
        return nnx.Linear(i, o, kernel_init=init, **self.kw)

    def norm(self, c) -> nnx.GroupNorm:
        return nnx.GroupNorm(c, num_groups=_num_groups(c), epsilon=1e-6, **self.kw)


class BigGANResBlock(nnx.Module):
    r"""BigGAN-style residual block with the condition added after the first
    convolution (see the module docstring); ``resample`` is ``None``, ``"down"`` (2x2
    average) or ``"up"`` (nearest x2), applied to both branches. ``__call__(x, e)``.

    Without resampling it has the layout of DDPM's block (the small U-Net's
    ``DDPMResBlock``, plus ``skip_rescale`` and ``init_scale``); ``resblock_type="ddpm"``
    uses it that way, with :class:`_ConvResample` between levels.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        layers: _Layers,
        *,
        resample: str | None = None,
        dropout: float = 0.1,
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ):
        self.resample = resample
        self.skip_rescale = skip_rescale
        self.norm0 = layers.norm(in_ch)
        self.conv0 = layers.conv(in_ch, out_ch)
        self.emb = layers.dense(emb_dim, out_ch)
        self.norm1 = layers.norm(out_ch)
        self.dropout = nnx.Dropout(dropout, rngs=layers.rngs)
        self.conv1 = layers.conv(out_ch, out_ch, init=ddpm_init(init_scale))
        needs_skip = in_ch != out_ch or resample is not None
        self.skip = layers.conv(in_ch, out_ch, k=1) if needs_skip else None

    def _resample(self, x: Array) -> Array:
        if self.resample == "down":
            return avg_pool2(x)
        if self.resample == "up":
            return nearest_up2(x)
        return x

    def __call__(self, x: Array, e: Array) -> Array:
        h = self._resample(nnx.silu(self.norm0(x)))
        x = self._resample(x)
        h = self.conv0(h) + self.emb(nnx.silu(e))[:, None, None, :]
        h = self.conv1(self.dropout(nnx.silu(self.norm1(h))))
        out = (x if self.skip is None else self.skip(x)) + h
        return out * _SQRT_HALF if self.skip_rescale else out


class AttnBlock(nnx.Module):
    r"""Single-head self-attention over the ``H W`` pixels (DDPM's ``AttnBlock``):

    .. math::
        y = \big(x + W_o\, \mathrm{softmax}(Q K^\top / \sqrt C)\, V\big) / \sqrt 2,
        \quad (Q, K, V) = \mathrm{GN}(x)\, (W_q, W_k, W_v),

    per-pixel linear maps with biases; ``W_o`` starts at ``init_scale`` times DDPM's
    initialisation (zero by default). The logits and softmax are computed in float32.
    """

    def __init__(self, ch: int, layers: _Layers, *, skip_rescale=True, init_scale=0.0):
        self.skip_rescale = skip_rescale
        self.norm = layers.norm(ch)
        qkv_init = variance_scaling_uniform(0.1, "fan_avg")  # score_sde's NIN default
        self.q = layers.dense(ch, ch, init=qkv_init)
        self.k = layers.dense(ch, ch, init=qkv_init)
        self.v = layers.dense(ch, ch, init=qkv_init)
        self.out = layers.dense(ch, ch, init=ddpm_init(init_scale))

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(b, hh * ww, c) for f in (self.q, self.k, self.v))
        logits = jnp.einsum("bic,bjc->bij", q, k, preferred_element_type=jnp.float32)
        w = jax.nn.softmax(logits / math.sqrt(c), axis=-1).astype(v.dtype)
        h = self.out(jnp.einsum("bij,bjc->bic", w, v).reshape(b, hh, ww, c))
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


class _ConvResample(nnx.Module):
    """DDPM's resampling: a stride-2 3x3 convolution (down) or nearest x2 then a 3x3
    convolution (up). Takes ``(x, e)`` and ignores ``e``, like a :class:`BigGANResBlock`."""

    def __init__(self, ch: int, direction: str, layers: _Layers):
        self.up = direction == "up"
        self.conv = layers.conv(ch, ch, stride=1 if self.up else 2)

    def __call__(self, x: Array, e: Array) -> Array:
        return self.conv(nearest_up2(x) if self.up else x)


def _call_block(block, h, e):
    return block(h, e)


_remat_block = nnx.remat(_call_block)


class NCSNpp(nnx.Module):
    r"""``(x [B, H, W, C], cond [B], labels=None) -> [B, H, W, C]``: score_sde's
    NCSN++ / DDPM++ U-Net (see the module docstring for the blocks).

    Use :func:`ddpmpp_cifar10` / :func:`ncsnpp_cifar10` for the published CIFAR-10
    configurations; what the output means (noise, score, denoiser) is set by a
    parametrisation (e.g. :class:`networks.NoisePrediction`), as for every network here.

    Args:
        in_channels: image channels ``C`` (in and out).
        image_size: ``H = W`` of the inputs (fixes which levels have attention); must
            be divisible by ``2 ** (len(ch_mult) - 1)``.
        nf: base width; level ``i`` has ``nf * ch_mult[i]`` channels.
        ch_mult: channel multipliers, one per resolution level.
        num_res_blocks: residual blocks per level on the way down (one more going up).
        attn_resolutions: resolutions (in pixels) that get self-attention.
        dropout: dropout rate inside the residual blocks (active in ``train()`` mode).
        resblock_type: ``"biggan"`` (resampling residual blocks between levels) or
            ``"ddpm"`` (a stride-2 convolution / nearest x2 + convolution).
        embedding: ``"fourier"`` (NCSN++) or ``"sinusoidal"`` (DDPM++).
        fourier_scale: std of the random Fourier frequencies.
        cond_scale: multiplies ``cond`` before the embedding (default 1 for Fourier,
            1000 for sinusoidal: DDPM's step scale for ``cond = t``).
        skip_rescale: divide every residual sum by :math:`\sqrt 2`.
        progressive_input: ``"none"`` or ``"residual"`` (NCSN++'s input pyramid: the
            image is brought down by stride-2 convolutions and averaged into the
            activation after each downsampling, ``(p + h)/\sqrt2``).
        up_attention: ``"level"`` (score_sde's ncsnpp: once per level on the way up) or
            ``"block"`` (DDPM's: after every up block).
        init_scale: scale of the initialisation of the last convolution in each block,
            each attention output and the output convolution (score_sde: 0, so the
            network starts at exactly zero).
        num_classes: number of classes for class conditioning (``labels`` in
            ``[0, num_classes]``, ``num_classes`` being the null class); ``None`` for an
            unconditional net.
        dtype: compute dtype (e.g. ``jnp.bfloat16``); ``None`` computes in the
            parameters' dtype. Outputs come back in ``x``'s dtype.
        param_dtype: parameter dtype (float32 by default, also with bf16 compute).
        remat: rematerialise each residual block in the backward pass
            (:func:`flax.nnx.remat`): less activation memory, ~1/3 more compute.
        rngs: ``nnx.Rngs`` for initialisation and dropout.

    Example::

        net = NCSNpp(1, image_size=8, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=(4,), rngs=nnx.Rngs(0))
        net(jnp.zeros((2, 8, 8, 1)), jnp.full((2,), 0.5)).shape  # (2, 8, 8, 1)
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        image_size: int = 32,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        resblock_type: str = "biggan",
        embedding: str = "fourier",
        fourier_scale: float = 16.0,
        cond_scale: float | None = None,
        skip_rescale: bool = True,
        progressive_input: str = "none",
        up_attention: str = "level",
        init_scale: float = 0.0,
        num_classes: int | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        remat: bool = False,
        interval_time: bool = False,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.image_size = check_int("image_size", image_size, 1)
        check_int("nf", nf, 4)
        ch_mult = tuple(ch_mult)
        if not ch_mult or any(
            not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in ch_mult
        ):
            raise ValueError(f"ch_mult must be non-empty positive integers, got {ch_mult!r}")
        self.num_res_blocks = check_int("num_res_blocks", num_res_blocks, 1)
        check_rate("dropout", dropout)
        check_choice("resblock_type", resblock_type, RESBLOCK_TYPES)
        check_choice("embedding", embedding, EMBEDDINGS)
        check_positive("fourier_scale", fourier_scale)
        check_choice("progressive_input", progressive_input, PROGRESSIVE_INPUTS)
        check_choice("up_attention", up_attention, UP_ATTENTION)
        if not (isinstance(init_scale, int | float) and 0 <= init_scale < math.inf):
            raise ValueError(f"init_scale must be a finite number >= 0, got {init_scale!r}")
        if num_classes is not None:
            check_int("num_classes", num_classes, 1)
        factor = 2 ** (len(ch_mult) - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size must be divisible by 2**(len(ch_mult)-1)={factor}, got "
                f"image_size={image_size} with ch_mult={ch_mult}"
            )
        resolutions = [image_size // 2**i for i in range(len(ch_mult))]
        bad = [r for r in attn_resolutions if r not in resolutions]
        if bad:
            raise ValueError(
                f"attn_resolutions must be among the level resolutions {resolutions}, got {bad}"
            )
        self.num_classes = num_classes
        self.remat = bool(remat)
        self.dtype = dtype
        self.progressive = progressive_input == "residual"
        self.up_per_block = up_attention == "block"
        self.attn_levels = tuple(r in attn_resolutions for r in resolutions)

        L = _Layers(dtype, param_dtype, rngs)
        emb_dim = 4 * nf
        self.embed = ConditionEmbedding(
            embedding,
            2 * nf if embedding == "fourier" else nf,
            emb_dim,
            cond_scale,
            fourier_scale=fourier_scale,
            linear=L.dense,
            interval_time=interval_time,
            rngs=rngs,
        )
        self.label = (
            None
            if num_classes is None
            else LabelEmbedding(
                num_classes,
                emb_dim,
                # variance 1 / (4 nf) per entry, as flax's default embedding init
                embedding_init=variance_scaling_uniform(1.0, "fan_out"),
                **L.kw,
            )
        )
        block_kw = dict(dropout=dropout, skip_rescale=skip_rescale, init_scale=init_scale)
        attn_kw = dict(skip_rescale=skip_rescale, init_scale=init_scale)

        def block(i, o, resample=None):
            return BigGANResBlock(i, o, emb_dim, L, resample=resample, **block_kw)

        def resampler(ch, direction):
            if resblock_type == "biggan":
                return block(ch, ch, resample=direction)
            return _ConvResample(ch, direction, L)

        self.conv_in = L.conv(in_channels, nf)
        down_res, down_attn, down_sample, pyramid = [], [], [], []
        skips, ch, pyr_ch = [nf], nf, in_channels
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                down_res.append(block(ch, nf * mult))
                ch = nf * mult
                if self.attn_levels[level]:
                    down_attn.append(AttnBlock(ch, L, **attn_kw))
                skips.append(ch)
            if level < len(ch_mult) - 1:
                down_sample.append(resampler(ch, "down"))
                if self.progressive:
                    pyramid.append(L.conv(pyr_ch, ch, stride=2))
                    pyr_ch = ch
                skips.append(ch)
        self.down_res, self.down_attn = nnx.List(down_res), nnx.List(down_attn)
        self.down_sample, self.pyramid = nnx.List(down_sample), nnx.List(pyramid)
        self.mid = nnx.List([block(ch, ch), AttnBlock(ch, L, **attn_kw), block(ch, ch)])
        up_res, up_attn, up_sample = [], [], []
        for level in reversed(range(len(ch_mult))):
            for _ in range(num_res_blocks + 1):
                up_res.append(block(ch + skips.pop(), nf * ch_mult[level]))
                ch = nf * ch_mult[level]
                if self.attn_levels[level] and self.up_per_block:
                    up_attn.append(AttnBlock(ch, L, **attn_kw))
            if self.attn_levels[level] and not self.up_per_block:
                up_attn.append(AttnBlock(ch, L, **attn_kw))
            if level > 0:
                up_sample.append(resampler(ch, "up"))
        self.up_res, self.up_attn, self.up_sample = (
            nnx.List(up_res),
            nnx.List(up_attn),
            nnx.List(up_sample),
        )
        self.norm_out = L.norm(ch)
        self.conv_out = L.conv(ch, in_channels, init=ddpm_init(init_scale))

    def _block(self, block, h, e):
        return _remat_block(block, h, e) if self.remat else block(h, e)

    def __call__(
        self,
        x: Float[Array, "B H W C"],
        cond: Float[Array, " B"],
        labels: Int[Array, " B"] | None = None,
    ) -> Float[Array, "B H W C"]:
        size = (self.image_size, self.image_size)
        if x.ndim != 4 or x.shape[1:] != (*size, self.in_channels):
            raise ValueError(
                f"x must have shape [B, {size[0]}, {size[1]}, {self.in_channels}] (NHWC), got "
                f"shape {x.shape}"
            )
        if labels is not None and self.num_classes is None:
            raise ValueError("labels were given to a network built with num_classes=None")
        cond = broadcast_conds(cond, x, self.embed.interval_time, jnp.float32)  # float32 for bf16
        e = self.embed(cond)
        if self.label is not None:
            e = e + self.label(labels, x.shape[0])
        n_levels, nrb = len(self.attn_levels), self.num_res_blocks
        res, attn, sample = iter(self.down_res), iter(self.down_attn), iter(self.down_sample)
        pyr_convs = iter(self.pyramid)
        pyr = x
        hs = [self.conv_in(x)]
        for level in range(n_levels):
            for _ in range(nrb):
                h = self._block(next(res), hs[-1], e)
                if self.attn_levels[level]:
                    h = next(attn)(h)
                hs.append(h)
            if level < n_levels - 1:
                h = self._block(next(sample), hs[-1], e)
                if self.progressive:  # NCSN++'s "residual" input pyramid
                    pyr = next(pyr_convs)(pyr)
                    h = pyr = (pyr + h) * _SQRT_HALF
                hs.append(h)
        h = self._block(self.mid[0], hs[-1], e)
        h = self.mid[1](h)
        h = self._block(self.mid[2], h, e)
        res, attn, sample = iter(self.up_res), iter(self.up_attn), iter(self.up_sample)
        for level in reversed(range(n_levels)):
            for _ in range(nrb + 1):
                h = self._block(next(res), jnp.concatenate([h, hs.pop()], axis=-1), e)
                if self.attn_levels[level] and self.up_per_block:
                    h = next(attn)(h)
            if self.attn_levels[level] and not self.up_per_block:
                h = next(attn)(h)
            if level > 0:
                h = self._block(next(sample), h, e)
        out = self.conv_out(nnx.silu(self.norm_out(h)))
        return out.astype(x.dtype)


def _cifar10(*, in_channels, image_size, num_res_blocks, num_classes, rngs, **kw) -> NCSNpp:
    return NCSNpp(
        in_channels,
        image_size=image_size,
        nf=128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=num_res_blocks,
        attn_resolutions=(16,),
        num_classes=num_classes,
        rngs=rngs,
        **kw,
    )


def ddpmpp_cifar10(
    *,
    deep: bool = False,
    in_channels: int = 3,
    image_size: int = 32,
    dropout: float = 0.1,
    num_classes: int | None = None,
    dtype: Any = None,
    remat: bool = False,
    rngs: nnx.Rngs,
) -> NCSNpp:
    """score_sde's "DDPM++ cont." CIFAR-10 network (``configs/vp/cifar10_ddpmpp_continuous``):
    nf 128, ch_mult (1, 2, 2, 2), 4 BigGAN blocks per level (8 with ``deep=True``),
    attention at 16x16, dropout 0.1, sinusoidal embedding of ``1000 t``, skip rescaling,
    no FIR, no progressive growing, zero-initialised output layers.

    Parameters: 61,804,419 (``deep``: 106,632,579). The configuration has no FIR and no
    progressive paths, so nothing is left out: the count is the reference architecture's.
    """
    return _cifar10(
        in_channels=in_channels,
        image_size=image_size,
        num_res_blocks=8 if deep else 4,
        num_classes=num_classes,
        rngs=rngs,
        dropout=dropout,
        embedding="sinusoidal",
        dtype=dtype,
        remat=remat,
    )


def ncsnpp_cifar10(
    *,
    deep: bool = False,
    in_channels: int = 3,
    image_size: int = 32,
    dropout: float = 0.1,
    num_classes: int | None = None,
    dtype: Any = None,
    remat: bool = False,
    rngs: nnx.Rngs,
) -> NCSNpp:
    """score_sde's "NCSN++ cont." CIFAR-10 network (``configs/ve/cifar10_ncsnpp_continuous``):
    as :func:`ddpmpp_cifar10` but with random Fourier features (scale 16) and the
    "residual" progressive input pyramid; 8 blocks per level with ``deep=True``.

    Parameters: 62,758,787 (``deep``: 107,586,947), plus 128 fixed Fourier frequencies.
    Left out: the FIR filters of the resampling (fixed ``[1, 3, 3, 1]`` kernels, no
    parameters); here blocks resample by 2x2 average / nearest neighbour and the input
    pyramid by stride-2 3x3 convolutions with the same weights as the FIR convolutions.
    score_sde feeds the VE net ``log sigma``; here the embedding sees whatever ``cond``
    the parametrisation passes (``t``, or ``log(sigma)/4`` for EDM).
    """
    return _cifar10(
        in_channels=in_channels,
        image_size=image_size,
        num_res_blocks=8 if deep else 4,
        num_classes=num_classes,
        rngs=rngs,
        dropout=dropout,
        embedding="fourier",
        progressive_input="residual",
        dtype=dtype,
        remat=remat,
    )


def ddpm_cifar10(
    *,
    in_channels: int = 3,
    image_size: int = 32,
    dropout: float = 0.1,
    num_classes: int | None = None,
    dtype: Any = None,
    remat: bool = False,
    rngs: nnx.Rngs,
) -> NCSNpp:
    """Ho et al. (2020)'s CIFAR-10 network in this U-Net: nf 128, ch_mult (1, 2, 2, 2),
    2 DDPM residual blocks per level, convolutional resampling, attention at 16x16 after
    every block, sinusoidal embedding, no skip rescaling. 35,746,307 parameters (the
    paper, appendix B: "35.7 million")."""
    return _cifar10(
        in_channels=in_channels,
        image_size=image_size,
        num_res_blocks=2,
        num_classes=num_classes,
        rngs=rngs,
        dropout=dropout,
        embedding="sinusoidal",
        resblock_type="ddpm",
        up_attention="block",
        skip_rescale=False,
        dtype=dtype,
        remat=remat,
    )
