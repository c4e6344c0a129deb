"""8gaussians (FFJORD): MLP 3x256, noise prediction, VP."""

from experiments.config import Config, DataConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="8gaussians"),
        train=TrainConfig(steps=20000, batch_size=1024, lr=1e-3),
    )
