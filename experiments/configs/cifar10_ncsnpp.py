"""CIFAR-10, score_sde's "NCSN++ cont. (VE)" (Song et al. 2021, App. H):
the 62.8M-parameter U-Net (nf 128, ch_mult 1-2-2-2, 4 BigGAN blocks per level,
attention at 16x16, dropout 0.1, Fourier embedding, residual input pyramid; FIR
resampling replaced by average-pool / nearest, which has no parameters), VE SDE
(sigma 0.01-50), score prediction scaled by 1/sigma (score_sde's scale_by_sigma),
std^2-weighted continuous DSM loss, batch 128,
Adam 2e-4 with 5000 warm-up steps, gradient clipping 1, EMA 0.9999, horizontal flips,
1.3M steps. Meant for GPUs (``data.directory`` = the binary CIFAR-10 batches); on a
CPU, shrink it with overrides (``model.nf=16 model.ch_mult=1,2``).
"""

from experiments.config import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    SDEConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        data=DataConfig(name="cifar10", directory="data/cifar-10-batches-bin", random_flip=True),
        model=ModelConfig(
            architecture="ncsnpp",
            nf=128,
            ch_mult=(1, 2, 2, 2),
            num_res_blocks=4,
            attn_resolutions=(16,),
            dropout=0.1,
            parametrisation="score",
        ),
        sde=SDEConfig(name="ve", sigma_min=0.01, sigma_max=50.0),
        train=TrainConfig(
            steps=1_300_000,
            batch_size=128,
            lr=2e-4,
            warmup_steps=5000,
            schedule="constant",
            grad_clip=1.0,
            ema_decay=0.9999,
            log_every=100,
            ckpt_every=10_000,
            keep=3,
        ),
        eval=EvalConfig(
            n_samples=1000,
            batch_size=250,
            divergence="hutchinson",
            n_probes=1,
            dequant_repeats=5,
        ),
    )
