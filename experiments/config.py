"""Experiment configuration: frozen dataclasses, ``key=value`` overrides, JSON.

A named config is a Python file ``experiments/configs/NAME.py`` (or any file) whose
``get_config()`` returns a :class:`Config`. Every field can be overridden on the
command line by its dotted path, e.g. ``train.lr=3e-4 model.hidden=128``; unknown keys
and values of the wrong type are refused with the closest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import pathlib
import typing
from dataclasses import dataclass, field


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
class ModelConfig:
    architecture: str = "mlp"  # "mlp" | "unet" (small) | "ddpmpp" | "ncsnpp" (score_sde's)
    hidden: int = 256
    depth: int = 3
    embed_dim: int = 64
    cond_dim: int = 64  # mlp: width of the time conditioning each layer projects
    embedding: str = "fourier"  # "fourier" | "sinusoidal"
    dropout: float = 0.0
    channels: tuple[int, ...] = (32, 64)  # unet
    num_res_blocks: int = 1  # unet, ddpmpp, ncsnpp
    nf: int = 128  # ddpmpp/ncsnpp: base width
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)  # ddpmpp/ncsnpp: width multiplier per level
    attn_resolutions: tuple[int, ...] = (16,)  # ddpmpp/ncsnpp: self-attention resolutions
    compute_dtype: str = "float32"  # ddpmpp/ncsnpp: "float32" | "bfloat16" (f32 params)
    remat: bool = False  # ddpmpp/ncsnpp: rematerialise residual blocks
    parametrisation: str = "noise"  # "noise" | "score" | "denoiser"
    sigma_data: float = 0.5  # denoiser
    gaussian_base: bool = False  # add the exact score of N(0, I) data (use with data.whiten)
    # images: add the exact score of the per-pixel training histograms (pixel space)
    histogram_base: bool = False
    num_classes: int = 0  # class-conditional with a null class (0: unconditional)


@dataclass(frozen=True)
class SDEConfig:
    name: str = "vp"  # "vp" | "subvp" | "ve" | "edm" (sigma(t) = t, T = sigma_max)
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 1024
    optimizer: str = "adam"  # "adam" | "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"  # "constant" | "cosine"
    grad_clip: float = 1.0  # global norm; 0 disables
    ema_decay: float = 0.999
    weighting: str = "std2"  # "std2" | "likelihood"
    t_sampling: str = "uniform"  # "uniform" | "stratified" | "antithetic" | "importance"
    eps: float = 1e-5
    loss: str = "dsm"  # "dsm" (weighting/t_sampling above) | "edm" (Karras et al. 2022)
    p_mean: float = -1.2  # edm loss: ln sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.2
    p_uncond: float = 0.1  # class-conditional: label dropped (null class) with this probability
    seed: int = 0
    log_every: int = 100
    ckpt_every: int = 1000
    keep: int = 3
    eval_every: int = 0  # validation NLL and sample snapshot every N steps (0: off); keeps the best
    n_eval_val: int = 1000  # validation points per evaluation
    val_divergence: str = "exact"  # "exact" | "hutchinson" for the validation NLL
    val_probes: int = 4  # Hutchinson probes for the validation NLL
    fsdp: bool = False  # split parameters/optimizer state over the devices (FSDP-style)


@dataclass(frozen=True)
class EvalConfig:
    n_samples: int = 10000
    method: str = "ode"  # "ode" | "sde" | "pc" | "edm" (Heun on the Karras grid, churn)
    solver: str = "tsit5"
    steps: int = 1000  # sde and pc; edm: N (2N - 1 evaluations)
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
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "model.architecture": ("mlp", "unet", "ddpmpp", "ncsnpp"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "data.whiten": ("none", "standardize", "pca", "zca"),
    "model.embedding": ("fourier", "sinusoidal"),
    "model.parametrisation": ("noise", "score", "denoiser"),
    "sde.name": ("vp", "subvp", "ve", "edm"),
    "train.loss": ("dsm", "edm"),
    "train.optimizer": ("adam", "adamw"),
    "train.schedule": ("constant", "cosine"),
    "train.weighting": ("std2", "likelihood"),
    "train.t_sampling": ("uniform", "stratified", "antithetic", "importance"),
    "eval.method": ("ode", "sde", "pc", "edm"),
    "eval.divergence": ("exact", "hutchinson"),
    "eval.dequantization": ("uniform", "truncated_normal"),
    "train.val_divergence": ("exact", "hutchinson"),
}
POSITIVE = (
    "train.steps",
    "train.batch_size",
    "train.lr",
    "train.log_every",
    "train.ckpt_every",
    "train.keep",
    "eval.n_samples",
    "eval.steps",
    "eval.batch_size",
    "eval.n_probes",
    "eval.dequant_repeats",
    "model.hidden",
    "model.depth",
    "model.embed_dim",
    "model.cond_dim",
    "model.num_res_blocks",
    "train.val_probes",
)


class ConfigError(ValueError):
    """A config that cannot be used; the message says which key and why."""


def _fields(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def keys(cls=Config, prefix: str = "") -> list[str]:
    """Every overridable dotted key."""
    out = []
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out += keys(tp, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _parse(key: str, text: str, tp):
    def bad(kind):
        return ConfigError(f"{key} expects {kind}, got {text!r}")

    if tp is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise bad("a boolean (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if tp is str:
        return text
    if typing.get_origin(tp) is tuple:
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise bad("a comma-separated list of integers, e.g. 32,64") from None
    raise bad(str(tp))


def _set(cfg, path: list[str], value):
    head, *rest = path
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def _type_of(key: str):
    cls = Config
    *parents, last = key.split(".")
    for p in parents:
        cls = _fields(cls)[p]
    return _fields(cls)[last]


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; unknown keys and bad values raise ConfigError."""
    valid = keys()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
            if not close:  # also try the last component alone: lr -> train.lr
                close = [k for k in valid if k.endswith("." + key.split(".")[-1])]
            hint = f"; closest valid keys: {', '.join(close)}" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}")
        cfg = _set(cfg, key.split("."), _parse(key, text.strip(), _type_of(key)))
    validate(cfg)
    return cfg


