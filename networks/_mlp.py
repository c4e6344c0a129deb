"""A time-conditioned MLP score network for flat data ``[B, dim]``."""

from __future__ import annotations

from flax import nnx
from jaxtyping import Array, Float, Int

from ._checks import check_choice, check_int, check_rate
from ._embedding import EMBEDDINGS, ConditionEmbedding, LabelEmbedding, broadcast_conds
from ._layers import lecun_uniform


class MLPScoreNet(nnx.Module):
    r"""``(x [B, dim], cond [B], labels=None) -> [B, dim]``: an MLP with the condition
    added per layer.

    .. math::
        e &= \mathrm{MLP}_{\text{SiLU}}(\mathrm{embed}(c_s \cdot \text{cond}))
            + E[\text{label}], \\
        h_0 &= x, \quad
        h_{i+1} = \mathrm{SiLU}(W_i h_i + b_i + P_i\, \mathrm{SiLU}(e)), \quad i < \text{depth}, \\
        \text{out} &= W_{\text{out}}\, \mathrm{Dropout}(h_{\text{depth}}) + b_{\text{out}},

    with ``embed`` the Fourier or sinusoidal embedding and ``W_out`` initialised to
    zero (the network starts at ``out = 0``). What ``out`` means (noise, score,
    denoiser) is set by a parametrisation, e.g. :class:`networks.NoisePrediction`.

    Args:
        dim: data dimension.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        embed_dim: size of the condition embedding.
        embedding: ``"fourier"`` (random Fourier features, scale 16) or
            ``"sinusoidal"`` (DDPM's).
        dropout: dropout rate before the output layer (active in ``model.train()``
            mode, off after ``model.eval()``); draws from ``rngs``'s ``"dropout"``
            stream, or its default stream if it has none.
        cond_dim: width of the embedded condition that each layer projects (default
            ``hidden``); a narrower one (e.g. 64) makes the conditioning ~4x cheaper,
            which matters for small data where it dominates the cost.
        cond_scale: multiplies ``cond`` before the embedding; default 1 for Fourier,
            1000 for sinusoidal (DDPM's step scale, for ``cond = t`` in ``[0, 1]``).
        num_classes: class conditioning: ``labels`` in ``[0, num_classes]``, the last
            the null class that ``labels=None`` selects (classifier-free guidance,
            :func:`samplers.classifier_free_guidance`); ``None`` (default): no labels.
        rngs: ``nnx.Rngs`` for initialisation and dropout.

    Example::

        net = MLPScoreNet(2, hidden=256, depth=3, rngs=nnx.Rngs(0))
        net(jnp.zeros((8, 2)), jnp.full((8,), 0.5)).shape  # (8, 2)
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 256,
        depth: int = 3,
        embed_dim: int = 128,
        embedding: str = "fourier",
        dropout: float = 0.0,
        cond_scale: float | None = None,
        cond_dim: int | None = None,
        num_classes: int | None = None,
        interval_time: bool = False,
        rngs: nnx.Rngs,
    ):
        self.dim = check_int("dim", dim, 1)
        check_int("hidden", hidden, 1)
        check_int("depth", depth, 1)
        check_int("embed_dim", embed_dim, 2)
        check_choice("embedding", embedding, EMBEDDINGS)
        check_rate("dropout", dropout)
        cond_dim = hidden if cond_dim is None else check_int("cond_dim", cond_dim, 1)
        self.embed = ConditionEmbedding(
            embedding, embed_dim, cond_dim, cond_scale, interval_time=interval_time, rngs=rngs
        )
        # class conditioning: a label embedding added to the time embedding's output
        self.label = (
            None
            if num_classes is None
            else LabelEmbedding(
                num_classes, cond_dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs
            )
        )
        widths = [dim] + [hidden] * depth
        self.layers = nnx.List(
            [
                nnx.Linear(i, o, kernel_init=lecun_uniform, rngs=rngs)
                for i, o in zip(widths[:-1], widths[1:], strict=True)
            ]
        )
        self.cond_proj = nnx.List(
            [
                nnx.Linear(cond_dim, hidden, kernel_init=lecun_uniform, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(hidden, dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(
        self,
        x: Float[Array, "B dim"],
        cond: Float[Array, " B"],
        labels: Int[Array, " B"] | None = None,
    ) -> Float[Array, "B dim"]:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got shape {x.shape}")
        if labels is not None and self.label is None:
            raise ValueError("labels were given to a network built with num_classes=None")
        e = self.embed(broadcast_conds(cond, x, self.embed.interval_time))
        if self.label is not None:
            e = e + self.label(labels, x.shape[0])
        e = nnx.silu(e)
        h = x
        for layer, proj in zip(self.layers, self.cond_proj, strict=True):
            h = nnx.silu(layer(h) + proj(e))
        return self.out(self.dropout(h))
