"""The study's settings: data sets, the seeds x learning-rates grid, training budgets,
evaluation sizes and sampler settings; :data:`QUICK` is the one-minute smoke version."""

from __future__ import annotations

from dataclasses import dataclass

from . import gan

DATASETS = ("ring", "grid", "digits")


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...] = DATASETS
    seeds: tuple[int, ...] = (0, 1, 2)
    lrs: tuple[float, ...] = (2e-4, 1e-3)
    gan_losses: tuple[str, ...] = ("ns", "r1")
    steps_2d: int = 3000
    batch_2d: int = 256
    steps_digits: int = 3000
    batch_digits: int = 128
    n_eval_2d: int = 2000
    n_eval_digits: int = 1000
    n_nll_2d: int = 1000
    n_nll_digits: int = 360
    euler_steps: int = 1000
    fast_steps: tuple[int, ...] = (10, 20)
    tol: float = 1e-5  # rtol = atol of the likelihood and of the adaptive sampler
    digits_probes: int = 4
    repeats: int = 3
    ema_decay: float = 0.999
    chunk: int = 500
    log_every: int = 100
    # one- and few-step students of the best score model (scoresde distill's methods),
    # each distilled for distill_steps and sampled at distill_nfe evaluations
    distill_methods: tuple[str, ...] = ("pd", "cd")
    distill_steps: int = 3000
    distill_nfe: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ValueError(f"datasets must be among {', '.join(DATASETS)}; got {self.datasets}")
        bad = [x for x in self.gan_losses if x not in gan.LOSSES]
        if bad:
            raise ValueError(f"gan losses must be among {', '.join(gan.LOSSES)}; got {bad}")
        if not self.seeds or not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"need >= 1 seed and lrs > 0; got {self.seeds}, {self.lrs}")
        if not self.fast_steps or min(self.fast_steps) < 1:
            raise ValueError(f"fast_steps must be >= 1 step each, got {self.fast_steps}")


QUICK = Settings(
    seeds=(0,),
    lrs=(1e-3,),
    gan_losses=("ns",),
    steps_2d=300,
    steps_digits=300,
    n_eval_2d=500,
    n_eval_digits=200,
    n_nll_2d=200,
    n_nll_digits=50,
    fast_steps=(10,),
    tol=1e-3,
    digits_probes=1,
    repeats=1,
    ema_decay=0.95,
    chunk=150,
    log_every=50,
    distill_methods=("pd",),
    distill_steps=300,
)
