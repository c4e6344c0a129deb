r"""Transformer backbones on image patches: DiT (adaLN-Zero) and U-ViT (long skips).

* **DiT** (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"): the
  image is cut into ``p x p`` patches, linearly embedded, given fixed 2-D sin-cos
  positions, and passed through ``depth`` transformer blocks whose LayerNorms are
  modulated by the condition ``c`` = time embedding + label embedding (adaptive
  LayerNorm, adaLN): each block computes ``(shift, scale, gate)`` for its attention and
  its MLP from ``SiLU(c)``,

  .. math:: h \leftarrow h + g_1 \odot \mathrm{Attn}(\mathrm{LN}(h)(1 + s_1) + b_1),
      \qquad h \leftarrow h + g_2 \odot \mathrm{MLP}(\mathrm{LN}(h)(1 + s_2) + b_2).

  The modulation layers and the output projection start at zero ("adaLN-Zero"), so
  every block starts as the identity and the untrained network outputs exactly 0.
* **U-ViT** (Bao et al. 2023, "All are Worth Words"): time and label are extra tokens
  in front of the patches instead of modulations; the first half of the blocks hands
  its outputs to the second half through long skips (``h <- Linear([h, skip])``); a
  3x3 convolution follows the un-patchify. ``long_skips=True`` gives DiT the same
  skips.

Attention is :func:`jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU).
Parameters are float32; ``dtype=jnp.bfloat16`` computes the dense layers and the
attention in bf16 while LayerNorm statistics and the output stay in float32.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from ._checks import check_choice, check_int, check_positive
from ._embedding import (
    EMBEDDINGS,
    ConditionEmbedding,
    LabelEmbedding,
    broadcast_conds,
)
from ._layers import ddpm_uniform, variance_scaling_uniform

xavier_uniform = ddpm_uniform  # variance 2 / (fan_in + fan_out), DiT's basic init
_ZERO = nnx.initializers.zeros
CONDITIONINGS = ("adaln", "tokens")


@functools.lru_cache(maxsize=16)
def sincos_positions(grid: int, dim: int) -> np.ndarray:
    r"""Fixed 2-D sin-cos positions ``[grid * grid, dim]`` (MAE/DiT): half of the
    features encode the row, half the column, each as
    :math:`[\sin p\,\omega_j, \cos p\,\omega_j]`, :math:`\omega_j = 10000^{-j/(dim/4)}`."""
    if dim % 4:
        raise ValueError(f"the width must be divisible by 4 for 2-D positions, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def encode(pos):
        arg = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(arg), np.cos(arg)], axis=1)

    table = np.concatenate([encode(rows), encode(cols)], axis=1).astype(np.float32)
    table.flags.writeable = False  # cached: shared by every call
    return table


def _layer_norm(x: Array, eps: float = 1e-6) -> Array:
    """LayerNorm without affine parameters, statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _attend(q: Array, k: Array, v: Array, heads: int, key_mask: Array | None) -> Array:
    """Multi-head attention of ``q [B, N, W]`` over ``k, v [B, S, W]``; ``key_mask
    [B, S]`` (True: attend) hides padding."""
    b, n, w = q.shape
    split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, w // heads)  # noqa: E731
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = jax.nn.dot_product_attention(split(q), split(k), split(v), mask=mask)
    return out.reshape(b, n, w)


class _Attention(nnx.Module):
    def __init__(self, width: int, heads: int, kw: dict):
        self.heads = heads
        self.qkv = nnx.Linear(width, 3 * width, kernel_init=xavier_uniform, **kw)
        self.proj = nnx.Linear(width, width, kernel_init=xavier_uniform, **kw)

    def __call__(self, h: Array, key_mask: Array | None = None) -> Array:
        q, k, v = jnp.split(self.qkv(h), 3, -1)
        return self.proj(_attend(q, k, v, self.heads, key_mask))


class _CrossAttention(nnx.Module):
    """Attention of the patches over a context sequence (PixArt-alpha's layout); the
    output projection starts at zero, so a new context starts as no change."""

    def __init__(self, width: int, context_dim: int, heads: int, kw: dict):
        self.heads = heads
        self.q = nnx.Linear(width, width, kernel_init=xavier_uniform, **kw)
        self.kv = nnx.Linear(context_dim, 2 * width, kernel_init=xavier_uniform, **kw)
        self.proj = nnx.Linear(width, width, kernel_init=_ZERO, bias_init=_ZERO, **kw)

    def __call__(self, h: Array, context: Array, key_mask: Array | None) -> Array:
        k, v = jnp.split(self.kv(context.astype(h.dtype)), 2, -1)
        return self.proj(_attend(self.q(h), k, v, self.heads, key_mask))


