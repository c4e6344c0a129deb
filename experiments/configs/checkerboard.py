"""Checkerboard (FFJORD): MLP 3x256, noise prediction, VP; ~7 minutes on 2 CPU cores."""

from experiments.config import Config, DataConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="checkerboard"),
        train=TrainConfig(steps=20000, batch_size=1024, lr=1e-3),
    )