def get(cfg: Config, key: str):
    out = cfg
    for part in key.split("."):
        out = getattr(out, part)
    return out


def validate(cfg: Config) -> Config:
    for key, allowed in CHOICES.items():
        if get(cfg, key) not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {get(cfg, key)!r}")
    for key in POSITIVE:
        if not get(cfg, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {get(cfg, key)!r}")
    from experiments import registry
    from experiments.data import TOY_DATASETS

    datasets = (*TOY_DATASETS, "digits", "mnist", "cifar10")
    if cfg.data.name not in datasets:
        raise ConfigError(f"data.name must be one of {', '.join(datasets)}; got {cfg.data.name!r}")
    if cfg.eval.solver.lower() not in registry.SOLVERS:
        close = difflib.get_close_matches(cfg.eval.solver, registry.SOLVERS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"eval.solver={cfg.eval.solver!r} is not a known solver{hint}; choose one of "
            f"{', '.join(sorted(registry.SOLVERS))}"
        )
    if not cfg.model.channels or min(cfg.model.channels) < 1:
        raise ConfigError(f"model.channels must be positive integers, got {cfg.model.channels!r}")
    for key in (
        "eval.n_likelihood",
        "train.grad_clip",
        "train.eval_every",
        "train.warmup_steps",
        "model.num_classes",
    ):
        if get(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {get(cfg, key)!r}")
    if cfg.train.eval_every % cfg.train.log_every:
        raise ConfigError(
            f"train.eval_every must be a multiple of train.log_every ({cfg.train.log_every}), "
            f"got {cfg.train.eval_every}"
        )
    if not 0 <= cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must lie in [0, 1), got {cfg.train.ema_decay!r}")
    if not 0 <= cfg.train.p_uncond <= 1:
        raise ConfigError(f"train.p_uncond must lie in [0, 1], got {cfg.train.p_uncond!r}")
    if cfg.data.gaussianize and cfg.data.name not in ("digits", "mnist", "cifar10"):
        raise ConfigError(
            f"data.gaussianize needs image data (digits, mnist, cifar10), got {cfg.data.name!r}"
        )
    if cfg.model.histogram_base:
        if cfg.data.name not in ("digits", "mnist", "cifar10"):
            raise ConfigError(
                f"model.histogram_base needs image data (digits, mnist, cifar10), got "
                f"{cfg.data.name!r}"
            )
        if cfg.model.gaussian_base or cfg.data.gaussianize or cfg.data.whiten != "none":
            raise ConfigError(
                "model.histogram_base is the score of the pixels' own histograms: it needs "
                "data.gaussianize=false, data.whiten=none and model.gaussian_base=false"
            )
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {cfg.model.dropout!r}")
    if cfg.train.weighting == "std2" and cfg.train.t_sampling == "importance":
        raise ConfigError("train.t_sampling=importance needs train.weighting=likelihood")
    T = cfg.sde.sigma_max if cfg.sde.name == "edm" else 1.0  # the SDE's end time
    for key in ("train.eps", "eval.sample_eps", "eval.likelihood_eps"):
        if not 0 < get(cfg, key) < T:
            raise ConfigError(f"{key} must lie in (0, T) = (0, {T:g}), got {get(cfg, key)!r}")
    if cfg.sde.name in ("ve", "edm") and not 0 < cfg.sde.sigma_min < cfg.sde.sigma_max:
        raise ConfigError(
            f"sde.sigma_min must lie in (0, sde.sigma_max={cfg.sde.sigma_max!r}), "
            f"got {cfg.sde.sigma_min!r}"
        )
    if cfg.train.loss == "edm" and not cfg.train.p_std > 0:
        raise ConfigError(f"train.p_std must be > 0, got {cfg.train.p_std!r}")
    if cfg.eval.s_churn < 0 or cfg.eval.s_noise <= 0 or cfg.eval.s_tmin > cfg.eval.s_tmax:
        raise ConfigError(
            "eval.s_churn must be >= 0, eval.s_noise > 0 and eval.s_tmin <= eval.s_tmax; got "
            f"{cfg.eval.s_churn!r}, {cfg.eval.s_noise!r}, {cfg.eval.s_tmin!r}, {cfg.eval.s_tmax!r}"
        )
    return cfg


CONFIG_DIR = pathlib.Path(__file__).parent / "configs"


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def load(name_or_file: str, overrides: list[str] = ()) -> Config:
    """A named config (``checkerboard``) or a Python file, with overrides applied."""
    path = pathlib.Path(name_or_file)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_file}.py"
        if not path.exists():
            close = difflib.get_close_matches(name_or_file, named_configs(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown config {name_or_file!r}{hint}; named configs: "
                f"{', '.join(named_configs())}, or give a path to a .py file"
            )
    elif not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_scoresde_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {str(path)!r} defines no get_config()")
    return apply_overrides(validate(module.get_config()), list(overrides))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    def build(cls, values):
        kwargs = {}
        for name, tp in _fields(cls).items():
            if name not in values:
                continue
            v = values[name]
            if dataclasses.is_dataclass(tp):
                v = build(tp, v)
            elif typing.get_origin(tp) is tuple:
                v = tuple(v)
            kwargs[name] = v
        return cls(**kwargs)

    return validate(build(Config, d))


def save(cfg: Config, path: pathlib.Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def read(path: pathlib.Path) -> Config:
    return from_dict(json.loads(path.read_text()))


def differences(a: Config, b: Config) -> list[str]:
    return [k for k in keys() if get(a, k) != get(b, k)]
