r"""The study's three data sets, their models' configs and their quality metrics.

``ring`` (8 Gaussians with unequal weights on a circle) and ``grid`` (5 x 5 equal
Gaussians) are exact mixtures: training batches are fresh draws, and quality is mode
coverage against the true weights (:func:`mixture_quality`). ``digits`` is sklearn's
8x8 digits flattened to 64-D and uniformly dequantised into [-1, 1]; quality is class
coverage through a logistic-regression classifier (:func:`class_quality`).

Mode ``k`` is *hit* when at least ``HIT_FRACTION`` (1/4) of its expected share,
:math:`w_k / 4`, of the samples lies within ``RADIUS`` (3) component stds of
:math:`\mu_k`; the fraction of samples within 3 stds of some mode is the
*high-quality* fraction (Srivastava et al. 2017, VEEGAN; Metz et al. 2017, Unrolled
GANs; exact samples give 0.989). Non-finite samples count as a mode of weight 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import sde as sde_lib
from experiments import config as config_lib
from experiments.data import (
    DIGITS_LEVELS,
    DataSource,
    dequantize,
    flattened,
    load_digits,
    make_source,
    mixture_dataset,
)
from experiments.evaluation import mixture_metrics as metrics
from experiments.run import Run

from . import gan
from .settings import Settings

RING_WEIGHTS = (0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.06, 0.04)
HIT_FRACTION = 0.25
RADIUS = 3.0
_TEST_SEED, _REFERENCE_SEED = 8_000_001, 8_000_002

# the quality metric that says how sharp samples are, per kind of data
SHARPNESS = {"mixture": "high_quality", "classes": "confidence"}
SHARPNESS_NAMES = {"high_quality": "high-quality fraction", "confidence": "classifier confidence"}


@dataclass(frozen=True)
class Task:
    """A data set with its held-out truth, its models' configs and its quality metric.

    ``source`` is the data the GAN trains on; the score model trains on it too, or,
    with ``own_data``, on its config's own source (the same data whitened).
    """

    name: str
    kind: str  # "mixture" | "classes": what ``quality`` measures (see SHARPNESS)
    source: DataSource
    test: np.ndarray  # held-out data the samples are compared with
    score_cfg: Callable[[float, int], config_lib.Config]  # (lr, seed) -> config
    gan_cfg: Callable[[str, float, int], gan.GANConfig]  # (loss, lr, seed) -> config
    quality: Callable[[np.ndarray], dict]
    reference: dict  # quality of real data: the floor of every metric
    truth: dict
    n_eval: int
    n_nll: int
    mixture: sde_lib.GaussianMixture | None = None
    own_data: bool = False

    @property
    def dim(self) -> int:
        return self.source.dim

    @property
    def sharpness(self) -> str:
        return SHARPNESS[self.kind]


def score_run(task: Task, lr: float, seed: int) -> Run:
    """The score model's :class:`Run` for ``(lr, seed)``, on the task's data, with a
    test split that is the same for every seed (the task's held-out points)."""
    run = Run.create(task.score_cfg(lr, seed))
    if not task.own_data:
        return run.replace(source=task.source)
    test = run.source.test(0)  # the model-space test set every seed is scored on
    return run.replace(source=dataclasses.replace(run.source, test=lambda seed: test))


def _mmd2(x, test) -> float:
    return metrics.mmd2(x[:2000], test[:2000]) if len(x) >= 10 else math.nan


def mixture_quality(x: np.ndarray, mix: sde_lib.GaussianMixture, test: np.ndarray) -> dict:
    """Mode coverage of samples ``x`` against the exact mixture (see the module doc)."""
    x = np.asarray(x, np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    good, n = x[finite], len(x)
    w = np.asarray(mix.weights, np.float64)
    means = np.asarray(mix.means, np.float64)
    std = np.sqrt(np.asarray(mix.eigvals, np.float64)[:, 0])
    shares = metrics.mode_shares(good, means) * len(good) / n if len(good) else 0 * w
    near = np.sqrt(np.sum((good[:, None] - means[None]) ** 2, -1)) <= RADIUS * std[None]
    hit = near.sum(0) / n >= HIT_FRACTION * w
    return {
        "hit": int(hit.sum()),
        "of": len(w),
        "tv": 0.5 * (float(np.abs(shares - w).sum()) + (1 - finite.mean())),
        "high_quality": float(near.any(1).sum() / n),
        "mmd2": _mmd2(good, test),
        "finite": float(finite.mean()),
        "shares": [float(s) for s in shares],
    }


def class_quality(x, classifier, test_shares, test) -> dict:
    """Class coverage of 64-D samples through ``classifier``: a class is hit with >= 1/4
    of its test share; *confidence* is the classifier's mean top probability."""
    x = np.asarray(x, np.float64)
    finite = np.all(np.isfinite(x), axis=1)
    good = np.clip(x[finite], -1.0, 1.0)
    k = len(test_shares)
    if len(good):
        proba = classifier.predict_proba(good)
        shares = np.bincount(proba.argmax(1), minlength=k) / len(x)
        confidence = float(proba.max(1).sum() / len(x))
    else:
        shares, confidence = np.zeros(k), 0.0
    return {
        "hit": int(np.sum(shares >= HIT_FRACTION * test_shares)),
        "of": k,
        "tv": 0.5 * (float(np.abs(shares - test_shares).sum()) + (1 - finite.mean())),
        "confidence": confidence,
        "mmd2": _mmd2(good, test),
        "finite": float(finite.mean()),
        "shares": [float(s) for s in shares],
    }


def make_task(name: str, settings: Settings) -> Task:
    """The task called ``name`` (one of ``settings.DATASETS``)."""
    return _digits_task(settings) if name == "digits" else _mixture_task(name, settings)


def _mixture(name: str) -> sde_lib.GaussianMixture:
    if name == "ring":
        return sde_lib.GaussianMixture.ring(8, radius=4.0, std=0.25, weights=np.array(RING_WEIGHTS))
    return sde_lib.GaussianMixture.grid(5, spacing=2.0, std=0.2)


def _score_overrides(settings: Settings, steps, batch, lr, seed, hidden, n_nll, exact=True):
    """Training overrides of a named config, and the study's likelihood settings as
    its eval section (Tsit5 at ``tol``, eps 1e-5, all ``n_nll`` points in one batch)."""
    return [
        f"train.steps={steps}",
        f"train.batch_size={batch}",
        f"train.lr={lr}",
        f"train.seed={seed}",
        f"train.ema_decay={settings.ema_decay}",
        f"model.hidden={hidden}",
        "model.depth=3",
        "eval.solver=tsit5",
        f"eval.rtol={settings.tol}",
        f"eval.atol={settings.tol}",
        "eval.likelihood_eps=1e-5",
        f"eval.divergence={'exact' if exact else 'hutchinson'}",
        f"eval.n_probes={1 if exact else settings.digits_probes}",
        f"eval.n_likelihood={n_nll}",
        f"eval.batch_size={n_nll}",
    ]


def _gan_config(loss, lr, seed, settings: Settings, *, latent_dim, hidden, steps, batch):
    # DCGAN's Adam(0.5, 0.999); WGAN-GP's own Adam(0, 0.9)
    b1, b2 = (0.0, 0.9) if loss == "wgan-gp" else (0.5, 0.999)
    return gan.GANConfig(
        latent_dim=latent_dim,
        hidden=hidden,
        depth=2,
        loss=loss,
        lr=lr,
        b1=b1,
        b2=b2,
        batch_size=batch,
        steps=steps,
        seed=seed,
        log_every=settings.log_every,
        chunk=settings.chunk,
    )


def _mixture_task(name: str, settings: Settings) -> Task:
    mix, s = _mixture(name), settings

    def train_batch(seed, step, batch_size):
        return mixture_dataset(mix, batch_size, [seed, 1, step])

    test = mixture_dataset(mix, max(s.n_eval_2d, s.n_nll_2d), _TEST_SEED)
    source = DataSource(name, (2,), train_batch, val=lambda seed: test, test=lambda seed: test)
    stds = np.sqrt(np.asarray(mix.eigvals)[:, 0])

    def quality(x):
        return mixture_quality(x, mix, test)

    return Task(
        name=name,
        kind="mixture",
        source=source,
        test=test,
        # the named 2-D config (MLP, noise prediction, VP), trained on ``source``
        score_cfg=lambda lr, seed: config_lib.load(
            "8gaussians",
            _score_overrides(s, s.steps_2d, s.batch_2d, lr, seed, 128, s.n_nll_2d),
        ),
        gan_cfg=lambda loss, lr, seed: _gan_config(
            loss, lr, seed, s, latent_dim=8, hidden=128, steps=s.steps_2d, batch=s.batch_2d
        ),
        quality=quality,
        reference=quality(mixture_dataset(mix, s.n_eval_2d, _REFERENCE_SEED)),
        truth={
            "kind": f"{mix.num_components}-component Gaussian mixture ({name})",
            "weights": [round(float(v), 6) for v in mix.weights],
            "std": float(stds[0]),
            "n_test": len(test),
        },
        n_eval=s.n_eval_2d,
        n_nll=s.n_nll_2d,
        mixture=mix,
    )


def _digits_classifier():
    """``(classifier, unseen dequantised train images, accuracy, test shares)``: a
    logistic regression on two dequantisation draws of the train split."""
    from sklearn.linear_model import LogisticRegression

    _, y_test = load_digits("test")
    x_train, y_train = load_digits("train")
    rng = np.random.default_rng(0)
    dq = [dequantize(rng, x_train, DIGITS_LEVELS, (-1.0, 1.0)) for _ in range(3)]
    features = np.concatenate(dq[:2]).reshape(-1, 64)
    classifier = LogisticRegression(max_iter=1000).fit(features, np.tile(y_train, 2))
    return classifier, dq[2].reshape(-1, 64), y_test, np.bincount(y_test, minlength=10)


def _digits_task(settings: Settings) -> Task:
    s = settings
    source = flattened(make_source(config_lib.load("digits").data))
    test = source.test(0)
    classifier, unseen, y_test, counts = _digits_classifier()
    test_shares = counts / len(y_test)
    n_nll = min(s.n_nll_digits, len(test))

    def quality(x):
        return class_quality(x, classifier, test_shares, test)

    return Task(
        name="digits",
        kind="classes",
        source=source,
        test=test,
        # the named digits config (PCA-whitened, Gaussian base) on its own data
        score_cfg=lambda lr, seed: config_lib.load(
            "digits",
            [
                *_score_overrides(
                    s, s.steps_digits, s.batch_digits, lr, seed, 256, n_nll, exact=False
                ),
                "train.eval_every=0",
            ],
        ),
        gan_cfg=lambda loss, lr, seed: _gan_config(
            loss, lr, seed, s, latent_dim=32, hidden=256, steps=s.steps_digits, batch=s.batch_digits
        ),
        quality=quality,
        reference=quality(unseen),  # a third, unseen dequantisation draw
        truth={
            "kind": "sklearn digits, 8x8 flattened to 64-D, 17 levels dequantised into [-1, 1]",
            "test_class_shares": [float(v) for v in test_shares],
            "classifier": "LogisticRegression on the 1437 train images (2 dequantisation draws)",
            "classifier_test_accuracy": float(classifier.score(test, y_test)),
            "n_test": len(test),
        },
        n_eval=s.n_eval_digits,
        n_nll=n_nll,
        own_data=True,
    )
