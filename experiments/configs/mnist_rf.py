"""MNIST on the rectified-flow path x_t = (1 - t) x_0 + t z (``sde.RectifiedFlow``,
T = 0.999): the ``mnist`` config (U-Net on top of the pixels' histogram score,
class-conditional, noise prediction) with only the forward process changed, as
``checkerboard_rf`` is to ``checkerboard``. The histogram base, the samplers and the
likelihood use the path unchanged; ``train.t_sampling=logit_normal`` and
``model.parametrisation=velocity train.weighting=velocity`` give SD3's recipe on it.
"""

import dataclasses

from experiments.config import SDEConfig, get_named


def get_config():
    base = get_named("mnist")
    return dataclasses.replace(base, sde=SDEConfig(name="rf"))
