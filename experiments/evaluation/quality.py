"""Offline sample quality of image runs: the metrics of :mod:`.image_metrics` for a
run's ``samples.npz`` against its test images (``sample_metrics.json``)."""

from __future__ import annotations

import json

import numpy as np

from experiments.data import make_source
from experiments.evaluation import image_metrics
from experiments.run import Run


def sample_quality(run: Run, *, progress: bool = True) -> dict:
    """Fréchet distance, KID and precision/recall of the run's ``samples.npz`` in the
    features of a small classifier trained on the run's training images (cached as
    ``classifier.npz`` in the work dir), the classifier's accuracy on the test set, and
    for class-conditional samples the fraction classified as the requested class."""
    path = run.workdir / "samples.npz"
    if not path.exists():
        raise FileNotFoundError(f"{run.workdir} has no samples.npz: run scoresde sample first")
    raw = make_source(run.cfg.data)  # the images themselves, in [-1, 1]
    if not raw.is_image or raw.num_classes is None:
        raise ValueError(
            f"sample metrics need labelled image data (digits, mnist, cifar10), got "
            f"data.name={run.cfg.data.name!r}"
        )
    seed = run.cfg.train.seed
    classifier = image_metrics.load_or_train(
        run.workdir / "classifier.npz",
        raw.train_batch(seed, 0, raw.n_train),  # every training image once
        raw.train_labels(seed, 0, raw.n_train),
        num_classes=raw.num_classes,
        progress=progress,
    )
    saved = np.load(path, allow_pickle=False)
    samples = np.clip(saved["samples"].reshape(-1, *raw.shape), *raw.data_range)
    out = image_metrics.sample_metrics(
        classifier,
        samples,
        raw.test(seed),
        labels=saved["labels"] if "labels" in saved else None,
        reference_labels=raw.test_labels,
    )
    out["features"] = "local classifier (experiments.evaluation.image_metrics), classifier.npz"
    (run.workdir / "sample_metrics.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
