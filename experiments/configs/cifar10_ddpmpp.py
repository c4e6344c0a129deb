"""CIFAR-10, score_sde's "DDPM++ cont. (VP)" (Song et al. 2021, App. H):
the 61.8M-parameter U-Net (nf 128, ch_mult 1-2-2-2, 4 BigGAN blocks per level,
attention at 16x16, dropout 0.1, sinusoidal embedding), VP SDE (beta 0.1-20),
noise prediction with score_sde's std^2-weighted continuous DSM loss, batch 128,
Adam 2e-4 with 5000 warm-up steps, gradient clipping 1, EMA 0.9999, horizontal flips,
1.3M steps. Meant for GPUs (``data.directory`` = the binary CIFAR-10 batches); on a
CPU, shrink it with overrides (``model.ncsnpp.nf=16 model.ncsnpp.ch_mult=1,2``).
"""

from experiments.config import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    NCSNppConfig,
    SDEConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        data=DataConfig(name="cifar10", directory="data/cifar-10-batches-bin", random_flip=True),
        model=ModelConfig(
            architecture="ddpmpp",
            ncsnpp=NCSNppConfig(
                nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,)
            ),
            dropout=0.1,
            parametrisation="noise",
        ),
        sde=SDEConfig(name="vp", beta_min=0.1, beta_max=20.0),
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
            # off: train.val_divergence="exact" would take 3072 JVPs per score evaluation
            # (turn it on with train.val_divergence=hutchinson train.eval_every=48000)
            eval_every=0,
        ),
        eval=EvalConfig(
            n_samples=1000,
            batch_size=250,
            divergence="hutchinson",
            n_probes=1,
            dequant_repeats=5,
        ),
    )