class _MLP(nnx.Module):
    def __init__(self, width: int, ratio: float, kw: dict):
        hidden = int(width * ratio)
        self.fc1 = nnx.Linear(width, hidden, kernel_init=xavier_uniform, **kw)
        self.fc2 = nnx.Linear(hidden, width, kernel_init=xavier_uniform, **kw)

    def __call__(self, h: Array) -> Array:
        return self.fc2(jax.nn.gelu(self.fc1(h), approximate=True))


class DiTBlock(nnx.Module):
    """One transformer block, ``(h [B, N, W], c [B, W] | None) -> h``: adaLN-Zero
    modulation from ``c``, or (``c=None``, U-ViT) plain pre-LN; with ``skip_in`` the
    block first merges a long skip (``h <- Linear([h, skip])``); with ``context_dim``
    it attends to a context sequence after its self-attention."""

    def __init__(
        self, width, heads, mlp_ratio, *, adaln: bool, skip_in: bool, context_dim, kw: dict
    ):
        self.attn = _Attention(width, heads, kw)
        self.cross = None if context_dim is None else _CrossAttention(width, context_dim, heads, kw)
        self.mlp = _MLP(width, mlp_ratio, kw)
        self.modulation = (
            nnx.Linear(width, 6 * width, kernel_init=_ZERO, bias_init=_ZERO, **kw)
            if adaln
            else None
        )
        self.skip = (
            nnx.Linear(2 * width, width, kernel_init=xavier_uniform, **kw) if skip_in else None
        )

    def __call__(self, h, c, skip=None, context=None, context_mask=None, key_mask=None):
        if self.skip is not None:
            h = self.skip(jnp.concatenate([h, skip], axis=-1))
        if self.modulation is None:
            h = h + self.attn(_layer_norm(h), key_mask)
            h = self._cross(h, context, context_mask)
            return h + self.mlp(_layer_norm(h))
        b1, s1, g1, b2, s2, g2 = jnp.split(self.modulation(nnx.silu(c))[:, None], 6, -1)
        h = h + g1 * self.attn(_layer_norm(h) * (1 + s1) + b1, key_mask)
        h = self._cross(h, context, context_mask)
        return h + g2 * self.mlp(_layer_norm(h) * (1 + s2) + b2)

    def _cross(self, h, context, context_mask):
        if self.cross is None or context is None:
            return h
        return h + self.cross(_layer_norm(h), context, context_mask)


def _call_block(block, h, c, skip, context, context_mask, key_mask):
    return block(h, c, skip, context, context_mask, key_mask)


_remat_block = nnx.remat(_call_block)


