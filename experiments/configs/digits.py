"""sklearn digits (8x8, 17 levels): a small U-Net trained for likelihood.

Likelihood weighting with importance-sampled times (Song, Durkan, Murray and Ermon 2021)
targets the NLL directly; dropout, EMA and selecting the checkpoint on the validation
split's NLL (carved out of the training split) keep the 1,293 training images from
being memorised.
"""

from experiments.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="digits", val_fraction=0.1),
        model=ModelConfig(
            architecture="unet", channels=(32, 64), num_res_blocks=1, embed_dim=64, dropout=0.1
        ),
        train=TrainConfig(
            steps=6000,
            batch_size=128,
            lr=1e-3,
            warmup_steps=200,
            ema_decay=0.999,
            weighting="likelihood",
            t_sampling="importance",
            log_every=100,
            ckpt_every=500,
            eval_every=500,
            n_eval_val=144,
        ),
        eval=EvalConfig(n_samples=64, batch_size=360, dequant_repeats=1),
    )
