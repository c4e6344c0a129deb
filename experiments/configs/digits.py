"""sklearn digits (8x8, 17 levels, uniform dequantisation into [-1, 1]) with an MLP on
the flattened 64-D vectors, PCA-whitened, learning the residual to a Gaussian.

Two choices carry this config (measured on 2 CPU cores, README "Results"):

- ``data.whiten=pca``: a fixed affine map, fitted on the training images, gives every
  direction unit variance; the change of variables is exact (``log|det W|`` is added to
  every log-likelihood), so bits/dim are those of the data. Without it, border pixels
  whose only variance is the dequantisation noise (std 0.034) sit far below the noise
  scale the VP schedule is built for.
- ``model.gaussian_base=true``: the score is the exact score of N(0, I) data (after
  whitening: a Gaussian fit of the data) plus the network's output, so training starts
  from a 2.98 bits/dim Gaussian instead of from a score of zero.

Measured (2 CPU cores shared with other jobs, 1541 s of training including eight exact
validation likelihoods): test 2.560 ± 0.019 bits/dim (median 2.490, n = 360, exact
divergence, Tsit5 1e-5, checkpoint 4000 chosen on validation), below the 40-component
GMM's 2.648. Validation bits/dim by step: 2.88, 2.71, 2.63, 2.60 (4k), 2.62, 2.67,
2.71, 2.75 — the model memorises the 1,293 training images after ~4k steps, hence the
validation-selected checkpoint and dropout 0.1 (without dropout: best 2.61 at 3k).

With plain noise prediction on raw pixels the same MLP stayed at 3.46 bits/dim, worse
than that single Gaussian. The checkpoint is chosen on the validation split's NLL (144
images carved out of the 1,437 training images); the test split (360) is scored with
the exact divergence.
"""

from experiments.config import (
    Config,
    DataConfig,
    EvalConfig,
    MLPConfig,
    ModelConfig,
    TrainConfig,
)


def get_config() -> Config:
    return Config(
        data=DataConfig(name="digits", val_fraction=0.1, whiten="pca"),
        model=ModelConfig(
            architecture="mlp",
            mlp=MLPConfig(hidden=512, depth=3),
            dropout=0.1,
            gaussian_base=True,
        ),
        train=TrainConfig(
            steps=8000,
            batch_size=128,
            lr=5e-4,
            warmup_steps=200,
            ema_decay=0.999,
            log_every=200,
            ckpt_every=1000,
            eval_every=1000,
            n_eval_val=144,
            val_divergence="exact",
        ),
        eval=EvalConfig(n_samples=64, batch_size=360, dequant_repeats=1),
    )
