"""CIFAR-10, score_sde's "NCSN++ cont. (VE)" (Song et al. 2021, App. H): the
:mod:`cifar10_ddpmpp` settings (data, optimiser, EMA, steps, evaluation) with the
62.8M-parameter NCSN++ network (Fourier embedding, residual input pyramid; FIR
resampling replaced by average-pool / nearest, which has no parameters), the VE SDE
(sigma 0.01-50) and score prediction scaled by 1/sigma (score_sde's scale_by_sigma).
"""

import dataclasses

from experiments import config as config_lib
from experiments.config import Config, SDEConfig


def get_config() -> Config:
    base = config_lib.get_named("cifar10_ddpmpp")
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, architecture="ncsnpp", parametrisation="score"),
        sde=SDEConfig(name="ve", sigma_min=0.01, sigma_max=50.0),
    )
