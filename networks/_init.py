"""Weight initialisers: variance scaling with uniform draws, cheap to compile.

Flax's default (a truncated normal) and even ``jax.random.uniform`` compile one XLA
program per distinct weight shape, and with multi-axis shapes (``[3, 3, C_in, C_out]``)
each took 1.5-5 s on 2 busy CPU cores: building a small U-Net took 30-45 s. Here every
kernel is drawn as a flat vector whose length is rounded up to a power of two, then
cut and reshaped, so only a handful of draws are ever compiled.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


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
# DDPM's ``default_init``: fan-avg variance, for the U-Net's convolutions.
ddpm_uniform = variance_scaling_uniform(1.0, "fan_avg")
