"""The config schema: one frozen dataclass per section, one sub-config per architecture
(declared beside its builder in :mod:`experiments.architectures`).

Every field is a plain value (str, int, float, bool, tuple of ints) so that a config
round-trips through JSON and every field can be overridden by its dotted path. Names
of objects (an SDE, a solver, an architecture) are looked up in
:mod:`experiments.build`, which is also where a name is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

from experiments.architectures import MLPConfig as MLPConfig
from experiments.architectures import NCSNppConfig as NCSNppConfig
from experiments.architectures import UNetConfig as UNetConfig
from experiments.architectures import sections


@dataclass(frozen=True)
class DataConfig:
    name: str = "checkerboard"  # a 2-D toy, "digits", "mnist" or "cifar10"
    directory: str = ""  # MNIST IDX files / CIFAR-10 binary batches
    random_flip: bool = False  # images: random horizontal flips of training batches
    val_fraction: float = 0.1  # images: validation carved out of train
    n_val: int = 2000  # toys: held-out validation points
    n_test: int = 10000  # toys: held-out test points
    whiten: str = "none"  # "none" | "standardize" | "pca" | "zca": fixed affine map (mlp only)
    gaussianize: bool = False  # images: per-pixel marginal Gaussianization (before whiten)
    # images: uniform noise on training batches; False: bin centres, the diffusion's own
    # noise dequantises (pair with eval.dequantization=truncated_normal, as i-DODE)
    dequantize_train: bool = True


@dataclass(frozen=True)
class _ModelFields:
    architecture: str = "mlp"  # a name in experiments.architectures.ARCHITECTURES
    embed_dim: int = 64
    embedding: str = "fourier"  # "fourier" | "sinusoidal" (mlp, unet)
    dropout: float = 0.0
    parametrisation: str = "noise"  # "noise" | "score" | "denoiser" | "velocity" | "data"
    sigma_data: float = 0.5  # denoiser
    gaussian_base: bool = False  # add the exact score of N(0, I) data (use with data.whiten)
    # images: add the exact score of the per-pixel training histograms (pixel space)
    histogram_base: bool = False
    num_classes: int = 0  # class-conditional with a null class (0: unconditional)
    # a second time input (the interval t - r of MeanFlow's u(x, r, t)): the network takes
    # cond of shape [B, 2]; its embedding of the second column starts at zero
    interval_time: bool = False


# The fields above, then one section per architecture's sub-config (model.mlp,
# model.unet, model.ncsnpp, ...), as the architecture table declares them.
ModelConfig = make_dataclass(
    "ModelConfig",
    [(name, cls, field(default_factory=cls)) for name, cls in sections().items()],
    bases=(_ModelFields,),
    frozen=True,
)
ModelConfig.__module__ = __name__
ModelConfig.__doc__ = (
    "The network: the fields every architecture shares, and one sub-config per "
    "architecture (``model.<section>``, from :mod:`experiments.architectures`)."
)


@dataclass(frozen=True)
class SDEConfig:
    name: str = "vp"  # an exported SDE's names: "vp" | "subvp" | "ve" | "edm" (T = sigma_max)
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_max: float = 0.999  # rf: the end time T < 1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 1024
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"  # "constant" | "cosine"
    schedule_steps: int = 0  # cosine: steps it decays over (0: train.steps; kept on extension)
    grad_clip: float = 1.0  # global norm; 0 disables
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + t) / (10 + t)) at step t
    loss: str = "dsm"  # "dsm" (weighting, t_sampling, eps) | "edm" (p_mean, p_std)
    weighting: str = "std2"  # dsm: "std2" (noise) | "likelihood" | "velocity" | "data"
    # dsm: "uniform" | "stratified" | "antithetic" | "importance" (log-SNR uniform) |
    # "logit_normal" (logit_mean, logit_std) | "lognormal" (p_mean, p_std)
    t_sampling: str = "uniform"
    eps: float = 1e-5  # dsm: smallest training time
    logit_mean: float = 0.0  # logit_normal: logit(t_RF) ~ N(mean, std^2) (SD3)
    logit_std: float = 1.0
    p_mean: float = -1.2  # edm, lognormal: ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022)
    p_std: float = 1.2
    p_uncond: float = 0.1  # class-conditional: label dropped (null class) with this probability
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 1000
    keep: int = 3
    # Validation NLL and a sample snapshot every N steps and at the end of a run at least N
    # long (0: off); keeps the best, which evaluation then uses. A multiple of every usual
    # log_every; 3 times in the 36k-step 2-D runs, ~10 s each (1000 points, trained
    # checkerboard, 2 cores): ~5% of the run. Image configs set their own (cifar10: off).
    eval_every: int = 12_000
    n_eval_val: int = 1000  # validation points per evaluation
    val_divergence: str = "exact"  # "exact" | "hutchinson" for the validation NLL
    val_probes: int = 4  # Hutchinson probes for the validation NLL
    # the validation NLL's tolerances: it ranks checkpoints, so it need not be the test
    # figure's accuracy (checkerboard: 4.5x cheaper than 1e-5, NLL within 1.4e-3 nats)
    val_rtol: float = 1e-3
    val_atol: float = 1e-3
    fsdp: bool = False  # split parameters/optimizer state over the devices (FSDP-style)


@dataclass(frozen=True)
class EvalConfig:
    n_samples: int = 10000
    method: str = "ode"  # "ode" | "sde" | "pc" | "edm" (Heun on the Karras grid, churn)
    solver: str = "tsit5"
    steps: int = 1000  # sde, pc and edm (fixed steps); ode: adaptive (rtol, atol)
    s_churn: float = 0.0  # edm: stochasticity (Karras et al. 2022, Alg. 2)
    s_tmin: float = 0.0
    s_tmax: float = 1e9
    s_noise: float = 1.0
    sample_eps: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-5
    likelihood_eps: float = 1e-5
    divergence: str = "exact"  # "exact" | "hutchinson"
    n_probes: int = 1
    n_likelihood: int = 0  # test points for the likelihood (0: all)
    batch_size: int = 1000
    dequant_repeats: int = 1  # images: dequantisation draws per image
    dequantization: str = "uniform"  # images: "uniform" | "truncated_normal" (i-DODE)


@dataclass(frozen=True)
class DistillConfig:
    """One- and few-step students (``scoresde distill``); ``method=""``: not a student."""

    method: str = ""  # "" | "cd" | "ect" | "pd" | "meanflow"
    teacher: str = ""  # the teacher's work dir ("": train from data, ect and meanflow only)
    teacher_checkpoint: str = ""  # "" (its best, else latest) | "latest" | a step
    # cd: the teacher's ODE step (a solver name) on an N-point grid, N = steps_n
    teacher_solver: str = "heun"
    steps_n: int = 18  # cd: discretisation points (Song et al. 2023: 18 on CIFAR-10)
    # cd/ect: distance "l2" | "pseudo_huber" (c = huber_c * sqrt(D), Song & Dhariwal 2023)
    distance: str = "pseudo_huber"
    huber_c: float = 0.00054
    # cd: "ict" (1 / (sigma_{n+1} - sigma_n), Song & Dhariwal 2023) | "uniform" (lambda = 1)
    weighting: str = "ict"
    # cd/ect: "edm" divides the loss by networks.output_scale (the weights as for EDM's
    # network, whatever the student's parametrisation) | "none" (checkerboard CD: 86.3% /
    # 93.6% of 1/2-step samples on the board against 66.0% / 92.8% with "edm")
    output_weighting: str = "none"
    sigma_data: float = 0.5  # cd/ect: c_skip, c_out of the boundary condition
    ect_q: float = 2.0  # ect: dt/t shrinks by q each stage (Geng et al. 2024: q = 2)
    ect_stages: int = 8  # ect: stages over train.steps
    ect_k: float = 8.0  # ect: n(t) = 1 + k sigmoid(-b t)
    ect_b: float = 1.0
    pd_start: int = 64  # pd: the teacher's DDIM steps; halved per stage down to 1
    # meanflow with a teacher: "rf" learns the teacher's flow on the rectified-flow path
    # of the same log-SNR range (a fresh velocity-prediction network) | "teacher": on the
    # teacher's own path, from its weights
    meanflow_path: str = "rf"
    # meanflow: the velocity in the target, "data" (the conditional z - x0 of the paper,
    # unbiased) | "teacher" (the teacher's probability-flow velocity)
    meanflow_velocity: str = "data"
    meanflow_p_equal: float = 0.75  # meanflow: share of pairs with r = t (flow matching)
    meanflow_times: str = "uniform"  # meanflow: "uniform" | "logit_normal" (the paper's)
    meanflow_norm_p: float = 1.0  # meanflow: adaptive loss weight 1 / (|err|^2 + c)^p
    sample_steps: tuple[int, ...] = (1, 2)  # steps the end of a run samples with


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
