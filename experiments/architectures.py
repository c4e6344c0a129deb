"""The architecture table: each backbone's builder beside its own config section.

An entry names the network, the section of ``model`` it reads (``model.mlp``,
``model.ncsnpp``, ...) and that section's dataclass. The config schema
(:mod:`experiments.config`) makes one ``model.<section>`` per distinct section found
here, the short override keys (``model.hidden``) follow from the same fields, and
:mod:`experiments.build` looks names up in :data:`ARCHITECTURES`. So a new backbone
is its network module, its export, one entry (with its section) here, and its test.

This module imports nothing from :mod:`experiments.config` (the schema is built from
it); a builder refuses what it cannot build with a ``ValueError`` that names the
dotted key, which the command line reports as a config error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

import networks

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # float32 parameters always


def compute_dtype(name: str):
    if name not in COMPUTE_DTYPES:
        raise ValueError(
            f"unknown compute dtype {name!r}; choose one of {', '.join(COMPUTE_DTYPES)}"
        )
    return COMPUTE_DTYPES[name]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One backbone: ``build(model_cfg, options, shape, rngs, num_classes)`` returns the
    network for examples of ``shape`` (``[D]`` when ``rank`` is 1, ``[H, W, C]`` when 3),
    where ``options`` is the config's ``model.<section>``, an instance of ``config``."""

    build: Callable[..., nnx.Module]
    section: str
    config: type
    rank: int


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """``networks.MLPScoreNet``: flat data."""

    hidden: int = 256
    depth: int = 3
    cond_dim: int = 64  # width of the time conditioning each layer projects


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """``networks.SmallUNet``: images, a few levels."""

    channels: tuple[int, ...] = (32, 64)  # width per level
    num_res_blocks: int = 1


@dataclasses.dataclass(frozen=True)
class NCSNppConfig:
    """``networks.NCSNpp``, score_sde's DDPM++ (``ddpmpp``) and NCSN++ (``ncsnpp``)."""

    nf: int = 128  # base width
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per level
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (16,)  # self-attention resolutions
    compute_dtype: str = "float32"  # "float32" | "bfloat16" (float32 parameters)
    remat: bool = False  # rematerialise residual blocks


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """``networks.DiT``: a transformer on patches (DiT-S/2 by default; Peebles & Xie
    2023), or U-ViT with ``conditioning=tokens`` and ``long_skips`` (Bao et al. 2023)."""

    patch_size: int = 2
    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    conditioning: str = "adaln"  # "adaln" (DiT's adaLN-Zero) | "tokens" (U-ViT)
    long_skips: bool = False  # U-ViT's skips from the first half of the blocks
    compute_dtype: str = "float32"  # "float32" | "bfloat16" (float32 parameters)
    remat: bool = False  # rematerialise each block


# --------------------------------------------------------------------------- builders


def _mlp(c, m: MLPConfig, shape, rngs, num_classes):
    return networks.MLPScoreNet(
        shape[0],
        hidden=m.hidden,
        depth=m.depth,
        cond_dim=m.cond_dim,
        num_classes=num_classes,
        embed_dim=c.embed_dim,
        embedding=c.embedding,
        dropout=c.dropout,
        interval_time=c.interval_time,
        rngs=rngs,
    )


def _unet(c, u: UNetConfig, shape, rngs, num_classes):
    return networks.SmallUNet(
        shape[-1],
        channels=u.channels,
        num_res_blocks=u.num_res_blocks,
        num_classes=num_classes,
        embed_dim=c.embed_dim,
        embedding=c.embedding,
        dropout=c.dropout,
        interval_time=c.interval_time,
        rngs=rngs,
    )


def _ncsnpp(variant: str):
    """score_sde's DDPM++ (sinusoidal embedding, no input pyramid) or NCSN++ (Gaussian
    Fourier embedding, residual input pyramid), Song et al. 2021."""

    def build(c, n: NCSNppConfig, shape, rngs, num_classes):
        if shape[0] != shape[1] or shape[0] % 2 ** (len(n.ch_mult) - 1):
            raise ValueError(
                f"model.architecture={c.architecture} needs square images whose side is "
                f"divisible by 2^(len(model.ncsnpp.ch_mult) - 1); got {shape} and "
                f"ch_mult={n.ch_mult}"
            )
        return networks.NCSNpp(
            shape[-1],
            image_size=shape[0],
            nf=n.nf,
            ch_mult=tuple(n.ch_mult),
            num_res_blocks=n.num_res_blocks,
            attn_resolutions=tuple(n.attn_resolutions),
            dropout=c.dropout,
            embedding="sinusoidal" if variant == "ddpmpp" else "fourier",
            progressive_input="none" if variant == "ddpmpp" else "residual",
            dtype=compute_dtype(n.compute_dtype),
            remat=n.remat,
            num_classes=num_classes,
            interval_time=c.interval_time,
            rngs=rngs,
        )

    return build


def _dit(c, d: DiTConfig, shape, rngs, num_classes):
    if shape[0] != shape[1] or shape[0] % d.patch_size:
        raise ValueError(
            f"model.architecture=dit needs square images whose side is divisible by "
            f"model.dit.patch_size={d.patch_size}; got {shape}"
        )
    if c.dropout:
        raise ValueError(f"model.architecture=dit has no dropout, got model.dropout={c.dropout}")
    return networks.DiT(
        shape[-1],
        image_size=shape[0],
        patch_size=d.patch_size,
        width=d.width,
        depth=d.depth,
        heads=d.heads,
        mlp_ratio=d.mlp_ratio,
        conditioning=d.conditioning,
        long_skips=d.long_skips,
        embedding=c.embedding,
        embed_dim=c.embed_dim,
        num_classes=num_classes,
        dtype=compute_dtype(d.compute_dtype),
        remat=d.remat,
        interval_time=c.interval_time,
        rngs=rngs,
    )


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(_mlp, "mlp", MLPConfig, rank=1),
    "unet": Architecture(_unet, "unet", UNetConfig, rank=3),
    "ddpmpp": Architecture(_ncsnpp("ddpmpp"), "ncsnpp", NCSNppConfig, rank=3),
    "ncsnpp": Architecture(_ncsnpp("ncsnpp"), "ncsnpp", NCSNppConfig, rank=3),
    "dit": Architecture(_dit, "dit", DiTConfig, rank=3),
}


def sections() -> dict[str, type]:
    """``model.<section>`` name -> its dataclass, one per distinct section."""
    return {a.section: a.config for a in ARCHITECTURES.values()}


def build(name: str, c: Any, shape: tuple[int, ...], rngs: nnx.Rngs, num_classes):
    """The network ``c.architecture`` names (looked up by the caller)."""
    arch = ARCHITECTURES[name]
    if len(shape) != arch.rank:
        what = "flat data" if arch.rank == 1 else "[H, W, C] images"
        raise ValueError(
            f"model.architecture={name} needs {what}, got examples of shape {shape}"
            + ("; use model.architecture=unet for images" if arch.rank == 1 else "")
        )
    return arch.build(c, getattr(c, arch.section), shape, rngs, num_classes)
