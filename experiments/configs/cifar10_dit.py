"""CIFAR-10 with a transformer, a GPU reference beside ``cifar10_ddpmpp``: DiT-S/2
(Peebles & Xie 2023: width 384, 12 blocks of 6 heads, patch 2, so 256 tokens at 32x32)
with adaLN-Zero, in bfloat16 compute with float32 parameters, on the same VP SDE, data,
optimizer and evaluation as ``cifar10_ddpmpp``, with data prediction: raw-pixel
transformers train better predicting the image than the noise (Li & He 2025, "JiT").
Meant for GPUs; on a CPU shrink it (``model.dit.width=64 model.dit.depth=2``).
"""

import dataclasses

from experiments.architectures import DiTConfig
from experiments.configs.cifar10_ddpmpp import get_config as ddpmpp_config


def get_config():
    cfg = ddpmpp_config()
    model = dataclasses.replace(
        cfg.model,
        architecture="dit",
        dit=DiTConfig(patch_size=2, width=384, depth=12, heads=6, compute_dtype="bfloat16"),
        dropout=0.0,
        parametrisation="data",
    )
    return dataclasses.replace(cfg, model=model)
