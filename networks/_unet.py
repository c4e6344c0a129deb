"""A small convolutional U-Net (DDPM-style, no attention) for NHWC images."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from ._checks import check_choice, check_int, check_rate
from ._embedding import EMBEDDINGS, ConditionEmbedding, LabelEmbedding, broadcast_conds
from ._layers import ddpm_uniform, nearest_up2


class DDPMResBlock(nnx.Module):
    r"""DDPM's residual block with the condition added between the two convolutions:

    .. math::
        h = \mathrm{Conv}(\mathrm{SiLU}(\mathrm{GN}(x))) + W_e\, \mathrm{SiLU}(e), \quad
        y = \mathrm{skip}(x) + \mathrm{Conv}_0(\mathrm{Dropout}(\mathrm{SiLU}(\mathrm{GN}(h))))

    ``Conv_0`` starts at zero, so each block starts as (a projection of) the identity.
    """

    def __init__(self, in_ch, out_ch, emb_dim, num_groups, dropout, *, rngs: nnx.Rngs):
        self.norm0 = nnx.GroupNorm(in_ch, num_groups=num_groups, rngs=rngs)
        self.conv0 = nnx.Conv(in_ch, out_ch, (3, 3), kernel_init=ddpm_uniform, rngs=rngs)
        self.emb = nnx.Linear(emb_dim, out_ch, kernel_init=ddpm_uniform, rngs=rngs)
        self.norm1 = nnx.GroupNorm(out_ch, num_groups=num_groups, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.conv1 = nnx.Conv(out_ch, out_ch, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.skip = (
            nnx.Conv(in_ch, out_ch, (1, 1), kernel_init=ddpm_uniform, rngs=rngs)
            if in_ch != out_ch
            else None
        )

    def __call__(self, x: Array, e: Array) -> Array:
        h = self.conv0(nnx.silu(self.norm0(x)))
        h = h + self.emb(nnx.silu(e))[:, None, None, :]
        h = self.conv1(self.dropout(nnx.silu(self.norm1(h))))
        return (x if self.skip is None else self.skip(x)) + h


class SmallUNet(nnx.Module):
    r"""``(x [B, H, W, C], cond [B]) -> [B, H, W, C]``: a small U-Net (Ho et al. 2020,
    without attention).

    Level ``i`` works at resolution ``H / 2^i`` with ``channels[i]`` channels and
    ``num_res_blocks`` residual blocks; levels are joined by a stride-2 convolution on
    the way down and nearest-neighbour upsampling + convolution on the way up. Every
    activation on the way down is kept and concatenated into the matching block on the
    way up (``num_res_blocks + 1`` blocks per level). The condition embedding (Fourier
    or sinusoidal, then a two-layer MLP of width ``4 * channels[0]``) is added inside
    every block. The output convolution starts at zero. ``H`` and ``W`` must be
    divisible by ``2 ** (len(channels) - 1)``.

    Args:
        in_channels: image channels ``C`` (in and out).
        channels: channels per level, each divisible by ``num_groups``.
        num_res_blocks: residual blocks per level on the way down.
        embed_dim: size of the condition embedding.
        embedding: ``"fourier"`` or ``"sinusoidal"`` (see :class:`MLPScoreNet`).
        dropout: dropout rate inside each residual block.
        num_groups: GroupNorm groups.
        cond_scale: multiplies ``cond`` before the embedding (default 1 for Fourier,
            1000 for sinusoidal).
        num_classes: class conditioning, as in :class:`MLPScoreNet`: a label embedding
            (with a null class, ``labels=None``) added to the condition embedding.
        rngs: ``nnx.Rngs`` for initialisation and dropout.

    Example::

        net = SmallUNet(1, channels=(32, 64), rngs=nnx.Rngs(0))
        net(jnp.zeros((4, 8, 8, 1)), jnp.full((4,), 0.5)).shape  # (4, 8, 8, 1)
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        channels: tuple[int, ...] = (32, 64),
        num_res_blocks: int = 1,
        embed_dim: int = 128,
        embedding: str = "fourier",
        dropout: float = 0.0,
        num_groups: int = 8,
        cond_scale: float | None = None,
        num_classes: int | None = None,
        interval_time: bool = False,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_int("in_channels", in_channels, 1)
        check_int("num_res_blocks", num_res_blocks, 1)
        check_int("embed_dim", embed_dim, 2)
        check_choice("embedding", embedding, EMBEDDINGS)
        check_rate("dropout", dropout)
        check_int("num_groups", num_groups, 1)
        channels = tuple(channels)
        if not channels or any(
            not isinstance(c, int) or isinstance(c, bool) or c < 1 or c % num_groups
            for c in channels
        ):
            raise ValueError(
                "channels must be a non-empty sequence of positive integers divisible by "
                f"num_groups={num_groups}, got channels={channels!r}"
            )
        self.channels = channels
        emb_dim = 4 * channels[0]
        self.embed = ConditionEmbedding(
            embedding, embed_dim, emb_dim, cond_scale, interval_time=interval_time, rngs=rngs
        )
        self.label = (
            None
            if num_classes is None
            else LabelEmbedding(
                num_classes, emb_dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
            )
        )
        self.conv_in = nnx.Conv(
            in_channels, channels[0], (3, 3), kernel_init=ddpm_uniform, rngs=rngs
        )

        def block(i, o):
            return DDPMResBlock(i, o, emb_dim, num_groups, dropout, rngs=rngs)

        down, skips, ch = [], [channels[0]], channels[0]
        for level, c in enumerate(channels):
            for _ in range(num_res_blocks):
                down.append(block(ch, c))
                ch = c
                skips.append(ch)
            if level < len(channels) - 1:
                down.append(
                    nnx.Conv(ch, ch, (3, 3), strides=2, kernel_init=ddpm_uniform, rngs=rngs)
                )
                skips.append(ch)
        self.down = nnx.List(down)
        self.mid = nnx.List([block(ch, ch), block(ch, ch)])
        up = []
        for level in reversed(range(len(channels))):
            c = channels[level]
            for _ in range(num_res_blocks + 1):
                up.append(block(ch + skips.pop(), c))
                ch = c
            if level > 0:
                up.append(nnx.Conv(ch, ch, (3, 3), kernel_init=ddpm_uniform, rngs=rngs))
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(ch, num_groups=num_groups, rngs=rngs)
        self.conv_out = nnx.Conv(
            ch, in_channels, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs
        )

    def __call__(
        self,
        x: Float[Array, "B H W C"],
        cond: Float[Array, " B"],
        labels: Int[Array, " B"] | None = None,
    ) -> Float[Array, "B H W C"]:
        factor = 2 ** (len(self.channels) - 1)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"x must have shape [B, H, W, {self.in_channels}] (NHWC), got shape {x.shape}"
            )
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(
                f"H and W must be divisible by 2**(len(channels)-1)={factor}, got "
                f"x of shape {x.shape}"
            )
        if labels is not None and self.label is None:
            raise ValueError("labels were given to a network built with num_classes=None")
        e = self.embed(broadcast_conds(cond, x, self.embed.interval_time))
        if self.label is not None:
            e = e + self.label(labels, x.shape[0])
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, e) if isinstance(layer, DDPMResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, e)
        for layer in self.up:
            if isinstance(layer, DDPMResBlock):
                h = layer(jnp.concatenate([h, hs.pop()], axis=-1), e)
            else:  # upsample: nearest neighbour x2, then a 3x3 convolution
                h = layer(nearest_up2(h))
        return self.conv_out(nnx.silu(self.norm_out(h)))
