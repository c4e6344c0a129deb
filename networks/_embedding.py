r"""Embeddings of a scalar conditioning value (time, noise level) per sample.

Both map ``cond`` of shape ``[B]`` to ``[B, embed_dim]``:

* :class:`GaussianFourierProjection` (Tancik et al. 2020; score_sde's NCSN++):
  :math:`[\sin 2\pi c W, \cos 2\pi c W]` with fixed random :math:`W_j \sim N(0, \text{scale}^2)`.
* :func:`sinusoidal_embedding` (Vaswani et al. 2017, as in DDPM): frequencies
  :math:`\omega_j = \text{max\_positions}^{-j/(h-1)}`, :math:`j = 0..h-1`, :math:`h = E/2`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_choice, check_int, check_positive
from ._layers import lecun_uniform

EMBEDDINGS = ("fourier", "sinusoidal")


class FourierFrequencies(nnx.Variable):
    """Fixed random frequencies: a variable that is *not* an :class:`nnx.Param`, so an
    optimiser built with ``wrt=nnx.Param`` (and ``nnx.grad``'s default) leaves it alone,
    while checkpoints, which save the whole state, still carry it."""


class GaussianFourierProjection(nnx.Module):
    r"""Random Fourier features of a scalar, :math:`c \mapsto [\sin 2\pi c W, \cos 2\pi c W]`.

    ``W`` (``embed_dim // 2`` frequencies, :math:`N(0, \text{scale}^2)`) is drawn once from
    ``rngs.params()`` and never trained (a :class:`FourierFrequencies` variable). The
    default ``scale=16`` suits ``cond`` in ``[0, 1]`` or ``log(sigma)/4``.

    Example::

        emb = GaussianFourierProjection(128, rngs=nnx.Rngs(0))
        emb(jnp.linspace(0, 1, 4)).shape  # (4, 128)
    """

    def __init__(self, embed_dim: int, scale: float = 16.0, *, rngs: nnx.Rngs):
        check_int("embed_dim", embed_dim, 2)
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got embed_dim={embed_dim}")
        scale = check_positive("scale", scale)
        self.embed_dim = embed_dim
        self.frequencies = FourierFrequencies(
            scale * jax.random.normal(rngs.params(), (embed_dim // 2,))
        )

    def __call__(self, cond: Float[Array, " B"]) -> Float[Array, "B E"]:
        proj = 2 * math.pi * _as_batch(cond)[:, None] * self.frequencies[...][None, :]
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


def sinusoidal_embedding(
    cond: Float[ArrayLike, " B"], embed_dim: int, max_positions: float = 10000.0
) -> Float[Array, "B E"]:
    r"""DDPM's sinusoidal embedding, :math:`[\sin c\,\omega_j, \cos c\,\omega_j]_{j<h}`.

    :math:`\omega_j = \exp(-j \log(\text{max\_positions}) / (h - 1))`, :math:`h = E // 2`,
    so :math:`\omega_0 = 1` and :math:`\omega_{h-1} = 1/\text{max\_positions}`. An odd
    ``embed_dim`` is padded with one zero column. It expects ``cond`` on the scale of
    DDPM's integer steps (e.g. ``1000 t``).
    """
    check_int("embed_dim", embed_dim, 2)
    check_positive("max_positions", max_positions)
    cond = _as_batch(cond)
    half = embed_dim // 2
    rate = math.log(max_positions) / max(half - 1, 1)
    freqs = jnp.exp(-rate * jnp.arange(half, dtype=cond.dtype))
    arg = cond[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    if embed_dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def broadcast_cond(cond: ArrayLike, x: Array, dtype=None) -> Array:
    """A scalar or ``[B]`` condition as ``[B]``, in ``dtype`` (default: ``x``'s)."""
    cond = jnp.asarray(cond, dtype=x.dtype if dtype is None else dtype)
    if cond.ndim > 1 or (cond.ndim == 1 and cond.shape[0] != x.shape[0]):
        raise ValueError(
            f"cond must be a scalar or have shape [B]=[{x.shape[0]}], got shape {cond.shape}"
        )
    return jnp.broadcast_to(cond, x.shape[:1])


def broadcast_conds(cond: ArrayLike, x: Array, interval: bool, dtype=None) -> Array:
    """:func:`broadcast_cond`, or with ``interval`` a ``[B, 2]`` pair of conditions
    (a ``[2]`` pair is broadcast to every row)."""
    if not interval:
        return broadcast_cond(cond, x, dtype)
    cond = jnp.asarray(cond, dtype=x.dtype if dtype is None else dtype)
    if cond.shape not in ((2,), (x.shape[0], 2)):
        raise ValueError(
            f"cond must have shape [B, 2]=[{x.shape[0]}, 2] (time condition, interval "
            f"t - r) for a network built with interval_time=True, got shape {cond.shape}"
        )
    return jnp.broadcast_to(cond, (x.shape[0], 2))


def _as_batch(cond: ArrayLike) -> Array:
    cond = jnp.asarray(cond)
    if not jnp.issubdtype(cond.dtype, jnp.floating):
        cond = cond.astype(jnp.float32)
    if cond.ndim != 1:
        raise ValueError(f"cond must have shape [B], got shape {cond.shape}")
    return cond


class ConditionEmbedding(nnx.Module):
    """``cond [B] -> [B, out_dim]``: scale, embed (Fourier or sinusoidal, ``embed_dim``
    features), then a two-layer SiLU MLP, as in DDPM's ``temb`` branch. Shared by the
    networks.

    ``cond_scale`` defaults to 1 for Fourier features and 1000 (DDPM's step scale for
    ``cond = t``) for the sinusoidal embedding; ``fourier_scale`` is the std of the
    random frequencies. ``rngs`` draws the frequencies; the two dense layers come from
    ``linear(in_dim, out_dim)`` (default: ``nnx.Linear`` with LeCun-uniform kernels and
    ``rngs``), which lets a network give them its own initialiser, dtypes and keys.
    """

    def __init__(
        self,
        embedding: str,
        embed_dim: int,
        out_dim: int,
        cond_scale: float | None,
        *,
        fourier_scale: float = 16.0,
        linear: Callable[[int, int], nnx.Linear] | None = None,
        interval_time: bool = False,
        rngs: nnx.Rngs,
    ):
        check_choice("embedding", embedding, EMBEDDINGS)
        check_int("embed_dim", embed_dim, 2)
        if cond_scale is None:
            cond_scale = 1.0 if embedding == "fourier" else 1000.0
        self.cond_scale = check_positive("cond_scale", cond_scale)
        self.embed_dim = embed_dim
        if embedding == "fourier":
            self.fourier = GaussianFourierProjection(embed_dim, fourier_scale, rngs=rngs)
        else:
            self.fourier = None
        if linear is None:

            def linear(i: int, o: int) -> nnx.Linear:
                return nnx.Linear(i, o, kernel_init=lecun_uniform, rngs=rngs)

        self.dense0 = linear(embed_dim, out_dim)
        self.dense1 = linear(out_dim, out_dim)
        # MeanFlow's interval h = t - r (cond's second column): its own features and a
        # dense layer that starts at zero, so the network starts as its one-time self
        self.interval_time = bool(interval_time)
        if self.interval_time:
            self.interval_fourier = (
                GaussianFourierProjection(embed_dim, fourier_scale, rngs=rngs)
                if embedding == "fourier"
                else None
            )
            interval = linear(embed_dim, out_dim)
            interval.kernel[...] = jnp.zeros_like(interval.kernel[...])
            if interval.bias is not None:
                interval.bias[...] = jnp.zeros_like(interval.bias[...])
            self.interval = interval
        else:
            self.interval_fourier, self.interval = None, None

    def _features(self, c: Array, fourier) -> Array:
        c = self.cond_scale * c
        return fourier(c) if fourier is not None else sinusoidal_embedding(c, self.embed_dim)

    def __call__(self, cond: Float[Array, " B"]) -> Float[Array, "B F"]:
        cond = jnp.asarray(cond)
        if self.interval is None:
            return self.dense1(nnx.silu(self.dense0(self._features(_as_batch(cond), self.fourier))))
        if cond.ndim != 2 or cond.shape[1] != 2:
            raise ValueError(
                "a network built with interval_time=True takes cond of shape [B, 2] (time "
                f"condition, interval t - r), got shape {cond.shape}"
            )
        hidden = self.dense0(self._features(_as_batch(cond[:, 0]), self.fourier))
        hidden = hidden + self.interval(
            self._features(_as_batch(cond[:, 1]), self.interval_fourier)
        )
        return self.dense1(nnx.silu(hidden))


class LabelEmbedding(nnx.Module):
    """``labels [B] | None -> [B, dim]``: a learned embedding of ``num_classes`` classes
    plus a null class (index ``num_classes``), which ``labels=None`` selects — the
    unconditional model of classifier-free guidance (Ho & Salimans 2022).

    Labels outside ``[0, num_classes]`` raise at run time (``equinox.error_if``); on a
    GPU that error surfaces at the next synchronisation.
    """

    def __init__(self, num_classes: int, dim: int, *, embedding_init, rngs: nnx.Rngs, **kw):
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.table = nnx.Embed(num_classes + 1, dim, embedding_init=embedding_init, rngs=rngs, **kw)

    def __call__(self, labels: ArrayLike | None, batch: int) -> Array:
        if labels is None:
            labels = jnp.full((batch,), self.num_classes, dtype=jnp.int32)
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.shape != (batch,):
            raise ValueError(
                f"labels must be integers of shape [B]=({batch},), got {labels.dtype} "
                f"of shape {labels.shape}"
            )
        labels = eqx.error_if(
            labels,
            (labels < 0) | (labels > self.num_classes),
            f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)",
        )
        return self.table(labels)
