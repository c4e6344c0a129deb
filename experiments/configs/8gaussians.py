"""8gaussians (FFJORD): MLP 3x256, noise prediction, VP; ~8 minutes on 2 CPU cores
including the final sampling and likelihood."""

from experiments.config import Config, DataConfig, EvalConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="8gaussians"),
        train=TrainConfig(steps=36000, batch_size=1024, lr=1e-3, log_every=200, ckpt_every=2000),
        eval=EvalConfig(n_samples=5000, n_likelihood=5000, batch_size=1000),
    )
