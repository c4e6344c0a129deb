"""Checkerboard with Karras et al. (2022, "EDM") choices throughout: the sigma(t) = t SDE
(T = sigma_max = 80), the preconditioned denoiser, the log-normal-sigma EDM loss, and
EDM's Heun sampler (18 noise levels: 17 Heun steps and the last step to sigma = 0, 35
evaluations) for the samples.

``sigma_data`` is the data's per-coordinate std (a uniform square of side 8: 8/sqrt(12) =
2.31, against EDM's 0.5 for images in [-1, 1]); ``p_mean`` moves EDM's -1.2 by
log(2.31/0.5) = 1.53 so that training sees the same noise levels relative to the data.
"""

from experiments.config import Config, DataConfig, EvalConfig, ModelConfig, SDEConfig, TrainConfig


def get_config() -> Config:
    return Config(
        data=DataConfig(name="checkerboard"),
        model=ModelConfig(parametrisation="denoiser", sigma_data=2.31),
        sde=SDEConfig(name="edm", sigma_min=0.002, sigma_max=80.0),
        train=TrainConfig(
            steps=36000,
            batch_size=1024,
            lr=1e-3,
            log_every=200,
            ckpt_every=2000,
            loss="edm",
            p_mean=0.33,
            p_std=1.2,
        ),
        eval=EvalConfig(
            n_samples=5000,
            n_likelihood=5000,
            batch_size=1000,
            method="edm",
            steps=17,  # Heun steps; with the last step to sigma = 0: EDM's N = 18
            sample_eps=0.002,
            likelihood_eps=0.002,
        ),
    )
