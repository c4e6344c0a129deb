"""MNIST (28x28, 256 levels, uniform dequantisation into [-1, 1]), class-conditional, on
2 CPU cores in under an hour: a small U-Net in pixel space on top of the exact score of
the pixels' own histograms.

Data directory: the IDX files (``train-images-idx3-ubyte[.gz]`` etc.); the default is
the team's copy at ``../shared/data/mnist``, override with ``data.directory=PATH``. A
relative path is taken under ``$SCORESDE_DATA`` if set, else under the project root,
never under the current directory.

- ``model.histogram_base``: the score is the exact score of the product of the 784
  per-pixel training histograms (uniformly dequantised, blurred by the kernel at every
  ``t``; :class:`networks.HistogramResidual`) plus the network's output. Before any
  training the model is that product: 1.79 bits/dim at ``eps = 1e-5`` (1.64 at
  ``t = 0``). MNIST pixels are nearly binary; the sharp bin edges at small ``t`` are
  given, not learnt, and the network learns how pixels depend on each other.
- ``model.architecture=unet``: a DDPM-style U-Net (16, 32, 64 channels at 28, 14, 7
  pixels; 0.63M parameters), sized for 1.8 training steps of 64 a second on 2 cores.
- ``model.num_classes=10`` with ``train.p_uncond=0.3``: one network is both the
  class-conditional model (``scoresde sample --class 3 --guidance 2``) and, with the
  null label, the unconditional model whose likelihood and samples are reported.
- The likelihood of a U-Net is costly on a CPU (each of ~200 ODE evaluations is a
  forward and a backward pass): ``eval.n_likelihood`` takes a stated subset of the
  10,000 test images; a GPU takes them all (``eval.n_likelihood=0``). The base's sharp
  bin edges need the standard tight tolerances (rtol = atol = 1e-5): at 1e-3 the
  adaptive solve misses them and the log-likelihood is wrong by hundreds of nats.
"""

from experiments.config import (
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    UNetConfig,
)


def get_config() -> Config:
    return Config(
        data=DataConfig(name="mnist", directory="../shared/data/mnist", val_fraction=1 / 60),
        model=ModelConfig(
            architecture="unet",
            unet=UNetConfig(channels=(16, 32, 64), num_res_blocks=1),
            embedding="fourier",
            histogram_base=True,
            num_classes=10,
        ),
        train=TrainConfig(
            steps=4500,
            batch_size=64,
            lr=1e-3,
            warmup_steps=200,
            ema_decay=0.999,
            p_uncond=0.3,
            log_every=100,
            ckpt_every=500,
            eval_every=0,
        ),
        eval=EvalConfig(
            n_samples=100,
            method="edm",  # Heun on the Karras grid: 49 evaluations; adaptive Tsit5 took ~500
            steps=24,  # Heun steps, then the last step to sigma = 0
            batch_size=100,
            n_likelihood=500,
            divergence="hutchinson",
            n_probes=1,
            dequant_repeats=1,
        ),
    )