class DiT(nnx.Module):
    r"""``(x [B, H, W, C], cond [B], labels=None) -> [B, H, W, C_out]``: a diffusion
    transformer on ``patch_size`` patches (see the module docstring).

    Args:
        in_channels: ``C``.
        image_size: ``H = W``, divisible by ``patch_size``.
        patch_size, width, depth, heads, mlp_ratio: the transformer (``width`` divisible
            by ``heads`` and by 4).
        num_classes: class conditioning with a null class (``labels=None``) for
            classifier-free guidance; ``None`` for none.
        out_channels: ``C_out``, default ``in_channels`` (DiT's learned variance: 2C).
        conditioning: ``"adaln"`` (DiT's adaLN-Zero) or ``"tokens"`` (U-ViT: time and
            label tokens, no modulation, a final 3x3 convolution).
        context_dim: the width of a context sequence (text tokens) to condition on:
            with adaLN, a cross-attention after each self-attention (PixArt-alpha's
            layout, output projections zero at init); with tokens, the context is
            projected and joins the sequence (U-ViT's text model). ``None``: none.
        pooled_dim: the width of a pooled conditioning vector (SD3's pooled text
            embedding), projected and added to the time embedding. ``None``: none.
        long_skips: U-ViT's skips from the first half of the blocks to the second
            (default: on for tokens, off for adaLN).
        embedding, embed_dim, cond_scale: the time embedding (as the U-Nets';
            sinusoidal with 256 features and ``cond * 1000`` by default, DiT's).
        dtype: compute dtype (``None``: the parameters'); ``remat``: rematerialise each
            block in the backward pass.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        image_size: int,
        patch_size: int = 2,
        width: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
        num_classes: int | None = None,
        out_channels: int | None = None,
        conditioning: str = "adaln",
        long_skips: bool | None = None,
        context_dim: int | None = None,
        pooled_dim: int | None = None,
        embedding: str = "sinusoidal",
        embed_dim: int = 256,
        cond_scale: float | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        remat: bool = False,
        interval_time: bool = False,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int(
            "out_channels", in_channels if out_channels is None else out_channels, 1
        )
        self.patch = check_int("patch_size", patch_size, 1)
        check_int("image_size", image_size, 1)
        if image_size % patch_size:
            raise ValueError(
                f"image_size must be divisible by patch_size, got image_size={image_size} "
                f"and patch_size={patch_size}"
            )
        check_int("depth", depth, 1)
        check_int("heads", heads, 1)
        check_int("width", width, 4)
        if width % heads or width % 4:
            raise ValueError(
                f"width must be divisible by heads and by 4, got width={width}, heads={heads}"
            )
        check_positive("mlp_ratio", mlp_ratio)
        check_choice("conditioning", conditioning, CONDITIONINGS)
        check_choice("embedding", embedding, EMBEDDINGS)
        self.image_size, self.width = image_size, width
        self.grid = image_size // patch_size
        self.adaln = conditioning == "adaln"
        self.long_skips = (not self.adaln) if long_skips is None else bool(long_skips)
        self.remat, self.dtype = bool(remat), dtype
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        p, c_in = patch_size, in_channels
        self.patchify = nnx.Linear(
            p * p * c_in, width, kernel_init=variance_scaling_uniform(1.0, "fan_avg"), **kw
        )
        normal = nnx.initializers.normal(0.02)

        def linear(i, o):
            return nnx.Linear(i, o, kernel_init=normal, **kw)

        self.embed = ConditionEmbedding(
            embedding, embed_dim, width, cond_scale, linear=linear,
            interval_time=interval_time, rngs=rngs,
        )  # fmt: skip
        self.label = (
            None
            if num_classes is None
            else LabelEmbedding(num_classes, width, embedding_init=normal, rngs=rngs)
        )
        self.context_dim = None if context_dim is None else check_int("context_dim", context_dim, 1)
        self.pooled_dim = None if pooled_dim is None else check_int("pooled_dim", pooled_dim, 1)
        self.pooled = (
            None if pooled_dim is None else nnx.Linear(pooled_dim, width, kernel_init=normal, **kw)
        )
        self.context_in = (
            nnx.Linear(context_dim, width, kernel_init=xavier_uniform, **kw)
            if context_dim is not None and not self.adaln
            else None
        )
        half = depth // 2 if self.long_skips else 0
        self.blocks = nnx.List(
            [
                DiTBlock(
                    width,
                    heads,
                    mlp_ratio,
                    adaln=self.adaln,
                    skip_in=self.long_skips and i >= depth - half,
                    context_dim=context_dim if self.adaln else None,
                    kw=kw,
                )
                for i in range(depth)
            ]
        )
        self.half = half
        out = p * p * self.out_channels
        self.final_modulation = (
            nnx.Linear(width, 2 * width, kernel_init=_ZERO, bias_init=_ZERO, **kw)
            if self.adaln
            else None
        )
        self.final = nnx.Linear(
            width, out, kernel_init=_ZERO if self.adaln else xavier_uniform, **kw
        )
        self.conv_out = (
            None
            if self.adaln
            else nnx.Conv(
                self.out_channels,
                self.out_channels,
                (3, 3),
                kernel_init=_ZERO,
                bias_init=_ZERO,
                **kw,
            )
        )

    def __call__(
        self,
        x: Float[Array, "B H W C"],
        cond: Float[Array, " B"],
        labels: Int[Array, " B"] | None = None,
        *,
        context: Float[Array, "B L E"] | None = None,
        context_mask: Bool[Array, "B L"] | None = None,
        pooled: Float[Array, "B P"] | None = None,
    ) -> Float[Array, "B H W C_out"]:
        """``context`` (``[B, L, context_dim]``, ``context_mask`` True where a token is
        real) and ``pooled`` (``[B, pooled_dim]``) are optional: left out, the network
        runs without them, the null condition of guidance."""
        size, p, g = self.image_size, self.patch, self.grid
        if x.shape[1:] != (size, size, self.in_channels):
            raise ValueError(
                f"x must have shape [B, {size}, {size}, {self.in_channels}] (NHWC), got "
                f"shape {x.shape}"
            )
        if labels is not None and self.label is None:
            raise ValueError("labels were given to a network built with num_classes=None")
        b = x.shape[0]
        self._check_condition(b, context, context_mask, pooled)
        dtype = x.dtype if self.dtype is None else self.dtype
        patches = x.reshape(b, g, p, g, p, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, -1)
        h = self.patchify(patches.astype(dtype)) + sincos_positions(g, self.width).astype(dtype)
        c = self.embed(broadcast_conds(cond, x, self.embed.interval_time, jnp.float32))
        if self.pooled is not None and pooled is not None:
            c = c + self.pooled(pooled.astype(dtype)).astype(c.dtype)
        if self.label is not None:
            y = self.label(labels, b)
            c = c + y if self.adaln else c
        extra, key_mask = 0, None
        if not self.adaln:  # U-ViT: the condition as tokens before the patches
            tokens = [c[:, None]] + ([] if self.label is None else [y[:, None]])
            if self.context_in is not None and context is not None:
                tokens.append(self.context_in(context.astype(dtype)))
                if context_mask is not None:
                    head = jnp.ones((b, len(tokens) - 1), bool)
                    tail = jnp.ones((b, h.shape[1]), bool)
                    key_mask = jnp.concatenate([head, context_mask.astype(bool), tail], 1)
            extra = sum(t.shape[1] for t in tokens)
            h = jnp.concatenate([t.astype(h.dtype) for t in tokens] + [h], axis=1)
            c, context = None, None
        else:
            c = c.astype(dtype)
        mask = None if context_mask is None else context_mask.astype(bool)
        skips = []
        for i, block in enumerate(self.blocks):
            skip = skips.pop() if block.skip is not None else None
            args = (h, c, skip, context, mask, key_mask)
            h = _remat_block(block, *args) if self.remat else block(*args)
            if i < self.half:
                skips.append(h)
        h = _layer_norm(h[:, extra:])
        if self.final_modulation is not None:
            shift, scale = jnp.split(self.final_modulation(nnx.silu(c))[:, None], 2, -1)
            h = h * (1 + scale) + shift
        out = self.final(h).reshape(b, g, g, p, p, self.out_channels)
        out = out.transpose(0, 1, 3, 2, 4, 5).reshape(b, size, size, self.out_channels)
        if self.conv_out is not None:
            out = self.conv_out(out)
        return out.astype(x.dtype)

    def _check_condition(self, b, context, context_mask, pooled):
        if context is not None:
            if self.context_dim is None:
                raise ValueError("context was given to a network built with context_dim=None")
            if context.ndim != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
                raise ValueError(
                    f"context must have shape [B, L, {self.context_dim}] with B={b}, got "
                    f"shape {context.shape}"
                )
            if context_mask is not None and context_mask.shape != context.shape[:2]:
                raise ValueError(
                    f"context_mask must have shape [B, L]={context.shape[:2]}, got "
                    f"shape {context_mask.shape}"
                )
        elif context_mask is not None:
            raise ValueError("context_mask was given without a context")
        if pooled is not None:
            if self.pooled_dim is None:
                raise ValueError("pooled was given to a network built with pooled_dim=None")
            if pooled.shape != (b, self.pooled_dim):
                raise ValueError(
                    f"pooled must have shape [B, {self.pooled_dim}] with B={b}, got shape "
                    f"{pooled.shape}"
                )


# (width, depth, heads) of Peebles & Xie 2023, Table 1.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
DIT_NAMES = tuple(f"{s}/{p}" for s in DIT_SIZES for p in (2, 4, 8))


def dit(
    name: str,
    *,
    image_size: int,
    in_channels: int,
    num_classes: int | None,
    rngs: nnx.Rngs,
    out_channels: int | None = None,
    **overrides,
) -> DiT:
    """A DiT of the paper's sizes: ``name`` in ``"S/2" "S/4" "S/8" "B/2" ... "XL/8"``
    (model size / patch size). With the paper's ImageNet-256 latents
    (``image_size=32, in_channels=4, out_channels=8, num_classes=1000``) the
    parameter counts are the paper's (XL/2: 675M). ``overrides`` go to :class:`DiT`.
    Example::

        net = networks.dit("S/2", image_size=28, in_channels=1, num_classes=10,
                           rngs=nnx.Rngs(0))
        net(x, t, labels)                   # [B, 28, 28, 1]
    """
    check_choice("name", name, DIT_NAMES)
    size, patch = name.split("/")
    width, depth, heads = DIT_SIZES[size]
    kwargs = dict(patch_size=int(patch), width=width, depth=depth, heads=heads)
    return DiT(
        in_channels,
        image_size=image_size,
        num_classes=num_classes or None,
        out_channels=out_channels,
        rngs=rngs,
        **{**kwargs, **overrides},
    )


def uvit_cifar10(*, rngs: nnx.Rngs, num_classes: int | None = None, **overrides) -> DiT:
    """U-ViT-S/2 for 32x32x3 images (Bao et al. 2023, CIFAR-10: width 512, 13 blocks,
    8 heads, patch 2, long skips, time as a token; 44M parameters)."""
    kwargs = dict(
        image_size=32,
        patch_size=2,
        width=512,
        depth=13,
        heads=8,
        conditioning="tokens",
        long_skips=True,
    )
    return DiT(3, num_classes=num_classes, rngs=rngs, **{**kwargs, **overrides})
