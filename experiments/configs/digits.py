"""sklearn digits (8x8, 17 levels, uniform dequantisation) with an MLP on the flattened
64-D vectors, trained for likelihood.

Likelihood weighting with importance-sampled times (Song, Durkan, Murray and Ermon 2021)
targets the NLL directly; dropout, EMA and selecting the checkpoint on the validation
split's NLL (144 images carved out of the 1,437 training images) keep the remaining
1,293 from being memorised. (``model.architecture=unet`` trains the small U-Net
instead; on 2 CPU cores its likelihood evaluations are ~50x slower.)
"""

from experiments.config import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="digits", val_fraction=0.1),
        model=ModelConfig(architecture="mlp", hidden=256, depth=3, dropout=0.1),
        train=TrainConfig(
            steps=20000,
            batch_size=128,
            lr=1e-3,
            warmup_steps=200,
            ema_decay=0.999,
            weighting="likelihood",
            t_sampling="importance",
            log_every=200,
            ckpt_every=1000,
            eval_every=1000,
            n_eval_val=144,
        ),
        eval=EvalConfig(n_samples=64, batch_size=360, dequant_repeats=1),
    )
