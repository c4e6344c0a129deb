"""What the backbones share: weight initialisers, 2x resampling, parameter counting.

The initialisers are variance scaling with uniform draws, cheap to compile. Flax's
default (a truncated normal) and even ``jax.random.uniform`` compile one XLA program
per distinct weight shape, and with multi-axis shapes (``[3, 3, C_in, C_out]``) each
took 1.5-5 s on 2 busy CPU cores: building a small U-Net took 30-45 s. Here every
kernel is drawn as a flat vector whose length is rounded up to a power of two, then
cut and reshaped, so only a handful of draws are ever compiled.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float


def variance_scaling_uniform(scale: float, mode: str):
    """``U(-L, L)``, ``L = sqrt(3 scale / fan)``: variance ``scale / fan`` as in
    ``jax.nn.initializers.variance_scaling(scale, mode, "uniform")`` (kernels
    ``[..., in, out]``, the leading axes a receptive field)."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else shape[-1]
        fan_out = shape[-1] * receptive
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        limit = math.sqrt(3.0 * scale / fan)
        n = math.prod(shape)
        flat = jax.random.uniform(key, (1 << max(n - 1, 0).bit_length(),), dtype, -limit, limit)
        return flat[:n].reshape(shape)

    return init


# LeCun (fan-in) variance, flax's default scale, for the dense layers.
lecun_uniform = variance_scaling_uniform(1.0, "fan_in")
# DDPM's ``default_init``: fan-avg variance, for the U-Nets' convolutions.
ddpm_uniform = variance_scaling_uniform(1.0, "fan_avg")


def ddpm_init(scale: float):
    """DDPM's ``default_init(scale)``: fan-average uniform; exactly zero for scale 0."""
    return nnx.initializers.zeros if scale == 0 else variance_scaling_uniform(scale, "fan_avg")


def avg_pool2(x: Float[Array, "B H W C"]) -> Float[Array, "B H/2 W/2 C"]:
    """2x2 average pooling of NHWC images (``H`` and ``W`` even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def nearest_up2(x: Float[Array, "B H W C"]) -> Float[Array, "B 2H 2W C"]:
    """Nearest-neighbour x2 upsampling of NHWC images: each pixel becomes a 2x2 block."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def count_params(module: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) in ``module``; works on the
    abstract module returned by ``nnx.eval_shape`` too. Fixed Fourier frequencies are
    not counted. Example::

        abstract = nnx.eval_shape(lambda: ddpmpp_cifar10(rngs=nnx.Rngs(0)))
        count_params(abstract)  # 61_804_419
    """
    leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
    return sum(math.prod(leaf.shape) for leaf in leaves)
